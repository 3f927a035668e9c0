"""Formatting both sides share: Redis replies as text, instants as RFC 3339 UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def as_text(value: Any) -> str:
    """A Redis reply as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def rfc3339_ms(ts_ms: int) -> str:
    """Epoch ms -> RFC 3339 UTC with Z; milliseconds shown only when non-zero."""
    moment = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    if ts_ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_now() -> str:
    """Now, RFC 3339 UTC to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""Dead-letter records: a rejected message, why, and where it came from."""

from __future__ import annotations

import base64
import time

import orjson


def dead_letter_record(
    reason: str, raw: bytes | None, *, topic: str, partition: int, offset: int, key: bytes | None
) -> bytes:
    """The DLQ value: JSON with the reason, the source position and the raw payload.

    The payload is kept as text when it is UTF-8, otherwise base64 in
    `payload_base64`, so every rejected byte can be inspected and replayed.
    """
    record: dict[str, object] = {
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "dead_lettered_at_ms": int(time.time() * 1000),
    }
    for name, value in (("payload", raw), ("key", key)):
        if value is None:
            record[name] = None
            continue
        try:
            record[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            record[f"{name}_base64"] = base64.b64encode(value).decode("ascii")
    return orjson.dumps(record)

"""The poison messages seen in the field ("What was seen"), shared by the fuzz, end-to-end and CLI tests.

Each is raw message bytes and the start of the dead-letter reason the contract
gives it. Before the contract got its bounds, each of these crashed or wedged
a step after validation (a datetime overflow, a TypeError, an oversized dead
letter); now each must be a dead letter and nothing else.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

T0_MS = 1_736_935_200_000  # 2025-01-15T10:00:00Z


def valid_event(i: int, **changes: Any) -> dict[str, Any]:
    """A valid event with a cost and a provider (what tests/pipeline/reference.py expects)."""
    base: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "timestamp": "2025-01-15T10:00:03.120Z",
        "entity_type": "customer",
        "entity_id": f"c{i % 7}",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost": 0.25,
    }
    return base | changes


def encode(value: Any) -> bytes:
    """JSON bytes by the stdlib, which, unlike orjson, writes integers past 64 bits."""
    return json.dumps(value, ensure_ascii=False).encode()


def non_utf8_line(size_bytes: int) -> bytes:
    """An event-shaped line of about `size_bytes` whose event_id is not UTF-8."""
    return b'{"event_id": "' + b"\xff\xfe" * (size_bytes // 2) + b'", "timestamp": 0}'


class Poison(NamedTuple):
    name: str
    raw: bytes
    reason_start: str


WHAT_WAS_SEEN: list[Poison] = [
    Poison("project_id is a list", encode(valid_event(1, project_id=["x"])), "project_id: must be 1-64 characters"),
    Poison(
        "9999-12-31T23:00:00-05:00",
        encode(valid_event(2, timestamp="9999-12-31T23:00:00-05:00")),
        "timestamp: outside 1970-01-01 to 9998-12-31 UTC",
    ),
    Poison(
        "0001-01-01T00:00:00+01:00",
        encode(valid_event(3, timestamp="0001-01-01T00:00:00+01:00")),
        "timestamp: outside 1970-01-01 to 9998-12-31 UTC",
    ),
    Poison("latency_ms 1e306", encode(valid_event(4, latency_ms=1e306)), "latency_ms: must be 0-86400000"),
    Poison(
        "epoch ms in the last days of 9999",
        encode(valid_event(5, timestamp=253_402_000_000_000)),
        "timestamp: epoch milliseconds out of range",
    ),
    Poison("non-UTF-8 line of 800 kB", non_utf8_line(800_000), "not valid UTF-8 JSON"),
    Poison("input_tokens 2**64-1", encode(valid_event(7, input_tokens=2**64 - 1)), "input_tokens: must be 0-"),
    Poison("cost 1e300", encode(valid_event(8, cost=1e300)), "cost: must be 0-1000000"),
    # Not a crash: the all-types leaderboard is named `*`, so this entity was counted there twice.
    Poison(
        "entity_type *",
        encode(valid_event(9, entity_type="*")),
        "entity_type: '*' is reserved (the all-types leaderboard)",
    ),
]

"""Dead-letter records: a rejected message, why, and where it came from."""

from __future__ import annotations

import base64
import hashlib
import time

import orjson

# The most of a rejected payload (and of its key) a dead letter keeps. A record must
# fit the producer's 1 MiB request limit whatever arrived: 256 KiB is 342 KiB as
# base64 (and text is kept only where it is no longer), with room for the key and
# the reason. A longer payload keeps its first 256 KiB, its length and its SHA-256.
DLQ_PAYLOAD_MAX_BYTES = 256 * 1024
DLQ_KEY_MAX_BYTES = 16 * 1024
DLQ_REASON_MAX_CHARS = 1000


def dead_letter_record(
    reason: str, raw: bytes | None, *, topic: str, partition: int, offset: int, key: bytes | None
) -> bytes:
    """The DLQ value: JSON with the reason, the source position and the raw payload.

    The payload is kept as text when it is UTF-8, otherwise base64 in
    `payload_base64`, so every rejected byte can be inspected and replayed;
    one over DLQ_PAYLOAD_MAX_BYTES is cut there (`payload_truncated`, with
    `payload_bytes` and `payload_sha256` of the whole).
    """
    record: dict[str, object] = {
        "reason": reason[:DLQ_REASON_MAX_CHARS],
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "dead_lettered_at_ms": int(time.time() * 1000),
    }
    for name, value, limit in (("payload", raw, DLQ_PAYLOAD_MAX_BYTES), ("key", key, DLQ_KEY_MAX_BYTES)):
        if value is None:
            record[name] = None
            continue
        kept = value
        if len(value) > limit:
            kept = value[:limit]
            record[f"{name}_truncated"] = True
            record[f"{name}_bytes"] = len(value)
            record[f"{name}_sha256"] = hashlib.sha256(value).hexdigest()
        text = _utf8_prefix(kept, whole=kept is value)
        # Text escapes up to six bytes a character in JSON (a control character is \u0001):
        # kept as text only while that is no longer than base64, so the record's size is bounded.
        if text is not None and len(orjson.dumps(text)) <= _base64_length(len(kept)):
            record[name] = text
        else:
            record[f"{name}_base64"] = base64.b64encode(kept).decode("ascii")
    return orjson.dumps(record)


def minimal_dead_letter_record(reason: str, raw: bytes | None, *, topic: str, partition: int, offset: int) -> bytes:
    """A dead letter without the payload: its reason, source, length and SHA-256 only.

    What the worker sends if the broker refuses a full record, so that a dead
    letter is always written and the partition never stalls on one.
    """
    return orjson.dumps(
        {
            "reason": reason[:DLQ_REASON_MAX_CHARS],
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "dead_lettered_at_ms": int(time.time() * 1000),
            "payload": None,
            "payload_truncated": raw is not None,
            "payload_bytes": 0 if raw is None else len(raw),
            "payload_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
        }
    )


def _base64_length(size: int) -> int:
    return 4 * -(-size // 3)


def _utf8_prefix(data: bytes, *, whole: bool) -> str | None:
    """`data` as text when it is UTF-8; a cut payload may end inside a character, which is dropped."""
    for cut in range(1 if whole else 4):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None

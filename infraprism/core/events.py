"""The cost event contract (shared/spec/events.md) as a validator.

Pure: no Kafka, no Redis, no asyncio. `parse_event` turns the raw bytes of one
Kafka message into a `CostEvent` or raises `InvalidEvent` whose message is the
dead-letter reason. Validation is hand-written rather than a pydantic model
because it runs once per event on the hot path (about 3 us here) and because
each rejection needs one short, exact reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import InvalidOperation
from typing import Any

import orjson

from infraprism.core.money import usd_to_nano
from infraprism.core.pricing import PricingError, catalog_provider_for, price_event_nano

DEFAULT_PROJECT = "default"
MAX_TAGS = 32
# Epoch milliseconds outside years 1970..9999 are certainly a unit mistake.
MAX_EPOCH_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1)

_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Control characters are refused in every identifier: the Redis key layout
# joins identifiers with ASCII separators (\x1d-\x1f), and no real id has them.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEvent(ValueError):
    """The message does not fit the event contract; str(exc) is the DLQ reason."""


@dataclass(frozen=True, slots=True)
class CostEvent:
    """One validated LLM call. Money in integer nano-dollars, time in UTC epoch ms."""

    event_id: str
    ts_ms: int
    project_id: str
    entity_type: str
    entity_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost_nano: int
    latency_us: int | None
    session_id: str | None
    tags: tuple[tuple[str, str], ...]


def parse_timestamp_ms(value: Any) -> int:
    """RFC 3339 (any offset) or epoch milliseconds -> UTC epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidEvent("timestamp: must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise InvalidEvent(f"timestamp: epoch milliseconds out of range: {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        # RFC 3339 requires a date, a time and an offset; fromisoformat alone
        # would also take a bare date or a naive time.
        if len(text) < 20 or text[10] not in "Tt ":
            raise InvalidEvent(f"timestamp: not RFC 3339: {value[:64]!r}")
        try:
            parsed = datetime.fromisoformat(text.upper() if text[-1] in "zZ" else text)
        except ValueError:
            raise InvalidEvent(f"timestamp: not RFC 3339: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidEvent(f"timestamp: RFC 3339 needs an offset or Z: {value[:64]!r}")
        # Integer arithmetic on the exact fields: timestamp() is a float.
        delta = parsed.astimezone(UTC).replace(tzinfo=None) - _EPOCH
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if ms < 0:
            raise InvalidEvent(f"timestamp: before 1970: {value[:64]!r}")
        return ms
    raise InvalidEvent("timestamp: must be an RFC 3339 string or epoch milliseconds")


def _text(obj: dict[str, Any], name: str, max_len: int, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{name}: must be a string")
    if not 1 <= len(value) <= max_len:
        raise InvalidEvent(f"{name}: length must be 1-{max_len}, got {len(value)}")
    if _CONTROL_RE.search(value):
        raise InvalidEvent(f"{name}: control characters are not allowed")
    return value


def _count(obj: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"{name}: required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"{name}: must be an integer")
    if value < 0:
        raise InvalidEvent(f"{name}: must be >= 0, got {value}")
    return value


def _non_negative_number(obj: dict[str, Any], name: str) -> float | int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{name}: must be a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidEvent(f"{name}: must be finite")
    if value < 0:
        raise InvalidEvent(f"{name}: must be >= 0, got {value}")
    return value


def _tags(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    value = obj.get("tags")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidEvent("tags: must be an object of string -> string")
    if len(value) > MAX_TAGS:
        raise InvalidEvent(f"tags: at most {MAX_TAGS} pairs, got {len(value)}")
    for key, tag_value in value.items():
        if not 1 <= len(key) <= 64 or _CONTROL_RE.search(key):
            raise InvalidEvent(f"tags: key must be 1-64 characters without control characters: {key[:64]!r}")
        if not isinstance(tag_value, str):
            raise InvalidEvent(f"tags.{key}: value must be a string")
        if not 1 <= len(tag_value) <= 256 or _CONTROL_RE.search(tag_value):
            raise InvalidEvent(f"tags.{key}: value must be 1-256 characters without control characters")
    return tuple(sorted(value.items()))


def validate_event(obj: Any) -> CostEvent:
    """A decoded JSON value -> `CostEvent`, or `InvalidEvent` with the reason."""
    if not isinstance(obj, dict):
        raise InvalidEvent("event must be a JSON object")
    event_id = _text(obj, "event_id", 128, required=True)
    ts_ms = parse_timestamp_ms(obj.get("timestamp")) if "timestamp" in obj else None
    if ts_ms is None:
        raise InvalidEvent("timestamp: required")
    project_id = obj.get("project_id", DEFAULT_PROJECT)
    if project_id is None:
        project_id = DEFAULT_PROJECT
    if not isinstance(project_id, str) or not _PROJECT_RE.match(project_id):
        raise InvalidEvent("project_id: must be 1-64 characters of [A-Za-z0-9._-]")
    entity_type = _text(obj, "entity_type", 64, required=True)
    entity_id = _text(obj, "entity_id", 256, required=True)
    model = _text(obj, "model", 128, required=True)
    provider = _text(obj, "provider", 128, required=False)
    input_tokens = _count(obj, "input_tokens", required=True)
    output_tokens = _count(obj, "output_tokens", required=True)
    cache_read = _count(obj, "cache_read_tokens", required=False) or 0
    cache_write = _count(obj, "cache_write_tokens", required=False) or 0
    reasoning = _count(obj, "reasoning_tokens", required=False) or 0
    assert input_tokens is not None and output_tokens is not None  # required=True
    if cache_read + cache_write > input_tokens:
        raise InvalidEvent("cache_read_tokens + cache_write_tokens: part of input_tokens, cannot exceed it")
    if reasoning > output_tokens:
        raise InvalidEvent("reasoning_tokens: part of output_tokens, cannot exceed it")
    cost = _non_negative_number(obj, "cost")
    latency_ms = _non_negative_number(obj, "latency_ms")
    session_id = _text(obj, "session_id", 128, required=False)
    tags = _tags(obj)
    assert event_id and entity_type and entity_id and model  # required=True

    if cost is None:
        try:
            cost_nano, catalog_provider = price_event_nano(
                model, provider, ts_ms, input_tokens, output_tokens, cache_read, cache_write
            )
        except PricingError as exc:
            raise InvalidEvent(f"cost: absent and {exc}") from None
        provider = provider or catalog_provider
    else:
        try:
            cost_nano = usd_to_nano(cost)
        except (InvalidOperation, ValueError):
            raise InvalidEvent("cost: not a decimal number") from None
        if provider is None:
            provider = catalog_provider_for(model)

    return CostEvent(
        event_id=event_id,
        ts_ms=ts_ms,
        project_id=project_id,
        entity_type=entity_type,
        entity_id=entity_id,
        model=model,
        provider=provider or "unknown",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_nano=cost_nano,
        latency_us=None if latency_ms is None else round(latency_ms * 1000),
        session_id=session_id,
        tags=tags,
    )


def parse_event(raw: bytes | None) -> CostEvent:
    """Raw Kafka message value -> `CostEvent`, or `InvalidEvent` with the reason."""
    if raw is None:
        raise InvalidEvent("empty message (null value)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {exc}") from None
    return validate_event(obj)

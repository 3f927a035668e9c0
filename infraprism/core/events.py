"""The cost event contract (shared/spec/events.md) as a validator.

Pure: no Kafka, no Redis, no asyncio. `parse_event` turns the raw bytes of one
Kafka message into a `CostEvent` or raises `InvalidEvent` whose message is the
dead-letter reason. Validation is hand-written rather than a pydantic model
because it runs once per event on the hot path (about 3 us here) and because
each rejection needs one short, exact reason.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from infraprism.core.keys import ALL_ENTITY_TYPES
from infraprism.core.money import NANO_PER_USD, usd_to_nano
from infraprism.core.price_book import EMPTY_BOOK, SUPPLIED, PriceBook
from infraprism.core.pricing import PricingError, catalog_provider_for

DEFAULT_PROJECT = "default"
MAX_TAGS = 32
# The contract's bounds. Each is far beyond real traffic and keeps every later
# step total: a bucket label, a retention date or a Redis write can never fail
# on a value that passed here (docs/architecture.md, "Bounds").
# Instants from 1970-01-01 to the end of 9998 UTC: a bucket's end, and its
# week or month after, stay inside the datetime range.
MAX_EPOCH_MS = 253_370_764_800_000 - 1  # 9998-12-31T23:59:59.999Z
MAX_TOKENS = 10**12  # per token field of one event
MAX_COST_USD = 1_000_000  # per event, supplied or priced
MAX_COST_NANO = MAX_COST_USD * NANO_PER_USD
MAX_LATENCY_MS = 86_400_000  # one day
# Most characters of each text field, and of a tag's key and value.
MAX_LENGTH = {"event_id": 128, "entity_type": 64, "entity_id": 256, "model": 128, "provider": 128, "session_id": 128}
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256
_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)

_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Control characters are refused in every identifier: the Redis key layout
# joins identifiers with ASCII separators (\x1d-\x1f), and no real id has them.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEvent(ValueError):
    """The message does not fit the event contract; str(exc) is the DLQ reason."""


class CostEvent(NamedTuple):
    """One validated LLM call. Money in integer nano-dollars, time in UTC epoch ms.

    A NamedTuple rather than a frozen dataclass: it is built once per event on
    the hot path, and a tuple builds about three times faster.
    """

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
    # Where cost_nano came from: "supplied" (the event's own cost), "catalog" or "override"
    # (core/price_book.py).
    price_source: str = SUPPLIED


def parse_timestamp_ms(value: Any) -> int:
    """RFC 3339 (any offset) or epoch milliseconds -> UTC epoch milliseconds, within the contract's years."""
    if isinstance(value, bool):
        raise InvalidEvent("timestamp: must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise InvalidEvent(f"timestamp: epoch milliseconds out of range 0-{MAX_EPOCH_MS}: {value}")
        return value
    if isinstance(value, str):
        common = _common_rfc3339_ms(value)
        return common if common is not None else _rfc3339_ms(value)
    raise InvalidEvent("timestamp: must be an RFC 3339 string or epoch milliseconds")


def _rfc3339_ms(value: str) -> int:
    """Any RFC 3339 text, with its offset, -> UTC epoch milliseconds, or the reason it is refused."""
    text = value.strip()
    # RFC 3339 requires a date, a time and an offset; fromisoformat alone
    # would also take a bare date or a naive time.
    if len(text) < 20 or text[10] not in "Tt ":
        raise InvalidEvent(f"timestamp: not RFC 3339: {value[:64]!r}")
    try:
        parsed = datetime.fromisoformat(text.upper() if text[-1] in "zZ" else text)
    except ValueError:
        raise InvalidEvent(f"timestamp: not RFC 3339: {value[:64]!r}") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise InvalidEvent(f"timestamp: RFC 3339 needs an offset or Z: {value[:64]!r}")
    # Integer arithmetic on the exact fields (timestamp() is a float), and no
    # datetime step that can leave the datetime range: astimezone() overflows
    # on 9999-12-31T23:00:00-05:00 or 0001-01-01T00:00:00+01:00.
    local = parsed.replace(tzinfo=None) - _EPOCH
    local_us = (local.days * 86_400 + local.seconds) * 1_000_000 + local.microseconds
    offset_us = (offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds
    ms = (local_us - offset_us) // 1000
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise InvalidEvent(f"timestamp: outside 1970-01-01 to 9998-12-31 UTC: {value[:64]!r}")
    return ms


def _common_rfc3339_ms(text: str) -> int | None:
    """The usual shapes, `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)`, without datetime; None for any other.

    A third of the aggregator's validation time went to fromisoformat. Anything
    this does not take outright goes the general way, which gives the reason.
    """
    size = len(text)
    if not text.isascii():  # str.isdigit() takes other scripts' digits too
        return None
    if size == 20 or size == 25:
        fraction_ms, zone = 0, 19
    elif (size == 24 or size == 29) and text[19] == "." and text[20:23].isdigit():
        fraction_ms, zone = int(text[20:23]), 23
    else:
        return None
    if not (text[10] in "Tt " and text[13] == ":" and text[16] == ":"):
        return None
    clock = text[11:13] + text[14:16] + text[17:19]
    if not clock.isdigit():
        return None
    hour, minute, second = int(clock[:2]), int(clock[2:4]), int(clock[4:])
    if hour > 23 or minute > 59 or second > 59:
        return None
    sign = text[zone]
    if sign in "Zz" and size == zone + 1:
        offset_s = 0
    elif sign in "+-" and size == zone + 6 and text[zone + 3] == ":":
        hours_text, minutes_text = text[zone + 1 : zone + 3], text[zone + 4 :]
        if not (hours_text.isdigit() and minutes_text.isdigit()):
            return None
        offset_hours, offset_minutes = int(hours_text), int(minutes_text)
        if offset_hours > 23 or offset_minutes > 59:
            return None
        offset_s = (offset_hours * 3600 + offset_minutes * 60) * (1 if sign == "+" else -1)
    else:
        return None
    days = _epoch_days(text[:10])
    if days is None:
        return None
    ms = ((days * 86_400 + hour * 3600 + minute * 60 + second - offset_s) * 1000) + fraction_ms
    return ms if 0 <= ms <= MAX_EPOCH_MS else None


@lru_cache(maxsize=4096)
def _epoch_days(day: str) -> int | None:
    """Days from 1970-01-01 to a `YYYY-MM-DD` date, or None when it is not a date."""
    if not (day[:4] + day[5:7] + day[8:]).isdigit() or day[4] != "-" or day[7] != "-":
        return None
    try:
        return (date(int(day[:4]), int(day[5:7]), int(day[8:])) - _EPOCH_DATE).days
    except ValueError:
        return None


def _text(obj: dict[str, Any], name: str, *, required: bool) -> str | None:
    max_len = MAX_LENGTH[name]
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
    if not 0 <= value <= MAX_TOKENS:
        raise InvalidEvent(f"{name}: must be 0-{MAX_TOKENS}, got {value}")
    return value


def _bounded_number(obj: dict[str, Any], name: str, maximum: int) -> float | int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{name}: must be a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidEvent(f"{name}: must be finite")
    if not 0 <= value <= maximum:
        raise InvalidEvent(f"{name}: must be 0-{maximum}, got {value}")
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
        if not 1 <= len(key) <= MAX_TAG_KEY_LENGTH or _CONTROL_RE.search(key):
            raise InvalidEvent(
                f"tags: key must be 1-{MAX_TAG_KEY_LENGTH} characters without control characters: {key[:64]!r}"
            )
        if not isinstance(tag_value, str):
            raise InvalidEvent(f"tags.{key}: value must be a string")
        if not 1 <= len(tag_value) <= MAX_TAG_VALUE_LENGTH or _CONTROL_RE.search(tag_value):
            raise InvalidEvent(
                f"tags.{key}: value must be 1-{MAX_TAG_VALUE_LENGTH} characters without control characters"
            )
    return tuple(sorted(value.items()))


_KNOWN_PROJECTS: set[str] = {DEFAULT_PROJECT}
_FAST_TEXT_LIMITS = tuple((name, MAX_LENGTH[name]) for name in ("event_id", "entity_type", "entity_id", "model"))


def _fast_event(obj: Any, book: PriceBook = EMPTY_BOOK) -> CostEvent | None:
    """The common, well-formed event, validated (and priced when it has no cost) in one pass;
    None for anything else.

    The aggregator spends most of its Python time here, so the usual case
    avoids per-field helper calls. Whatever this path does not accept
    outright (any doubt, an unknown model) goes through `_validate_fully`,
    which gives the precise reason for a rejection; both must accept and
    refuse the same events (tests/core/test_events.py checks it).
    """
    if type(obj) is not dict:
        return None
    get = obj.get
    texts = []
    for name, limit in _FAST_TEXT_LIMITS:
        value = get(name)
        if type(value) is not str or not 0 < len(value) <= limit:
            return None
        texts.append(value)
    if texts[1] == ALL_ENTITY_TYPES:
        return None  # the full path words the reason
    provider = get("provider")
    session_id = get("session_id")
    project_id = get("project_id", DEFAULT_PROJECT)
    if type(project_id) is not str:
        return None
    if project_id not in _KNOWN_PROJECTS:
        if not _PROJECT_RE.match(project_id):
            return None
        if len(_KNOWN_PROJECTS) < 10_000:  # ids come from untrusted events: keep the memo bounded
            _KNOWN_PROJECTS.add(project_id)
    if provider is not None:
        if type(provider) is not str or not 0 < len(provider) <= MAX_LENGTH["provider"]:
            return None
        texts.append(provider)
    if session_id is not None:
        if type(session_id) is not str or not 0 < len(session_id) <= MAX_LENGTH["session_id"]:
            return None
        texts.append(session_id)
    input_tokens, output_tokens, cost = get("input_tokens"), get("output_tokens"), get("cost")
    if (
        type(input_tokens) is not int
        or type(output_tokens) is not int
        or not 0 <= input_tokens <= MAX_TOKENS
        or not 0 <= output_tokens <= MAX_TOKENS
    ):
        return None
    cache_read, cache_write = get("cache_read_tokens", 0), get("cache_write_tokens", 0)
    reasoning = get("reasoning_tokens", 0)
    if (
        type(cache_read) is not int
        or type(cache_write) is not int
        or type(reasoning) is not int
        or cache_read < 0
        or cache_write < 0
        or cache_read + cache_write > input_tokens
        or not 0 <= reasoning <= output_tokens
    ):
        return None
    if cost is None:
        cost_nano = -1  # priced below, once the timestamp is known
    elif type(cost) is float:
        if not 0.0 <= cost <= MAX_COST_USD:  # also false for NaN
            return None
        cost_nano = _float_usd_to_nano(cost)
    elif type(cost) is int and 0 <= cost <= MAX_COST_USD:
        cost_nano = cost * NANO_PER_USD
    else:
        return None
    latency_ms = get("latency_ms")
    if latency_ms is None:
        latency_us = None
    elif (type(latency_ms) is int or type(latency_ms) is float) and 0 <= latency_ms <= MAX_LATENCY_MS:
        latency_us = round(latency_ms * 1000)
    else:
        return None
    raw_tags = get("tags")
    if raw_tags is None:
        tags: tuple[tuple[str, str], ...] = ()
    elif type(raw_tags) is dict and len(raw_tags) <= MAX_TAGS:
        for key, value in raw_tags.items():
            if (
                type(value) is not str
                or not 0 < len(key) <= MAX_TAG_KEY_LENGTH
                or not 0 < len(value) <= MAX_TAG_VALUE_LENGTH
            ):
                return None
            texts.append(key)
            texts.append(value)
        tags = tuple(sorted(raw_tags.items()))
    else:
        return None
    joined = "".join(texts)
    # isprintable() is one C pass and true for almost every event; the regex decides the rest.
    if not joined.isprintable() and _CONTROL_RE.search(joined):
        return None
    timestamp = get("timestamp")
    if type(timestamp) is int and 0 <= timestamp <= MAX_EPOCH_MS:
        ts_ms = timestamp
    elif type(timestamp) is str:
        try:
            ts_ms = parse_timestamp_ms(timestamp)
        except InvalidEvent:
            return None
    else:
        return None
    event_id, entity_type, entity_id, model = texts[0], texts[1], texts[2], texts[3]
    price_source = SUPPLIED
    if cost_nano < 0:
        try:
            cost_nano, provider, price_source = book.price(
                project_id, model, provider, ts_ms, input_tokens, output_tokens, cache_read, cache_write
            )
        except PricingError:
            return None  # the full path words the reason
        if cost_nano > MAX_COST_NANO:
            return None
    return CostEvent(
        event_id,
        ts_ms,
        project_id,
        entity_type,
        entity_id,
        model,
        provider if provider is not None else (catalog_provider_for(model) or "unknown"),
        input_tokens,
        output_tokens,
        cost_nano,
        latency_us,
        session_id,
        tags,
        price_source,
    )


def _float_usd_to_nano(usd: float) -> int:
    """Exactly usd_to_nano(usd) for a non-negative float, faster in the common case."""
    text = repr(usd)
    whole, _, fraction = text.partition(".")
    if "e" in text or len(fraction) > 9:
        return usd_to_nano(usd)  # exponent form or a digit to round: the general rule
    return int(whole) * NANO_PER_USD + int(fraction.ljust(9, "0"))


def validate_event(obj: Any, book: PriceBook = EMPTY_BOOK) -> CostEvent:
    """A decoded JSON value -> `CostEvent`, or `InvalidEvent` with the reason.

    An event without `cost` is priced by `book` (the project's overrides, then the catalog).
    """
    return _fast_event(obj, book) or _validate_fully(obj, book)


def _validate_fully(obj: Any, book: PriceBook = EMPTY_BOOK) -> CostEvent:
    if not isinstance(obj, dict):
        raise InvalidEvent("event must be a JSON object")
    event_id = _text(obj, "event_id", required=True)
    ts_ms = parse_timestamp_ms(obj.get("timestamp")) if "timestamp" in obj else None
    if ts_ms is None:
        raise InvalidEvent("timestamp: required")
    project_id = obj.get("project_id", DEFAULT_PROJECT)
    if project_id is None:
        project_id = DEFAULT_PROJECT
    if not isinstance(project_id, str) or not _PROJECT_RE.match(project_id):
        raise InvalidEvent("project_id: must be 1-64 characters of [A-Za-z0-9._-]")
    entity_type = _text(obj, "entity_type", required=True)
    if entity_type == ALL_ENTITY_TYPES:
        # `*` names the leaderboard of every entity type: an entity type of that
        # name would be counted there twice and be what `entity_type=*` matches.
        raise InvalidEvent(f"entity_type: {ALL_ENTITY_TYPES!r} is reserved (the all-types leaderboard)")
    entity_id = _text(obj, "entity_id", required=True)
    model = _text(obj, "model", required=True)
    provider = _text(obj, "provider", required=False)
    input_tokens = _count(obj, "input_tokens", required=True)
    output_tokens = _count(obj, "output_tokens", required=True)
    cache_read = _count(obj, "cache_read_tokens", required=False) or 0
    cache_write = _count(obj, "cache_write_tokens", required=False) or 0
    reasoning = _count(obj, "reasoning_tokens", required=False) or 0
    assert input_tokens is not None
    assert output_tokens is not None  # required=True
    if cache_read + cache_write > input_tokens:
        raise InvalidEvent("cache_read_tokens + cache_write_tokens: part of input_tokens, cannot exceed it")
    if reasoning > output_tokens:
        raise InvalidEvent("reasoning_tokens: part of output_tokens, cannot exceed it")
    cost = _bounded_number(obj, "cost", MAX_COST_USD)
    latency_ms = _bounded_number(obj, "latency_ms", MAX_LATENCY_MS)
    session_id = _text(obj, "session_id", required=False)
    tags = _tags(obj)
    assert event_id
    assert entity_type
    assert entity_id
    assert model  # required=True

    price_source = SUPPLIED
    if cost is None:
        try:
            cost_nano, provider, price_source = book.price(
                project_id, model, provider, ts_ms, input_tokens, output_tokens, cache_read, cache_write
            )
        except PricingError as exc:
            raise InvalidEvent(f"cost: absent and {exc}") from None
        if cost_nano > MAX_COST_NANO:
            raise InvalidEvent(
                f"cost: absent, and priced at {cost_nano / NANO_PER_USD:,.2f} USD, above the contract's "
                f"{MAX_COST_USD:,} USD an event"
            )
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
        price_source=price_source,
    )


def parse_event(raw: bytes | None, book: PriceBook = EMPTY_BOOK) -> CostEvent:
    """Raw Kafka message value -> `CostEvent`, or `InvalidEvent` with the reason."""
    if raw is None:
        raise InvalidEvent("empty message (null value)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {exc}") from None
    return validate_event(obj, book)

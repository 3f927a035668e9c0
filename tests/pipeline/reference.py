"""An independent, obviously-correct reference for what the aggregator must leave in Redis.

Written from the specs (events.md, the issue, the key layout summary), NOT from
infraprism.core.rollup / keys helpers: it parses timestamps with its own
calendar arithmetic, prices an event without `cost` with genai-prices' own
calc_price (not infraprism.core.pricing), and rounds money with Decimal. `expected_state(raw_events)` and
`read_state(redis, prefix)` return the same shape, so a test compares them
with `==`.

The shape is semantic, not encoded: a rollup cell is keyed by
(project, dimension, granularity, bucket, member tuple, metric) with the
member split back into its identifiers and the cube's tag set as a frozenset.
Only non-zero counters appear (the product never writes a zero increment).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

# Separators of the documented member encoding (events refuse control characters).
US = "\x1f"  # between identifiers of a member
RS = "\x1e"  # between a tag's key and value in a cube tag set
GS = "\x1d"  # between pairs of a cube tag set

HOUR, DAY, MONTH, YEAR = "h", "d", "m", "y"
# dimension code -> granularities kept: every dimension has hours, days and months
KEPT = {dim: (HOUR, DAY, MONTH) for dim in ("t", "e", "m", "g", "em", "x", "ps")}
# Quarter hours 1-3 of an hour (minutes 15-29, 30-44, 45-59) are fields of the hour's hash,
# the member followed by QS and the quarter's digit. Here they are the granularities h1-h3
# with the hour's label; minutes 0-14 have no field of their own.
QS = "\x1c"
METRIC_CODES = ("e", "c", "i", "o", "l", "n")

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of days_from_civil."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return year + (month <= 2), month, day


def timestamp_ms(value: Any) -> int:
    """An event's `timestamp` (RFC 3339 with any offset, or epoch ms) -> UTC epoch ms (floor)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(f"not RFC 3339: {value!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "") + "000"
    ms = int(fraction[:3])
    local_s = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    offset_s = 0
    if match.group(9):
        offset_s = (int(match.group(10)) * 3600 + int(match.group(11)) * 60) * (1 if match.group(9) == "+" else -1)
    return (local_s - offset_s) * 1000 + ms


def labels(ts_ms: int) -> dict[str, str]:
    """UTC bucket labels {h: YYYYMMDDHH, d: YYYYMMDD, m: YYYYMM, y: YYYY} of an epoch-ms instant."""
    days, ms_of_day = divmod(ts_ms, 86_400_000)
    year, month, day = civil_from_days(days)
    hour = ms_of_day // 3_600_000
    return {
        HOUR: f"{year:04d}{month:02d}{day:02d}{hour:02d}",
        DAY: f"{year:04d}{month:02d}{day:02d}",
        MONTH: f"{year:04d}{month:02d}",
        YEAR: f"{year:04d}",
    }


def cost_nano(cost: Any) -> int:
    """USD (the JSON number as written) -> integer nano-dollars, half-even."""
    text = repr(cost) if isinstance(cost, float) else str(cost)
    return int((Decimal(text) * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass
class Event:
    """The fields of a valid test event the aggregates depend on."""

    event_id: str
    ts_ms: int
    project: str
    entity_type: str
    entity_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost_nano: int
    latency_us: int | None
    session_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    price_source: str = "supplied"  # or "catalog", "override": where cost_nano came from


def catalog_cost_nano(raw: dict[str, Any]) -> int:
    """The cost of an event without `cost`: genai-prices' own calc_price at the event's time
    (the contract names that catalog), rounded half-even here, not through infraprism.core."""
    from datetime import UTC, datetime

    from genai_prices import Usage, calc_price

    usage = Usage(
        input_tokens=raw["input_tokens"],
        output_tokens=raw["output_tokens"],
        cache_read_tokens=raw.get("cache_read_tokens") or None,
        cache_write_tokens=raw.get("cache_write_tokens") or None,
    )
    seconds, ms = divmod(timestamp_ms(raw["timestamp"]), 1000)
    at = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=ms * 1000)
    price = calc_price(usage, model_ref=raw["model"], provider_id=raw["provider"], genai_request_timestamp=at)
    return cost_nano(price.total_price)


# A test's own price of an event without `cost`: (cost nano-dollars, "override"), or None
# where the catalog prices it.
PriceOf = Callable[[dict[str, Any]], tuple[int, str] | None]


def normalize(raw: dict[str, Any], price_of: PriceOf | None = None) -> Event:
    """A raw *valid* test event -> Event. Test events always carry `provider`; one without
    `cost` is priced by `price_of` when it says, else from the catalog."""
    latency = raw.get("latency_ms")
    own_price = None if "cost" in raw or price_of is None else price_of(raw)
    return Event(
        event_id=raw["event_id"],
        ts_ms=timestamp_ms(raw["timestamp"]),
        project=raw.get("project_id") or "default",
        entity_type=raw["entity_type"],
        entity_id=raw["entity_id"],
        model=raw["model"],
        provider=raw["provider"],
        input_tokens=raw["input_tokens"],
        output_tokens=raw["output_tokens"],
        cost_nano=(cost_nano(raw["cost"]) if "cost" in raw else own_price[0] if own_price else catalog_cost_nano(raw)),
        latency_us=None if latency is None else round(latency * 1000),
        session_id=raw.get("session_id"),
        tags=dict(raw.get("tags") or {}),
        price_source="supplied" if "cost" in raw else own_price[1] if own_price else "catalog",
    )


def unique_events(raw_events: list[dict[str, Any]], price_of: PriceOf | None = None) -> list[Event]:
    """Valid events, first occurrence of each (project, event_id) in log order."""
    seen: set[tuple[str, str]] = set()
    out: list[Event] = []
    for raw in raw_events:
        event = normalize(raw, price_of)
        identity = (event.project, event.event_id)
        if identity in seen:
            continue
        seen.add(identity)
        out.append(event)
    return out


def empty_state() -> dict[str, dict]:
    return {
        "cells": {},  # (project, dim, gran, bucket, member tuple, metric) -> int (non-zero)
        "leaderboards": {},  # (project, gran, bucket, etype or "*") -> {(etype, eid): cost nano}
        "sessions": {},  # (project, session_id) -> {field: value}
        "session_index": {},  # (project,) / (project, etype) / (project, etype, eid) -> {sid: started_ms}
        "dedupe": {},  # project -> set of the event ids counted (in whichever record-time slot)
        "projects": set(),
        "entity_types": {},  # project -> set
        "tag_keys": {},  # project -> set
    }


def expected_state(raw_events: list[dict[str, Any]], price_of: PriceOf | None = None) -> dict[str, dict]:
    """What Redis must hold after the aggregator consumed `raw_events` (valid ones only),
    events without `cost` priced by `price_of` where it says."""
    state = empty_state()
    cells: dict[tuple, int] = {}
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    entities_of_session: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for ev in unique_events(raw_events, price_of):
        bucket_of = labels(ev.ts_ms)
        tag_set = frozenset(ev.tags.items())
        entity = (ev.entity_type, ev.entity_id)
        model = (ev.model, ev.provider)
        members: dict[str, list[tuple]] = {
            "t": [()],
            "e": [entity],
            "m": [model],
            "g": [(k, v) for k, v in ev.tags.items()],
            "em": [entity + model],
            "x": [(*entity, *model, tag_set)],
            "ps": [(*model, ev.price_source)],
        }
        counters = {
            "e": 1,
            "c": ev.cost_nano,
            "i": ev.input_tokens,
            "o": ev.output_tokens,
            "l": ev.latency_us or 0,
            "n": 0 if ev.latency_us is None else 1,
        }
        quarter = ev.ts_ms % 3_600_000 // 900_000
        for dim, dim_members in members.items():
            for gran in KEPT[dim] + ((f"h{quarter}",) if quarter else ()):
                for member in dim_members:
                    for metric, value in counters.items():
                        where = (ev.project, dim, gran, bucket_of[gran[0]], member, metric)
                        cells[where] = cells.get(where, 0) + value
        for gran in (DAY, MONTH, YEAR):
            for board in (ev.entity_type, "*"):
                scores = state["leaderboards"].setdefault((ev.project, gran, bucket_of[gran], board), {})
                scores[entity] = scores.get(entity, 0) + ev.cost_nano
        state["dedupe"].setdefault(ev.project, set()).add(ev.event_id)
        state["projects"].add(ev.project)
        state["entity_types"].setdefault(ev.project, set()).add(ev.entity_type)
        if ev.tags:
            state["tag_keys"].setdefault(ev.project, set()).update(ev.tags)
        if ev.session_id is not None:
            s = sessions.get((ev.project, ev.session_id))
            if s is None:
                s = sessions[(ev.project, ev.session_id)] = {
                    "entity_type": ev.entity_type,
                    "entity_id": ev.entity_id,
                    "started_ms": ev.ts_ms,
                    "ended_ms": ev.ts_ms,
                    "turns": 0,
                    "cost": 0,
                    "input": 0,
                    "output": 0,
                }
            if ev.ts_ms < s["started_ms"]:
                s["started_ms"] = ev.ts_ms
                s["entity_type"], s["entity_id"] = ev.entity_type, ev.entity_id
            s["ended_ms"] = max(s["ended_ms"], ev.ts_ms)
            s["turns"] += 1
            s["cost"] += ev.cost_nano
            s["input"] += ev.input_tokens
            s["output"] += ev.output_tokens
            entities_of_session.setdefault((ev.project, ev.session_id), set()).add((ev.entity_type, ev.entity_id))
    for key, entities in entities_of_session.items():
        if len(entities) > 1:
            sessions[key]["shared"] = 1  # turns of several entities: hidden from scoped keys
    state["cells"] = {k: v for k, v in cells.items() if v != 0}
    state["sessions"] = sessions
    for (project, sid), s in sessions.items():
        for index in ((project,), (project, s["entity_type"]), (project, s["entity_type"], s["entity_id"])):
            state["session_index"].setdefault(index, {})[sid] = s["started_ms"]
    return state


def ambiguous_sessions(raw_events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Sessions whose earliest instant has turns of different entities (order would decide)."""
    earliest: dict[tuple[str, str], tuple[int, set[tuple[str, str]]]] = {}
    for ev in unique_events(raw_events):
        if ev.session_id is None:
            continue
        key = (ev.project, ev.session_id)
        current = earliest.get(key)
        if current is None or ev.ts_ms < current[0]:
            earliest[key] = (ev.ts_ms, {(ev.entity_type, ev.entity_id)})
        elif ev.ts_ms == current[0]:
            current[1].add((ev.entity_type, ev.entity_id))
    return {key for key, (_, entities) in earliest.items() if len(entities) > 1}


def _member(dim: str, text: str) -> tuple:
    if dim == "t":
        assert text == "", text
        return ()
    parts = text.split(US)
    if dim == "x":
        etype, eid, model, provider, tag_text = parts
        pairs = frozenset(tuple(p.split(RS, 1)) for p in tag_text.split(GS)) if tag_text else frozenset()
        return (etype, eid, model, provider, pairs)
    return tuple(parts)


async def read_state(redis: Any, prefix: str) -> dict[str, dict]:
    """Everything the aggregates hold under `prefix`, in expected_state's shape.

    `redis` is an async client with decode_responses=True. Bookkeeping keys
    (offsets, halted partitions) are skipped; any key this reader does not
    know makes it fail, so a stray write is caught.
    """
    state = empty_state()
    version_days: dict[str, set[str]] = {}
    root = f"{prefix}:v2:"
    keys = sorted([key async for key in redis.scan_iter(match=f"{root}*", count=1000)])
    for key in keys:
        rest = key[len(root) :]
        if rest.startswith(("offsets:", "halted:", "pricemarks:")):
            continue  # bookkeeping: offsets, halts, which price book priced which offsets
        if rest.startswith("prices:"):
            continue  # the price overrides: configuration, not aggregates
        if rest == "generation":
            continue  # `infraprism rebuild`'s count of rebuilds: bookkeeping for the API cache
        if rest == "layout":
            continue  # the mark that hours hold their quarter-hour fields (KeyLayout.layout_marker)
        if rest == "projects":
            state["projects"] = set(await redis.smembers(key))
            continue
        project, _, remainder = rest.partition(":")
        kind, _, detail = remainder.partition(":")
        if kind == "r":
            dim, gran, bucket = detail.split(":")
            # A field is a member; its value the six counters in METRIC_CODES order,
            # space-separated decimal integers (docs/redis-keys.md).
            for member, packed in (await redis.hgetall(key)).items():
                field_gran = gran
                if gran == HOUR and member[-2:-1] == QS:
                    assert member[-1] in "123", (key, member)
                    member, field_gran = member[:-2], HOUR + member[-1]
                counters = packed.split(" ")
                assert len(counters) == len(METRIC_CODES), (key, packed)
                assert all(c.isdigit() for c in counters), (key, packed)
                for code, counter in zip(METRIC_CODES, counters, strict=True):
                    if int(counter):
                        state["cells"][(project, dim, field_gran, bucket, _member(dim, member), code)] = int(counter)
        elif kind == "lb":
            gran, bucket, board = detail.split(":", 2)
            scores = {
                tuple(member.split(US)): score for member, score in await redis.zrange(key, 0, -1, withscores=True)
            }
            # Scores are doubles; the costs here are integers far below 2**53, so exact.
            state["leaderboards"][(project, gran, bucket, board)] = {m: int(s) for m, s in scores.items()}
        elif kind == "s":
            raw = await redis.hgetall(key)
            state["sessions"][(project, detail)] = {
                name: (value if name in ("entity_type", "entity_id") else int(value)) for name, value in raw.items()
            }
        elif kind in ("si", "sit"):
            index = (project,) if kind == "si" and not detail else (project, *detail.split(US))
            if kind == "si" and detail:
                assert len(index) == 3, key
            entries = await redis.zrange(key, 0, -1, withscores=True)
            if entries:
                state["session_index"][index] = {sid: int(score) for sid, score in entries}
        elif kind == "dd":
            state["dedupe"].setdefault(project, set()).update(await redis.smembers(key))
        elif kind == "etypes":
            state["entity_types"][project] = set(await redis.smembers(key))
        elif kind == "tagkeys":
            state["tag_keys"][project] = set(await redis.smembers(key))
        elif kind == "reprice":
            continue  # `infraprism reprice`'s job, progress and history: bookkeeping
        elif kind == "settings":
            continue  # the project's settings (its zone): configuration
        elif kind == "ver":
            # The API cache's data version: a count of applied batches, not an aggregate.
            assert int(await redis.get(key)) >= 1, key
        elif kind == "bv":
            # The API caches' versions, counts of batches: one per rollup or leaderboard key,
            # and one per day and month with events (checked against the days of the cells below).
            versions = await redis.hgetall(key)
            assert all(
                field.startswith(("r:", "lb:", "day:", "month:")) and int(v) >= 1 for field, v in versions.items()
            ), key
            version_days[project] = {field for field in versions if field.startswith(("day:", "month:"))}
        else:
            raise AssertionError(f"unexpected key in the aggregates: {key!r}")
    for project, fields in version_days.items():
        event_days = [
            bucket
            for owner, dim, gran, bucket, _, metric in state["cells"]
            if (owner, dim, gran, metric) == (project, "t", DAY, "e")
        ]
        assert fields == {f"day:{day}" for day in event_days} | {f"month:{day[:6]}" for day in event_days}, project
    return state


def diff(expected: dict[str, dict], actual: dict[str, dict], limit: int = 20) -> str:
    """A readable summary of where two states differ (for assertion messages)."""
    lines: list[str] = []
    for section in expected:
        want, got = expected[section], actual.get(section)
        if want == got:
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            for key in sorted(set(want) | set(got), key=repr)[:10_000]:
                if want.get(key) != got.get(key):
                    lines.append(f"{section} {key!r}: expected {want.get(key)!r}, got {got.get(key)!r}")
                    if len(lines) >= limit:
                        return "\n".join(lines)
        else:
            lines.append(f"{section}: expected {want!r}, got {got!r}")
    return "\n".join(lines) or "no difference"

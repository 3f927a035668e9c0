"""Differential tests: the API against a reference computed from the raw events by independent code.

Hypothesis draws an event stream (two projects, tags with ':' in values,
zero costs, missing latencies, sessions, timestamps around month and year
ends), writes it through BatchRollup + RollupStore into the real Redis, then
draws requests (every endpoint, filters, groupings, ranges including empty
ones) and compares each JSON answer with `reference()`, which only looks at
the event list: no planner, no rollups, no keys.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from infraprism.api import csv_export
from infraprism.api.app import create_app
from infraprism.api.params import parse_group_by
from infraprism.settings import Settings
from infraprism.stores import apikeys
from tests.api.helpers import load_events

PROJECT = "p-main"
OTHER = "p-other"
DAY_MS = 86_400_000
T0 = datetime(2024, 12, 20, tzinfo=UTC)
T1 = datetime(2025, 4, 10, tzinfo=UTC)  # past the DST changes of March and April
# Two more windows of events: 29 February, and the autumn changes of the north (EU October 27,
# US November 3) with the southern spring (Sydney and Lord Howe, October 6).
WINDOWS = [
    (datetime(2024, 2, 26, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC)),
    (datetime(2024, 10, 3, tzinfo=UTC), datetime(2024, 11, 5, tzinfo=UTC)),
    (T0, T1),
]
ENTITIES = [("customer", "acme"), ("customer", "globex"), ("team", "a:b"), ("team", "acme")]
MODELS = [("gpt-4o", "openai"), ("claude-3", "anthropic"), ("gpt-4o", "azure")]
TAG_KEYS = ["env", "feature"]
TAG_VALUES = ["prod", "a:b", "x:y:z"]
DAYS = (
    [date(2024, 2, 25) + timedelta(days=n) for n in range(9)]  # 2024-02-25 .. 2024-03-04
    + [date(2024, 10, 2) + timedelta(days=n) for n in range(35)]  # 2024-10-02 .. 2024-11-05
    + [date(2024, 12, 15) + timedelta(days=n) for n in range(125)]  # 2024-12-15 .. 2025-04-18
)
# UTC, whole-hour zones with DST in either hemisphere, and the half- and quarter-hour ones.
ZONES = [
    "UTC",
    "America/Los_Angeles",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Australia/Sydney",
]
QUARTER_MS = 900_000


# --- the event stream --------------------------------------------------------------------------

event_strategy = st.fixed_dictionaries(
    {
        "project": st.sampled_from([PROJECT, PROJECT, PROJECT, OTHER]),
        "entity": st.sampled_from(ENTITIES),
        "model": st.sampled_from(MODELS),
        "ts_ms": st.sampled_from(WINDOWS).flatmap(
            lambda window: st.integers(int(window[0].timestamp() * 1000), int(window[1].timestamp() * 1000))
        ),
        "cost_nano": st.one_of(st.just(0), st.sampled_from([1_000_000, 250_000_000]), st.integers(1, 5_000_000_000)),
        "input": st.integers(0, 10_000),
        "output": st.integers(0, 10_000),
        "latency_us": st.one_of(st.none(), st.integers(0, 5_000_000)),
        "session": st.one_of(st.none(), st.integers(0, 2)),
        "tags": st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES), max_size=2),
    }
)


def to_wire(index: int, e: dict[str, Any]) -> dict[str, Any]:
    etype, eid = e["entity"]
    model, provider = e["model"]
    wire: dict[str, Any] = {
        "event_id": f"ev-{index}",
        "timestamp": e["ts_ms"],
        "project_id": e["project"],
        "entity_type": etype,
        "entity_id": eid,
        "model": model,
        "provider": provider,
        "input_tokens": e["input"],
        "output_tokens": e["output"],
        "cost": e["cost_nano"] / 1e9,
    }
    if e["latency_us"] is not None:
        wire["latency_ms"] = e["latency_us"] / 1000
    if e["session"] is not None:
        wire["session_id"] = f"s-{etype}-{eid}-{e['session']}"
    if e["tags"]:
        wire["tags"] = e["tags"]
    return wire


# --- the reference -----------------------------------------------------------------------------


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, ties to even (denominator > 0)."""
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def usd(nano: int) -> float:
    return round_half_even(nano, 1000) / 1_000_000


def one_decimal(numerator: int, denominator: int) -> float | None:
    if denominator == 0:
        return None
    return round_half_even(numerator * 10, denominator) / 10


def zone_of(p: dict[str, Any]) -> ZoneInfo:
    return ZoneInfo(p.get("tz", "UTC"))


def local(ts_ms: int, tz: ZoneInfo) -> datetime:
    """The instant's local wall time, by the standard library alone."""
    return datetime.fromtimestamp(ts_ms // 1000, tz=UTC).replace(microsecond=ts_ms % 1000 * 1000).astimezone(tz)


def day_of(e: dict[str, Any], tz: ZoneInfo) -> date:
    return local(e["ts_ms"], tz).date()


def in_range(e: dict[str, Any], start: date, end: date, tz: ZoneInfo) -> bool:
    return e["project"] == PROJECT and start <= day_of(e, tz) <= end


def label(moment: datetime) -> str:
    """RFC 3339 with the local offset, Z in the zone UTC."""
    text = moment.replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z") if moment.tzinfo == ZoneInfo("UTC") else text


def passes(e: dict[str, Any], params: dict[str, Any]) -> bool:
    if "entity_type" in params and e["entity"][0] != params["entity_type"]:
        return False
    if "entity_id" in params and e["entity"][1] != params["entity_id"]:
        return False
    if "model" in params and e["model"][0] != params["model"]:
        return False
    if "tags" in params:
        for item in params["tags"].split(","):
            key, value = item.split(":", 1)
            if e["tags"].get(key) != value:
                return False
    return True


def row_metrics(events: list[dict[str, Any]]) -> dict[str, Any]:
    with_latency = [e["latency_us"] for e in events if e["latency_us"] is not None]
    return {
        "total_cost": usd(sum(e["cost_nano"] for e in events)),
        "total_events": len(events),
        "total_input_tokens": sum(e["input"] for e in events),
        "total_output_tokens": sum(e["output"] for e in events),
        "avg_latency_ms": one_decimal(sum(with_latency), 1000 * len(with_latency)),
    }


def dimension_sorted(groups: dict[tuple[Any, ...], list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        cost = sum(e["cost_nano"] for e in groups[key])
        return (-cost, *[(v is None, v or "") for v in key])

    return sorted(groups, key=order)


def ref_costs(events: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    start, end = date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
    tz = zone_of(p)
    selected = [e for e in events if in_range(e, start, end, tz) and passes(e, p)]
    group_by = p.get("group_by")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    rows: list[dict[str, Any]]
    if group_by is None:
        rows = [row_metrics(selected)]
    elif group_by in ("day", "week", "month"):
        for e in selected:
            d = day_of(e, tz)
            if group_by == "week":
                d = d - timedelta(days=d.weekday())
            elif group_by == "month":
                d = d.replace(day=1)
            groups[(d.isoformat(),)].append(e)
        rows = [{"period": k[0], **row_metrics(groups[k])} for k in sorted(groups)]
    else:
        for e in selected:
            if group_by == "entity":
                groups[e["entity"]].append(e)
            elif group_by == "model":
                groups[e["model"]].append(e)
            else:
                groups[(e["tags"].get(group_by[len("tags.") :]),)].append(e)
        rows = []
        for k in dimension_sorted(groups):
            if group_by == "entity":
                ident = {"entity_type": k[0], "entity_id": k[1]}
            elif group_by == "model":
                ident = {"model": k[0], "provider": k[1]}
            else:
                ident = {"tag_key": group_by[len("tags.") :], "tag_value": k[0]}
            rows.append({**ident, **row_metrics(groups[k])})
    return {
        "data": rows,
        "summary": {
            "total_cost": usd(sum(e["cost_nano"] for e in selected)),
            "total_events": len(selected),
            "period": {"start": p["start_date"], "end": p["end_date"], "tz": p.get("tz", "UTC")},
        },
    }


def ref_timeseries(events: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    """Buckets found by walking the range a quarter hour at a time (every offset of these
    zones is a whole number of quarter hours): an hour bucket is a run of local (date, hour,
    offset), so a repeated hour is two buckets; a day, week or month is keyed by its first
    local day and labelled with that day's local midnight."""
    start, end = date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
    interval = p.get("interval", "day")
    tz = zone_of(p)
    selected = [e for e in events if in_range(e, start, end, tz) and passes(e, p)]

    def key(moment: datetime) -> tuple[Any, ...]:
        if interval == "hour":
            return (moment.date(), moment.hour, moment.utcoffset())
        day = moment.date()
        if interval == "week":
            day -= timedelta(days=day.weekday())
        elif interval == "month":
            day = day.replace(day=1)
        return (day,)

    labels: dict[tuple[Any, ...], str] = {}
    at = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000) - DAY_MS
    stop = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000) + 2 * DAY_MS
    while at < stop:
        moment = local(at, tz)
        if start <= moment.date() <= end:
            k = key(moment)
            if k not in labels:
                if interval == "hour":
                    labels[k] = label(moment)
                else:
                    first = k[0]
                    labels[k] = label(datetime(first.year, first.month, first.day, tzinfo=tz))
        at += QUARTER_MS
    sums: dict[tuple[Any, ...], list[int]] = {k: [0, 0] for k in labels}
    for e in selected:
        cell = sums[key(local(e["ts_ms"], tz))]
        cell[0] += e["cost_nano"]
        cell[1] += 1
    return {
        "data": [{"timestamp": labels[k], "cost": usd(sums[k][0]), "events": sums[k][1]} for k in labels],
        "interval": interval,
        "tz": p.get("tz", "UTC"),
    }


def ref_models(events: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    start, end = date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
    selected = [e for e in events if in_range(e, start, end, zone_of(p)) and passes(e, p)]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for e in selected:
        groups[e["model"]].append(e)
    total = sum(e["cost_nano"] for e in selected)
    rows = []
    for k in dimension_sorted(groups):
        cost = sum(e["cost_nano"] for e in groups[k])
        share = one_decimal(cost * 100, total)
        rows.append(
            {
                "model": k[0],
                "provider": k[1],
                **row_metrics(groups[k]),
                "percentage_of_total": 0.0 if share is None else share,
                # Every generated event supplies its cost.
                "price_source": "supplied",
            }
        )
    return {"data": rows}


def ref_top(events: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    start, end = date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
    selected = [e for e in events if in_range(e, start, end, zone_of(p)) and passes(e, p)]
    costs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in selected:
        costs[e["entity"]][0] += e["cost_nano"]
        costs[e["entity"]][1] += 1
    sign = 1 if p.get("order") == "asc" else -1
    ordered = sorted(costs, key=lambda k: (sign * costs[k][0], k[0], k[1]))[: p.get("limit", 10)]
    return {
        "data": [
            {
                "entity_type": k[0],
                "entity_id": k[1],
                "total_cost": usd(costs[k][0]),
                "total_events": costs[k][1],
                "rank": rank,
            }
            for rank, k in enumerate(ordered, start=1)
        ]
    }


def ref_compare(events: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    def totals(which: str) -> tuple[int, int]:
        s = date.fromisoformat(p[f"{which}_start"])
        e_ = date.fromisoformat(p[f"{which}_end"])
        sel = [e for e in events if in_range(e, s, e_, zone_of(p)) and passes(e, p)]
        return sum(e["cost_nano"] for e in sel), len(sel)

    c1, n1 = totals("period1")
    c2, n2 = totals("period2")
    return {
        "period1": {
            "start": p["period1_start"],
            "end": p["period1_end"],
            "tz": p.get("tz", "UTC"),
            "total_cost": usd(c1),
            "total_events": n1,
        },
        "period2": {
            "start": p["period2_start"],
            "end": p["period2_end"],
            "tz": p.get("tz", "UTC"),
            "total_cost": usd(c2),
            "total_events": n2,
        },
        "changes": {
            "cost_change": usd(c1 - c2),
            "cost_change_percent": one_decimal((c1 - c2) * 100, c2),
            "events_change": n1 - n2,
            "events_change_percent": one_decimal((n1 - n2) * 100, n2),
        },
    }


def ref_sessions(events: list[dict[str, Any]], wires: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    start, end = date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
    sessions: dict[str, dict[str, Any]] = {}
    for e, wire in zip(events, wires, strict=True):
        sid = wire.get("session_id")
        if sid is None or e["project"] != PROJECT:
            continue
        s = sessions.setdefault(
            sid,
            {
                "entity": e["entity"],
                "start": e["ts_ms"],
                "end": e["ts_ms"],
                "turns": 0,
                "cost": 0,
                "tokens": 0,
            },
        )
        s["start"] = min(s["start"], e["ts_ms"])
        s["end"] = max(s["end"], e["ts_ms"])
        s["turns"] += 1
        s["cost"] += e["cost_nano"]
        s["tokens"] += e["input"] + e["output"]
    tz = zone_of(p)
    matching = [
        (s["start"], sid)
        for sid, s in sessions.items()
        if start <= local(s["start"], tz).date() <= end
        and p.get("entity_type", s["entity"][0]) == s["entity"][0]
        and p.get("entity_id", s["entity"][1]) == s["entity"][1]
    ]
    matching.sort(reverse=True)

    def iso(ms: int) -> str:
        text = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")

    rows = []
    for _, sid in matching[: p.get("limit", 100)]:
        s = sessions[sid]
        rows.append(
            {
                "session_id": sid,
                "entity_type": s["entity"][0],
                "entity_id": s["entity"][1],
                "started_at": iso(s["start"]),
                "ended_at": iso(s["end"]),
                "turn_count": s["turns"],
                "total_cost": usd(s["cost"]),
                "total_tokens": s["tokens"],
            }
        )
    count = len(matching)
    total_cost = sum(sessions[sid]["cost"] for _, sid in matching)
    return {
        "data": rows,
        "summary": {
            "total_sessions": count,
            "avg_turns_per_session": one_decimal(sum(sessions[sid]["turns"] for _, sid in matching), count),
            "avg_cost_per_session": None if count == 0 else round_half_even(total_cost, count * 1000) / 1_000_000,
        },
    }


# --- the requests ------------------------------------------------------------------------------


@st.composite
def date_range(draw: st.DrawFn, prefix: str = "") -> dict[str, str]:
    a, b = sorted([draw(st.sampled_from(DAYS)), draw(st.sampled_from(DAYS))])
    return {
        f"{prefix}start_date" if not prefix else f"{prefix}_start": a.isoformat(),
        f"{prefix}end_date" if not prefix else f"{prefix}_end": b.isoformat(),
    }


def optional(name: str, values: list[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), st.sampled_from(values).map(lambda v: {name: v}))


entity_filters = st.tuples(
    optional("entity_type", ["customer", "team", "nobody"]),
    optional("entity_id", ["acme", "globex", "a:b"]),
).map(lambda parts: {**parts[0], **parts[1]})

tag_filter = st.lists(st.tuples(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES)), min_size=1, max_size=2).map(
    lambda pairs: {"tags": ",".join(f"{k}:{v}" for k, v in pairs)}
)


@st.composite
def request_strategy(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    endpoint = draw(st.sampled_from(["costs", "costs", "costs", "timeseries", "models", "top", "compare", "sessions"]))
    params: dict[str, Any] = draw(optional("tz", ZONES))
    if endpoint == "compare":
        params.update(draw(date_range("period1")))
        params.update(draw(date_range("period2")))
        params.update(draw(entity_filters))
        return "/v1/analytics/compare", params
    params.update(draw(date_range()))
    if endpoint == "costs":
        params.update(draw(entity_filters))
        params.update(draw(optional("model", ["gpt-4o", "claude-3"])))
        params.update(draw(st.one_of(st.just({}), tag_filter)))
        params.update(
            draw(
                optional(
                    "group_by",
                    ["entity", "model", "day", "week", "month", "tags.env", "tags.feature"],
                )
            )
        )
        return "/v1/analytics/costs", params
    if endpoint == "timeseries":
        params.update(draw(entity_filters))
        params.update(draw(optional("interval", ["hour", "day", "week", "month"])))
        if params.get("interval") == "hour":
            # Keep hourly series short: at most 3 days.
            start = date.fromisoformat(params["start_date"])
            params["end_date"] = min(date.fromisoformat(params["end_date"]), start + timedelta(days=2)).isoformat()
        return "/v1/analytics/costs/timeseries", params
    if endpoint == "models":
        params.update(draw(entity_filters))
        return "/v1/analytics/models", params
    if endpoint == "top":
        params.update(draw(optional("entity_type", ["customer", "team"])))
        params.update(draw(optional("limit", [1, 2, 3, 100])))
        params.update(draw(optional("order", ["asc", "desc"])))
        return "/v1/analytics/entities/top", params
    params.update(draw(entity_filters))
    params.update(draw(optional("limit", [1, 2, 1000])))
    return "/v1/analytics/sessions", params


def reference(
    path: str, events: list[dict[str, Any]], wires: list[dict[str, Any]], params: dict[str, Any]
) -> dict[str, Any]:
    if path.endswith("/costs"):
        return ref_costs(events, params)
    if path.endswith("/timeseries"):
        return ref_timeseries(events, params)
    if path.endswith("/models"):
        return ref_models(events, params)
    if path.endswith("/top"):
        return ref_top(events, params)
    if path.endswith("/compare"):
        return ref_compare(events, params)
    return ref_sessions(events, wires, params)


async def _run(
    settings: Settings,
    events: list[dict[str, Any]],
    requests: list[tuple[str, dict[str, Any]]],
    batches: int,
) -> None:
    prefix = f"d{uuid.uuid4().hex[:10]}"
    local = settings.model_copy(update={"key_prefix": prefix})
    wires = [to_wire(i, e) for i, e in enumerate(events)]
    redis = aioredis.Redis.from_url(local.redis_dsn(), decode_responses=True)
    try:
        await load_events(redis, local, wires, batches=batches)
        key = await asyncio.to_thread(apikeys.create_key, local, PROJECT)
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://api",
                headers={"Authorization": f"Bearer {key[1]}"},
            ) as client:
                for path, params in requests:
                    response = await client.get(path, params=params)
                    assert response.status_code == 200, (path, params, response.text)
                    expected = reference(path, events, wires, params)
                    assert response.json() == expected, (path, params)
    finally:
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()


@hsettings(
    max_examples=int(os.environ.get("INFRAPRISM_DIFFERENTIAL_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    events=st.lists(event_strategy, min_size=3, max_size=80),
    requests=st.lists(request_strategy(), min_size=1, max_size=10),
    batches=st.integers(1, 3),
)
def test_api_matches_reference(settings: Settings, events, requests, batches):
    asyncio.run(_run(settings, events, requests, batches))


_ONE_EVENT: dict[str, Any] = {
    "project": PROJECT,
    "entity": ENTITIES[0],
    "model": MODELS[0],
    "ts_ms": int(T0.timestamp() * 1000),
    "cost_nano": 1_500_000_000,
    "input": 1,
    "output": 2,
    "latency_us": None,
    "session": None,
    "tags": {},
}


def test_reference_detects_a_wrong_total(settings: Settings):
    """The comparison can fail: a stream whose reference is tampered with does not match."""
    event = dict(_ONE_EVENT)
    wire = to_wire(0, event)
    params = {"start_date": "2024-12-20", "end_date": "2024-12-20"}
    assert ref_costs([event], params)["summary"]["total_cost"] == 1.5
    assert ref_costs([event], params) != ref_costs([{**event, "cost_nano": 1}], params)
    assert wire["cost"] == 1.5


# --- a scoped key: the same answers, as if the project held only its entity's events -----------


def _forbidden_parameter(scope: tuple[str, str], params: dict[str, Any]) -> str | None:
    """The parameter of `params` that names an entity other than `scope`, if any."""
    if params.get("entity_type", scope[0]) != scope[0]:
        return "entity_type"
    if params.get("entity_id", scope[1]) != scope[1]:
        return "entity_id"
    return None


def _csv_columns(path: str, params: dict[str, Any]) -> list[str]:
    if path.endswith("/costs"):
        return csv_export.costs_columns(parse_group_by(params.get("group_by")).kind)
    if path.endswith("/timeseries"):
        return csv_export.TIMESERIES_COLUMNS
    if path.endswith("/models"):
        return csv_export.MODELS_COLUMNS
    if path.endswith("/top"):
        return csv_export.TOP_ENTITIES_COLUMNS
    if path.endswith("/compare"):
        return csv_export.COMPARE_COLUMNS
    return csv_export.SESSION_COLUMNS


async def _run_scoped(
    settings: Settings,
    events: list[dict[str, Any]],
    requests: list[tuple[tuple[str, dict[str, Any]], bool]],
    scope: tuple[str, str],
) -> None:
    prefix = f"s{uuid.uuid4().hex[:10]}"
    local = settings.model_copy(update={"key_prefix": prefix})
    wires = [to_wire(i, e) for i, e in enumerate(events)]
    # The reference sees the entity's events alone: the project as the scoped key must see it.
    kept = [(e, w) for e, w in zip(events, wires, strict=True) if e["entity"] == scope]
    own_events, own_wires = [e for e, _ in kept], [w for _, w in kept]
    redis = aioredis.Redis.from_url(local.redis_dsn(), decode_responses=True)
    try:
        await load_events(redis, local, wires)
        _, key = await asyncio.to_thread(apikeys.create_key, local, PROJECT, None, apikeys.Scope(*scope))
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                for (path, params), as_csv in requests:
                    query = {**params, "format": "csv"} if as_csv else params
                    response = await client.get(path, params=query)
                    forbidden = _forbidden_parameter(scope, params)
                    if forbidden is not None:
                        assert response.status_code == 403, (path, query, response.text)
                        error = response.json()["error"]
                        assert error["code"] == "forbidden_scope"
                        assert error["message"].startswith(f"{forbidden}: "), error
                        continue
                    assert response.status_code == 200, (path, query, response.text)
                    expected = reference(path, own_events, own_wires, params)
                    if as_csv:
                        data = expected.get("data", expected)
                        rows = data if isinstance(data, list) else [data]
                        assert response.text == csv_export.render(_csv_columns(path, params), rows), (path, query)
                    else:
                        assert response.json() == expected, (path, query)
    finally:
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()


@hsettings(
    max_examples=max(10, int(os.environ.get("INFRAPRISM_DIFFERENTIAL_EXAMPLES", "100")) // 2),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    events=st.lists(event_strategy, min_size=3, max_size=80),
    requests=st.lists(st.tuples(request_strategy(), st.booleans()), min_size=1, max_size=10),
    scope=st.sampled_from(ENTITIES),
)
def test_a_scoped_key_matches_the_reference_of_its_entity_alone(settings: Settings, events, requests, scope):
    """Every endpoint, parameter and format: the answer of the entity's events alone, or, for a
    parameter naming another entity, the documented 403. Equal to the restricted reference,
    no answer can hold another entity's id, cost or session."""
    asyncio.run(_run_scoped(settings, events, requests, scope))


def test_the_restricted_reference_differs_from_the_whole_one():
    """The scoped comparison can fail: another entity's event changes the reference's answer."""
    ours = {**_ONE_EVENT, "entity": ENTITIES[0]}
    theirs = {**_ONE_EVENT, "entity": ENTITIES[1]}
    params = {"start_date": "2024-12-20", "end_date": "2024-12-20"}
    assert ref_costs([ours], params) != ref_costs([ours, theirs], params)
    assert _forbidden_parameter(ENTITIES[0], {"entity_id": "globex"}) == "entity_id"
    assert _forbidden_parameter(ENTITIES[0], {"entity_type": "customer", "entity_id": "acme"}) is None

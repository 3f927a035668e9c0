"""Read side: executes the planner's plans against Redis and shapes exact results.

Every query is one pipelined round trip where the plan allows it (two for
`/entities/top` and `/sessions`, whose second read depends on the first).
Counters are summed as Python ints (exact nano-dollars, tokens, microseconds)
and turned into USD / rounded means only in the `shape_*` helpers.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from api.cache import ResponseCache
from api.planner import (
    Filters,
    GroupBy,
    Grouping,
    Interval,
    LeaderboardPlan,
    Plan,
    group_of,
    matches,
    member_info,
    plan_costs,
    plan_leaderboard,
    plan_timeseries,
    session_window_ms,
)
from infraprism import anomaly_store
from infraprism.core.keys import (
    COST,
    EVENTS,
    INPUT,
    LATENCY_COUNT,
    LATENCY_SUM,
    OUTPUT,
    SEP,
    Dimension,
    KeyLayout,
    unpack_cell,
)
from infraprism.core.money import NANO_PER_USD, div_round_half_even, nano_to_usd

log = logging.getLogger(__name__)


Cell = list[int]
Accumulated = dict[tuple[str | None, tuple[str | None, ...]], Cell]
_UNSEEN: Any = object()

# Reads the same fields from many hashes in one command (EVALSHA_RO: it can only read).
# Redis turns the false of a missing field into a nil reply, so Python sees None.
HMGET_MANY_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
"""
HMGET_MANY_SHA = hashlib.sha1(HMGET_MANY_LUA.encode()).hexdigest()  # noqa: S324 - Redis script id

# The candidates for the first ARGV[1] places of the signed union of leaderboards KEYS
# (ARGV[3..] their weights, 1 or -1), ARGV[2] "desc" or "asc", as a flat member, score, ...
# list: the first places plus every member tied with the last of them (the exact order is
# settled later from integer counters). Only these travel, not the whole union (10,000
# entities for a year). A member counted only in subtracted boards scores 0 with no events
# in the range; the caller drops it, so ascending keeps every score <= 0 *and* the first
# places after them, and descending reaches zero scores only when it takes all of them.
TOP_CANDIDATES_LUA = """
local args = {'ZUNION', #KEYS}
for _, key in ipairs(KEYS) do args[#args + 1] = key end
args[#args + 1] = 'WEIGHTS'
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'WITHSCORES'
local flat = redis.call(unpack(args))
local n = #flat / 2
local limit = tonumber(ARGV[1])
local out = {}
if ARGV[2] == 'desc' then
  if n <= limit then return flat end
  local first = n - limit + 1
  local boundary = tonumber(flat[2 * first])
  while first > 1 and tonumber(flat[2 * (first - 1)]) == boundary do first = first - 1 end
  for i = first, n do
    out[#out + 1] = flat[2 * i - 1]
    out[#out + 1] = flat[2 * i]
  end
else
  local zeros = 0
  while zeros < n and tonumber(flat[2 * (zeros + 1)]) <= 0 do zeros = zeros + 1 end
  local last = math.min(n, zeros + limit)
  if last == 0 then return out end
  local boundary = tonumber(flat[2 * last])
  while last < n and tonumber(flat[2 * (last + 1)]) == boundary do last = last + 1 end
  for i = 1, last do
    out[#out + 1] = flat[2 * i - 1]
    out[#out + 1] = flat[2 * i]
  end
end
return out
"""
TOP_CANDIDATES_SHA = hashlib.sha1(TOP_CANDIDATES_LUA.encode()).hexdigest()  # noqa: S324 - Redis script id


# --- exact arithmetic for the response ---------------------------------------------------------


def ratio(numerator: int, denominator: int, decimals: int = 1) -> float | None:
    """numerator / denominator rounded half-even to `decimals` places; None when the denominator is 0.

    Exact: the rounding is done on integers, and int / int gives the nearest double.
    """
    if denominator == 0:
        return None
    scale = 10**decimals
    return div_round_half_even(numerator * scale, denominator) / scale


def avg_latency_ms(cell: Cell) -> float | None:
    """Mean latency in ms (sums are microseconds), 1 decimal; None when no event reported one."""
    return ratio(cell[LATENCY_SUM], cell[LATENCY_COUNT] * 1000)


def metrics(cell: Cell, row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The five metric fields of a row, added to `row` (after its group fields) or to a new dict."""
    if row is None:
        row = {}
    row["total_cost"] = nano_to_usd(cell[COST])
    row["total_events"] = cell[EVENTS]
    row["total_input_tokens"] = cell[INPUT]
    row["total_output_tokens"] = cell[OUTPUT]
    row["avg_latency_ms"] = avg_latency_ms(cell)
    return row


def iso_ms(ts_ms: int) -> str:
    """Epoch ms -> RFC 3339 UTC with Z; milliseconds shown only when non-zero."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if ts_ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- executing plans ---------------------------------------------------------------------------


def _queue(pipe: Any, layout: KeyLayout, project: str, plan: Plan) -> None:
    """Add a plan's reads to a pipeline: one script call reading one member from every bucket
    (a single command however many buckets: an hourly week is 168 hashes), or HGETALL per bucket."""
    keys = _plan_keys(layout, project, plan)
    if plan.member is not None:
        pipe.evalsha_ro(HMGET_MANY_SHA, len(keys), *keys, plan.member)
    else:
        for key in keys:
            pipe.hgetall(key)


def _replies_taken(plan: Plan) -> int:
    return 1 if plan.member is not None else len(plan.buckets)


def _total_plan(plan: Plan) -> Plan:
    return Plan(Dimension.TOTAL, plan.buckets, "", Filters(), Grouping())


def _collect(plan: Plan, replies: Sequence[Any]) -> Accumulated:
    """Sum a plan's replies into (period, group) -> six counters, keeping matching members only."""
    acc: Accumulated = {}
    if plan.member is not None:
        group = group_of(plan.grouping, member_info(plan.dimension, plan.member))
        (per_bucket,) = replies
        for read, (packed,) in zip(plan.buckets, per_bucket, strict=True):
            if packed is None:
                continue  # member absent from this bucket
            key = (read.period, group)
            cell = acc.get(key)
            if cell is None:
                cell = acc[key] = [0, 0, 0, 0, 0, 0]
            _add(cell, unpack_cell(packed), read.sign)
        # A member counted only in subtracted buckets had no events in the range.
        return {key: cell for key, cell in acc.items() if cell[EVENTS]}

    # One pass over every member of every bucket (the hot loop): classify each distinct
    # member once (cached), skip those the filters refuse before parsing them, sum the
    # rest per (period, group), adding or subtracting by the bucket's sign.
    classify = _classifier(plan)
    groups: dict[str, Any] = {}
    for read, cells_of_bucket in zip(plan.buckets, replies, strict=True):
        period, sign = read.period, read.sign
        for member, packed in cells_of_bucket.items():
            found: Any = groups.get(member, _UNSEEN)
            if found is _UNSEEN:
                found = groups[member] = classify(member)
            if found is None:
                continue
            counters = unpack_cell(packed)
            key = (period, found)
            cell = acc.get(key)
            if cell is None:
                acc[key] = counters if sign > 0 else [-value for value in counters]
            else:
                _add(cell, counters, sign)
    # A group counted only in subtracted buckets had no events in the range.
    return {key: cell for key, cell in acc.items() if cell[EVENTS]}


def _classifier(plan: Plan) -> Callable[[str], tuple[str | None, ...] | None]:
    """member -> its group key, or None when the plan's filters refuse it."""
    dimension, filters, grouping = plan.dimension, plan.filters, plan.grouping
    if dimension is Dimension.ENTITY and grouping.kind is GroupBy.ENTITY and not filters.tags and filters.model is None:
        # The common scan (costs by entity, maybe of one type): split the member, nothing else.
        wanted_type, wanted_id = filters.entity_type, filters.entity_id

        def entity_group(member: str) -> tuple[str | None, ...] | None:
            entity_type, entity_id = member.split(SEP, 1)
            if (wanted_type is not None and entity_type != wanted_type) or (
                wanted_id is not None and entity_id != wanted_id
            ):
                return None
            return (entity_type, entity_id)

        return entity_group
    only_keyed = plan.with_total  # TAG scan: keep the grouping key's members only

    def any_group(member: str) -> tuple[str | None, ...] | None:
        info = member_info(dimension, member)
        if not matches(filters, info):
            return None
        group = group_of(grouping, info)
        if only_keyed and group[0] is None:
            return None
        return group

    return any_group


async def run_plans(redis: aioredis.Redis, layout: KeyLayout, project: str, plans: Sequence[Plan]) -> list[Accumulated]:
    """Execute plans in one pipelined round trip; with_total plans get a TOTAL read appended."""
    expanded = _expanded(plans)
    replies = await _execute(redis, layout, project, expanded)
    results: list[Accumulated] = []
    position = 0
    for plan in expanded:
        count = _replies_taken(plan)
        results.append(_collect(plan, replies[position : position + count]))
        position += count
    out: list[Accumulated] = []
    index = 0
    for plan in plans:
        acc = results[index]
        index += 1
        if plan.with_total:
            _add_untagged(acc, results[index])
            index += 1
        out.append(acc)
    return out


async def _execute(redis: aioredis.Redis, layout: KeyLayout, project: str, plans: list[Plan]) -> list[Any]:
    for attempt in (1, 2):
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for plan in plans:
                    _queue(pipe, layout, project, plan)
                return await pipe.execute()  # type: ignore[no-any-return]
        except NoScriptError:
            # Redis restarted or its scripts were flushed since start-up: load it again, once.
            if attempt == 2:
                raise
            log.info("reloading the read script")
            await load_scripts(redis)
    raise AssertionError("unreachable")


async def load_scripts(redis: aioredis.Redis) -> None:
    """Load the read scripts; called by the app's lifespan and after a NOSCRIPT."""
    for text, sha in ((HMGET_MANY_LUA, HMGET_MANY_SHA), (TOP_CANDIDATES_LUA, TOP_CANDIDATES_SHA)):
        loaded = await redis.script_load(text)
        assert loaded == sha


async def _evalsha(redis: aioredis.Redis, sha: str, numkeys: int, *args: Any) -> Any:
    """EVALSHA_RO, loading the scripts again once if Redis lost them."""
    try:
        return await redis.evalsha_ro(sha, numkeys, *args)
    except NoScriptError:
        log.info("reloading the read scripts")
        await load_scripts(redis)
        return await redis.evalsha_ro(sha, numkeys, *args)


def _add_untagged(acc: Accumulated, totals: Accumulated) -> None:
    """group_by=tags.{key}: the row of cost lacking the tag is the total minus every tagged row."""
    for (period, _), total in totals.items():
        rest = list(total)
        for (tag_period, _group), cell in acc.items():
            if tag_period == period:
                for index in range(6):
                    rest[index] -= cell[index]
        if rest[EVENTS] > 0:
            acc[(period, (None,))] = rest


def _add(into: Cell, cell: Cell, sign: int = 1) -> None:
    """into += cell, or into -= cell for a subtracted bucket (sign -1)."""
    into[0] += sign * cell[0]
    into[1] += sign * cell[1]
    into[2] += sign * cell[2]
    into[3] += sign * cell[3]
    into[4] += sign * cell[4]
    into[5] += sign * cell[5]


def _fold(acc: Accumulated) -> dict[tuple[str | None, ...], Cell]:
    """Sum over periods: group -> counters."""
    out: dict[tuple[str | None, ...], Cell] = {}
    for (_, group), cell in acc.items():
        into = out.get(group)
        if into is None:
            out[group] = cell.copy()
        else:
            _add(into, cell)
    return out


def _grand_total(acc: Accumulated) -> Cell:
    if not acc:
        return [0, 0, 0, 0, 0, 0]
    return [sum(column) for column in zip(*acc.values(), strict=True)]


def _dimension_order(item: tuple[tuple[str | None, ...], Cell]) -> tuple[Any, ...]:
    """total_cost descending, then the dimension values; a null tag value after the others."""
    group, cell = item
    if None in group:
        return (-cell[COST], tuple((value is None, value or "") for value in group))
    return (-cell[COST], tuple((False, value) for value in group))


def _sorted_groups(folded: dict[tuple[str | None, ...], Cell]) -> list[tuple[tuple[str | None, ...], Cell]]:
    items = list(folded.items())
    if any(None in group for group, _ in items):
        return sorted(items, key=_dimension_order)
    return sorted(items, key=lambda item: (-item[1][COST], item[0]))


# --- endpoints' reads ---------------------------------------------------------------------------


Method = Callable[..., Awaitable[dict[str, Any]]]


def _cached(keys_read: Callable[..., list[str]] | None) -> Callable[[Method], Method]:
    """Serve a read from the response cache while what it reads is unchanged: the versions of
    the keys `keys_read(reader, *args)` names, or, without it, the project's data version."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        async def read(self: Reader, *args: Any) -> dict[str, Any]:
            if self.cache is None:
                return await method(self, *args)

            async def token() -> Hashable:
                if keys_read is None:
                    return await self.redis.get(self.layout.data_version(self.project))
                return await self._bucket_token(keys_read(self, *args))

            return await self.cache.get_or_compute(
                self.project, (method.__name__, repr(args)), token, lambda: method(self, *args)
            )

        return read

    return decorate


def _plan_keys(layout: KeyLayout, project: str, plan: Plan) -> list[str]:
    return [layout.rollup(project, plan.dimension, r.granularity, r.label) for r in plan.buckets]


def _expanded(plans: Sequence[Plan]) -> list[Plan]:
    """The plans as executed: a with_total plan is followed by its TOTAL read."""
    out: list[Plan] = []
    for plan in plans:
        out.append(plan)
        if plan.with_total:
            out.append(_total_plan(plan))
    return out


@dataclass(frozen=True, slots=True)
class Reader:
    redis: aioredis.Redis
    layout: KeyLayout
    project: str
    cache: ResponseCache | None = None

    async def _bucket_token(self, keys: list[str]) -> Hashable:
        """The rebuild generation and the versions of `keys`, in one round trip."""
        fields = sorted({self.layout.bucket_version_field(self.project, key) for key in keys})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.layout.generation())
            pipe.hmget(self.layout.bucket_versions(self.project), fields)
            generation, versions = await pipe.execute()
        return (generation, tuple(versions))

    def _plans_keys(self, plans: Sequence[Plan]) -> list[str]:
        return [key for plan in _expanded(plans) for key in _plan_keys(self.layout, self.project, plan)]

    def _costs_keys(self, start: date, end: date, filters: Filters, grouping: Grouping) -> list[str]:
        return self._plans_keys([plan_costs(start, end, filters, grouping)])

    def _timeseries_keys(self, start: date, end: date, filters: Filters, interval: Interval) -> list[str]:
        return self._plans_keys([plan_timeseries(start, end, filters, interval)])

    def _models_keys(self, start: date, end: date, filters: Filters) -> list[str]:
        return self._plans_keys([plan_costs(start, end, filters, Grouping(GroupBy.MODEL))])

    def _compare_keys(self, period1: tuple[date, date], period2: tuple[date, date], filters: Filters) -> list[str]:
        return self._plans_keys([plan_costs(s, e, filters, Grouping()) for s, e in (period1, period2)])

    def _leaderboard_keys(self, plan: LeaderboardPlan) -> tuple[list[str], list[str]]:
        """(board keys, entity-rollup keys) of a /entities/top plan."""
        boards = [self.layout.leaderboard(self.project, r.granularity, r.label, plan.board_type) for r in plan.boards]
        rollups = [self.layout.rollup(self.project, Dimension.ENTITY, r.granularity, r.label) for r in plan.rollups]
        return boards, rollups

    def _top_keys(self, start: date, end: date, entity_type: str | None, *_: Any) -> list[str]:
        boards, rollups = self._leaderboard_keys(plan_leaderboard(start, end, entity_type))
        return boards + rollups

    @_cached(_costs_keys)
    async def costs(self, start: date, end: date, filters: Filters, grouping: Grouping) -> dict[str, Any]:
        plan = plan_costs(start, end, filters, grouping)
        (acc,) = await run_plans(self.redis, self.layout, self.project, [plan])
        total = _grand_total(acc)
        rows: list[dict[str, Any]]
        kind = grouping.kind
        if kind is GroupBy.NONE:
            rows = [metrics(total)]
        elif kind in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH):
            by_period: dict[str, Cell] = {}
            for (period, _), cell in acc.items():
                assert period is not None
                into = by_period.setdefault(period, [0, 0, 0, 0, 0, 0])
                _add(into, cell)
            rows = [metrics(by_period[period], {"period": period}) for period in sorted(by_period)]
        else:
            ordered = _sorted_groups(_fold(acc))
            if kind is GroupBy.ENTITY:
                rows = [metrics(c, {"entity_type": g[0], "entity_id": g[1]}) for g, c in ordered]
            elif kind is GroupBy.MODEL:
                rows = [metrics(c, {"model": g[0], "provider": g[1]}) for g, c in ordered]
            else:
                rows = [metrics(c, {"tag_key": grouping.tag_key, "tag_value": g[0]}) for g, c in ordered]
        return {
            "data": rows,
            "summary": {
                "total_cost": nano_to_usd(total[COST]),
                "total_events": total[EVENTS],
                "period": {"start": start.isoformat(), "end": end.isoformat()},
            },
        }

    @_cached(_timeseries_keys)
    async def timeseries(self, start: date, end: date, filters: Filters, interval: Interval) -> dict[str, Any]:
        plan = plan_timeseries(start, end, filters, interval)
        (acc,) = await run_plans(self.redis, self.layout, self.project, [plan])
        by_period: dict[str | None, Cell] = {}
        for (period, _), cell in acc.items():
            _add(by_period.setdefault(period, [0, 0, 0, 0, 0, 0]), cell)
        suffix = ":00:00Z" if interval is Interval.HOUR else "T00:00:00Z"
        zero = [0, 0, 0, 0, 0, 0]
        rows = []
        for period in plan.periods:
            cell = by_period.get(period, zero)
            rows.append(
                {
                    "timestamp": period + suffix,
                    "cost": nano_to_usd(cell[COST]),
                    "events": cell[EVENTS],
                }
            )
        return {"data": rows, "interval": interval.value}

    @_cached(_models_keys)
    async def models(self, start: date, end: date, filters: Filters) -> dict[str, Any]:
        plan = plan_costs(start, end, filters, Grouping(GroupBy.MODEL))
        (acc,) = await run_plans(self.redis, self.layout, self.project, [plan])
        folded = _fold(acc)
        total_cost = sum(cell[COST] for cell in folded.values())
        rows = []
        for (model, provider), cell in _sorted_groups(folded):
            share = ratio(cell[COST] * 100, total_cost)
            rows.append(
                {
                    "model": model,
                    "provider": provider,
                    **metrics(cell),
                    "percentage_of_total": 0.0 if share is None else share,
                }
            )
        return {"data": rows}

    @_cached(_compare_keys)
    async def compare(self, period1: tuple[date, date], period2: tuple[date, date], filters: Filters) -> dict[str, Any]:
        plans = [plan_costs(s, e, filters, Grouping()) for s, e in (period1, period2)]
        acc1, acc2 = await run_plans(self.redis, self.layout, self.project, plans)
        one, two = _grand_total(acc1), _grand_total(acc2)
        return {
            "period1": {
                "start": period1[0].isoformat(),
                "end": period1[1].isoformat(),
                "total_cost": nano_to_usd(one[COST]),
                "total_events": one[EVENTS],
            },
            "period2": {
                "start": period2[0].isoformat(),
                "end": period2[1].isoformat(),
                "total_cost": nano_to_usd(two[COST]),
                "total_events": two[EVENTS],
            },
            "changes": {
                "cost_change": nano_to_usd(one[COST] - two[COST]),
                "cost_change_percent": ratio((one[COST] - two[COST]) * 100, two[COST]),
                "events_change": one[EVENTS] - two[EVENTS],
                "events_change_percent": ratio((one[EVENTS] - two[EVENTS]) * 100, two[EVENTS]),
            },
        }

    @_cached(_top_keys)
    async def top_entities(
        self, start: date, end: date, entity_type: str | None, limit: int, descending: bool
    ) -> dict[str, Any]:
        plan = plan_leaderboard(start, end, entity_type)
        keys, entity_keys = self._leaderboard_keys(plan)
        # Scores are doubles, exact for sums below 2**53 nano-dollars ($9M) per entity;
        # they choose the candidates (in Redis: only they travel), the entity rollup
        # gives the exact numbers and the final order.
        order = "desc" if descending else "asc"
        signs = [r.sign for r in plan.boards]
        flat = await _evalsha(self.redis, TOP_CANDIDATES_SHA, len(keys), *keys, limit, order, *signs)
        if not flat:
            return {"data": []}
        members = flat[0::2]
        replies = await _evalsha(self.redis, HMGET_MANY_SHA, len(entity_keys), *entity_keys, *members)
        count = len(members)
        events = [0] * count
        costs = [0] * count
        for read, values in zip(plan.rollups, replies, strict=True):
            for index, packed in enumerate(values):
                if packed is not None:
                    cell = unpack_cell(packed)
                    events[index] += read.sign * cell[EVENTS]
                    costs[index] += read.sign * cell[COST]
        rows = []
        for index, member in enumerate(members):
            if not events[index]:
                continue  # counted only in subtracted buckets: no events in the range
            entity_type_, entity_id = member.split(SEP, 1)
            rows.append((costs[index], entity_type_, entity_id, events[index]))
        rows.sort(key=lambda r: (-r[0] if descending else r[0], r[1], r[2]))
        return {
            "data": [
                {
                    "entity_type": etype,
                    "entity_id": eid,
                    "total_cost": nano_to_usd(cost),
                    "total_events": n_events,
                    "rank": rank,
                }
                for rank, (cost, etype, eid, n_events) in enumerate(rows[:limit], start=1)
            ]
        }

    @_cached(None)
    async def sessions(
        self, start: date, end: date, entity_type: str | None, entity_id: str | None, limit: int
    ) -> dict[str, Any]:
        start_ms, end_ms = session_window_ms(start, end)
        layout, project, redis = self.layout, self.project, self.redis
        ids: list[Any]
        if entity_type is not None and entity_id is not None:
            ids = await redis.zrevrangebyscore(
                layout.session_entity_index(project, entity_type, entity_id), f"({end_ms}", start_ms
            )
        elif entity_type is not None:
            ids = await redis.zrevrangebyscore(layout.session_type_index(project, entity_type), f"({end_ms}", start_ms)
        elif entity_id is not None:
            types: list[Any] = sorted(await redis.smembers(layout.entity_types(project)))
            ids = []
            if types:
                keys = [layout.session_entity_index(project, t, entity_id) for t in types]
                pairs: Any = await redis.zunion(keys, withscores=True)
                selected = [(score, sid) for sid, score in pairs if start_ms <= score < end_ms]
                selected.sort(reverse=True)
                ids = [sid for _, sid in selected]
        else:
            ids = await redis.zrevrangebyscore(layout.session_index(project), f"({end_ms}", start_ms)
        names = (
            "entity_type",
            "entity_id",
            "started_ms",
            "ended_ms",
            "turns",
            "cost",
            "input",
            "output",
        )
        async with redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(layout.session(project, str(sid)), names)
            records = await pipe.execute() if ids else []
        total_turns = 0
        total_cost = 0
        rows: list[dict[str, Any]] = []
        for sid, values in zip(ids, records, strict=True):
            turns, cost = int(values[4] or 0), int(values[5] or 0)
            total_turns += turns
            total_cost += cost
            if len(rows) < limit:
                rows.append(
                    {
                        "session_id": sid,
                        "entity_type": values[0],
                        "entity_id": values[1],
                        "started_at": iso_ms(int(values[2] or 0)),
                        "ended_at": iso_ms(int(values[3] or 0)),
                        "turn_count": turns,
                        "total_cost": nano_to_usd(cost),
                        "total_tokens": int(values[6] or 0) + int(values[7] or 0),
                    }
                )
        count = len(ids)
        return {
            "data": rows,
            "summary": {
                "total_sessions": count,
                "avg_turns_per_session": ratio(total_turns, count),
                "avg_cost_per_session": ratio(total_cost, count * NANO_PER_USD, 6),
            },
        }

    async def anomalies(self, start: date, end: date, entity_type: str | None, status: str | None) -> dict[str, Any]:
        start_ms, end_ms = session_window_ms(start, end)
        records = await anomaly_store.list_range(
            self.redis,
            self.layout,
            self.project,
            start_ms,
            end_ms,
            entity_type=entity_type,
            status=status,
        )
        return {"data": [record.public() for record in records]}

    async def dismiss(self, anomaly_id: str) -> dict[str, Any] | None:
        record = await anomaly_store.dismiss(self.redis, self.layout, anomaly_id, self.project)
        return None if record is None else {"data": record.public()}


__all__ = ["Reader", "avg_latency_ms", "iso_ms", "metrics", "ratio", "run_plans"]

"""Read side: executes the planner's plans against Redis and shapes exact results.

Every answer is read as one moment's data: its reads go in one MULTI/EXEC (or one
script, for `/entities/top`), after one round trip for the cache's version token.
`/sessions` reads twice (its second read depends on the first, and may be too large
to hold Redis for), checked by the data version read before and after. Counters are
summed as integers (Python ints, or int64 columns within a proven exact range,
`api.columns`) and turned into USD / rounded means only when rows are shaped.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from infraprism.api.cache import BucketCache, ResponseCache, ShapedRows
from infraprism.api.columns import MAX_SUMMED_BUCKETS, Matrix, mean_ms_column, usd_column, within_exact_range
from infraprism.api.planner import (
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
from infraprism.core.cell import COST, EVENTS, INPUT, LATENCY_COUNT, LATENCY_SUM, OUTPUT, Cell
from infraprism.core.keys import SEP, Dimension, KeyLayout
from infraprism.core.money import NANO_PER_USD, div_round_half_even, nano_to_usd
from infraprism.stores import anomaly_store

log = logging.getLogger(__name__)


AccKey = tuple[str | None, tuple[str | None, ...]]  # (output period, group)
Accumulated = dict[AccKey, Cell]
BucketToken = tuple[Any, Any]  # (rebuild generation, key version), as read from Redis
_UNSEEN: Any = object()
_NO_IDS = np.zeros(0, dtype=np.int64)

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

# /entities/top in one atomic call. KEYS: ARGV[3] leaderboards, then the entity rollups
# of the same range; ARGV[4..] the boards' weights (1 or -1), ARGV[1] the limit, ARGV[2]
# "desc" or "asc". The signed union of the boards (ZUNION ... WEIGHTS) picks the candidates
# for the first places: those places plus every member tied with the last of them (the
# exact order is settled later from integer counters). Only they travel, with their cells
# from every rollup, read in the same call: the candidates and their numbers are one
# moment's data. A member counted only in subtracted boards scores 0 with no events in
# the range; the caller drops it, so ascending keeps every score <= 0 *and* the first
# places after them, and descending reaches zero scores only when it takes all of them.
# Returns {candidates, {cells of the candidates in rollup 1}, {... rollup 2}, ...}.
TOP_ENTITIES_LUA = """
local boards = tonumber(ARGV[3])
local args = {'ZUNION', boards}
for i = 1, boards do args[#args + 1] = KEYS[i] end
args[#args + 1] = 'WEIGHTS'
for i = 1, boards do args[#args + 1] = ARGV[3 + i] end
args[#args + 1] = 'WITHSCORES'
local flat = redis.call(unpack(args))
local n = #flat / 2
local limit = tonumber(ARGV[1])
local first, last = 1, n
if ARGV[2] == 'desc' then
  if n > limit then
    first = n - limit + 1
    local boundary = tonumber(flat[2 * first])
    while first > 1 and tonumber(flat[2 * (first - 1)]) == boundary do first = first - 1 end
  end
else
  local zeros = 0
  while zeros < n and tonumber(flat[2 * (zeros + 1)]) <= 0 do zeros = zeros + 1 end
  last = math.min(n, zeros + limit)
  if last > 0 then
    local boundary = tonumber(flat[2 * last])
    while last < n and tonumber(flat[2 * (last + 1)]) == boundary do last = last + 1 end
  end
end
local candidates = {}
for i = first, last do candidates[#candidates + 1] = flat[2 * i - 1] end
local out = {candidates}
for k = boards + 1, #KEYS do
  local cells = {}
  -- In chunks: unpack() of more than a few thousand values overflows Lua's stack.
  for from = 1, #candidates, 1000 do
    local chunk = redis.call('HMGET', KEYS[k], unpack(candidates, from, math.min(from + 999, #candidates)))
    for i = 1, #chunk do cells[#cells + 1] = chunk[i] end
  end
  out[#out + 1] = cells
end
return out
"""
TOP_ENTITIES_SHA = hashlib.sha1(TOP_ENTITIES_LUA.encode()).hexdigest()  # noqa: S324 - Redis script id


SESSION_FIELDS = ("entity_type", "entity_id", "started_ms", "ended_ms", "turns", "cost", "input", "output")
# /sessions reads its index and records again while batches land in between, this many times at most.
SESSION_READ_ATTEMPTS = 3


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
                cell = acc[key] = Cell.zero()
            _add(cell, Cell.unpack(packed), read.sign)
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
            counters = Cell.unpack(packed)
            key = (period, found)
            cell = acc.get(key)
            if cell is None:
                acc[key] = counters if sign > 0 else counters.negated()
            else:
                _add(cell, counters, sign)
    # A group counted only in subtracted buckets had no events in the range.
    return {key: cell for key, cell in acc.items() if cell[EVENTS]}


def _entities_by_entity(plan: Plan) -> bool:
    """The commonest scan: the entity rollup grouped by entity, filtered by entity at most.
    A member's identifiers are then its group."""
    filters = plan.filters
    return (
        plan.dimension is Dimension.ENTITY
        and plan.grouping.kind is GroupBy.ENTITY
        and not filters.tags
        and filters.model is None
    )


def _entity_scan_prefix(plan: Plan) -> str | None:
    """For costs grouped by entity, maybe of one type: the entity type wanted ("" for any);
    None for every other scan."""
    if _entities_by_entity(plan) and plan.filters.entity_id is None:
        return plan.filters.entity_type or ""
    return None


def _classifier(plan: Plan) -> Callable[[str], tuple[str | None, ...] | None]:
    """member -> its group key, or None when the plan's filters refuse it."""
    dimension, filters, grouping = plan.dimension, plan.filters, plan.grouping
    if _entities_by_entity(plan):
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
            # MULTI/EXEC: a batch applied between two reads could otherwise show in one
            # bucket and not in another (a month read and the day subtracted from it).
            async with redis.pipeline(transaction=True) as pipe:
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
    for text, sha in ((HMGET_MANY_LUA, HMGET_MANY_SHA), (TOP_ENTITIES_LUA, TOP_ENTITIES_SHA)):
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
        rest = Cell(total)
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
            out[group] = Cell(cell)
        else:
            _add(into, cell)
    return out


def _grand_total(acc: Accumulated) -> Cell:
    if not acc:
        return Cell.zero()
    return Cell.total(acc.values())


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


# The response fields of a dimension grouping's group tuple (the columnar path's groupings).
DIMENSION_FIELDS: dict[GroupBy, tuple[str, str]] = {
    GroupBy.ENTITY: ("entity_type", "entity_id"),
    GroupBy.MODEL: ("model", "provider"),
}


def _dimension_rows(
    groups: list[tuple[str | None, ...]],
    matrix: Matrix,
    fields: tuple[str, str],
    previous: ShapedRows | None = None,
) -> tuple[list[dict[str, Any]], Cell, ShapedRows]:
    """The rows of a dimension grouping from `Reader._dimension_scan`'s sums, as `metrics`
    shapes them, in `_sorted_groups` order; the grand total; and the rows as shaped, for
    the next time. A row of `previous` whose group and sums are unchanged is taken as it
    is: after a batch of 100 events, 100 of 10,000 rows are shaped again."""
    total = _column_totals(matrix)
    order = _cost_descending_order(matrix[:, COST], groups)
    matrix = matrix[order]
    groups = [groups[row] for row in order]
    rows: list[dict[str, Any] | None] = _unchanged_rows(previous, groups, matrix)
    changed = [position for position, row in enumerate(rows) if row is None]
    if changed:
        sums = matrix[changed]
        first, second = fields
        for position, cost_usd, events, input_tokens, output_tokens, latency_ms in zip(
            changed,
            usd_column(sums[:, COST]),
            sums[:, EVENTS].tolist(),
            sums[:, INPUT].tolist(),
            sums[:, OUTPUT].tolist(),
            mean_ms_column(sums[:, LATENCY_SUM], sums[:, LATENCY_COUNT]),
            strict=True,
        ):
            group = groups[position]
            rows[position] = {
                first: group[0],
                second: group[1],
                "total_cost": cost_usd,
                "total_events": events,
                "total_input_tokens": input_tokens,
                "total_output_tokens": output_tokens,
                "avg_latency_ms": latency_ms,
            }
    shaped_rows: list[dict[str, Any]] = rows  # type: ignore[assignment]  # every row is shaped by now
    shaped = ShapedRows({group: position for position, group in enumerate(groups)}, matrix, shaped_rows)
    return shaped_rows, total, shaped


def _unchanged_rows(
    previous: ShapedRows | None, groups: list[tuple[str | None, ...]], sums: Matrix
) -> list[dict[str, Any] | None]:
    """Per row, `previous`'s row of the same group if it was shaped from the same sums, else None."""
    if previous is None or not groups:
        return [None] * len(groups)
    positions = np.fromiter(
        map(previous.position_of.get, groups, itertools.repeat(-1)), dtype=np.int64, count=len(groups)
    )
    same = positions >= 0
    same[same] = (previous.sums[positions[same]] == sums[same]).all(axis=1)
    old_rows = previous.rows
    return [
        old_rows[position] if unchanged else None
        for position, unchanged in zip(positions.tolist(), same.tolist(), strict=True)
    ]


def _column_totals(matrix: Matrix) -> Cell:
    """The sum of each column, exact: in int64 where the bound of its values proves it cannot
    overflow, else as Python ints."""
    if not matrix.size:
        return Cell([0] * matrix.shape[1])
    bound = int(np.abs(matrix).max())
    if bound * matrix.shape[0] < 2**63:
        return Cell(int(value) for value in matrix.sum(axis=0))
    return Cell(int(value) for value in matrix.sum(axis=0, dtype=object))


def _cost_descending_order(costs: Matrix, groups: list[tuple[str | None, ...]]) -> list[int]:
    """Row positions by cost descending, equal costs by group: `_sorted_groups`' order.
    Sorted by numpy, and only the runs of equal costs (rare but for zero) by Python."""
    order = np.argsort(-costs, kind="stable")
    ordered_costs = costs[order]
    order_list: list[int] = order.tolist()
    tied = np.flatnonzero(ordered_costs[1:] == ordered_costs[:-1]).tolist()
    run_start = None
    for position, next_position in itertools.zip_longest(tied, tied[1:]):
        if run_start is None:
            run_start = position
        if next_position != position + 1:  # the run of equal costs ends at position + 1
            run = slice(run_start, position + 2)
            order_list[run] = sorted(order_list[run], key=groups.__getitem__)
            run_start = None
    return order_list


def _bulk_scan(plan: Plan) -> bool:
    """Whether `/costs` sums this plan column-wise from parsed buckets: a whole-hash scan
    grouped by a dimension (by entity: one row per entity)."""
    return plan.member is None and not plan.with_total and plan.grouping.kind in DIMENSION_FIELDS


def _costs_body(rows: list[dict[str, Any]], total: Cell, start: date, end: date) -> dict[str, Any]:
    return {
        "data": rows,
        "summary": {
            "total_cost": nano_to_usd(total[COST]),
            "total_events": total[EVENTS],
            "period": {"start": start.isoformat(), "end": end.isoformat()},
        },
    }


# --- endpoints' reads ---------------------------------------------------------------------------


Method = Callable[..., Awaitable[dict[str, Any]]]


class Reads(NamedTuple):
    """What an answer reads: the rollup and leaderboard keys, whose versions validate their
    parsed copies (the bucket cache), and the version fields of its range's days (whole
    months by their own field), which validate the answer (the response cache)."""

    keys: list[str]
    range_fields: list[str]


def _range_fields(*ranges: tuple[date, date]) -> list[str]:
    return [field for start, end in ranges for field in KeyLayout.range_version_fields(start, end)]


def _cached(reads: Callable[..., Reads] | None) -> Callable[[Method], Method]:
    """Serve a read from the response cache while the data it answers from is unchanged: the
    versions of the range `reads(reader, *args)` names, or, without it, the project's data
    version.

    Day versions rather than the versions of the keys read: a range ending yesterday may be
    read as this month minus today, and both keys change with every batch of today's events,
    yet the answer does not."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        async def read(self: Reader, *args: Any) -> dict[str, Any]:
            if self.cache is None:
                return await method(self, *args)

            async def token() -> Hashable:
                if reads is None:
                    return await self.redis.get(self.layout.data_version(self.project))
                return await self._versions(reads(self, *args))

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
    """One request's reads of one project's aggregates."""

    redis: aioredis.Redis
    layout: KeyLayout
    project: str
    cache: ResponseCache | None = None
    # key -> (rebuild generation, key version), read with the response cache's token:
    # the bucket cache's token of each key.
    bucket_tokens: dict[str, BucketToken] = field(default_factory=dict)

    async def _versions(self, reads: Reads) -> Hashable:
        """The rebuild generation and the versions of the range of `reads`: the answer's
        token. The versions of its keys, read in the same command, go to `bucket_tokens`."""
        range_fields = reads.range_fields
        fields_of_keys = {key: self.layout.bucket_version_field(self.project, key) for key in reads.keys}
        key_fields = sorted(set(fields_of_keys.values()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.layout.generation())
            pipe.hmget(self.layout.bucket_versions(self.project), range_fields + key_fields)
            generation, versions = await pipe.execute()
        version_of = dict(zip(key_fields, versions[len(range_fields) :], strict=True))
        for key, version_field in fields_of_keys.items():
            self.bucket_tokens[key] = (generation, version_of[version_field])
        return (generation, tuple(versions[: len(range_fields)]))

    async def _read_hashes(self, keys: list[str]) -> tuple[list[dict[str, str]], dict[str, BucketToken]]:
        """HGETALL of `keys` and their bucket tokens, in one MULTI/EXEC: what is read is one
        moment's data, and each hash's token is exactly the version of what was read."""
        fields = [self.layout.bucket_version_field(self.project, key) for key in keys]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.layout.generation())
            pipe.hmget(self.layout.bucket_versions(self.project), fields)
            for key in keys:
                pipe.hgetall(key)
            generation, versions, *replies = await pipe.execute()
        return replies, {key: (generation, version) for key, version in zip(keys, versions, strict=True)}

    async def _dimension_scan(self, plan: Plan) -> tuple[list[tuple[str | None, ...]], Matrix] | None:
        """A dimension grouping's groups with events in the range, and their summed counters
        as an int64 matrix, row for row. Buckets unchanged since an earlier request come
        parsed from the bucket cache; the others are read in one round trip. None when a
        counter is outside the exact range of `api.columns`, or a group has a null value:
        the caller then sums with ints."""
        if len(plan.buckets) > MAX_SUMMED_BUCKETS:
            return None
        buckets = self.cache.buckets if self.cache is not None else BucketCache()
        keys = _plan_keys(self.layout, self.project, plan)
        tokens = self.bucket_tokens
        vocabulary = buckets.vocabulary
        parts = [buckets.get(key, tokens[key]) if key in tokens else None for key in keys]
        missing = [index for index, part in enumerate(parts) if part is None]
        if missing:
            replies, fresh = await self._read_hashes([keys[index] for index in missing])
            if len(missing) < len(keys) and any(fresh[key] != tokens[key] for key in fresh):
                # A batch landed since the versions were read: the cached parts hold the
                # data as it was then, the fresh ones as it is now. Read all of them
                # together instead, so the answer is one moment's data.
                missing = list(range(len(keys)))
                replies, fresh = await self._read_hashes(keys)
            for index, cells in zip(missing, replies, strict=True):
                parts[index] = buckets.parse(keys[index], fresh[keys[index]], cells)
                if parts[index] is None:
                    return None
        if buckets.vocabulary is not vocabulary:
            # Parsing renumbered the members (the vocabulary was full): ids do not mix.
            return None
        scanned = [part for part in parts if part is not None]  # all of them by now
        present = np.unique(np.concatenate([part.member_ids for part in scanned])) if scanned else _NO_IDS
        sums = np.zeros((len(present), 6), dtype=np.int64)
        for read, part in zip(plan.buckets, scanned, strict=True):
            rows = np.searchsorted(present, part.member_ids)
            # Plain fancy-index addition is right: a hash holds each member once.
            if read.sign > 0:
                sums[rows] += part.counters
            else:
                sums[rows] -= part.counters
        if not within_exact_range(sums):
            return None
        keep = sums[:, EVENTS] != 0  # a member counted only in subtracted buckets had none
        member_parts = buckets.member_parts
        prefix = _entity_scan_prefix(plan)
        if prefix is not None:
            # Costs by entity: a member's identifiers, type and id, are its group.
            groups = [member_parts[member_id] for member_id in present.tolist()]
            if prefix:
                keep &= np.array([group[0] == prefix for group in groups], dtype=bool)
            kept = keep.tolist()
            return list(itertools.compress(groups, kept)), sums[keep]
        # Several members can share a group (an entity-model member grouped by model).
        classify = _classifier(plan)
        members = buckets.members
        group_rows: dict[tuple[str | None, ...], int] = {}
        rows_of_members = []
        kept_members = []
        for position, member_id in enumerate(present.tolist()):
            group = classify(members[member_id]) if keep[position] else None
            if group is not None:
                rows_of_members.append(group_rows.setdefault(group, len(group_rows)))
                kept_members.append(position)
        if any(None in group for group in group_rows):
            return None  # a null value sorts after the others: `_sorted_groups` orders these rows
        grouped = np.zeros((len(group_rows), 6), dtype=np.int64)
        np.add.at(grouped, rows_of_members, sums[kept_members])
        if not within_exact_range(grouped):
            return None
        return list(group_rows), grouped

    # The keys of a Reads are those whose parsed copies the answer may take from the bucket
    # cache: only the bulk scan of `costs` does; the other reads name none.

    def _costs_reads(self, start: date, end: date, filters: Filters, grouping: Grouping) -> Reads:
        plan = plan_costs(start, end, filters, grouping)
        keys = _plan_keys(self.layout, self.project, plan) if _bulk_scan(plan) else []
        return Reads(keys, _range_fields((start, end)))

    def _range_reads(self, start: date, end: date, *_: Any) -> Reads:
        """/costs/timeseries, /models and /entities/top: their range alone."""
        return Reads([], _range_fields((start, end)))

    def _compare_reads(self, period1: tuple[date, date], period2: tuple[date, date], *_: Any) -> Reads:
        return Reads([], _range_fields(period1, period2))

    def _leaderboard_keys(self, plan: LeaderboardPlan) -> tuple[list[str], list[str]]:
        """(board keys, entity-rollup keys) of a /entities/top plan."""
        boards = [self.layout.leaderboard(self.project, r.granularity, r.label, plan.board_type) for r in plan.boards]
        rollups = [self.layout.rollup(self.project, Dimension.ENTITY, r.granularity, r.label) for r in plan.rollups]
        return boards, rollups

    async def _bulk_costs(self, plan: Plan, start: date, end: date) -> dict[str, Any] | None:
        """`/costs` by entity or model: thousands of rows, summed and shaped a column at a
        time, and only the changed rows shaped again. None when the sums must be ints."""
        scanned = await self._dimension_scan(plan)
        if scanned is None:
            return None
        buckets = self.cache.buckets if self.cache is not None else None
        # Rows are a function of their group and sums alone, so they stay right across a
        # rebuild; keyed by its generation all the same, so that a rebuild, or the bench's
        # cold column, starts from nothing.
        generation, _ = self.bucket_tokens.get(_plan_keys(self.layout, self.project, plan)[0], (None, None))
        query = (self.project, generation, start, end, plan.filters, plan.grouping)
        previous = buckets.shaped(query) if buckets is not None else None
        rows, total, shaped = _dimension_rows(*scanned, DIMENSION_FIELDS[plan.grouping.kind], previous)
        if buckets is not None:
            buckets.keep_shaped(query, shaped)
        return _costs_body(rows, total, start, end)

    @_cached(_costs_reads)
    async def costs(self, start: date, end: date, filters: Filters, grouping: Grouping) -> dict[str, Any]:
        plan = plan_costs(start, end, filters, grouping)
        kind = grouping.kind
        if _bulk_scan(plan):
            body = await self._bulk_costs(plan, start, end)
            if body is not None:
                return body
        (acc,) = await run_plans(self.redis, self.layout, self.project, [plan])
        total = _grand_total(acc)
        rows: list[dict[str, Any]]
        if kind is GroupBy.NONE:
            rows = [metrics(total)]
        elif kind in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH):
            by_period: dict[str, Cell] = {}
            for (period, _), cell in acc.items():
                assert period is not None
                into = by_period.setdefault(period, Cell.zero())
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
        return _costs_body(rows, total, start, end)

    @_cached(_range_reads)
    async def timeseries(self, start: date, end: date, filters: Filters, interval: Interval) -> dict[str, Any]:
        plan = plan_timeseries(start, end, filters, interval)
        (acc,) = await run_plans(self.redis, self.layout, self.project, [plan])
        by_period: dict[str | None, Cell] = {}
        for (period, _), cell in acc.items():
            _add(by_period.setdefault(period, Cell.zero()), cell)
        suffix = ":00:00Z" if interval is Interval.HOUR else "T00:00:00Z"
        zero = Cell.zero()
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

    @_cached(_range_reads)
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

    @_cached(_compare_reads)
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

    @_cached(_range_reads)
    async def top_entities(
        self, start: date, end: date, entity_type: str | None, limit: int, descending: bool
    ) -> dict[str, Any]:
        plan = plan_leaderboard(start, end, entity_type)
        keys, entity_keys = self._leaderboard_keys(plan)
        # Scores are doubles, exact for sums below 2**53 nano-dollars ($9M) per entity;
        # they choose the candidates (in Redis: only they travel), the entity rollups
        # give the exact numbers and the final order.
        order = "desc" if descending else "asc"
        signs = [r.sign for r in plan.boards]
        members, *replies = await _evalsha(
            self.redis, TOP_ENTITIES_SHA, len(keys) + len(entity_keys), *keys, *entity_keys,
            limit, order, len(keys), *signs,
        )  # fmt: skip
        if not members:
            return {"data": []}
        count = len(members)
        events = [0] * count
        costs = [0] * count
        for read, values in zip(plan.rollups, replies, strict=True):
            for index, packed in enumerate(values):
                if packed is not None:
                    cell = Cell.unpack(packed)
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
        # Two reads, the index and then the records it lists, and not in one MULTI or
        # script: a year can list 100,000 sessions, and an atomic read of them all would
        # stall the aggregator and every API worker. One moment's data all the same: the
        # project's data version, which every applied batch increments, is read before
        # and after; if it moved, the count and the page might disagree, so read again.
        version_key = self.layout.data_version(self.project)
        for _ in range(SESSION_READ_ATTEMPTS):
            before = await self.redis.get(version_key)
            ids = await self._session_ids(start_ms, end_ms, entity_type, entity_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.hmget(self.layout.session(self.project, str(sid)), SESSION_FIELDS)
                pipe.get(version_key)
                *records, after = await pipe.execute()
            if after == before:
                break
        else:
            log.info("sessions read while batches kept landing", extra={"attempts": SESSION_READ_ATTEMPTS})
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

    async def _session_ids(
        self, start_ms: int, end_ms: int, entity_type: str | None, entity_id: str | None
    ) -> list[str]:
        """The ids of the sessions started in [start_ms, end_ms), newest first (equal starts:
        the greater id first)."""
        layout, project, redis = self.layout, self.project, self.redis
        if entity_type is not None and entity_id is not None:
            index = layout.session_entity_index(project, entity_type, entity_id)
        elif entity_type is not None:
            index = layout.session_type_index(project, entity_type)
        elif entity_id is not None:
            types: list[Any] = sorted(await redis.smembers(layout.entity_types(project)))
            if not types:
                return []
            keys = [layout.session_entity_index(project, t, entity_id) for t in types]
            # A session is in the index of one entity only (the apply script moves it when
            # an earlier turn names another), so the union's scores are the starts.
            pairs: Any = await redis.zunion(keys, withscores=True)
            selected = [(score, sid) for sid, score in pairs if start_ms <= score < end_ms]
            selected.sort(reverse=True)
            return [sid for _, sid in selected]
        else:
            index = layout.session_index(project)
        ids: list[Any] = await redis.zrevrangebyscore(index, f"({end_ms}", start_ms)
        return ids

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

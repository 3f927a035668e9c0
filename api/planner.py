"""The query planner: which precomputed rollup answers a request, and which buckets of it. Pure.

No Redis, no asyncio: the planner turns (filters, grouping, range) into a
`Plan` naming one rollup dimension, the buckets to read and how each bucket
maps to an output period; `api.repository` reads it, `api.sums` sums it.
docs/query-planner.md states the rules; tests/api/test_planner.py pins them
in tables.

Rules, smallest rollup first:

* no filter, no dimension grouping          -> TOTAL (member "")
* entity filters / group_by=entity          -> ENTITY (HMGET one member when both
                                               entity_type and entity_id are given)
* model filter / group_by=model             -> MODEL
* exactly one tag filter, nothing else      -> TAG (HMGET member "key SEP value")
* group_by=tags.{key} and no filter         -> TAG (members of that key) + TOTAL
                                               (for the row of untagged cost)
* entity and model (filter or grouping)     -> ENTITY_MODEL
* anything else with tags                   -> CUBE (scan, filter per member)

Buckets: a range is covered by months and days, a partial month read as
its days or as the month minus its days outside the range, whichever is
fewer reads (`buckets.signed_cover`); leaderboards may also use a year minus
what lies outside the range. Grouping by day or week reads day buckets; an
hourly series reads hour buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

from infraprism.api.bounds import check_periods
from infraprism.api.errors import InvalidParameter
from infraprism.core import zones
from infraprism.core.buckets import (
    Granularity,
    day_label,
    days,
    month_start,
    signed_cover,
    week_start,
)
from infraprism.core.cover import MS_PER_DAY, Misaligned, cover_ms
from infraprism.core.keys import (
    ALL_ENTITY_TYPES,
    SEP,
    Dimension,
    entity_member,
    parse_tag_set,
    tag_member,
)

# Plans are pure functions of the request: a local hour series or a year by month takes a few
# milliseconds to plan in a zone (its offsets, its hours), and the same dashboards ask again.
PLAN_CACHE_SIZE = 4096


class GroupBy(StrEnum):
    """`/costs` group_by values (tags.{key} is TAG with the key alongside)."""

    NONE = "none"
    ENTITY = "entity"
    MODEL = "model"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TAG = "tags"


class Interval(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Filters:
    """Row filters, all ANDed. `tags` is sorted (key, value) pairs."""

    entity_type: str | None = None
    entity_id: str | None = None
    model: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def by_entity(self) -> bool:
        return self.entity_type is not None or self.entity_id is not None


@dataclass(frozen=True, slots=True)
class Grouping:
    kind: GroupBy = GroupBy.NONE
    tag_key: str | None = None  # for GroupBy.TAG


@dataclass(frozen=True, slots=True)
class BucketRead:
    """One rollup bucket to read, the output period (ISO date or YYYY-MM-DDTHH) it counts
    towards, and whether it adds to it (+1) or is subtracted from it (-1)."""

    granularity: Granularity
    label: str
    period: str | None = None
    sign: int = 1
    # 1-3: not the hour's cell but that quarter hour's field of it (keys.quarter_member).
    quarter: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    dimension: Dimension
    buckets: tuple[BucketRead, ...]
    # The one member to read with HMGET, or None: read whole hashes and keep
    # the members the filters accept (`matches`).
    member: str | None
    filters: Filters
    grouping: Grouping
    # Periods to zero-fill, in time order (time series only).
    periods: tuple[str, ...] = ()
    # group_by=tags.{key}: also read TOTAL over the same buckets.
    with_total: bool = False


class MemberInfo(NamedTuple):
    """What a rollup member says about its group; None where the dimension does not say.

    A NamedTuple: the API builds one per distinct member of a scanned hash (10,000
    for a month of entities), and a tuple is several times cheaper than a dataclass.
    """

    entity_type: str | None = None
    entity_id: str | None = None
    model: str | None = None
    provider: str | None = None
    tags: dict[str, str] | None = None
    price_source: str | None = None  # PRICE_SOURCE members only


def member_info(dimension: Dimension, member: str) -> MemberInfo:
    """Split a rollup member (keys.py encodings) into its identifiers."""
    if dimension is Dimension.TOTAL:
        return MemberInfo()
    parts = member.split(SEP)
    if dimension is Dimension.ENTITY:
        return MemberInfo(entity_type=parts[0], entity_id=parts[1])
    if dimension is Dimension.MODEL:
        return MemberInfo(model=parts[0], provider=parts[1])
    if dimension is Dimension.PRICE_SOURCE:
        return MemberInfo(model=parts[0], provider=parts[1], price_source=parts[2])
    if dimension is Dimension.TAG:
        return MemberInfo(tags={parts[0]: parts[1]})
    if dimension is Dimension.ENTITY_MODEL:
        return MemberInfo(entity_type=parts[0], entity_id=parts[1], model=parts[2], provider=parts[3])
    return MemberInfo(
        entity_type=parts[0],
        entity_id=parts[1],
        model=parts[2],
        provider=parts[3],
        tags=parse_tag_set(parts[4]),
    )


def matches(filters: Filters, info: MemberInfo) -> bool:
    """Whether a member passes every filter. The plan's dimension carries each filtered field."""
    if filters.entity_type is not None and info.entity_type != filters.entity_type:
        return False
    if filters.entity_id is not None and info.entity_id != filters.entity_id:
        return False
    if filters.model is not None and info.model != filters.model:
        return False
    if filters.tags:
        tags = info.tags or {}
        for key, value in filters.tags:
            if tags.get(key) != value:
                return False
    return True


def group_of(grouping: Grouping, info: MemberInfo) -> tuple[str | None, ...]:
    """The dimension-group key of a member: (etype, eid), (model, provider), (tag value,) or ()."""
    kind = grouping.kind
    if kind is GroupBy.ENTITY:
        return (info.entity_type, info.entity_id)
    if kind is GroupBy.MODEL:
        if info.price_source is not None:
            return (info.model, info.provider, info.price_source)
        return (info.model, info.provider)
    if kind is GroupBy.TAG:
        return ((info.tags or {}).get(grouping.tag_key or ""),)
    return ()


def choose_dimension(filters: Filters, grouping: Grouping) -> tuple[Dimension, str | None, bool]:
    """(dimension, exact member or None, with_total) for a request's filters and grouping."""
    need_entity = filters.by_entity or grouping.kind is GroupBy.ENTITY
    need_model = filters.model is not None or grouping.kind is GroupBy.MODEL
    need_tags = bool(filters.tags) or grouping.kind is GroupBy.TAG
    if need_tags:
        if not need_entity and not need_model:
            if grouping.kind is not GroupBy.TAG and len(filters.tags) == 1:
                key, value = filters.tags[0]
                return Dimension.TAG, tag_member(key, value), False
            if grouping.kind is GroupBy.TAG and not filters.tags:
                return Dimension.TAG, None, True
        return Dimension.CUBE, None, False
    if need_entity and need_model:
        return Dimension.ENTITY_MODEL, None, False
    if need_entity:
        exact = (
            entity_member(filters.entity_type, filters.entity_id)
            if filters.entity_type is not None and filters.entity_id is not None
            else None
        )
        return Dimension.ENTITY, exact, False
    if need_model:
        return Dimension.MODEL, None, False
    return Dimension.TOTAL, "", False


def _period_of_day(kind: GroupBy | Interval, day: date) -> str | None:
    if kind in (GroupBy.DAY, Interval.DAY):
        return day.isoformat()
    if kind in (GroupBy.WEEK, Interval.WEEK):
        return week_start(day).isoformat()
    if kind in (GroupBy.MONTH, Interval.MONTH):
        return month_start(day).isoformat()
    return None


def _reads(start_ms: int, end_ms: int, period: str | None) -> list[BucketRead]:
    """The cells whose signed sum is exactly [start_ms, end_ms) (core/cover.py), for `period`."""
    try:
        cover = cover_ms(start_ms, end_ms)
    except Misaligned as exc:
        # Only offsets of the early 1970s (Africa/Monrovia's -0:44:30) do this: refuse, never approximate.
        raise InvalidParameter(
            "tz",
            f"{exc}: the rollups are kept in UTC quarter hours, so this zone's days on these dates "
            "cannot be answered exactly; ask in UTC or in a zone whose offset then was whole quarter hours",
        ) from None
    return [BucketRead(read.granularity, read.label, period, read.sign, read.quarter) for read in cover]


@dataclass(frozen=True, slots=True)
class LocalPeriod:
    """One output period of a range in a zone: its key, its local days and their instants."""

    key: str  # the period's first day, YYYY-MM-DD; for an hour, its RFC 3339 local label
    start_ms: int
    end_ms: int


def local_periods(start: date, end: date, kind: GroupBy | Interval, tz: str) -> list[LocalPeriod]:
    """The periods of [start, end] in zone `tz`: local days, ISO weeks (Monday) or months, each
    cut to the range and keyed by its first day as `_period_of_day` names it; local hours
    keyed by their labels. A DST day is 23 or 25 hours, so 23 or 25 hour periods."""
    zone = zones.zone(tz)
    if kind is Interval.HOUR:
        start_ms, end_ms = zones.day_range_ms(zone, start, end)
        return [
            LocalPeriod(hour.label, hour.start_ms, hour.end_ms) for hour in zones.local_hours(zone, start_ms, end_ms)
        ]
    spans: dict[str, list[date]] = {}
    for day in days(start, end):
        key = _period_of_day(kind, day)
        assert key is not None
        spans.setdefault(key, []).append(day)
    return [LocalPeriod(key, *zones.day_range_ms(zone, span[0], span[-1])) for key, span in spans.items()]


def period_label(period: LocalPeriod, tz: str) -> str:
    """The RFC 3339 instant a time-series row is labelled with: an hour's own label, else local
    midnight of the period's key day (a week's Monday, a month's first) with the offset then."""
    if "T" in period.key:
        return period.key
    zone = zones.zone(tz)
    return zones.label_at(zone, zones.local_midnight_ms(zone, date.fromisoformat(period.key)))


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def plan_costs(start: date, end: date, filters: Filters, grouping: Grouping, tz: str = "UTC") -> Plan:
    """The plan for `/costs` (and `/models`, `/compare`: the same rules), over the local days
    start..end of zone `tz`."""
    check_periods(start, end, grouping.kind.value)
    dimension, member, with_total = choose_dimension(filters, grouping)
    buckets: list[BucketRead] = []
    if grouping.kind in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH):
        for period in local_periods(start, end, grouping.kind, tz):
            buckets.extend(_reads(period.start_ms, period.end_ms, period.key))
    else:
        buckets = _reads(*zones.day_range_ms(zones.zone(tz), start, end), None)
    return Plan(dimension, tuple(buckets), member, filters, grouping, with_total=with_total)


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def plan_timeseries(start: date, end: date, filters: Filters, interval: Interval, tz: str = "UTC") -> Plan:
    """The plan for `/costs/timeseries` (entity filters only): every local period of the
    range, in time order, keyed by its RFC 3339 label."""
    check_periods(start, end, interval.value)
    dimension, member, _ = choose_dimension(filters, Grouping())
    buckets: list[BucketRead] = []
    labels = []
    for period in local_periods(start, end, interval, tz):
        label = period_label(period, tz)
        labels.append(label)
        buckets.extend(_reads(period.start_ms, period.end_ms, label))
    return Plan(dimension, tuple(buckets), member, filters, Grouping(), periods=tuple(labels))


@dataclass(frozen=True, slots=True)
class LeaderboardPlan:
    """`/entities/top`: the boards whose signed union scores the whole UTC days of the range,
    the entity-rollup cells that give the candidates' exact totals, and, for a range that does
    not start and end on UTC midnights, the signed entity-rollup reads of the UTC days it
    covers in part, whose costs are added to those scores."""

    board_type: str
    boards: tuple[BucketRead, ...]
    rollups: tuple[BucketRead, ...]
    edges: tuple[BucketRead, ...] = ()


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def plan_leaderboard(start: date, end: date, entity_type: str | None, tz: str = "UTC") -> LeaderboardPlan:
    """Boards are kept per UTC day, month and year, so their cover may use years but holds
    whole UTC days only: the range's edges (hours and quarters) come from the entity rollup."""
    start_ms, end_ms = zones.day_range_ms(zones.zone(tz), start, end)
    rollups = tuple(_reads(start_ms, end_ms, None))
    first_midnight = -(-start_ms // MS_PER_DAY) * MS_PER_DAY
    last_midnight = end_ms // MS_PER_DAY * MS_PER_DAY
    boards: tuple[BucketRead, ...] = ()
    if first_midnight < last_midnight:
        inner_first = date(1970, 1, 1) + timedelta(days=first_midnight // MS_PER_DAY)
        inner_last = date(1970, 1, 1) + timedelta(days=last_midnight // MS_PER_DAY - 1)
        boards = _cover_reads(inner_first, inner_last, years=True)
    # The reads of the UTC days the range covers in part: what the range adds to the boards.
    partial_days = {
        day_label(date(1970, 1, 1) + timedelta(days=ms // MS_PER_DAY)) for ms in (start_ms, end_ms) if ms % MS_PER_DAY
    }
    edges = tuple(
        read
        for read in rollups
        if read.granularity in (Granularity.DAY, Granularity.HOUR) and read.label[:8] in partial_days
    )
    return LeaderboardPlan(entity_type if entity_type is not None else ALL_ENTITY_TYPES, boards, rollups, edges)


def _cover_reads(start: date, end: date, *, years: bool = False) -> tuple[BucketRead, ...]:
    """The signed month + day (+ year) cover of whole UTC days."""
    return tuple(
        BucketRead(granularity, label, None, sign) for granularity, label, sign in signed_cover(start, end, years=years)
    )


def instant_range_ms(start: date, end: date, tz: str = "UTC") -> tuple[int, int]:
    """[local midnight of start, local midnight after end) in epoch milliseconds."""
    return zones.day_range_ms(zones.zone(tz), start, end)


__all__ = [
    "BucketRead",
    "Filters",
    "GroupBy",
    "Grouping",
    "Interval",
    "LeaderboardPlan",
    "MemberInfo",
    "Plan",
    "choose_dimension",
    "group_of",
    "matches",
    "member_info",
    "LocalPeriod",
    "instant_range_ms",
    "local_periods",
    "period_label",
    "plan_costs",
    "plan_leaderboard",
    "plan_timeseries",
]

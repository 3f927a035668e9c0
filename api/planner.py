"""The query planner: which precomputed rollup answers a request, and which buckets of it. Pure.

No Redis, no asyncio: the planner turns (filters, grouping, range) into a
`Plan` naming one rollup dimension, the buckets to read and how each bucket
maps to an output period; the service executes it. docs/query-planner.md
states the rules; tests/api/test_planner.py pins them in tables.

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
from typing import NamedTuple

from infraprism.core.buckets import (
    Granularity,
    day_label,
    days,
    hour_label,
    hours,
    month_start,
    parse_day_label,
    signed_cover,
    week_start,
)
from infraprism.core.keys import (
    ALL_ENTITY_TYPES,
    SEP,
    Dimension,
    entity_member,
    parse_tag_set,
    tag_member,
)


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


TIME_GROUPS = {GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH}


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


@dataclass(frozen=True, slots=True)
class Plan:
    dimension: Dimension
    buckets: tuple[BucketRead, ...]
    # The one member to read with HMGET, or None: read whole hashes and keep
    # the members `Plan.matches` accepts.
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


def member_info(dimension: Dimension, member: str) -> MemberInfo:
    """Split a rollup member (keys.py encodings) into its identifiers."""
    if dimension is Dimension.TOTAL:
        return MemberInfo()
    parts = member.split(SEP)
    if dimension is Dimension.ENTITY:
        return MemberInfo(entity_type=parts[0], entity_id=parts[1])
    if dimension is Dimension.MODEL:
        return MemberInfo(model=parts[0], provider=parts[1])
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


def _day_iso(day: date) -> str:
    return day.isoformat()


def _period_of_day(kind: GroupBy | Interval, day: date) -> str | None:
    if kind in (GroupBy.DAY, Interval.DAY):
        return _day_iso(day)
    if kind in (GroupBy.WEEK, Interval.WEEK):
        return _day_iso(week_start(day))
    if kind in (GroupBy.MONTH, Interval.MONTH):
        return _day_iso(month_start(day))
    return None


def _cover_reads(start: date, end: date, kind: GroupBy | Interval, *, years: bool = False) -> tuple[BucketRead, ...]:
    """The signed month + day cover; each bucket tagged with its output period (month grouping or none)."""
    reads = []
    for granularity, label, sign in signed_cover(start, end, years=years):
        if granularity is Granularity.YEAR:
            first = date(int(label), 1, 1)
        else:
            first = parse_day_label(label + "01" if granularity is Granularity.MONTH else label)
        reads.append(BucketRead(granularity, label, _period_of_day(kind, first), sign))
    return tuple(reads)


def _day_reads(start: date, end: date, kind: GroupBy | Interval) -> tuple[BucketRead, ...]:
    return tuple(BucketRead(Granularity.DAY, day_label(d), _period_of_day(kind, d)) for d in days(start, end))


def _hour_reads(start: date, end: date) -> tuple[BucketRead, ...]:
    return tuple(BucketRead(Granularity.HOUR, hour_label(h), h.strftime("%Y-%m-%dT%H")) for h in hours(start, end))


def plan_costs(start: date, end: date, filters: Filters, grouping: Grouping) -> Plan:
    """The plan for `/costs` (and `/models`, `/compare`: the same rules)."""
    dimension, member, with_total = choose_dimension(filters, grouping)
    if grouping.kind in (GroupBy.DAY, GroupBy.WEEK):
        buckets = _day_reads(start, end, grouping.kind)
    else:
        buckets = _cover_reads(start, end, grouping.kind)
    return Plan(dimension, buckets, member, filters, grouping, with_total=with_total)


def periods(start: date, end: date, interval: Interval) -> tuple[str, ...]:
    """Every output bucket of a time series over [start, end], in time order."""
    if interval is Interval.HOUR:
        return tuple(h.strftime("%Y-%m-%dT%H") for h in hours(start, end))
    seen: dict[str, None] = {}
    for d in days(start, end):
        label = _period_of_day(interval, d)
        if label is not None:
            seen[label] = None
    return tuple(seen)


def plan_timeseries(start: date, end: date, filters: Filters, interval: Interval) -> Plan:
    """The plan for `/costs/timeseries` (entity filters only)."""
    dimension, member, _ = choose_dimension(filters, Grouping())
    if interval is Interval.HOUR:
        buckets = _hour_reads(start, end)
    elif interval in (Interval.DAY, Interval.WEEK):
        buckets = _day_reads(start, end, interval)
    else:
        buckets = _cover_reads(start, end, interval)
    return Plan(dimension, buckets, member, filters, Grouping(), periods=periods(start, end, interval))


@dataclass(frozen=True, slots=True)
class LeaderboardPlan:
    """`/entities/top`: the boards whose signed union picks the candidates, and the
    entity-rollup buckets that give the candidates' exact totals."""

    board_type: str
    boards: tuple[BucketRead, ...]
    rollups: tuple[BucketRead, ...]


def plan_leaderboard(start: date, end: date, entity_type: str | None) -> LeaderboardPlan:
    """Boards are kept per day, month and year, so their cover may use years; the
    entity rollup has no year buckets."""
    return LeaderboardPlan(
        entity_type if entity_type is not None else ALL_ENTITY_TYPES,
        _cover_reads(start, end, GroupBy.NONE, years=True),
        _cover_reads(start, end, GroupBy.NONE),
    )


def session_window_ms(start: date, end: date) -> tuple[int, int]:
    """[start 00:00, day after end 00:00) in epoch milliseconds, UTC."""
    epoch = date(1970, 1, 1)
    return (start - epoch).days * 86_400_000, (end + timedelta(days=1) - epoch).days * 86_400_000


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
    "periods",
    "plan_costs",
    "plan_leaderboard",
    "plan_timeseries",
    "session_window_ms",
]

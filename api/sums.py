"""Exact sums of the planner's plans: their replies summed per (output period, group) as `Cell`s.

Python ints, so no counter has a bound; the largest scans of `/costs` may take the
int64 column path instead (`api.dimension_scan`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from infraprism.api.planner import BucketRead, Filters, GroupBy, Grouping, Plan, group_of, matches, member_info
from infraprism.api.repository import Repository
from infraprism.core.buckets import Granularity
from infraprism.core.cell import EVENTS, Cell
from infraprism.core.keys import QUARTER_SEP, SEP, Dimension, quarter_member

Group = tuple[str | None, ...]  # a row's dimension values: (entity_type, entity_id), (model, provider), ...
PeriodGroup = tuple[str | None, Group]  # (output period, group)
CellsByPeriodGroup = dict[PeriodGroup, Cell]
_UNSEEN: Any = object()


async def read_sums(repository: Repository, plans: Sequence[Plan]) -> list[CellsByPeriodGroup]:
    """Each plan's sums, all read in one round trip. A with_total plan also reads TOTAL over
    the same buckets, for its row of cost without the tag (`add_untagged`)."""
    executed: list[Plan] = []
    for plan in plans:
        await repository.require_cells(plan.buckets, plan.dimension)
        executed.append(plan)
        if plan.with_total:
            executed.append(Plan(Dimension.TOTAL, plan.buckets, "", Filters(), Grouping()))
    replies = await repository.read_plans(executed)
    sums = iter([sum_replies(plan, plan_replies) for plan, plan_replies in zip(executed, replies, strict=True)])
    out = []
    for plan in plans:
        of_plan = next(sums)
        if plan.with_total:
            add_untagged(of_plan, next(sums))
        out.append(of_plan)
    return out


def sum_replies(plan: Plan, replies: Sequence[Any]) -> CellsByPeriodGroup:
    """A plan's replies (`Repository.read_plans`) summed per (period, group), adding or
    subtracting each bucket by its sign, keeping the members the plan's filters accept."""
    sums: CellsByPeriodGroup = {}
    if plan.member is not None:
        group = group_of(plan.grouping, member_info(plan.dimension, plan.member))
        (per_bucket,) = replies
        for read, (packed,) in zip(plan.buckets, per_bucket, strict=True):
            if packed is None:
                continue  # member absent from this bucket
            key = (read.period, group)
            cell = sums.get(key)
            if cell is None:
                cell = sums[key] = Cell.zero()
            cell.add(Cell.unpack(packed), read.sign)
        # A member counted only in subtracted buckets had no events in the range.
        return {key: cell for key, cell in sums.items() if cell[EVENTS]}

    # The hot loop: each distinct member is classified once, and those the filters refuse
    # are skipped before their cells are parsed.
    classify = classifier(plan)
    groups: dict[str, Any] = {}
    for read, cells_of_bucket in zip(plan.buckets, replies, strict=True):
        period, sign = read.period, read.sign
        for member, packed in fields_of(read, cells_of_bucket):
            found: Any = groups.get(member, _UNSEEN)
            if found is _UNSEEN:
                found = groups[member] = classify(member)
            if found is None:
                continue
            counters = Cell.unpack(packed)
            key = (period, found)
            cell = sums.get(key)
            if cell is None:
                sums[key] = counters if sign > 0 else counters.negated()
            else:
                cell.add(counters, sign)
    # A group counted only in subtracted buckets had no events in the range.
    return {key: cell for key, cell in sums.items() if cell[EVENTS]}


def fields_of(read: BucketRead, cells_of_bucket: dict[str, str]) -> Iterable[tuple[str, str]]:
    """(member, packed cell) of what `read` names in its hash: an hour hash also holds its
    quarter hours' fields (keys.quarter_member), which are either what is read or left out."""
    if read.granularity is not Granularity.HOUR:
        return cells_of_bucket.items()
    if not read.quarter:
        return [(field, packed) for field, packed in cells_of_bucket.items() if QUARTER_SEP not in field]
    suffix = quarter_member("", read.quarter)
    return [(field[: -len(suffix)], packed) for field, packed in cells_of_bucket.items() if field.endswith(suffix)]


def entities_by_entity(plan: Plan) -> bool:
    """The commonest scan: the entity rollup grouped by entity, filtered by entity at most.
    A member's identifiers are then its group."""
    filters = plan.filters
    return (
        plan.dimension is Dimension.ENTITY
        and plan.grouping.kind is GroupBy.ENTITY
        and not filters.tags
        and filters.model is None
    )


def classifier(plan: Plan) -> Callable[[str], Group | None]:
    """member -> its group, or None when the plan's filters refuse it."""
    dimension, filters, grouping = plan.dimension, plan.filters, plan.grouping
    if entities_by_entity(plan):
        wanted_type, wanted_id = filters.entity_type, filters.entity_id

        def entity_group(member: str) -> Group | None:
            entity_type, entity_id = member.split(SEP, 1)
            if (wanted_type is not None and entity_type != wanted_type) or (
                wanted_id is not None and entity_id != wanted_id
            ):
                return None
            return (entity_type, entity_id)

        return entity_group
    only_keyed = plan.with_total  # group_by=tags.{key}: keep the grouping key's members only

    def any_group(member: str) -> Group | None:
        info = member_info(dimension, member)
        if not matches(filters, info):
            return None
        group = group_of(grouping, info)
        if only_keyed and group[0] is None:
            return None
        return group

    return any_group


def add_untagged(sums: CellsByPeriodGroup, totals: CellsByPeriodGroup) -> None:
    """group_by=tags.{key}: the row of cost lacking the tag is the total minus every tagged row."""
    for (period, _), total in totals.items():
        rest = Cell(total)
        for (tag_period, _group), cell in sums.items():
            if tag_period == period:
                rest.add(cell, -1)
        if rest[EVENTS] > 0:
            sums[(period, (None,))] = rest


def by_group(sums: CellsByPeriodGroup) -> dict[Group, Cell]:
    """Summed over periods: group -> counters."""
    out: dict[Group, Cell] = {}
    for (_, group), cell in sums.items():
        into = out.get(group)
        if into is None:
            out[group] = Cell(cell)
        else:
            into.add(cell)
    return out


def by_period(sums: CellsByPeriodGroup) -> dict[str | None, Cell]:
    """Summed over groups: period -> counters."""
    out: dict[str | None, Cell] = {}
    for (period, _), cell in sums.items():
        out.setdefault(period, Cell.zero()).add(cell)
    return out


def grand_total(sums: CellsByPeriodGroup) -> Cell:
    return Cell.total(sums.values())


__all__ = [
    "CellsByPeriodGroup",
    "Group",
    "add_untagged",
    "by_group",
    "by_period",
    "classifier",
    "entities_by_entity",
    "fields_of",
    "grand_total",
    "read_sums",
    "sum_replies",
]

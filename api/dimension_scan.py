"""The column path of `/costs` by entity or model: whole rollup hashes summed as int64 columns.

Buckets unchanged since an earlier request come parsed from the bucket cache; the
others are read in one round trip. Whenever exactness cannot be proven for int64
(`api.columns`), the scan gives up and the caller sums with Python ints (`api.sums`).
"""

from __future__ import annotations

import itertools

import numpy as np

from infraprism.api.cache import BucketCache, ScannedBucket
from infraprism.api.columns import MAX_SUMMED_BUCKETS, Matrix, signed_sum, within_exact_range
from infraprism.api.planner import Plan
from infraprism.api.repository import Repository
from infraprism.api.shaping import DIMENSION_FIELDS
from infraprism.api.sums import Group, classifier, entities_by_entity, fields_of
from infraprism.core.buckets import Granularity
from infraprism.core.cell import EVENTS
from infraprism.core.keys import QUARTER_SEP


def is_bulk_scan(plan: Plan) -> bool:
    """Whether `/costs` may sum this plan column-wise: a whole-hash scan grouped by a dimension."""
    return plan.member is None and not plan.with_total and plan.grouping.kind in DIMENSION_FIELDS


def _entity_type_of_scan(plan: Plan) -> str | None:
    """For costs by entity, maybe of one type, over every entity id: the type wanted ("" for
    any), None for every other scan."""
    if entities_by_entity(plan) and plan.filters.entity_id is None:
        return plan.filters.entity_type or ""
    return None


async def scan_dimension(repository: Repository, buckets: BucketCache, plan: Plan) -> tuple[list[Group], Matrix] | None:
    """A dimension grouping's groups with events in the range, and their summed counters
    as an int64 matrix, row for row. None when a counter is outside the exact range of
    `api.columns`, or a group has a null value."""
    if len(plan.buckets) > MAX_SUMMED_BUCKETS:
        return None
    await repository.check_scan_size(repository.rollup_keys(plan))
    parts = await _scanned_buckets(repository, buckets, plan)
    if parts is None:
        return None
    present, sums = signed_sum(parts, [read.sign for read in plan.buckets])
    if not within_exact_range(sums):
        return None
    keep = sums[:, EVENTS] != 0  # a member counted only in subtracted buckets had no events
    entity_type = _entity_type_of_scan(plan)
    if entity_type is not None:
        # A member's identifiers, type and id, are its group.
        member_parts = buckets.member_parts
        groups = [member_parts[member_id] for member_id in present.tolist()]
        if entity_type:
            keep &= np.array([group[0] == entity_type for group in groups], dtype=bool)
        return list(itertools.compress(groups, keep.tolist())), sums[keep]
    # Several members can share a group (an entity-model member grouped by model).
    classify = classifier(plan)
    members = buckets.members
    group_rows: dict[Group, int] = {}
    rows_of_members = []
    kept_members = []
    for position, member_id in enumerate(present.tolist()):
        group = classify(members[member_id]) if keep[position] else None
        if group is not None:
            rows_of_members.append(group_rows.setdefault(group, len(group_rows)))
            kept_members.append(position)
    if any(None in group for group in group_rows):
        return None  # a null value sorts after the others: `shaping.sorted_groups` orders these rows
    grouped = np.zeros((len(group_rows), 6), dtype=np.int64)
    np.add.at(grouped, rows_of_members, sums[kept_members])
    if not within_exact_range(grouped):
        return None
    return list(group_rows), grouped


async def _scanned_buckets(repository: Repository, buckets: BucketCache, plan: Plan) -> list[ScannedBucket] | None:
    """The plan's reads parsed, numbered in one vocabulary, as one moment's data. An hour
    hash is parsed once per part read of it: its hour's cells, or one quarter hour's fields
    (keys.quarter_member), each kept in the bucket cache apart."""
    keys = repository.rollup_keys(plan)
    reads = plan.buckets
    part_keys = [
        key if read.granularity is not Granularity.HOUR else f"{key}{QUARTER_SEP}{read.quarter}"
        for key, read in zip(keys, reads, strict=True)
    ]
    tokens = repository.bucket_tokens
    vocabulary = buckets.vocabulary
    parts = [
        buckets.get(part, tokens[key]) if key in tokens else None for part, key in zip(part_keys, keys, strict=True)
    ]
    missing = [index for index, part in enumerate(parts) if part is None]
    if missing:
        wanted = list(dict.fromkeys(keys[index] for index in missing))
        replies, fresh = await repository.read_hashes(wanted)
        if len(missing) < len(keys) and any(fresh[key] != tokens[key] for key in fresh):
            # A batch landed since the versions were read: the cached parts hold the data
            # as it was then, the fresh ones as it is now. Read all of them together instead.
            missing = list(range(len(keys)))
            wanted = list(dict.fromkeys(keys))
            replies, fresh = await repository.read_hashes(wanted)
        hashes = dict(zip(wanted, replies, strict=True))
        for index in missing:
            key = keys[index]
            cells = dict(fields_of(reads[index], hashes[key]))
            parts[index] = buckets.parse(part_keys[index], fresh[key], cells)
            if parts[index] is None:
                return None
    if buckets.vocabulary is not vocabulary:
        return None  # parsing renumbered the members (the vocabulary was full): ids do not mix
    return [part for part in parts if part is not None]  # all of them by now


__all__ = ["is_bulk_scan", "scan_dimension"]

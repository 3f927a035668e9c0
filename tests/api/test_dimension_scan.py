"""The column path of /costs: the same sums as the int path, from cached and fresh buckets of
one moment, and a refusal (so the int path answers) wherever int64 cannot be proven exact."""

from __future__ import annotations

from datetime import date

import pytest
import redis.asyncio as aioredis

from infraprism.api.cache import BucketCache, ResponseCache
from infraprism.api.costs import CostsService
from infraprism.api.dimension_scan import is_bulk_scan, scan_dimension
from infraprism.api.planner import Filters, GroupBy, Grouping, plan_costs
from infraprism.api.repository import Repository
from infraprism.api.sums import by_group, read_sums
from infraprism.core.buckets import Granularity
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.settings import Settings
from tests.api.helpers import load_events, sample_event

RANGE = (date(2025, 1, 1), date(2025, 2, 10))  # January as its month bucket, February 1-10 as days


def event(project: str, n: int, cost: float, timestamp: str = "2025-01-15T10:00:00Z") -> dict[str, object]:
    return {**sample_event(project, n, "acme", cost), "event_id": f"scan-{n}", "timestamp": timestamp}


@pytest.mark.parametrize(
    ("filters", "grouping", "bulk"),
    [
        (Filters(), Grouping(GroupBy.ENTITY), True),
        (Filters(model="gpt-4o"), Grouping(GroupBy.ENTITY), True),  # entity-model scan
        (Filters(), Grouping(GroupBy.MODEL), True),
        (Filters(entity_type="customer", entity_id="acme"), Grouping(GroupBy.ENTITY), False),  # one member
        (Filters(), Grouping(GroupBy.TAG, "feature"), False),  # needs the untagged row
        (Filters(), Grouping(GroupBy.DAY), False),
        (Filters(), Grouping(), False),
    ],
)
def test_only_whole_hash_scans_grouped_by_a_dimension_take_the_column_path(filters, grouping, bulk):
    assert is_bulk_scan(plan_costs(*RANGE, filters, grouping)) is bulk


@pytest.mark.parametrize(
    ("filters", "grouping"),
    [
        (Filters(), Grouping(GroupBy.ENTITY)),
        (Filters(entity_type="team"), Grouping(GroupBy.ENTITY)),
        (Filters(entity_id="acme"), Grouping(GroupBy.ENTITY)),
        (Filters(), Grouping(GroupBy.MODEL)),
        (Filters(entity_type="customer"), Grouping(GroupBy.MODEL)),
        (Filters(tags=(("feature", "chat:bot"),)), Grouping(GroupBy.MODEL)),
    ],
)
async def test_the_column_sums_are_the_int_sums(
    repository: Repository, redis_client: aioredis.Redis, settings: Settings, filters, grouping
):
    project = repository.project
    events = [
        {
            **sample_event(
                project, n, ["acme", "globex", "acme"][n % 3], 0.5 + n, entity_type=["customer", "team"][n % 2]
            ),
            "model": ["gpt-4o", "o3"][n % 2],
            "timestamp": f"2025-{1 + n % 2:02d}-{1 + n % 9:02d}T10:00:00Z",
        }
        for n in range(20)
    ]
    # Only on January 1, which the range subtracts from January: no events in the range.
    events.append({**sample_event(project, 99, "gone", 4.0, model="gone"), "timestamp": "2025-01-01T10:00:00Z"})
    await load_events(redis_client, settings, events)
    plan = plan_costs(date(2025, 1, 2), date(2025, 2, 6), filters, grouping)  # months minus days, and days
    scanned = await scan_dimension(repository, BucketCache(), plan)
    assert scanned is not None
    groups, sums = scanned
    (int_sums,) = await read_sums(repository, [plan])
    assert dict(zip(groups, sums.tolist(), strict=True)) == by_group(int_sums)
    assert groups
    assert not any("gone" in group for group in groups)


async def test_a_counter_past_the_exact_bound_is_refused(repository: Repository, redis_client: aioredis.Redis):
    key = repository.layout.rollup(repository.project, Dimension.ENTITY, Granularity.MONTH, "202501")
    await redis_client.hset(key, mapping={"customer\x1facme": "1 1000000000000000 0 0 0 0"})
    plan = plan_costs(date(2025, 1, 1), date(2025, 1, 31), Filters(), Grouping(GroupBy.ENTITY))
    assert await scan_dimension(repository, BucketCache(), plan) is None
    body = await CostsService(repository).costs(
        date(2025, 1, 1), date(2025, 1, 31), Filters(), Grouping(GroupBy.ENTITY), "UTC"
    )
    assert body["data"][0]["total_cost"] == 1_000_000.0  # the int path answers, exactly


async def test_member_ids_renumbered_mid_read_fall_back_to_exact_ints(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """A bucket cache whose vocabulary fills up renumbers its members. A read that parsed
    some buckets under the old numbers must not sum them with the new ones: it falls back
    to the plain-int path and still gets the exact answer."""
    entities = ["a", "b", "c", "d"]
    events = [
        {**event(project, n, 1.0 + n, "2025-01-15T10:00:00Z"), "entity_id": entity}
        for n, entity in enumerate(entities[:3])
    ] + [
        {**event(project, 10 + n, 0.5 + n, "2025-02-03T10:00:00Z"), "entity_id": entity}
        for n, entity in enumerate(entities[1:])
    ]
    await load_events(redis_client, settings, events)
    layout = KeyLayout(settings.key_prefix)
    read = (*RANGE, Filters(), Grouping(GroupBy.ENTITY), "UTC")

    roomy = await CostsService(Repository(redis_client, layout, project), ResponseCache()).costs(*read)
    cramped_cache = ResponseCache()
    cramped_cache.buckets = BucketCache(max_members=4)  # January's 3 members + February's 3 overflow
    plan = plan_costs(*read)
    assert await scan_dimension(Repository(redis_client, layout, project), cramped_cache.buckets, plan) is None
    cramped = await CostsService(Repository(redis_client, layout, project), cramped_cache).costs(*read)

    assert cramped == roomy
    # a: 1.0; b: 2.0 + 0.5; c: 3.0 + 1.5; d: 2.5. Equal costs in entity order.
    assert [(row["entity_id"], row["total_cost"]) for row in roomy["data"]] == [
        ("c", 4.5),
        ("b", 2.5),
        ("d", 2.5),
        ("a", 1.0),
    ]


async def test_cached_and_fresh_buckets_from_different_moments_are_not_mixed(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """The versions are read, then the missing buckets. When a batch lands in between, the
    cached buckets show the data before it and the fresh ones after it: the read sees the
    moved version and reads every bucket again, in one MULTI/EXEC."""
    layout = KeyLayout(settings.key_prefix)
    cache = ResponseCache()
    read = (*RANGE, Filters(), Grouping(GroupBy.ENTITY), "UTC")
    await load_events(redis_client, settings, [event(project, 1, 1.25), event(project, 2, 2.0, "2025-02-05T08:00:00Z")])
    first = Repository(redis_client, layout, project)
    assert (await CostsService(first, cache).costs(*read))["summary"]["total_cost"] == 3.25
    tokens_before = dict(first.bucket_tokens)

    # January's rollup removed behind Redis's back (its version stands, its parsed copy is
    # cached), February 5's parsed copy evicted, then a batch into February 5.
    await redis_client.delete(layout.rollup(project, Dimension.ENTITY, Granularity.MONTH, "202501"))
    february_5 = layout.rollup(project, Dimension.ENTITY, Granularity.DAY, "20250205")
    cache.buckets._entries.pop(february_5)
    await load_events(redis_client, settings, [event(project, 3, 0.5, "2025-02-05T09:00:00Z")])

    # A read whose versions were read before that batch: February 5 is read fresh and its
    # version has moved, so January's cached copy (the moment before) is not used.
    late = Repository(redis_client, layout, project, bucket_tokens=tokens_before)
    scanned = await scan_dimension(late, cache.buckets, plan_costs(*read))
    assert scanned is not None
    groups, sums = scanned
    assert groups == [("customer", "acme")]
    assert sums[:, :2].tolist() == [[2, 2_500_000_000]]

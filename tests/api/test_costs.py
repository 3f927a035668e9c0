"""/costs, /costs/timeseries, /models and /compare, through the service and over HTTP."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import httpx
import redis.asyncio as aioredis

from infraprism.api.cache import ResponseCache
from infraprism.api.costs import CostsService
from infraprism.api.planner import Filters, GroupBy, Grouping, Interval
from infraprism.api.repository import Repository
from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import PriceBook, PriceOverride
from infraprism.settings import Settings
from tests.api.helpers import RANGE, load_events, sample_event

JANUARY = (date(2025, 1, 1), date(2025, 1, 31))


def fresh(repository: Repository) -> Repository:
    """The same project's repository for another request."""
    return Repository(repository.redis, repository.layout, repository.project)


async def test_a_recomputed_answer_reshapes_only_the_rows_whose_sums_changed(
    repository: Repository, redis_client: aioredis.Redis, settings: Settings
):
    """After a batch, costs by entity takes the rows of unchanged entities as they were
    shaped (the same dicts) and shapes the changed and new ones: the answer is the one a
    service without any cache computes."""
    project = repository.project
    cache = ResponseCache()
    read = (*JANUARY, Filters(), Grouping(GroupBy.ENTITY), "UTC")
    await load_events(
        redis_client,
        settings,
        [sample_event(project, 1, "a", 1.0), sample_event(project, 2, "b", 2.0), sample_event(project, 3, "c", 3.0)],
    )
    first = await CostsService(fresh(repository), cache).costs(*read)
    by_id = {row["entity_id"]: row for row in first["data"]}

    await load_events(redis_client, settings, [sample_event(project, 4, "b", 5.0), sample_event(project, 5, "d", 0.5)])
    second = await CostsService(fresh(repository), cache).costs(*read)
    assert second is not first
    assert second == await CostsService(fresh(repository)).costs(*read)
    rows = {row["entity_id"]: row for row in second["data"]}
    assert [row["entity_id"] for row in second["data"]] == ["b", "c", "a", "d"]
    assert rows["a"] is by_id["a"]
    assert rows["c"] is by_id["c"]
    assert rows["b"] is not by_id["b"]
    assert (rows["b"]["total_cost"], rows["b"]["total_events"]) == (7.0, 2)
    assert (rows["d"]["total_cost"], rows["d"]["total_events"]) == (0.5, 1)


async def test_tag_rows_add_up_to_the_summary(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    events = [
        sample_event(project, 1, "acme", 1.0, tags={"feature": "chat"}),
        sample_event(project, 2, "acme", 2.0, tags={"feature": "search"}),
        sample_event(project, 3, "acme", 4.0, tags={"env": "prod"}),
    ]
    await load_events(redis_client, settings, events)
    body = await CostsService(repository).costs(*JANUARY, Filters(), Grouping(GroupBy.TAG, "feature"), "UTC")
    assert [(row["tag_key"], row["tag_value"], row["total_cost"]) for row in body["data"]] == [
        ("feature", None, 4.0),  # the cost without the tag
        ("feature", "search", 2.0),
        ("feature", "chat", 1.0),
    ]
    assert body["summary"]["total_cost"] == sum(row["total_cost"] for row in body["data"]) == 7.0


async def test_time_groupings_are_in_time_order(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    days = ["2025-01-31", "2025-01-05", "2025-02-03", "2025-01-06"]
    events = [{**sample_event(project, n, "acme", 1.0), "timestamp": f"{day}T10:00:00Z"} for n, day in enumerate(days)]
    await load_events(redis_client, settings, events)
    service = CostsService(repository)
    span = (date(2025, 1, 5), date(2025, 2, 3))
    expected = {
        GroupBy.DAY: ["2025-01-05", "2025-01-06", "2025-01-31", "2025-02-03"],
        GroupBy.WEEK: ["2024-12-30", "2025-01-06", "2025-01-27", "2025-02-03"],  # Mondays: Jan 5 is a Sunday
        GroupBy.MONTH: ["2025-01-01", "2025-02-01"],
    }
    for kind, periods in expected.items():
        body = await service.costs(*span, Filters(), Grouping(kind), "UTC")
        assert [row["period"] for row in body["data"]] == periods, kind
        assert sum(row["total_events"] for row in body["data"]) == 4


async def test_timeseries_is_zero_filled_in_time_order(with_sample_events: httpx.AsyncClient):
    body = (
        await with_sample_events.get(
            "/v1/analytics/costs/timeseries",
            params={"start_date": "2024-12-30", "end_date": "2025-01-02", "interval": "day"},
        )
    ).json()
    assert body["interval"] == "day"
    assert [p["timestamp"] for p in body["data"]] == [
        "2024-12-30T00:00:00Z",
        "2024-12-31T00:00:00Z",
        "2025-01-01T00:00:00Z",
        "2025-01-02T00:00:00Z",
    ]
    assert body["data"][0] == {"timestamp": "2024-12-30T00:00:00Z", "cost": 0.0, "events": 0}
    assert body["data"][2]["events"] == 1


async def test_an_hourly_series_has_every_hour(repository: Repository, redis_client, settings: Settings):
    await load_events(redis_client, settings, [sample_event(repository.project, 3, "acme", 0.75)])  # Jan 4, 03:00
    body = await CostsService(repository).timeseries(
        date(2025, 1, 4), date(2025, 1, 4), Filters(), Interval.HOUR, "UTC"
    )
    assert len(body["data"]) == 24
    assert body["data"][3] == {"timestamp": "2025-01-04T03:00:00Z", "cost": 0.75, "events": 1}
    assert body["interval"] == "hour"


async def test_tag_values_with_colons_filter_and_group(with_sample_events: httpx.AsyncClient):
    body = (await with_sample_events.get("/v1/analytics/costs", params={**RANGE, "tags": "feature:chat:bot"})).json()
    assert body["summary"]["total_events"] == 12
    none = (await with_sample_events.get("/v1/analytics/costs", params={**RANGE, "tags": "feature:chat"})).json()
    assert none["summary"]["total_events"] == 0


async def test_models_share_the_total_cost(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    events = [
        {**sample_event(project, 1, "acme", 1.0), "model": "o3"},
        {**sample_event(project, 2, "acme", 2.0), "model": "gpt-4o"},
    ]
    await load_events(redis_client, settings, events)
    body = await CostsService(repository).models(*JANUARY, Filters(), "UTC")
    assert [(row["model"], row["total_cost"], row["percentage_of_total"]) for row in body["data"]] == [
        ("gpt-4o", 2.0, 66.7),
        ("o3", 1.0, 33.3),
    ]
    assert await CostsService(repository).models(date(2024, 1, 1), date(2024, 1, 2), Filters(), "UTC") == {"data": []}


async def test_models_say_where_their_prices_came_from(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    own = PriceOverride("ft:gpt-4o:acme", None, None, 0, input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))
    book = PriceBook(1, {project: [own]})
    no_cost = {"input_tokens": 1000, "output_tokens": 100}
    events = [
        {**sample_event(project, 1, "acme", 1.0), "model": "gpt-4o"},  # January 2: its own cost
        {**{k: v for k, v in sample_event(project, 2, "acme", 0).items() if k != "cost"}, **no_cost},  # the catalog
        {**{k: v for k, v in sample_event(project, 3, "acme", 0).items() if k != "cost"}, **no_cost},
    ]
    events[1]["model"] = "gpt-4o"
    events[2]["model"] = "ft:gpt-4o:acme"
    await load_events(redis_client, settings, events, book=book)
    service = CostsService(repository)

    async def sources(start: date, end: date) -> dict[str, str | None]:
        return {
            row["model"]: row["price_source"] for row in (await service.models(start, end, Filters(), "UTC"))["data"]
        }

    assert await sources(date(2025, 1, 2), date(2025, 1, 2)) == {"gpt-4o": "supplied"}
    assert await sources(date(2025, 1, 3), date(2025, 1, 3)) == {"gpt-4o": "catalog"}
    assert await sources(*JANUARY) == {"gpt-4o": "mixed", "ft:gpt-4o:acme": "override"}
    # Aggregated by a build before price sources: the rows say they do not know.
    layout = KeyLayout(settings.key_prefix)
    await redis_client.delete(*[key async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:r:ps:*")])
    service = CostsService(repository)
    assert await sources(date(2025, 1, 3), date(2025, 1, 4)) == {"gpt-4o": None, "ft:gpt-4o:acme": None}


async def test_compare_is_period1_minus_period2(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    events = [
        sample_event(project, 1, "acme", 3.0),  # January 2
        sample_event(project, 20, "acme", 1.0),  # January 21
        sample_event(project, 21, "acme", 1.0),  # January 22
    ]
    await load_events(redis_client, settings, events)
    service = CostsService(repository)
    body = await service.compare(
        (date(2025, 1, 1), date(2025, 1, 15)), (date(2025, 1, 16), date(2025, 1, 31)), Filters(), "UTC"
    )
    assert body == {
        "period1": {"start": "2025-01-01", "end": "2025-01-15", "tz": "UTC", "total_cost": 3.0, "total_events": 1},
        "period2": {"start": "2025-01-16", "end": "2025-01-31", "tz": "UTC", "total_cost": 2.0, "total_events": 2},
        "changes": {
            "cost_change": 1.0,
            "cost_change_percent": 50.0,
            "events_change": -1,
            "events_change_percent": -50.0,
        },
    }
    empty = await service.compare(
        (date(2025, 1, 1), date(2025, 1, 15)), (date(2024, 1, 1), date(2024, 1, 2)), Filters(), "UTC"
    )
    assert empty["changes"]["cost_change_percent"] is None  # relative to nothing
    assert empty["changes"]["events_change_percent"] is None

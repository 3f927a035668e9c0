"""/entities/top: candidates from the leaderboards, exact totals and order from the rollups."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from infraprism.api.cache import ResponseCache
from infraprism.api.leaderboard import LeaderboardService
from infraprism.api.repository import Repository
from infraprism.settings import Settings
from tests.api.helpers import RANGE, load_events, sample_event


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_top_breaks_ties_by_entity_type_then_id(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client, order, limit
):
    # Four entities with equal cost around the cut, one cheaper and one dearer.
    spend = {("team", "b"): 2.0, ("customer", "z"): 2.0, ("customer", "a"): 2.0, ("team", "a"): 2.0}
    spend |= {("customer", "cheap"): 1.0, ("team", "dear"): 3.0}
    events = []
    for n, ((etype, eid), cost) in enumerate(spend.items()):
        events.append({**sample_event(project, n, eid, cost), "entity_type": etype, "event_id": f"t{n}"})
    await load_events(redis_client, settings, events)
    body = (await authed.get("/v1/analytics/entities/top", params={**RANGE, "limit": limit, "order": order})).json()
    tied = [("customer", "a"), ("customer", "z"), ("team", "a"), ("team", "b")]
    expected = ([("team", "dear")] + tied) if order == "desc" else ([("customer", "cheap")] + tied)
    assert [(r["entity_type"], r["entity_id"]) for r in body["data"]] == expected[:limit]
    assert [r["rank"] for r in body["data"]] == list(range(1, limit + 1))


async def test_top_entities_of_one_type_sum_every_bucket_of_the_range(
    repository: Repository, redis_client, settings: Settings
):
    project = repository.project
    events = [
        sample_event(project, 1, "acme", 1.5, timestamp="2025-01-02T10:00:00Z"),
        sample_event(project, 2, "acme", 0.25, timestamp="2025-02-03T10:00:00Z"),
        sample_event(project, 3, "globex", 1.0, timestamp="2025-01-20T10:00:00Z"),
        sample_event(project, 4, "globex", 9.0, timestamp="2025-02-04T10:00:00Z"),  # after the range
        sample_event(project, 5, "ops", 5.0, entity_type="team"),
    ]
    await load_events(redis_client, settings, events)
    service = LeaderboardService(repository, ResponseCache())
    body = await service.top_entities(date(2025, 1, 2), date(2025, 2, 3), "customer", 10, True, "UTC")
    assert body == {
        "data": [
            {"entity_type": "customer", "entity_id": "acme", "total_cost": 1.75, "total_events": 2, "rank": 1},
            {"entity_type": "customer", "entity_id": "globex", "total_cost": 1.0, "total_events": 1, "rank": 2},
        ]
    }
    cheapest = await service.top_entities(date(2025, 1, 2), date(2025, 2, 3), None, 1, False, "UTC")
    assert [(row["entity_id"], row["total_cost"]) for row in cheapest["data"]] == [("globex", 1.0)]
    assert await LeaderboardService(repository).top_entities(
        date(2024, 1, 1), date(2024, 12, 31), None, 5, True, "UTC"
    ) == {"data": []}

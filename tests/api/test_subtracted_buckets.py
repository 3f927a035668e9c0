"""Ranges read as a bucket minus its days outside the range (planner.signed_cover).

An entity whose events all lie in the subtracted part sums to zero events; it
must vanish from every answer, including /entities/top in both orders, where
its leaderboard score is 0 like that of an entity whose events really cost 0.
"""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from infraprism.api.planner import Filters, GroupBy, Grouping, plan_costs, plan_leaderboard
from infraprism.settings import Settings
from tests.api.helpers import load_events

JAN_1_TO_29 = {"start_date": "2025-01-01", "end_date": "2025-01-29"}  # January minus the 30th and 31st
JAN_1_TO_DEC_3 = {"start_date": "2025-01-01", "end_date": "2025-12-03"}  # 2025 minus December plus 3 days


def _event(project: str, n: int, entity_id: str, day: str, cost: float) -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "timestamp": f"{day}T12:00:00Z",
        "project_id": project,
        "entity_type": "customer",
        "entity_id": entity_id,
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
    }


@pytest.fixture
async def loaded(authed: httpx.AsyncClient, settings: Settings, project: str, redis_client) -> httpx.AsyncClient:
    events = [
        _event(project, 1, "acme", "2025-01-05", 1.0),
        _event(project, 2, "freebie", "2025-01-10", 0.0),  # in range, and free
        _event(project, 3, "globex", "2025-01-30", 2.0),  # outside January 1-29, inside Jan 1 - Dec 3
        *(_event(project, 10 + i, f"late-{i}", "2025-12-20", 3.0) for i in range(3)),  # outside both
    ]
    await load_events(redis_client, settings, events)
    return authed


def test_the_ranges_below_really_subtract():
    january = plan_costs(date(2025, 1, 1), date(2025, 1, 29), Filters(), Grouping(GroupBy.ENTITY))
    assert [(b.label, b.sign) for b in january.buckets] == [("202501", 1), ("20250130", -1), ("20250131", -1)]
    year = plan_leaderboard(date(2025, 1, 1), date(2025, 12, 3), None)
    assert [(b.label, b.sign) for b in year.boards] == [
        ("2025", 1),
        ("202512", -1),
        ("20251201", 1),
        ("20251202", 1),
        ("20251203", 1),
    ]


async def test_costs_by_entity_drop_entities_only_in_subtracted_days(loaded: httpx.AsyncClient):
    body = (await loaded.get("/v1/analytics/costs", params={**JAN_1_TO_29, "group_by": "entity"})).json()
    assert [(row["entity_id"], row["total_cost"], row["total_events"]) for row in body["data"]] == [
        ("acme", 1.0, 1),
        ("freebie", 0.0, 1),
    ]
    assert body["summary"]["total_cost"] == 1.0
    assert body["summary"]["total_events"] == 2


async def test_costs_of_an_entity_only_in_subtracted_days_are_empty(loaded: httpx.AsyncClient):
    params = {**JAN_1_TO_29, "entity_type": "customer", "entity_id": "globex", "group_by": "entity"}
    body = (await loaded.get("/v1/analytics/costs", params=params)).json()
    assert body["data"] == []
    assert body["summary"]["total_events"] == 0


@pytest.mark.parametrize(
    ("params", "order", "limit", "expected"),
    [
        (JAN_1_TO_29, "asc", 1, ["freebie"]),
        (JAN_1_TO_29, "asc", 2, ["freebie", "acme"]),
        (JAN_1_TO_29, "desc", 10, ["acme", "freebie"]),
        # Three entities score 0 only through subtraction, ahead of acme in ascending order.
        (JAN_1_TO_DEC_3, "asc", 2, ["freebie", "acme"]),
        (JAN_1_TO_DEC_3, "asc", 10, ["freebie", "acme", "globex"]),
        (JAN_1_TO_DEC_3, "desc", 2, ["globex", "acme"]),
        (JAN_1_TO_DEC_3, "desc", 10, ["globex", "acme", "freebie"]),
    ],
)
async def test_top_entities_skip_entities_only_in_subtracted_buckets(loaded, params, order, limit, expected):
    response = await loaded.get("/v1/analytics/entities/top", params={**params, "order": order, "limit": limit})
    rows = response.json()["data"]
    assert [row["entity_id"] for row in rows] == expected
    assert [row["rank"] for row in rows] == list(range(1, len(expected) + 1))


async def test_ascending_top_over_thousands_of_zero_scores(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client
):
    """Ascending order keeps every member scoring 0, and a busy project can have thousands
    (free entities, or ones active only in subtracted days). Their cells are read in the same
    script in chunks: one HMGET of them all would overflow Lua's stack (about 8,000 values)."""
    events = [
        *(_event(project, n, f"free-{n:05d}", "2025-01-10", 0.0) for n in range(8_200)),
        _event(project, 9_001, "cheap", "2025-01-12", 0.25),
        _event(project, 9_002, "dear", "2025-01-12", 4.0),
    ]
    await load_events(redis_client, settings, events, batches=4)
    response = await authed.get("/v1/analytics/entities/top", params={**JAN_1_TO_29, "order": "asc", "limit": 3})
    assert response.status_code == 200, response.text
    assert [(row["entity_id"], row["total_cost"], row["rank"]) for row in response.json()["data"]] == [
        ("free-00000", 0.0, 1),
        ("free-00001", 0.0, 2),
        ("free-00002", 0.0, 3),
    ]
    response = await authed.get("/v1/analytics/entities/top", params={**JAN_1_TO_29, "order": "desc", "limit": 2})
    assert [row["entity_id"] for row in response.json()["data"]] == ["dear", "cheap"]

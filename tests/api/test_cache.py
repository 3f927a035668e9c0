"""The response cache serves a repeated read, and never a stale one."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from tests.api.helpers import load_events

PARAMS = {"start_date": "2025-01-01", "end_date": "2025-01-31", "group_by": "entity"}


def event(project: str, n: int, cost: float, timestamp: str = "2025-01-15T10:00:00Z") -> dict[str, object]:
    return {
        "event_id": f"cache-{n}", "timestamp": timestamp, "project_id": project,
        "entity_type": "customer", "entity_id": "acme", "model": "gpt-4o", "provider": "openai",
        "input_tokens": 10, "output_tokens": 5, "cost": cost,
    }


async def test_repeat_is_served_from_cache_and_a_new_batch_invalidates_it(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    first = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert first["summary"]["total_cost"] == 1.25

    # Remove the rollups behind Redis's back (no batch, so no version change):
    # an identical request is answered from the cache.
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:r:*"):
        await redis_client.delete(key)
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json() == first

    # A real batch bumps the project's data version in the same atomic call:
    # the next read is fresh (and sees only what Redis now holds).
    await load_events(redis_client, settings, [event(project, 2, 0.5)])
    fresh = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert fresh["summary"]["total_cost"] == 0.5
    assert fresh["data"][0]["total_events"] == 1


async def test_cache_is_per_project_and_per_query(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    await load_events(redis_client, settings, [event(project, 1, 2.0), event("someone-else", 1, 9.0)])
    january = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    february = (await authed.get("/v1/analytics/costs", params={**PARAMS, "start_date": "2025-02-01",
                                                                 "end_date": "2025-02-28"})).json()
    assert january["summary"]["total_cost"] == 2.0
    assert february["summary"]["total_cost"] == 0


async def test_ingest_into_other_buckets_keeps_an_answer_and_ingest_into_its_buckets_refreshes_it(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    """The cache is validated by the versions of exactly the keys an answer reads: live
    ingest into another month leaves January's answers cached, ingest into January does not."""
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    reads = {
        "/v1/analytics/costs": PARAMS,
        "/v1/analytics/entities/top": {"start_date": "2025-01-01", "end_date": "2025-01-31"},
        "/v1/analytics/models": {"start_date": "2025-01-01", "end_date": "2025-01-31"},
    }
    first = {path: (await authed.get(path, params=params)).json() for path, params in reads.items()}
    assert first["/v1/analytics/costs"]["summary"]["total_cost"] == 1.25

    # Remove January's aggregates behind Redis's back, then apply a real batch in March.
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:*202501*"):
        await redis_client.delete(key)
    await load_events(redis_client, settings, [event(project, 2, 7.0, "2025-03-02T08:00:00Z")])
    for path, params in reads.items():
        assert (await authed.get(path, params=params)).json() == first[path], path

    # A batch into January changes the versions of the keys these answers read: all fresh.
    await load_events(redis_client, settings, [event(project, 3, 0.5, "2025-01-20T08:00:00Z")])
    fresh = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert fresh["summary"]["total_cost"] == 0.5
    top = (await authed.get("/v1/analytics/entities/top", params=reads["/v1/analytics/entities/top"])).json()
    assert [row["total_cost"] for row in top["data"]] == [0.5]
    models = (await authed.get("/v1/analytics/models", params=reads["/v1/analytics/models"])).json()
    assert [row["total_cost"] for row in models["data"]] == [0.5]


async def test_a_rebuild_generation_invalidates_every_cached_answer(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json()["summary"]["total_cost"] == 1.25
    # What `infraprism rebuild` does: delete the derived keys, bucket versions included, and
    # move the generation. Re-aggregating then brings the versions back to the numbers the
    # cached answer was stored with, over different data: only the generation tells them apart.
    await redis_client.incr(layout.generation())
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:*"):
        await redis_client.delete(key)
    await redis_client.incr(layout.generation())
    await load_events(redis_client, settings, [event(project, 4, 3.0)])
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json()["summary"]["total_cost"] == 3.0

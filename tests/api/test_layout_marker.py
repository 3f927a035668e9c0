"""A store an earlier build wrote has hours without quarter-hour fields: answers that need them are refused."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from infraprism.core.keys import QUARTER_LAYOUT, KeyLayout
from infraprism.pipeline.store import RollupStore
from infraprism.settings import Settings
from tests.api.helpers import load_events, sample_event

DAY = {"start_date": "2025-01-15", "end_date": "2025-01-15"}


def store(redis_client: aioredis.Redis, settings: Settings) -> RollupStore:
    return RollupStore(redis_client, KeyLayout(settings.key_prefix), topic="t", group="g", dedupe_window_days=1)


async def test_the_first_batch_on_an_empty_store_marks_it(redis_client: aioredis.Redis, settings: Settings) -> None:
    layout = KeyLayout(settings.key_prefix)
    assert await store(redis_client, settings).claim_layout()
    assert await redis_client.get(layout.layout_marker()) == QUARTER_LAYOUT


async def test_an_earlier_builds_store_is_not_marked_and_half_hour_zones_are_refused(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
) -> None:
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [sample_event(project, 1, "acme", 1.0, timestamp="2025-01-15T12:00:00Z")])
    # What an earlier build leaves: data, and no marker.
    await redis_client.delete(layout.layout_marker())
    assert not await store(redis_client, settings).claim_layout()

    for extra in ({}, {"group_by": "entity"}):  # the plain sums and the column path
        refused = await authed.get("/v1/analytics/costs", params={**DAY, "tz": "Asia/Kolkata", **extra})
        assert refused.status_code == 422, extra
        assert "infraprism rebuild" in refused.json()["error"]["message"]
    # Whole-hour zones and UTC read only what earlier builds kept too.
    for tz in ("UTC", "Europe/Berlin"):
        answered = await authed.get("/v1/analytics/costs", params={**DAY, "tz": tz})
        assert answered.json()["summary"]["total_events"] == 1, tz
    # A cube filter at a sub-day edge needs the cube's hours, which earlier builds did not keep.
    cube = {**DAY, "tz": "Europe/Berlin", "entity_type": "customer", "tags": "feature:chat:bot"}
    assert (await authed.get("/v1/analytics/costs", params=cube)).status_code == 422

    await redis_client.set(layout.layout_marker(), QUARTER_LAYOUT)  # what `infraprism rebuild` sets
    assert (await authed.get("/v1/analytics/costs", params={**DAY, "tz": "Asia/Kolkata"})).status_code == 200


async def test_a_range_needing_expired_buckets_is_refused_not_answered_short(
    settings: Settings, project: str, redis_client: aioredis.Redis
) -> None:
    from infraprism.api.app import create_app
    from infraprism.stores import apikeys

    kept = settings.model_copy(update={"retention_hour_days": 30})
    key = apikeys.create_key(kept, project, "retention")[1]
    app = create_app(kept)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            old_day = {"start_date": "2025-01-15", "end_date": "2025-01-15"}
            # In UTC the day is its day bucket, kept forever; in Berlin its edges are hours, gone.
            assert (await client.get("/v1/analytics/costs", params=old_day)).status_code == 200
            refused = await client.get("/v1/analytics/costs", params={**old_day, "tz": "Europe/Berlin"})
            assert refused.status_code == 422
            assert "INFRAPRISM_RETENTION_HOUR_DAYS" in refused.json()["error"]["message"]
            series = {**old_day, "interval": "hour"}
            assert (await client.get("/v1/analytics/costs/timeseries", params=series)).status_code == 422

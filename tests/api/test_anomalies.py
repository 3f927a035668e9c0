"""/anomalies and dismissing one: the project's records, newest first, filtered; one write."""

from __future__ import annotations

from datetime import date

import httpx
import redis.asyncio as aioredis

from infraprism.api.anomalies import AnomaliesService
from infraprism.api.repository import Repository
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.api.helpers import RANGE, anomaly_record


async def test_anomalies_newest_first_filters_and_dismiss(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    layout = KeyLayout(settings.key_prefix)
    for n, status, etype in [(0, "active", "customer"), (1, "resolved", "team"), (2, "active", "customer")]:
        await anomaly_store.create(redis_client, layout, anomaly_record(project, n, status, etype))
    body = (await authed.get("/v1/analytics/anomalies", params=RANGE)).json()
    assert [a["id"] for a in body["data"]] == ["an-2", "an-1", "an-0"]
    assert body["data"][0] == {
        "id": "an-2",
        "detected_at": "2025-01-12T10:30:00Z",
        "entity_type": "customer",
        "entity_id": "acme",
        "type": "cost_spike",
        "severity": "high",
        "description": "spike 2",
        "expected_value": 12.5,
        "actual_value": 55.0,
        "status": "active",
    }
    active = (await authed.get("/v1/analytics/anomalies", params={**RANGE, "status": "active"})).json()
    assert [a["id"] for a in active["data"]] == ["an-2", "an-0"]
    teams = (await authed.get("/v1/analytics/anomalies", params={**RANGE, "entity_type": "team"})).json()
    assert [a["id"] for a in teams["data"]] == ["an-1"]
    outside = (
        await authed.get("/v1/analytics/anomalies", params={"start_date": "2025-01-11", "end_date": "2025-01-11"})
    ).json()
    assert [a["id"] for a in outside["data"]] == ["an-1"]

    dismissed = await authed.post("/v1/analytics/anomalies/an-0/dismiss")
    assert dismissed.status_code == 200
    assert dismissed.json()["data"]["status"] == "dismissed"
    stored = await anomaly_store.get(redis_client, layout, project, "an-0")
    assert stored is not None
    assert stored.status == "dismissed"
    after = (await authed.get("/v1/analytics/anomalies", params={**RANGE, "status": "dismissed"})).json()
    assert [a["id"] for a in after["data"]] == ["an-0"]
    missing = await authed.post("/v1/analytics/anomalies/an-404/dismiss")
    assert missing.status_code == 404


async def test_the_service_reads_the_range_end_inclusive_and_answers_none_for_no_such_anomaly(
    repository: Repository, redis_client: aioredis.Redis, settings: Settings
):
    layout = KeyLayout(settings.key_prefix)
    await anomaly_store.create(redis_client, layout, anomaly_record(repository.project, 1, "active"))  # January 11
    service = AnomaliesService(repository)
    for end, ids in ((date(2025, 1, 10), []), (date(2025, 1, 11), ["an-1"])):
        answer = await service.anomalies(date(2025, 1, 1), end, None, None, None, "UTC")
        assert [a["id"] for a in answer["data"]] == ids
    assert await service.dismiss("an-9") is None
    dismissed = await service.dismiss("an-1")
    assert dismissed is not None
    assert dismissed["data"]["status"] == "dismissed"

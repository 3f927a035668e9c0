"""Endpoint behaviour the differential test does not cover: CSV, errors, anomalies, readiness."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from infraprism.api.app import create_app
from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import start_redis
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys
from infraprism.stores.anomaly_store import AnomalyRecord
from tests.api.helpers import load_events

RANGE = {"start_date": "2025-01-01", "end_date": "2025-01-31"}


def _event(project: str, n: int, entity_id: str, cost: float, **extra: object) -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "timestamp": f"2025-01-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
        "project_id": project,
        "entity_type": "customer",
        "entity_id": entity_id,
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost": cost,
        "latency_ms": 1000 + n,
        "tags": {"feature": "chat:bot"},
        **extra,
    }


@pytest.fixture
async def loaded(authed: httpx.AsyncClient, settings: Settings, project: str, redis_client) -> httpx.AsyncClient:
    events = [_event(project, n, ["acme", "globex, inc", "initech"][n % 3], 0.5 + n) for n in range(12)]
    await load_events(redis_client, settings, events)
    return authed


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


async def test_csv_costs_by_entity_has_a_header_and_one_line_per_row(loaded: httpx.AsyncClient):
    params = {**RANGE, "group_by": "entity"}
    as_json = (await loaded.get("/v1/analytics/costs", params=params)).json()
    rows = _csv(await loaded.get("/v1/analytics/costs", params={**params, "format": "csv"}))
    assert rows[0] == [
        "entity_type",
        "entity_id",
        "total_cost",
        "total_events",
        "total_input_tokens",
        "total_output_tokens",
        "avg_latency_ms",
    ]
    assert len(rows) == 1 + len(as_json["data"]) == 4
    for line, row in zip(rows[1:], as_json["data"], strict=True):
        assert line[1] == row["entity_id"]  # "globex, inc" survives quoting
        assert float(line[2]) == row["total_cost"]
        assert int(line[3]) == row["total_events"]


async def test_csv_compare_flattens_nested_objects(loaded: httpx.AsyncClient):
    params = {
        "period1_start": "2025-01-01",
        "period1_end": "2025-01-15",
        "period2_start": "2024-12-01",
        "period2_end": "2024-12-31",
        "format": "csv",
    }
    rows = _csv(await loaded.get("/v1/analytics/compare", params=params))
    assert len(rows) == 2
    header = dict(zip(rows[0], rows[1], strict=True))
    assert header["period1.start"] == "2025-01-01"
    assert header["period2.total_cost"] == "0.0"
    assert header["changes.cost_change_percent"] == ""  # null: period2 is 0


@pytest.mark.parametrize(
    ("path", "extra", "columns"),
    [
        ("/v1/analytics/costs/timeseries", {}, ["timestamp", "cost", "events"]),
        ("/v1/analytics/entities/top", {}, ["entity_type", "entity_id", "total_cost", "total_events", "rank"]),
        ("/v1/analytics/anomalies", {}, ["id", "detected_at", "entity_type", "entity_id", "type"]),
        ("/v1/analytics/sessions", {}, ["session_id", "entity_type", "entity_id", "started_at"]),
        ("/v1/analytics/models", {}, ["model", "provider", "total_cost"]),
        ("/v1/analytics/costs", {"group_by": "tags.feature"}, ["tag_key", "tag_value", "total_cost"]),
    ],
)
async def test_csv_on_every_endpoint(loaded: httpx.AsyncClient, path, extra, columns):
    params = {**RANGE, **extra}
    as_json = (await loaded.get(path, params=params)).json()
    rows = _csv(await loaded.get(path, params={**params, "format": "csv"}))
    assert rows[0][: len(columns)] == columns
    assert len(rows) - 1 == len(as_json["data"])


async def test_timeseries_is_zero_filled_in_time_order(loaded: httpx.AsyncClient):
    body = (
        await loaded.get(
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


async def test_tag_values_with_colons_filter_and_group(loaded: httpx.AsyncClient):
    body = (await loaded.get("/v1/analytics/costs", params={**RANGE, "tags": "feature:chat:bot"})).json()
    assert body["summary"]["total_events"] == 12
    none = (await loaded.get("/v1/analytics/costs", params={**RANGE, "tags": "feature:chat"})).json()
    assert none["summary"]["total_events"] == 0


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/v1/analytics/costs", {"start_date": "2025-13-01", "end_date": "2025-01-31"}, "start_date"),
        ("/v1/analytics/costs", {"start_date": "2025-02-30", "end_date": "2025-03-31"}, "start_date"),
        ("/v1/analytics/costs", {"start_date": "2025-01-31", "end_date": "2025-01-01"}, "end_date"),
        ("/v1/analytics/costs", {"start_date": "2025-01-01"}, "end_date"),
        ("/v1/analytics/costs", {**RANGE, "group_by": "customer"}, "group_by"),
        ("/v1/analytics/costs", {**RANGE, "tags": "feature"}, "tags"),
        ("/v1/analytics/costs", {**RANGE, "tags": "a:1,:2"}, "tags"),
        ("/v1/analytics/costs", {**RANGE, "format": "xml"}, "format"),
        ("/v1/analytics/costs/timeseries", {**RANGE, "interval": "minute"}, "interval"),
        ("/v1/analytics/entities/top", {**RANGE, "limit": 0}, "limit"),
        ("/v1/analytics/entities/top", {**RANGE, "limit": 101}, "limit"),
        ("/v1/analytics/entities/top", {**RANGE, "order": "up"}, "order"),
        ("/v1/analytics/sessions", {**RANGE, "limit": 1001}, "limit"),
        ("/v1/analytics/anomalies", {**RANGE, "status": "open"}, "status"),
        (
            "/v1/analytics/compare",
            {
                "period1_start": "2025-01-01",
                "period1_end": "2025-01-02",
                "period2_start": "2025-01-05",
                "period2_end": "2025-01-04",
            },
            "period2_end",
        ),
    ],
)
async def test_invalid_parameters_are_422_naming_the_parameter(loaded: httpx.AsyncClient, path, params, parameter):
    response = await loaded.get(path, params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith(parameter), error["message"]


async def test_unknown_path_and_method_are_enveloped(loaded: httpx.AsyncClient):
    missing = await loaded.get("/v1/analytics/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await loaded.delete("/v1/analytics/costs")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def _anomaly(project: str, n: int, status: str, entity_type: str = "customer") -> AnomalyRecord:
    return AnomalyRecord(
        id=f"an-{n}",
        project=project,
        detected_at=f"2025-01-{10 + n:02d}T10:30:00Z",
        detected_ms=1736505000000 + n * 86_400_000,
        entity_type=entity_type,
        entity_id="acme",
        type="cost_spike",
        severity="high",
        description=f"spike {n}",
        expected_value=12.5,
        actual_value=55.0,
        status=status,
    )


async def test_anomalies_newest_first_filters_and_dismiss(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    layout = KeyLayout(settings.key_prefix)
    for n, status, etype in [(0, "active", "customer"), (1, "resolved", "team"), (2, "active", "customer")]:
        await anomaly_store.save(redis_client, layout, _anomaly(project, n, status, etype))
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


async def test_redis_going_away_is_503_not_500(settings: Settings):
    own = start_redis()
    try:
        local = settings.model_copy(update={"redis_url": SecretStr(own.address)})
        key = apikeys.create_key(local, "p")[1]
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                assert (await client.get("/v1/analytics/costs", params=RANGE)).status_code == 200
                own.stop()
                down = await client.get("/v1/analytics/costs", params=RANGE)
                assert down.status_code == 503
                assert down.json()["error"]["code"] == "unavailable"
                health = await client.get("/healthz")
                assert health.status_code == 503
                assert health.json()["error"]["code"] == "unavailable"
    finally:
        own.stop()


async def test_reads_survive_a_script_flush(settings: Settings):
    own = start_redis()
    try:
        local = settings.model_copy(update={"redis_url": SecretStr(own.address)})
        key = apikeys.create_key(local, "p")[1]
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                params = {**RANGE, "interval": "hour"}
                assert (await client.get("/v1/analytics/costs/timeseries", params=params)).status_code == 200
                await app.state.redis.script_flush()
                again = await client.get("/v1/analytics/costs/timeseries", params=params)
                assert again.status_code == 200
                assert len(again.json()["data"]) == 31 * 24
    finally:
        own.stop()


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
        events.append({**_event(project, n, eid, cost), "entity_type": etype, "event_id": f"t{n}"})
    await load_events(redis_client, settings, events)
    body = (await authed.get("/v1/analytics/entities/top", params={**RANGE, "limit": limit, "order": order})).json()
    tied = [("customer", "a"), ("customer", "z"), ("team", "a"), ("team", "b")]
    expected = ([("team", "dear")] + tied) if order == "desc" else ([("customer", "cheap")] + tied)
    assert [(r["entity_type"], r["entity_id"]) for r in body["data"]] == expected[:limit]
    assert [r["rank"] for r in body["data"]] == list(range(1, limit + 1))

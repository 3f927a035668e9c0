"""`/v1/budgets`: setting budgets, every bad body, and their status against the reference.

The status test draws event streams, scopes, periods, days and project zones, writes the
events through the real write path into the real Redis, and compares `spent` and
`thresholds_crossed` with the independent reference of tests/api/test_differential.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from infraprism.api.app import create_app
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import apikeys
from infraprism.stores.projects import set_reporting_zone
from tests.api.helpers import load_events, sample_event
from tests.api.test_differential import (
    ENTITIES,
    MODELS,
    PROJECT,
    TAG_KEYS,
    TAG_VALUES,
    ZONES,
    event_strategy,
    passes,
    ref_costs,
    to_wire,
)

ACME = {
    "name": "Acme monthly",
    "amount": 500.0,
    "period": "month",
    "scope": {"entity_type": "customer", "entity_id": "acme"},
    "thresholds": [50, 80, 100],
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_budget_is_stored_replaced_listed_and_deleted(authed: httpx.AsyncClient):
    stored = await authed.put("/v1/budgets/acme-monthly", json=ACME)
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["id"] == "acme-monthly"
    assert body["amount"] == 500.0
    assert body["scope"] == ACME["scope"]
    assert body["thresholds"] == [50, 80, 100]
    assert (await authed.get("/v1/budgets/acme-monthly")).json() == body
    replaced = (
        await authed.put("/v1/budgets/acme-monthly", json={**ACME, "amount": 750, "thresholds": [100, 90]})
    ).json()
    assert replaced["amount"] == 750.0
    assert replaced["thresholds"] == [90, 100]
    assert replaced["created_at"] == body["created_at"]
    whole = {"name": "Everything", "amount": 10_000, "period": "week"}
    everything = (await authed.put("/v1/budgets/all", json=whole)).json()
    assert everything["scope"] == {}
    assert everything["thresholds"] == [80, 100]
    listed = (await authed.get("/v1/budgets")).json()["data"]
    assert [b["id"] for b in listed] == ["acme-monthly", "all"]
    assert (await authed.delete("/v1/budgets/all")).status_code == 204
    for method in ("GET", "DELETE"):
        missing = await authed.request(method, "/v1/budgets/all")
        assert missing.status_code == 404, method
        assert missing.json()["error"]["code"] == "not_found"
    assert (await authed.get("/v1/budgets/all/status")).status_code == 404


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"amount": -5}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"amount": "500"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 1e-10}, "amount"),  # rounds to no nano-dollar at all
        ({"thresholds": [True]}, "thresholds"),
        ({"scope": {"entity_type": "*"}}, "scope.entity_type"),
        ({"scope": {"entity_id": "a\nb"}}, "scope.entity_id"),
        ({"scope": {"tags": {"a:b": "x"}}}, "scope.tags"),
        ({"scope": {"tags": {"env": "a,b"}}}, "scope.tags"),
        ({"period": "year"}, "period"),
        ({"thresholds": [0]}, "thresholds"),
        ({"thresholds": [1001]}, "thresholds"),
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": [50.5]}, "thresholds"),
        ({"scope": {"tags": {"feature": 1}}}, "scope.tags"),
        ({"scope": {"tags": ["feature:chatbot"]}}, "scope.tags"),
        ({"scope": {"tags": {"": "x"}}}, "scope.tags"),
        ({"scope": {"team": "a"}}, "scope.team"),
        ({"scope": {"entity_id": ""}}, "scope.entity_id"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_every_bad_body_is_a_422_naming_the_field(authed: httpx.AsyncClient, change: dict[str, Any], named: str):
    response = await authed.put("/v1/budgets/b1", json={**ACME, **change})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert response.json()["error"]["message"].startswith(named), response.text


async def test_missing_fields_and_bad_ids_are_422s(authed: httpx.AsyncClient):
    for missing in ("name", "amount", "period"):
        body = {k: v for k, v in ACME.items() if k != missing}
        response = await authed.put("/v1/budgets/b1", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(missing)
    for budget_id in ("status", "has space", "x" * 65, "a/b"):
        response = await authed.put(f"/v1/budgets/{budget_id}", json=ACME)
        assert response.status_code in (404, 422), (budget_id, response.text)  # a/b is another path
        if response.status_code == 422:
            assert response.json()["error"]["message"].startswith("budget_id"), budget_id
    not_json = await authed.put("/v1/budgets/b1", content=b"{", headers={"Content-Type": "application/json"})
    # Broken JSON is FastAPI's 422 (json_invalid); bytes that are not text even, its 400.
    assert not_json.status_code == 422
    assert not_json.json()["error"]["code"] == "invalid_parameter"
    binary = await authed.put("/v1/budgets/b1", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert binary.status_code in (400, 422)
    assert binary.json()["error"]["code"] in ("bad_request", "invalid_parameter")


async def test_a_scoped_key_may_not_see_or_set_budgets(
    api_client: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    scoped = apikeys.create_key(settings, project, None, apikeys.Scope("customer", "acme"))[1]
    for method, path in (("GET", "/v1/budgets"), ("PUT", "/v1/budgets/b1"), ("GET", "/v1/budgets/status")):
        response = await api_client.request(
            method, path, json=ACME if method == "PUT" else None, headers=bearer(scoped)
        )
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "forbidden"


async def test_status_in_json_and_csv(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    events = [sample_event(project, n, "acme", 100.0) for n in range(3)]  # January 1, 2, 3: $300
    events.append(sample_event(project, 4, "globex", 999.0))
    await load_events(redis_client, settings, events)
    await authed.put("/v1/budgets/acme", json=ACME)
    status = (await authed.get("/v1/budgets/acme/status", params={"date": "2025-01-15"})).json()
    assert status["period"] == {"start": "2025-01-01", "end": "2025-01-31", "tz": "UTC"}
    assert status["spent"] == 300.0
    assert status["remaining"] == 200.0
    assert status["percent_used"] == 60.0
    assert status["thresholds_crossed"] == [50]
    assert status["forecast"] == 300.0  # the period is over: nothing more will be spent in it
    assert status["forecast_percent"] == 60.0
    everything = (await authed.get("/v1/budgets/status", params={"date": "2025-01-15"})).json()
    assert everything == {"data": [status]}
    text = (await authed.get("/v1/budgets/status", params={"date": "2025-01-15", "format": "csv"})).text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["budget.id"] == "acme"
    assert row["spent"] == "300.0"
    assert row["thresholds_crossed"] == "50"
    listed = list(csv.DictReader(io.StringIO((await authed.get("/v1/budgets", params={"format": "csv"})).text)))
    assert listed[0]["scope.entity_id"] == "acme"
    assert listed[0]["thresholds"] == "50,80,100"
    bad_day = await authed.get("/v1/budgets/acme/status", params={"date": "2025-02-30"})
    assert bad_day.status_code == 422
    assert bad_day.json()["error"]["message"].startswith("date")


async def test_a_budget_that_cannot_be_answered_exactly_is_an_error_row_not_a_failed_dashboard(
    settings: Settings, project: str, redis_client: aioredis.Redis
):
    kept = settings.model_copy(update={"retention_day_days": 30, "retention_month_days": 30, "retention_hour_days": 30})
    key = apikeys.create_key(kept, project)[1]
    app = create_app(kept)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=bearer(key)) as client:
            await client.put("/v1/budgets/acme", json=ACME)
            one = await client.get("/v1/budgets/acme/status", params={"date": "2020-01-15"})
            assert one.status_code == 422  # its buckets expired long ago
            every = (await client.get("/v1/budgets/status", params={"date": "2020-01-15"})).json()["data"]
            assert every[0]["budget"]["id"] == "acme"
            assert every[0]["error"]["code"] == "invalid_parameter"
            now = (await client.get("/v1/budgets/status")).json()["data"]
            assert "spent" in now[0]


# --- against the reference -----------------------------------------------------------------------

scope_strategy = st.fixed_dictionaries(
    {},
    optional={
        "entity_type": st.sampled_from(sorted({t for t, _ in ENTITIES})),
        "entity_id": st.sampled_from(sorted({i for _, i in ENTITIES})),
        "model": st.sampled_from(sorted({m for m, _ in MODELS})),
        "tags": st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES), min_size=1, max_size=2),
    },
)


async def _run(
    settings: Settings,
    events: list[dict[str, Any]],
    budgets: list[tuple[str, dict[str, Any], int, list[int], int]],
    tz: str,
) -> None:
    prefix = f"b{uuid.uuid4().hex[:10]}"
    local = settings.model_copy(update={"key_prefix": prefix})
    wires = [to_wire(i, e) for i, e in enumerate(events)]
    redis = aioredis.Redis.from_url(local.redis_dsn(), decode_responses=True)
    try:
        await load_events(redis, local, wires)
        with sync_redis.Redis.from_url(local.redis_dsn(), decode_responses=True) as client:
            set_reporting_zone(client, KeyLayout(prefix), PROJECT, tz)
        _, key = await asyncio.to_thread(apikeys.create_key, local, PROJECT)
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=bearer(key)) as client:
                for period, scope, amount_cents, thresholds, anchor in budgets:
                    # A day some event fell on, in the project's zone: most periods hold events.
                    day = _local_day(events[anchor % len(events)], tz)
                    body = {
                        "name": "b",
                        "amount": amount_cents / 100,
                        "period": period,
                        "scope": scope,
                        "thresholds": thresholds,
                    }
                    assert (await client.put("/v1/budgets/b", json=body)).status_code == 200
                    response = await client.get("/v1/budgets/b/status", params={"date": day.isoformat()})
                    assert response.status_code == 200, response.text
                    status = response.json()
                    start, end = status["period"]["start"], status["period"]["end"]
                    params: dict[str, Any] = {"start_date": start, "end_date": end, "tz": tz}
                    params.update({k: v for k, v in scope.items() if k != "tags"})
                    if "tags" in scope:
                        params["tags"] = ",".join(f"{k}:{v}" for k, v in sorted(scope["tags"].items()))
                    expected = ref_costs(events, params)["summary"]["total_cost"]
                    assert status["spent"] == expected, (scope, params)
                    assert date.fromisoformat(start) <= day <= date.fromisoformat(end)
                    nano = sum(
                        e["cost_nano"]
                        for e in events
                        if e["project"] == PROJECT
                        and passes(e, params)
                        and start <= _local_day(e, tz).isoformat() <= end
                    )
                    amount_nano = amount_cents * 10_000_000
                    assert status["thresholds_crossed"] == sorted(
                        t for t in set(thresholds) if nano * 100 >= t * amount_nano
                    )
    finally:
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()


def _local_day(e: dict[str, Any], tz: str) -> date:
    from tests.api.test_differential import day_of, zone_of

    return day_of(e, zone_of({"tz": tz}))


@hsettings(
    max_examples=max(10, int(os.environ.get("INFRAPRISM_DIFFERENTIAL_EXAMPLES", "100")) // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    events=st.lists(event_strategy, min_size=3, max_size=60),
    budgets=st.lists(
        st.tuples(
            st.sampled_from(["day", "week", "month"]),
            scope_strategy,
            st.integers(1, 20_000),  # cents: budgets the drawn events can cross
            st.lists(st.integers(1, 1000), min_size=1, max_size=4),
            st.integers(0, 1000),
        ),
        min_size=1,
        max_size=4,
    ),
    tz=st.sampled_from(ZONES),
)
def test_spent_and_thresholds_match_the_reference(settings: Settings, events, budgets, tz):
    """Random streams, scopes, periods and days, in a project zone with DST days (or half-hour
    offsets): spent is the reference's sum, and the thresholds crossed follow it exactly."""
    asyncio.run(_run(settings, events, budgets, tz))

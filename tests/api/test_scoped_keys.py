"""Scoped keys: minted by a project key over /v1/keys (or by the CLI), each sees one entity.

Every test runs the real app on the test's own Redis: keys are made and checked by the same
store the API uses, expiry and revocation by the same script every request runs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys
from tests.api.helpers import RANGE, anomaly_record, load_events, sample_event

COSTS = "/v1/analytics/costs"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def mint(client: httpx.AsyncClient, project_key: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/keys", json=body, headers=bearer(project_key))


@pytest.fixture
def project_key(settings: Settings, project: str, redis_client: aioredis.Redis) -> str:
    return apikeys.create_key(settings, project, "backend")[1]


@pytest.fixture
async def acme_key(api_client: httpx.AsyncClient, project_key: str) -> str:
    response = await mint(api_client, project_key, entity_type="customer", entity_id="acme", name="acme page")
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture
async def two_customers(settings: Settings, project: str, redis_client: aioredis.Redis) -> None:
    """acme: $1.50 and $2.50 on January 1 and 2; globex: $7 on January 1; a team named acme: $4."""
    events = [
        sample_event(project, 0, "acme", 1.5, session_id="s-acme"),
        sample_event(project, 1, "acme", 2.5, session_id="s-acme"),
        sample_event(project, 28, "globex", 7.0, session_id="s-globex"),
        {**sample_event(project, 3, "acme", 4.0), "entity_type": "team"},
    ]
    await load_events(redis_client, settings, events)


# --- minting, listing, revoking ------------------------------------------------------------------


async def test_a_project_key_mints_a_scoped_key_shown_once(api_client: httpx.AsyncClient, project_key: str):
    response = await mint(
        api_client, project_key, entity_type="customer", entity_id="acme", expires_in_seconds=86400, name="acme"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "key", "scope", "expires_at", "name"}
    assert body["key"].startswith("ip-")
    assert body["id"].startswith("key_")
    assert body["scope"] == {"entity_type": "customer", "entity_id": "acme"}
    assert body["name"] == "acme"
    assert body["expires_at"].endswith("Z")

    listed = await api_client.get("/v1/keys", headers=bearer(project_key))
    assert listed.status_code == 200
    rows = {row["id"]: row for row in listed.json()["data"]}
    assert listed.json()["total"] == 2  # the project key and the new one
    assert rows[body["id"]]["scope"] == body["scope"]
    assert rows[body["id"]]["expires_at"] == body["expires_at"]
    assert rows[body["id"]]["status"] == "active"
    assert body["key"] not in listed.text
    assert apikeys.hash_key(body["key"]) not in listed.text
    project_rows = [row for row in rows.values() if row["scope"] is None]
    assert len(project_rows) == 1
    assert project_rows[0]["expires_at"] is None


async def test_a_key_never_expiring_has_null_expiry(api_client: httpx.AsyncClient, project_key: str):
    body = (await mint(api_client, project_key, entity_type="customer", entity_id="acme")).json()
    assert body["expires_at"] is None
    assert body["name"] is None


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"entity_id": "acme"}, "entity_type"),
        ({"entity_type": "customer"}, "entity_id"),
        ({"entity_type": "", "entity_id": "acme"}, "entity_type"),
        ({"entity_type": "customer", "entity_id": "a\nb"}, "entity_id"),
        ({"entity_type": "*", "entity_id": "acme"}, "entity_type"),
        ({"entity_type": "customer", "entity_id": "acme", "expires_in_seconds": 0}, "expires_in_seconds"),
        ({"entity_type": "customer", "entity_id": "acme", "expires_in_seconds": 10**12}, "expires_in_seconds"),
        ({"entity_type": "customer", "entity_id": "acme", "project": "other"}, "project"),
    ],
)
async def test_a_bad_mint_request_is_a_422_naming_the_field(
    api_client: httpx.AsyncClient, project_key: str, body: dict[str, Any], named: str
):
    response = await mint(api_client, project_key, **body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert response.json()["error"]["message"].startswith(named), response.text


async def test_a_scoped_key_may_not_manage_keys(api_client: httpx.AsyncClient, acme_key: str):
    for method, path in (("POST", "/v1/keys"), ("GET", "/v1/keys"), ("DELETE", "/v1/keys/key_0123456789abcdef")):
        body = {"entity_type": "customer", "entity_id": "acme"} if method == "POST" else None
        response = await api_client.request(method, path, json=body, headers=bearer(acme_key))
        assert response.status_code == 403, (method, response.text)
        assert response.json()["error"]["code"] == "forbidden"


async def test_revoking_over_the_api_gets_the_next_request_a_401(
    api_client: httpx.AsyncClient, project_key: str, settings: Settings, redis_client: aioredis.Redis
):
    minted = (await mint(api_client, project_key, entity_type="customer", entity_id="acme")).json()
    assert (await api_client.get(COSTS, params=RANGE, headers=bearer(minted["key"]))).status_code == 200
    assert (await api_client.delete(f"/v1/keys/{minted['id']}", headers=bearer(project_key))).status_code == 204
    refused = await api_client.get(COSTS, params=RANGE, headers=bearer(minted["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"] == {"code": "unauthorized", "message": "this API key was revoked"}
    # Revoking again is fine; an id of no key, or of another project's key, is a 404.
    assert (await api_client.delete(f"/v1/keys/{minted['id']}", headers=bearer(project_key))).status_code == 204
    other_id, _ = apikeys.create_key(settings, "another-project")
    for key_id in ("key_doesnotexist00", other_id):
        response = await api_client.delete(f"/v1/keys/{key_id}", headers=bearer(project_key))
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert {k["id"]: k["status"] for k in apikeys.list_keys(settings)}[other_id] == "active"
    rows = {row["id"]: row for row in (await api_client.get("/v1/keys", headers=bearer(project_key))).json()["data"]}
    assert rows[minted["id"]]["status"] == "revoked"
    assert rows[minted["id"]]["revoked_at"]
    # The record is let go a month after its revocation; until then it is listed.
    ttl_ms = await redis_client.pttl(KeyLayout(settings.key_prefix).api_key(apikeys.hash_key(minted["key"])))
    assert 0 < ttl_ms <= apikeys.KEEP_ENDED_KEYS_MS


async def test_an_expired_key_gets_a_401_and_its_record_goes_later(
    api_client: httpx.AsyncClient, project_key: str, settings: Settings, redis_client: aioredis.Redis
):
    minted = (
        await mint(api_client, project_key, entity_type="customer", entity_id="acme", expires_in_seconds=60)
    ).json()
    headers = bearer(minted["key"])
    assert (await api_client.get(COSTS, params=RANGE, headers=headers)).status_code == 200
    record = KeyLayout(settings.key_prefix).api_key(apikeys.hash_key(minted["key"]))
    ttl_ms = await redis_client.pttl(record)
    assert 60_000 + apikeys.KEEP_ENDED_KEYS_MS - 5_000 < ttl_ms <= 60_000 + apikeys.KEEP_ENDED_KEYS_MS
    # Its expiry passes (on Redis's clock, which the check reads).
    seconds, micros = await redis_client.time()
    await redis_client.hset(record, "expires_ms", str(seconds * 1000 + micros // 1000 - 1))
    refused = await api_client.get(COSTS, params=RANGE, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "this API key has expired"
    rows = (await api_client.get("/v1/keys", headers=bearer(project_key))).json()["data"]
    assert {row["id"]: row["status"] for row in rows}[minted["id"]] == "expired"


async def test_keys_ended_a_month_ago_are_forgotten_and_only_live_keys_count_toward_the_limit(
    api_client: httpx.AsyncClient,
    project_key: str,
    settings: Settings,
    project: str,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
):
    layout = KeyLayout(settings.key_prefix)
    old = (await mint(api_client, project_key, entity_type="customer", entity_id="a", expires_in_seconds=60)).json()
    # It ended 31 days ago, and Redis has let its record go.
    ended_ms = int(time.time() * 1000) - 31 * 86_400_000
    await redis_client.zadd(layout.project_api_key_ends(project), {old["id"]: ended_ms})
    await redis_client.delete(layout.api_key(apikeys.hash_key(old["key"])))
    page = (await api_client.get("/v1/keys", headers=bearer(project_key))).json()
    assert [row["id"] for row in page["data"] if row["id"] == old["id"]] == []
    assert page["total"] == 1
    assert await redis_client.hget(layout.api_key_ids(), old["id"]) is None
    assert await redis_client.zscore(layout.project_api_key_ends(project), old["id"]) is None

    monkeypatch.setattr(apikeys, "MAX_LIVE_KEYS_PER_PROJECT", 2)  # the project key and one more
    live = (await mint(api_client, project_key, entity_type="customer", entity_id="b")).json()
    refused = await mint(api_client, project_key, entity_type="customer", entity_id="c")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    await api_client.delete(f"/v1/keys/{live['id']}", headers=bearer(project_key))
    assert (await mint(api_client, project_key, entity_type="customer", entity_id="c")).status_code == 201


async def test_a_project_key_cannot_be_revoked_over_the_api(
    api_client: httpx.AsyncClient, project_key: str, settings: Settings
):
    operator_id, _ = apikeys.create_key(settings, "another-project")
    page = (await api_client.get("/v1/keys", headers=bearer(project_key))).json()
    own_id = next(row["id"] for row in page["data"] if row["scope"] is None)
    response = await api_client.delete(f"/v1/keys/{own_id}", headers=bearer(project_key))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "infraprism keys revoke" in response.json()["error"]["message"]
    assert (await api_client.get("/v1/keys", headers=bearer(project_key))).status_code == 200
    assert (await api_client.delete(f"/v1/keys/{operator_id}", headers=bearer(project_key))).status_code == 404


async def test_a_scoped_or_expiring_key_is_refused_by_a_build_that_reads_project_alone(
    api_client: httpx.AsyncClient, project_key: str, settings: Settings, project: str, redis_client: aioredis.Redis
):
    """An earlier build's check was: the record's `project` is set and `revoked_at` is not."""
    layout = KeyLayout(settings.key_prefix)
    scoped = (await mint(api_client, project_key, entity_type="customer", entity_id="acme")).json()
    expiring_id, expiring = apikeys.create_key(settings, project, None, None, 3600)
    for key in (scoped["key"], expiring):
        record = await redis_client.hgetall(layout.api_key(apikeys.hash_key(key)))
        assert record["project"] == ""
        assert record["restricted_project"] == project
    plain = await redis_client.hgetall(layout.api_key(apikeys.hash_key(project_key)))
    assert plain["project"] == project
    assert (await api_client.get(COSTS, params=RANGE, headers=bearer(expiring))).status_code == 200
    rows = {row["id"]: row for row in (await api_client.get("/v1/keys", headers=bearer(project_key))).json()["data"]}
    assert rows[expiring_id]["status"] == "active"


async def test_the_scope_of_the_project_itself_is_refused(api_client: httpx.AsyncClient, project_key: str, project):
    response = await mint(api_client, project_key, entity_type="project", entity_id=project)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("entity_id: ")
    assert (await mint(api_client, project_key, entity_type="project", entity_id="another")).status_code == 201


async def test_a_name_with_control_characters_or_a_huge_body_is_refused(
    api_client: httpx.AsyncClient, project_key: str
):
    bad_name = await mint(api_client, project_key, entity_type="customer", entity_id="acme", name="a\x00b")
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["message"].startswith("name: ")
    huge = await api_client.post(
        "/v1/keys",
        content=b'{"entity_type": "customer", "entity_id": "' + b"x" * 20_000 + b'"}',
        headers={**bearer(project_key), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: counted as it arrives
        yield b'{"entity_type": "customer", "entity_id": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    chunked = await api_client.post(
        "/v1/keys", content=chunks(), headers={**bearer(project_key), "Content-Type": "application/json"}
    )
    assert chunked.status_code == 413


async def test_keys_listing_pages(api_client: httpx.AsyncClient, project_key: str):
    ids = [
        (await mint(api_client, project_key, entity_type="customer", entity_id=f"c{n}")).json()["id"] for n in range(5)
    ]
    first = (await api_client.get("/v1/keys", params={"limit": 3}, headers=bearer(project_key))).json()
    rest = (await api_client.get("/v1/keys", params={"limit": 3, "offset": 3}, headers=bearer(project_key))).json()
    assert first["total"] == rest["total"] == 6
    listed = [row["id"] for row in first["data"] + rest["data"]]
    assert len(listed) == 6
    assert listed[1:] == ids


async def test_keys_of_an_earlier_build_are_indexed_by_project_when_the_api_starts(
    settings: Settings, project: str, redis_client: aioredis.Redis
):
    from infraprism.api.app import create_app

    key_id, key = apikeys.create_key(settings, project)
    layout = KeyLayout(settings.key_prefix)
    # As an earlier build left it: no project index, and no marker that one was built.
    await redis_client.delete(layout.project_api_keys(project), layout.api_keys_indexed())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            page = (await client.get("/v1/keys", headers=bearer(key))).json()
    assert [row["id"] for row in page["data"]] == [key_id]


# --- what a scoped key sees --------------------------------------------------------------------


@pytest.mark.usefixtures("two_customers")
async def test_a_scoped_key_sees_its_entity_as_the_whole_project(api_client: httpx.AsyncClient, acme_key: str):
    headers = bearer(acme_key)

    async def get(path: str, **params: Any) -> Any:
        response = await api_client.get(f"/v1/analytics/{path}", params={**RANGE, **params}, headers=headers)
        assert response.status_code == 200, (path, params, response.text)
        return response.json()

    totals = await get("costs")
    assert totals["summary"]["total_cost"] == 4.0
    assert totals["summary"]["total_events"] == 2
    by_entity = await get("costs", group_by="entity")
    assert [(r["entity_type"], r["entity_id"]) for r in by_entity["data"]] == [("customer", "acme")]
    same = await get("costs", entity_type="customer", entity_id="acme", group_by="model")
    assert same["summary"] == totals["summary"]
    models = await get("models")
    assert [(r["model"], r["total_cost"], r["percentage_of_total"]) for r in models["data"]] == [("gpt-4o", 4.0, 100.0)]
    top = await get("entities/top", limit=100)
    assert top["data"] == [
        {"entity_type": "customer", "entity_id": "acme", "total_cost": 4.0, "total_events": 2, "rank": 1}
    ]
    assert (await get("entities/top", entity_type="customer", order="asc"))["data"] == top["data"]
    sessions = await get("sessions")
    assert [s["session_id"] for s in sessions["data"]] == ["s-acme"]
    series = await get("costs/timeseries")
    assert sum(point["cost"] for point in series["data"]) == 4.0
    compare = await api_client.get(
        "/v1/analytics/compare",
        params={
            "period1_start": "2025-01-02",
            "period1_end": "2025-01-02",
            "period2_start": "2025-01-01",
            "period2_end": "2025-01-01",
        },
        headers=headers,
    )
    assert compare.json()["changes"]["cost_change"] == 1.0
    csv_text = (
        await api_client.get(COSTS, params={**RANGE, "group_by": "entity", "format": "csv"}, headers=headers)
    ).text
    assert "globex" not in csv_text
    assert "team" not in csv_text
    assert "acme" in csv_text


@pytest.mark.usefixtures("two_customers")
async def test_a_scoped_key_sees_an_empty_range_as_empty(api_client: httpx.AsyncClient, acme_key: str):
    params = {"start_date": "2025-03-01", "end_date": "2025-03-31"}
    top = await api_client.get("/v1/analytics/entities/top", params=params, headers=bearer(acme_key))
    assert top.json() == {"data": []}


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("costs", {"entity_id": "globex"}, "entity_id"),
        ("costs", {"entity_type": "team"}, "entity_type"),
        ("costs", {"entity_type": "team", "entity_id": "acme", "group_by": "model"}, "entity_type"),
        ("costs/timeseries", {"entity_id": "globex"}, "entity_id"),
        ("models", {"entity_type": "team"}, "entity_type"),
        ("entities/top", {"entity_type": "team"}, "entity_type"),
        ("sessions", {"entity_id": "globex"}, "entity_id"),
        ("anomalies", {"entity_type": "team"}, "entity_type"),
        ("costs", {"entity_id": "globex", "format": "csv"}, "entity_id"),
    ],
)
@pytest.mark.usefixtures("two_customers")
async def test_a_parameter_naming_another_entity_is_a_403_never_an_empty_answer(
    api_client: httpx.AsyncClient, acme_key: str, path: str, params: dict[str, str], named: str
):
    response = await api_client.get(f"/v1/analytics/{path}", params={**RANGE, **params}, headers=bearer(acme_key))
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden_scope"
    assert error["message"].startswith(f"{named}: this key sees only customer 'acme'")


async def test_compare_with_another_entity_is_a_403(api_client: httpx.AsyncClient, acme_key: str):
    params = {
        "period1_start": "2025-01-01",
        "period1_end": "2025-01-02",
        "period2_start": "2025-01-03",
        "period2_end": "2025-01-04",
        "entity_id": "globex",
    }
    response = await api_client.get("/v1/analytics/compare", params=params, headers=bearer(acme_key))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_scope"


async def test_a_scoped_key_sees_only_its_entitys_anomalies_and_may_not_dismiss(
    api_client: httpx.AsyncClient, acme_key: str, project_key: str, settings: Settings, project: str, redis_client
):
    layout = KeyLayout(settings.key_prefix)
    ours = anomaly_record(project, 1, "active")
    a_team = anomaly_record(project, 2, "active", entity_type="team")  # a team also named acme
    globex = anomaly_record(project, 3, "active")
    globex.entity_id = "globex"
    project_wide = anomaly_record(project, 4, "active", entity_type="project")
    project_wide.entity_id = project
    for record in (ours, a_team, globex, project_wide):
        await anomaly_store.create(redis_client, layout, record)
    scoped = await api_client.get("/v1/analytics/anomalies", params=RANGE, headers=bearer(acme_key))
    assert [a["id"] for a in scoped.json()["data"]] == ["an-1"]
    everything = await api_client.get("/v1/analytics/anomalies", params=RANGE, headers=bearer(project_key))
    assert [a["id"] for a in everything.json()["data"]] == ["an-4", "an-3", "an-2", "an-1"]
    refused = await api_client.post("/v1/analytics/anomalies/an-1/dismiss", headers=bearer(acme_key))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert (await anomaly_store.get(redis_client, layout, project, "an-1")).status == "active"
    dismissed = await api_client.post("/v1/analytics/anomalies/an-1/dismiss", headers=bearer(project_key))
    assert dismissed.status_code == 200
    assert dismissed.json()["data"]["status"] == "dismissed"


async def test_an_entity_type_named_star_is_no_filter_and_no_scope(authed: httpx.AsyncClient):
    for path in ("costs", "entities/top", "sessions", "anomalies"):
        response = await authed.get(f"/v1/analytics/{path}", params={**RANGE, "entity_type": "*"})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["message"].startswith("entity_type: '*' is not an entity type")


def test_the_cli_mints_scoped_expiring_keys_and_lists_their_scope(settings: Settings, project: str, redis_client):
    scope = apikeys.check_scope("customer", "acme-corp")
    key_id, _ = apikeys.create_key(settings, project, "acme", scope, apikeys.parse_duration("24h"))
    row = {k["id"]: k for k in apikeys.list_keys(settings)}[key_id]
    assert row["scope"] == {"entity_type": "customer", "entity_id": "acme-corp"}
    assert row["status"] == "active"
    assert row["expires_at"] is not None
    assert [apikeys.parse_duration(text) for text in ("90", "90s", "30m", "24h", "7d")] == [90, 90, 1800, 86400, 604800]
    with pytest.raises(apikeys.ApiKeyError):
        apikeys.parse_duration("soon")


async def test_a_session_id_two_entities_use_is_hidden_from_their_scoped_keys(
    api_client: httpx.AsyncClient,
    project_key: str,
    acme_key: str,
    settings: Settings,
    project: str,
    redis_client: aioredis.Redis,
):
    """Its totals add both entities' turns, so showing it to either would show the other's
    cost. Shared within one batch, and across batches (the id first seen alone)."""
    first_batch = [
        sample_event(project, 0, "acme", 1.0, session_id="s-shared-later"),
        sample_event(project, 1, "acme", 1.0, session_id="s-own"),
        sample_event(project, 2, "acme", 1.0, session_id="s-shared-at-once"),
        sample_event(project, 3, "globex", 5.0, session_id="s-shared-at-once"),
    ]
    await load_events(redis_client, settings, first_batch)
    await load_events(redis_client, settings, [sample_event(project, 4, "globex", 7.0, session_id="s-shared-later")])
    layout = KeyLayout(settings.key_prefix)
    for session_id, shared in (("s-shared-later", "1"), ("s-shared-at-once", "1"), ("s-own", None)):
        assert await redis_client.hget(layout.session(project, session_id), "shared") == shared, session_id

    scoped = (await api_client.get("/v1/analytics/sessions", params=RANGE, headers=bearer(acme_key))).json()
    assert [s["session_id"] for s in scoped["data"]] == ["s-own"]
    assert scoped["summary"]["total_sessions"] == 1
    assert scoped["summary"]["avg_cost_per_session"] == 1.0
    everything = await api_client.get(
        "/v1/analytics/sessions", params={**RANGE, "entity_id": "acme"}, headers=bearer(project_key)
    )
    # A project key sees them, under the entity of their earliest turn, with every turn counted.
    rows = {s["session_id"]: s for s in everything.json()["data"]}
    assert set(rows) == {"s-own", "s-shared-later", "s-shared-at-once"}
    assert rows["s-shared-later"]["total_cost"] == 8.0
    # And the project key's answer, cached first, is not what the scoped key is served.
    again = (await api_client.get("/v1/analytics/sessions", params=RANGE, headers=bearer(acme_key))).json()
    assert again == scoped

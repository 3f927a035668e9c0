"""Access: keys are hashed, project-bound, and a key never sees another project's data."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys
from infraprism.stores.anomaly_store import AnomalyRecord
from tests.api.helpers import load_events

RANGE = {"start_date": "2025-01-01", "end_date": "2025-01-31"}
PATHS = [
    ("GET", "/v1/analytics/costs", RANGE),
    ("GET", "/v1/analytics/costs/timeseries", RANGE),
    ("GET", "/v1/analytics/models", RANGE),
    ("GET", "/v1/analytics/entities/top", RANGE),
    ("GET", "/v1/analytics/sessions", RANGE),
    ("GET", "/v1/analytics/anomalies", RANGE),
    (
        "GET",
        "/v1/analytics/compare",
        {
            "period1_start": "2025-01-01",
            "period1_end": "2025-01-15",
            "period2_start": "2025-01-16",
            "period2_end": "2025-01-31",
        },
    ),
    ("POST", "/v1/analytics/anomalies/some-id/dismiss", {}),
]


def _event(project: str, n: int, cost: float, **extra: object) -> dict[str, object]:
    return {
        "event_id": f"{project}-{n}",
        "timestamp": f"2025-01-{10 + n % 10:02d}T12:00:00Z",
        "project_id": project,
        "entity_type": "customer",
        "entity_id": "acme",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost": cost,
        "session_id": f"sess-{n}",
        "tags": {"env": "prod"},
        **extra,
    }


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    assert isinstance(body["error"]["message"], str)


@pytest.mark.parametrize(("method", "path", "params"), PATHS)
async def test_missing_key_is_401_everywhere(api_client: httpx.AsyncClient, method, path, params):
    assert_401(await api_client.request(method, path, params=params))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ip-thisisnotakeythatexistsanywhere0000",
        "Bearer not-even-prefixed",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "ip-no-scheme",
    ],
)
async def test_unknown_or_malformed_key_is_401(api_client: httpx.AsyncClient, api_key: str, header: str):
    response = await api_client.get("/v1/analytics/costs", params=RANGE, headers={"Authorization": header})
    assert_401(response)


async def test_valid_key_then_revoked_key(
    api_client: httpx.AsyncClient, settings: Settings, project: str, redis_client
):
    key_id, key = apikeys.create_key(settings, project, "to revoke")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await api_client.get("/v1/analytics/costs", params=RANGE, headers=headers)).status_code == 200
    assert apikeys.revoke_key(settings, key_id) is True
    assert_401(await api_client.get("/v1/analytics/costs", params=RANGE, headers=headers))
    listed = {k["id"]: k for k in apikeys.list_keys(settings)}
    assert listed[key_id]["revoked_at"] is not None


def test_keys_are_random_prefixed_and_stored_only_as_hash(settings: Settings, project: str, redis_client):
    key_id, key = apikeys.create_key(settings, project, "ci")
    other_id, other = apikeys.create_key(settings, project)
    assert key.startswith("ip-")
    # 24 random bytes in URL-safe base64: 32 characters, 192 bits.
    assert len(key) - 3 >= 32
    assert key != other
    assert key_id != other_id

    async def stored_text() -> str:
        client = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
        try:
            parts = []
            async for name in client.scan_iter(match=f"{settings.key_prefix}:*"):
                parts.append(name)
                if await client.type(name) == "hash":
                    parts.extend(f"{f}={v}" for f, v in (await client.hgetall(name)).items())
            return "\n".join(parts)
        finally:
            await client.aclose()

    text = asyncio.run(stored_text())
    assert apikeys.hash_key(key) in text
    assert key not in text
    assert key[3:] not in text
    listed = apikeys.list_keys(settings)
    assert {k["id"] for k in listed} >= {key_id, other_id}
    for row in listed:
        assert set(row) == {"id", "project", "name", "scope", "created_at", "expires_at", "revoked_at", "status"}
        assert "key_hash" not in row
        assert key not in str(row.values())
    assert apikeys.revoke_key(settings, "key_doesnotexist") is False


async def test_healthz_needs_no_key(api_client: httpx.AsyncClient):
    response = await api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok"}


async def test_a_key_never_sees_another_projects_data(
    api_client: httpx.AsyncClient, settings: Settings, redis_client: aioredis.Redis
):
    await load_events(
        redis_client,
        settings,
        [_event("alpha", n, 1.0) for n in range(3)] + [_event("beta", n, 777.123457) for n in range(5)],
    )
    layout = KeyLayout(settings.key_prefix)
    for project, value in (("alpha", 1.0), ("beta", 777.123457)):
        await anomaly_store.create(
            redis_client,
            layout,
            AnomalyRecord(
                id=f"an-{project}",
                project=project,
                detected_at="2025-01-15T10:30:00Z",
                detected_ms=1736937000000,
                entity_type="customer",
                entity_id="acme",
                type="cost_spike",
                severity="high",
                description="spike",
                expected_value=value,
                actual_value=value * 4,
                status="active",
            ),
        )
    alpha_key = apikeys.create_key(settings, "alpha")[1]
    api_client.headers["Authorization"] = f"Bearer {alpha_key}"

    # Every parameter a client controls, including ones that look like keys or projects.
    probes = [
        ("/v1/analytics/costs", {**RANGE}),
        ("/v1/analytics/costs", {**RANGE, "project_id": "beta", "project": "beta"}),
        ("/v1/analytics/costs", {**RANGE, "group_by": "entity"}),
        ("/v1/analytics/costs", {**RANGE, "entity_type": "customer", "entity_id": "acme"}),
        ("/v1/analytics/costs", {**RANGE, "tags": "env:prod", "group_by": "tags.env"}),
        ("/v1/analytics/costs", {**RANGE, "entity_type": "beta:r:t", "entity_id": "acme"}),
        ("/v1/analytics/models", {**RANGE}),
        ("/v1/analytics/entities/top", {**RANGE}),
        ("/v1/analytics/costs/timeseries", {**RANGE, "interval": "month"}),
    ]
    for path, params in probes:
        response = await api_client.get(path, params=params)
        assert response.status_code in (200, 422), (path, params)
        assert "777.12" not in response.text, (path, params, response.text)
    summary = (await api_client.get("/v1/analytics/costs", params=RANGE)).json()["summary"]
    assert summary["total_cost"] == 3.0
    assert summary["total_events"] == 3

    sessions = (await api_client.get("/v1/analytics/sessions", params=RANGE)).json()
    assert sessions["summary"]["total_sessions"] == 3

    anomalies = (await api_client.get("/v1/analytics/anomalies", params=RANGE)).json()["data"]
    assert [a["id"] for a in anomalies] == ["an-alpha"]

    # Dismissing beta's anomaly with alpha's key: not found, and it stays active.
    response = await api_client.post("/v1/analytics/anomalies/an-beta/dismiss")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    beta = await anomaly_store.get(redis_client, layout, "beta", "an-beta")
    assert beta is not None
    assert beta.status == "active"

    compare = (
        await api_client.get(
            "/v1/analytics/compare",
            params={
                "period1_start": "2025-01-01",
                "period1_end": "2025-01-31",
                "period2_start": "2024-12-01",
                "period2_end": "2024-12-31",
            },
        )
    ).json()
    assert compare["period1"]["total_cost"] == 3.0

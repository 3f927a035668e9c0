"""schemathesis against the app's own OpenAPI schema, over HTTP to a live uvicorn server.

Checks: no 5xx, documented status codes and content types, and every JSON
response matches its documented schema. A valid key is sent, over data that
exists (events, a session, an anomaly), so the 200 shapes are exercised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infraprism.api.app import create_app
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys
from infraprism.stores.anomaly_store import AnomalyRecord
from tests.api.helpers import LiveServer, load_events

# Building the app makes no client; the schema is the one the live server serves.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Live:
    url: str
    key: str


async def _seed(settings: Settings, project: str) -> None:
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        events = [
            {
                "event_id": f"s{n}",
                "timestamp": f"2025-01-{1 + n:02d}T10:00:00Z",
                "project_id": project,
                "entity_type": ["customer", "team"][n % 2],
                "entity_id": f"id-{n % 3}",
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 10,
                "output_tokens": 5,
                "cost": 0.25 * n,
                "latency_ms": 100 + n if n % 2 else None,
                "session_id": f"sess-{n % 4}",
                "tags": {"feature": "chat", "env": "a:b"} if n % 3 else {},
            }
            for n in range(20)
        ]
        await load_events(redis, settings, [{k: v for k, v in e.items() if v is not None} for e in events])
        await anomaly_store.save(
            redis,
            KeyLayout(settings.key_prefix),
            AnomalyRecord(
                id="an-1",
                project=project,
                detected_at="2025-01-05T10:00:00Z",
                detected_ms=1736071200000,
                entity_type="customer",
                entity_id="id-1",
                type="cost_spike",
                severity="high",
                description="spike",
                expected_value=1.0,
                actual_value=5.0,
                status="active",
            ),
        )
    finally:
        await redis.aclose()


async def _cleanup(settings: Settings) -> None:
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        async for name in redis.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
            await redis.delete(name)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[Live]:
    settings = Settings(redis_url=redis_url, key_prefix=f"st{uuid.uuid4().hex[:10]}")
    project = "schemathesis"
    asyncio.run(_seed(settings, project))
    key = apikeys.create_key(settings, project)[1]
    try:
        with LiveServer(settings) as server:
            yield Live(server.url, key)
    finally:
        asyncio.run(_cleanup(settings))


@schema.parametrize()
@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, live: Live):
    response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=30)
    case.validate_response(response, checks=CHECKS)

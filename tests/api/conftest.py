"""API test fixtures: a key for a fresh project, an in-process client over the ASGI app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.api.app import create_app
from infraprism.settings import Settings
from infraprism.stores import apikeys


@pytest.fixture
def project() -> str:
    return f"proj-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api_key(settings: Settings, project: str, redis_client: aioredis.Redis) -> str:
    # redis_client is requested so the test's keys (the API key included) are cleaned up.
    return apikeys.create_key(settings, project, "tests")[1]


@pytest.fixture
async def api_client(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app (lifespan run: real Redis client, pinged). No key set."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture
async def authed(api_client: httpx.AsyncClient, api_key: str) -> httpx.AsyncClient:
    api_client.headers["Authorization"] = f"Bearer {api_key}"
    return api_client

"""API test fixtures: a key for a fresh project, an in-process client over the ASGI app,
and a repository of the project for the tests of the services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.api.app import create_app
from infraprism.api.repository import Repository
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import apikeys
from tests.api.helpers import load_events, sample_events


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


@pytest.fixture
async def with_sample_events(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
) -> httpx.AsyncClient:
    """`authed`, over `helpers.sample_events` of its project."""
    await load_events(redis_client, settings, sample_events(project))
    return authed


@pytest.fixture
def repository(redis_client: aioredis.Redis, settings: Settings, project: str) -> Repository:
    """The project's repository over the test's Redis client (no scripts loaded: the
    repository loads them on its first NOSCRIPT)."""
    return Repository(redis_client, KeyLayout(settings.key_prefix), project)

"""The app's lifespan (a Redis client made, pinged, scripts loaded) and its readiness probe."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from infraprism.api.app import create_app
from infraprism.api.repository import HMGET_MANY, TOP_ENTITIES
from infraprism.dev.local_services import free_port, start_redis
from infraprism.settings import Settings


async def test_the_lifespan_loads_the_read_scripts(settings: Settings):
    own = start_redis()
    try:
        app = create_app(settings.model_copy(update={"redis_url": SecretStr(own.address)}))
        async with app.router.lifespan_context(app):
            assert await app.state.redis.script_exists(HMGET_MANY.sha, TOP_ENTITIES.sha) == [True, True]
    finally:
        own.stop()


async def test_a_wrong_redis_address_fails_at_start(settings: Settings):
    app = create_app(settings.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")}))
    with pytest.raises((RedisConnectionError, OSError)):
        async with app.router.lifespan_context(app):
            pass


async def test_readiness_follows_redis(settings: Settings):
    own = start_redis()
    try:
        app = create_app(settings.model_copy(update={"redis_url": SecretStr(own.address)}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                ready = await client.get("/healthz")  # no key needed
                assert (ready.status_code, ready.json()) == (200, {"status": "ok", "redis": "ok"})
                own.stop()
                health = await client.get("/healthz")
                assert health.status_code == 503
                assert health.json()["error"]["code"] == "unavailable"
    finally:
        own.stop()

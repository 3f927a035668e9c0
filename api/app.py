"""The FastAPI application factory. No client exists until the lifespan starts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from infraprism.api import errors, rate_gate, request_limits
from infraprism.api.budget_routes import router as budget_router
from infraprism.api.cache import ResponseCache
from infraprism.api.key_routes import router as key_router
from infraprism.api.price_routes import router as price_router
from infraprism.api.repository import load_scripts
from infraprism.api.routes import router
from infraprism.api.schemas import ErrorEnvelope, Health
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import Retention
from infraprism.settings import Settings
from infraprism.stores.apikeys import KeyStore, RateLimit

log = logging.getLogger(__name__)

DESCRIPTION = """\
Aggregated views of LLM cost data, read from precomputed Redis rollups.

Every endpoint under `/v1/analytics` needs `Authorization: Bearer ip-...`
(a key from `infraprism keys create`), sees only its key's project (a scoped key:
only its one entity, as if the project held nothing else), takes
`format=csv`, and answers errors as `{"error": {"code": ..., "message": ...}}`.
Dates are local calendar days, both inclusive, in the zone `tz` names (an IANA
name; default: the project's reporting zone, UTC unless set). Costs are exact
sums printed in USD rounded to 6 decimals.
"""


def create_app(settings: Settings) -> FastAPI:
    """The API for `settings`; the Redis client is made, pinged and closed by the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(
            settings.redis_dsn(),
            decode_responses=True,
            # RESP2: redis-py 8 speaks RESP3 by default, whose replies of a 10,000-field
            # hash or sorted set take it about 1.7 times as long to read.
            protocol=2,
            max_connections=settings.api_redis_max_connections,
            socket_connect_timeout=5,
            socket_timeout=10,
            health_check_interval=30,
        )
        # Fail loudly at start on a bad address, not on the first request.
        await client.ping()
        await load_scripts(client)
        app.state.redis = client
        app.state.layout = KeyLayout(settings.key_prefix)
        app.state.retention = Retention(
            settings.retention_hour_days, settings.retention_day_days, settings.retention_month_days
        )
        app.state.response_cache = ResponseCache()
        app.state.key_store = KeyStore(
            client,
            app.state.layout,
            RateLimit(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
        )
        indexed = await app.state.key_store.index_existing()
        if indexed:
            log.info("indexed the keys of an earlier build by project", extra={"keys": indexed})
        log.info("api ready", extra={"key_prefix": settings.key_prefix})
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(
        title="InfraPrism Analytics API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    app.state.refused_keys = rate_gate.install(app)
    request_limits.install(app)
    app.include_router(router)
    app.include_router(key_router)
    app.include_router(budget_router)
    app.include_router(price_router)

    @app.get(
        "/healthz",
        tags=["health"],
        response_model=None,
        responses={
            200: {"model": Health, "description": "ready"},
            503: {"model": ErrorEnvelope, "description": "Redis unreachable"},
        },
    )
    async def healthz(request: Request) -> Response:
        """Readiness: 200 when Redis answers a PING, else 503. No key needed."""
        try:
            await request.app.state.redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("readiness: redis unreachable", extra={"error": repr(exc)})
            return errors.envelope(503, "unavailable", "redis is unreachable")
        return Response(orjson.dumps({"status": "ok", "redis": "ok"}), media_type="application/json")

    return app

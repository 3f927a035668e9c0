"""Request dependencies: the Redis client, the key layout, and the caller's project (auth)."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infraprism.api.cache import ResponseCache
from infraprism.api.errors import Unauthorized
from infraprism.core.keys import KeyLayout
from infraprism.stores import apikeys


def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


def get_layout(request: Request) -> KeyLayout:
    return request.app.state.layout  # type: ignore[no-any-return]


def get_cache(request: Request) -> ResponseCache:
    return request.app.state.response_cache  # type: ignore[no-any-return]


RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
LayoutDep = Annotated[KeyLayout, Depends(get_layout)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A key from `infraprism keys create`, sent as `Authorization: Bearer ip-...`.",
)


async def get_project(
    redis: RedisDep,
    layout: LayoutDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The project the request's key belongs to; 401 for a missing, unknown or revoked key."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send Authorization: Bearer ip-...")
    key = await apikeys.lookup(redis, layout, credentials.credentials)
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return key.project


ProjectDep = Annotated[str, Depends(get_project)]

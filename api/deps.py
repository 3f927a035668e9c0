"""Request dependencies: the Redis client, the caller's project (auth), the services that
answer for it, and the validated date ranges of the query."""

from __future__ import annotations

from datetime import date
from typing import Annotated, NamedTuple

import redis.asyncio as aioredis
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infraprism.api.anomalies import AnomaliesService
from infraprism.api.bounds import MAX_HOURLY_RANGE_DAYS
from infraprism.api.cache import ResponseCache
from infraprism.api.costs import CostsService
from infraprism.api.errors import Forbidden, ForbiddenScope, InvalidParameter, Unauthorized
from infraprism.api.leaderboard import LeaderboardService
from infraprism.api.params import (
    DATE_PATTERN,
    MAX_RANGE_DAYS,
    DateRange,
    check_entity_type,
    check_text,
    parse_range,
)
from infraprism.api.planner import Interval
from infraprism.api.rate_gate import hold_then_refuse
from infraprism.api.repository import Repository
from infraprism.api.sessions import SessionsService
from infraprism.core.keys import KeyLayout
from infraprism.core.zones import UnknownZone, zone
from infraprism.stores.apikeys import ApiKey, KeyStore, Scope
from infraprism.stores.projects import reporting_zone

# The dependencies are coroutines: FastAPI runs a plain function in its thread pool.


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


async def get_layout(request: Request) -> KeyLayout:
    return request.app.state.layout  # type: ignore[no-any-return]


async def get_cache(request: Request) -> ResponseCache:
    return request.app.state.response_cache  # type: ignore[no-any-return]


RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
LayoutDep = Annotated[KeyLayout, Depends(get_layout)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A key from `infraprism keys create`, sent as `Authorization: Bearer ip-...`.",
)


async def get_key_store(request: Request) -> KeyStore:
    return request.app.state.key_store  # type: ignore[no-any-return]


KeyStoreDep = Annotated[KeyStore, Depends(get_key_store)]

_REFUSALS = {
    "unknown": "unknown API key",
    "revoked": "this API key was revoked",
    "expired": "this API key has expired",
}


async def get_key(
    request: Request,
    store: KeyStoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The request's live key: 401 for a missing, unknown, revoked or expired key, 429 (held:
    api/rate_gate.py) when the key's rate limit is reached. One script call does both
    (stores/authenticate.lua)."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send Authorization: Bearer ip-...")
    found = await store.authenticate(credentials.credentials)
    if found.key is None:
        raise Unauthorized(_REFUSALS.get(found.refusal, "unknown API key"))
    if found.retry_after_ms:
        raise await hold_then_refuse(request.app.state.refused_keys, found.key_hash, found.retry_after_ms)
    return found.key


KeyDep = Annotated[ApiKey, Depends(get_key)]


async def get_project_key(key: KeyDep) -> ApiKey:
    """A key that sees its whole project: what managing keys and dismissing anomalies need."""
    if key.scope is not None:
        raise Forbidden("this key sees one entity only; this needs a project key (`infraprism keys create`)")
    return key


ProjectKeyDep = Annotated[ApiKey, Depends(get_project_key)]


# --- the services of the caller's project ----------------------------------------------------


async def get_repository(request: Request, redis: RedisDep, layout: LayoutDep, key: KeyDep) -> Repository:
    return Repository(redis, layout, key.project, retention=request.app.state.retention, scoped=key.scope is not None)


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_costs(repository: RepositoryDep, cache: CacheDep) -> CostsService:
    return CostsService(repository, cache)


async def get_leaderboard(repository: RepositoryDep, cache: CacheDep) -> LeaderboardService:
    return LeaderboardService(repository, cache)


async def get_sessions(repository: RepositoryDep, cache: CacheDep) -> SessionsService:
    return SessionsService(repository, cache)


async def get_anomalies(repository: RepositoryDep) -> AnomaliesService:
    return AnomaliesService(repository)


CostsDep = Annotated[CostsService, Depends(get_costs)]
LeaderboardDep = Annotated[LeaderboardService, Depends(get_leaderboard)]
SessionsDep = Annotated[SessionsService, Depends(get_sessions)]
AnomaliesDep = Annotated[AnomaliesService, Depends(get_anomalies)]


# --- the entity a request is about ------------------------------------------------------------

_TEXT = {"min_length": 1, "max_length": 256}
EntityTypeParam = Annotated[str | None, Query(description="filter by entity type", examples=["customer"], **_TEXT)]
EntityIdParam = Annotated[str | None, Query(description="filter by entity ID", examples=["acme-corp"], **_TEXT)]


class Entity(NamedTuple):
    """The entity filters of a request, as its key allows them: a scoped key's own entity
    whatever the request says, or what the request says."""

    entity_type: str | None
    entity_id: str | None


def _within_scope(scope: Scope | None, entity_type: str | None, entity_id: str | None) -> Entity:
    if scope is None:
        return Entity(entity_type, entity_id)
    seen = f"this key sees only {scope.entity_type} {scope.entity_id!r}"
    if entity_type is not None and entity_type != scope.entity_type:
        raise ForbiddenScope("entity_type", seen)
    if entity_id is not None and entity_id != scope.entity_id:
        raise ForbiddenScope("entity_id", seen)
    return Entity(scope.entity_type, scope.entity_id)


async def get_entity(key: KeyDep, entity_type: EntityTypeParam = None, entity_id: EntityIdParam = None) -> Entity:
    """`entity_type` and `entity_id`, checked and held to the key's scope (403 `forbidden_scope`)."""
    return _within_scope(key.scope, check_entity_type(entity_type), check_text("entity_id", entity_id))


async def get_entity_type(key: KeyDep, entity_type: EntityTypeParam = None) -> Entity:
    """`entity_type` alone (`/entities/top`, `/anomalies`), held to the key's scope: a scoped
    key's answer is about its own entity, named by type and id."""
    return _within_scope(key.scope, check_entity_type(entity_type), None)


EntityDep = Annotated[Entity, Depends(get_entity)]
EntityTypeDep = Annotated[Entity, Depends(get_entity_type)]


# --- date ranges -------------------------------------------------------------------------------


StartDate = Annotated[
    str,
    Query(description="first local day, YYYY-MM-DD (inclusive)", pattern=DATE_PATTERN, examples=["2025-01-01"]),
]
EndDate = Annotated[
    str,
    Query(description="last local day, YYYY-MM-DD (inclusive)", pattern=DATE_PATTERN, examples=["2025-01-31"]),
]


async def get_date_range(
    start_date: StartDate,
    end_date: EndDate,
) -> DateRange:
    return parse_range(start_date, end_date)


class SeriesRange(NamedTuple):
    start: date
    end: date
    interval: Interval


async def get_series_range(
    start_date: StartDate,
    end_date: EndDate,
    interval: Annotated[Interval, Query(description="hour, day (default), week or month")] = Interval.DAY,
) -> SeriesRange:
    """A time series' range and interval: an hourly series spans fewer days than the others."""
    max_days = MAX_HOURLY_RANGE_DAYS if interval is Interval.HOUR else MAX_RANGE_DAYS
    start, end = parse_range(start_date, end_date, max_days=max_days)
    return SeriesRange(start, end, interval)


async def get_period1(
    period1_start: Annotated[
        str, Query(description="first period start", pattern=DATE_PATTERN, examples=["2025-01-01"])
    ],
    period1_end: Annotated[str, Query(description="first period end", pattern=DATE_PATTERN, examples=["2025-01-15"])],
) -> DateRange:
    return parse_range(period1_start, period1_end, "period1_start", "period1_end")


async def get_period2(
    period2_start: Annotated[
        str, Query(description="second period start", pattern=DATE_PATTERN, examples=["2024-12-16"])
    ],
    period2_end: Annotated[str, Query(description="second period end", pattern=DATE_PATTERN, examples=["2024-12-31"])],
) -> DateRange:
    return parse_range(period2_start, period2_end, "period2_start", "period2_end")


DateRangeDep = Annotated[DateRange, Depends(get_date_range)]
SeriesRangeDep = Annotated[SeriesRange, Depends(get_series_range)]
Period1Dep = Annotated[DateRange, Depends(get_period1)]
Period2Dep = Annotated[DateRange, Depends(get_period2)]


# --- the zone ----------------------------------------------------------------------------------


async def get_zone(
    repository: RepositoryDep,
    tz: Annotated[
        str | None,
        Query(
            description="IANA zone the days, weeks, months and hours are local to; default: the "
            "project's reporting zone (`infraprism projects set-timezone`), UTC unless set",
            examples=["America/Los_Angeles"],
            max_length=64,
        ),
    ] = None,
) -> str:
    """The zone name the request answers in, checked against the pinned zone database."""
    name = tz if tz is not None else await reporting_zone(repository.redis, repository.layout, repository.project)
    try:
        zone(name)
    except UnknownZone as exc:
        raise InvalidParameter("tz", str(exc)) from None
    return name


ZoneDep = Annotated[str, Depends(get_zone)]

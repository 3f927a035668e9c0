"""Request dependencies: the Redis client, the caller's project (auth), the services that
answer for it, and the validated date ranges of the query."""

from __future__ import annotations

from datetime import date
from typing import Annotated, NamedTuple

import redis.asyncio as aioredis
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infraprism.api.anomalies import AnomaliesService
from infraprism.api.cache import ResponseCache
from infraprism.api.costs import CostsService
from infraprism.api.errors import InvalidParameter, Unauthorized
from infraprism.api.leaderboard import LeaderboardService
from infraprism.api.params import DATE_PATTERN, MAX_HOURLY_RANGE_DAYS, MAX_RANGE_DAYS, DateRange, parse_range
from infraprism.api.planner import Interval
from infraprism.api.repository import Repository
from infraprism.api.sessions import SessionsService
from infraprism.core.keys import KeyLayout
from infraprism.core.zones import UnknownZone, zone
from infraprism.stores import apikeys
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


# --- the services of the caller's project ----------------------------------------------------


async def get_repository(request: Request, redis: RedisDep, layout: LayoutDep, project: ProjectDep) -> Repository:
    return Repository(redis, layout, project, retention=request.app.state.retention)


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

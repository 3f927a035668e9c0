"""The HTTP surface under /v1/analytics: parse parameters, call a service, send its body as JSON or CSV.

Route docstrings are the OpenAPI descriptions served at /docs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from infraprism.api import csv_export
from infraprism.api.cache import ResponseCache
from infraprism.api.deps import (
    AnomaliesDep,
    CostsDep,
    DateRangeDep,
    EntityDep,
    EntityTypeDep,
    KeyDep,
    LeaderboardDep,
    Period1Dep,
    Period2Dep,
    ProjectKeyDep,
    SeriesRangeDep,
    SessionsDep,
    ZoneDep,
)
from infraprism.api.errors import NotFound
from infraprism.api.params import filters, parse_group_by
from infraprism.api.schemas import (
    AnomaliesResponse,
    CompareResponse,
    CostsResponse,
    DismissResponse,
    ErrorEnvelope,
    ModelsResponse,
    SessionsResponse,
    TimeseriesResponse,
    TopEntitiesResponse,
)
from infraprism.stores.anomaly_store import AnomalyStatus


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


class Order(StrEnum):
    DESC = "desc"
    ASC = "asc"


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "missing, unknown, revoked or expired API key"},
    403: {
        "model": ErrorEnvelope,
        "description": "`forbidden_scope`: a scoped key's parameter names another entity; "
        "`forbidden`: a scoped key may not do this",
    },
    422: {"model": ErrorEnvelope, "description": "a parameter is invalid, or asks for too much; the message names it"},
    429: {"model": ErrorEnvelope, "description": "the key's rate limit is reached; see Retry-After"},
    503: {"model": ErrorEnvelope, "description": "the data store is unreachable"},
}

# The extra answers of a route that takes a JSON body.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
    413: {"model": ErrorEnvelope, "description": "the body is over 16 KiB"},
}

CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}, "example": "entity_type,entity_id,total_cost\r\n"}}


def _ok(model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description, "content": CSV_CONTENT}}


router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERRORS)

_TEXT = {"min_length": 1, "max_length": 256}
FormatParam = Annotated[Format, Query(alias="format", description="json (default) or csv")]


def respond(body: dict[str, Any], fmt: Format, columns: list[str], cache: ResponseCache | None = None) -> Response:
    """The body as JSON or CSV; rendered once per cached answer when `cache` holds it."""

    def render(body: dict[str, Any]) -> bytes:
        if fmt is Format.CSV:
            data = body.get("data", body)
            return csv_export.render(columns, data if isinstance(data, list) else [data]).encode()
        return json_bytes(body)

    content = render(body) if cache is None else cache.render(body, fmt.value, render)
    media_type = "text/csv; charset=utf-8" if fmt is Format.CSV else "application/json"
    return Response(content, media_type=media_type)


def json_bytes(body: dict[str, Any]) -> bytes:
    """The body as JSON. Counters are exact Python integers of any size; orjson stops at
    64 bits, and a sum past that (tokens of millions of maximal events) is written by the
    standard library instead, exactly, never refused."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()


# Each route takes its service first: a request without a valid key is answered 401 before
# its parameters are checked.


@router.get("/costs", response_model=None, responses=_ok(CostsResponse, "cost rows and their summary"))
async def costs(
    service: CostsDep,
    dates: DateRangeDep,
    zone: ZoneDep,
    entity: EntityDep,
    model: Annotated[str | None, Query(description="filter by model", examples=["gpt-4o"], **_TEXT)] = None,
    group_by: Annotated[
        str | None,
        Query(
            description="entity, model, day, week, month or tags.{key}",
            examples=["entity"],
            pattern=r"^(entity|model|day|week|month|tags\.[^\x00-\x1f\x7f]{1,64})$",
        ),
    ] = None,
    tags: Annotated[
        str | None,
        Query(
            description="key:value[,key:value...], all must match (AND); a value may contain ':'",
            examples=["feature:chatbot,env:production"],
            pattern=r"^[^,:]+:[^,]+(,[^,:]+:[^,]+)*$",
        ),
    ] = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Aggregated costs over a period.

    Filters combine with AND. Without `group_by`, `data` holds one row of totals;
    dimension groupings are ordered by `total_cost` descending, time groupings by
    time (`period` is the bucket's first day; weeks start on Monday). With
    `group_by=tags.{key}` one row with `tag_value: null` holds the cost without
    that tag, so rows always add up to `summary`.
    """
    grouping = parse_group_by(group_by)
    body = await service.costs(dates.start, dates.end, filters(*entity, model, tags), grouping, zone)
    return respond(body, fmt, csv_export.costs_columns(grouping.kind), service.cache)


@router.get(
    "/costs/timeseries",
    response_model=None,
    responses=_ok(TimeseriesResponse, "every bucket, zero-filled"),
)
async def costs_timeseries(
    service: CostsDep,
    series: SeriesRangeDep,
    zone: ZoneDep,
    entity: EntityDep,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Cost and event counts per time bucket, for charts.

    Every bucket of the range is present, in time order, with zeros where nothing
    happened; `timestamp` is the bucket's first instant (weeks start on Monday).
    An hourly series may span at most 100 days.
    """
    body = await service.timeseries(series.start, series.end, filters(*entity), series.interval, zone)
    return respond(body, fmt, csv_export.TIMESERIES_COLUMNS, service.cache)


@router.get("/models", response_model=None, responses=_ok(ModelsResponse, "one row per model"))
async def models(
    service: CostsDep,
    dates: DateRangeDep,
    zone: ZoneDep,
    entity: EntityDep,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Usage by model and provider, with each model's share of the total cost in the same scope."""
    body = await service.models(dates.start, dates.end, filters(*entity), zone)
    return respond(body, fmt, csv_export.MODELS_COLUMNS, service.cache)


@router.get("/entities/top", response_model=None, responses=_ok(TopEntitiesResponse, "ranked entities"))
async def entities_top(
    service: LeaderboardDep,
    dates: DateRangeDep,
    zone: ZoneDep,
    key: KeyDep,
    entity: EntityTypeDep,
    limit: Annotated[int, Query(ge=1, le=100, description="number of results, 1-100")] = 10,
    order: Annotated[Order, Query(description="desc (default) or asc")] = Order.DESC,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Entities ranked by cost; `rank` starts at 1, ties are broken by entity_type, entity_id.
    A scoped key's answer holds its own entity alone (if it has events in the range)."""
    if key.scope is not None:
        body = await service.one_entity(dates.start, dates.end, key.scope.entity_type, key.scope.entity_id, zone)
    else:
        body = await service.top_entities(dates.start, dates.end, entity.entity_type, limit, order is Order.DESC, zone)
    return respond(body, fmt, csv_export.TOP_ENTITIES_COLUMNS, service.cache)


@router.get(
    "/sessions",
    response_model=None,
    responses=_ok(SessionsResponse, "a page of sessions and a summary"),
)
async def sessions(
    service: SessionsDep,
    dates: DateRangeDep,
    zone: ZoneDep,
    entity: EntityDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 100,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Sessions that started in the range, newest first; `summary` covers every matching session."""
    hide_shared = service.repository.scoped
    body = await service.sessions(
        dates.start, dates.end, entity.entity_type, entity.entity_id, limit, hide_shared, zone
    )
    return respond(body, fmt, csv_export.SESSION_COLUMNS, service.cache)


@router.get("/anomalies", response_model=None, responses=_ok(AnomaliesResponse, "anomalies, newest first"))
async def anomalies(
    service: AnomaliesDep,
    dates: DateRangeDep,
    zone: ZoneDep,
    entity: EntityTypeDep,
    status: Annotated[AnomalyStatus | None, Query(description="active, resolved or dismissed")] = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Detected anomalies whose `detected_at` falls in the range, newest first. A scoped key
    sees the anomalies of its own entity only."""
    status_value = None if status is None else status.value
    body = await service.anomalies(dates.start, dates.end, entity.entity_type, entity.entity_id, status_value, zone)
    return respond(body, fmt, csv_export.ANOMALY_COLUMNS)


@router.post(
    "/anomalies/{anomaly_id}/dismiss",
    response_model=None,
    responses={
        **_ok(DismissResponse, "the dismissed anomaly"),
        404: {"model": ErrorEnvelope, "description": "no such anomaly"},
    },
)
async def dismiss_anomaly(
    _project_key: ProjectKeyDep,
    service: AnomaliesDep,
    anomaly_id: Annotated[str, Path(min_length=1, max_length=128, description="the anomaly's id")],
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Dismiss an anomaly of the key's project (the only analytics write; a project key only);
    the detector will not reopen it."""
    body = await service.dismiss(anomaly_id)
    if body is None:
        raise NotFound(f"no anomaly {anomaly_id!r}")
    return respond(body, fmt, csv_export.ANOMALY_COLUMNS)


@router.get("/compare", response_model=None, responses=_ok(CompareResponse, "two periods and their changes"))
async def compare(
    service: CostsDep,
    period1: Period1Dep,
    period2: Period2Dep,
    zone: ZoneDep,
    entity: EntityDep,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Totals of two periods; `changes` are period1 minus period2, percents relative to period2."""
    body = await service.compare(period1, period2, filters(*entity), zone)
    return respond(body, fmt, csv_export.COMPARE_COLUMNS, service.cache)

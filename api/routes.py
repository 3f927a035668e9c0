"""The HTTP surface under /v1/analytics: parse parameters, call the service, shape JSON or CSV.

Route docstrings are the OpenAPI descriptions served at /docs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from infraprism.api import csv
from infraprism.api.cache import ResponseCache
from infraprism.api.deps import CacheDep, LayoutDep, ProjectDep, RedisDep
from infraprism.api.errors import NotFound
from infraprism.api.params import (
    DATE_PATTERN,
    MAX_HOURLY_RANGE_DAYS,
    MAX_RANGE_DAYS,
    check_text,
    filters,
    parse_group_by,
    parse_range,
)
from infraprism.api.planner import GroupBy, Interval
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
from infraprism.api.service import Reader
from infraprism.stores.anomaly_store import AnomalyStatus


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


class Order(StrEnum):
    DESC = "desc"
    ASC = "asc"


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "missing, unknown or revoked API key"},
    422: {"model": ErrorEnvelope, "description": "a parameter is invalid; the message names it"},
    503: {"model": ErrorEnvelope, "description": "the data store is unreachable"},
}

CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}, "example": "entity_type,entity_id,total_cost\r\n"}}


def _ok(model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description, "content": CSV_CONTENT}}


router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERRORS)

_TEXT = {"min_length": 1, "max_length": 256}
StartDate = Annotated[
    str,
    Query(
        description="first day, YYYY-MM-DD (UTC, inclusive)",
        pattern=DATE_PATTERN,
        examples=["2025-01-01"],
    ),
]
EndDate = Annotated[
    str,
    Query(
        description="last day, YYYY-MM-DD (UTC, inclusive)",
        pattern=DATE_PATTERN,
        examples=["2025-01-31"],
    ),
]
EntityType = Annotated[str | None, Query(description="filter by entity type", examples=["customer"], **_TEXT)]
EntityId = Annotated[str | None, Query(description="filter by entity ID", examples=["acme-corp"], **_TEXT)]
FormatParam = Annotated[Format, Query(alias="format", description="json (default) or csv")]

METRIC_COLUMNS = [
    "total_cost",
    "total_events",
    "total_input_tokens",
    "total_output_tokens",
    "avg_latency_ms",
]
GROUP_COLUMNS = {
    GroupBy.NONE: [],
    GroupBy.ENTITY: ["entity_type", "entity_id"],
    GroupBy.MODEL: ["model", "provider"],
    GroupBy.DAY: ["period"],
    GroupBy.WEEK: ["period"],
    GroupBy.MONTH: ["period"],
    GroupBy.TAG: ["tag_key", "tag_value"],
}
ANOMALY_COLUMNS = [
    "id",
    "detected_at",
    "entity_type",
    "entity_id",
    "type",
    "severity",
    "description",
    "expected_value",
    "actual_value",
    "status",
]


def respond(body: dict[str, Any], fmt: Format, columns: list[str], cache: ResponseCache | None = None) -> Response:
    """The body as JSON or CSV; rendered once per cached answer when `cache` holds it."""

    def render(body: dict[str, Any]) -> bytes:
        if fmt is Format.CSV:
            data = body.get("data", body)
            return csv.render(columns, data if isinstance(data, list) else [data]).encode()
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


@router.get("/costs", response_model=None, responses=_ok(CostsResponse, "cost rows and their summary"))
async def costs(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    start_date: StartDate,
    end_date: EndDate,
    entity_type: EntityType = None,
    entity_id: EntityId = None,
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
    start, end = parse_range(start_date, end_date)
    grouping = parse_group_by(group_by)
    body = await Reader(redis, layout, project, cache).costs(
        start, end, filters(entity_type, entity_id, model, tags), grouping
    )
    return respond(body, fmt, GROUP_COLUMNS[grouping.kind] + METRIC_COLUMNS, cache)


@router.get(
    "/costs/timeseries",
    response_model=None,
    responses=_ok(TimeseriesResponse, "every bucket, zero-filled"),
)
async def costs_timeseries(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    start_date: StartDate,
    end_date: EndDate,
    interval: Annotated[Interval, Query(description="hour, day (default), week or month")] = Interval.DAY,
    entity_type: EntityType = None,
    entity_id: EntityId = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Cost and event counts per time bucket, for charts.

    Every bucket of the range is present, in time order, with zeros where nothing
    happened; `timestamp` is the bucket's first instant (weeks start on Monday).
    An hourly series may span at most 366 days.
    """
    max_days = MAX_HOURLY_RANGE_DAYS if interval is Interval.HOUR else MAX_RANGE_DAYS
    start, end = parse_range(start_date, end_date, max_days=max_days)
    body = await Reader(redis, layout, project, cache).timeseries(start, end, filters(entity_type, entity_id), interval)
    return respond(body, fmt, ["timestamp", "cost", "events"], cache)


@router.get("/models", response_model=None, responses=_ok(ModelsResponse, "one row per model"))
async def models(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    start_date: StartDate,
    end_date: EndDate,
    entity_type: EntityType = None,
    entity_id: EntityId = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Usage by model and provider, with each model's share of the total cost in the same scope."""
    start, end = parse_range(start_date, end_date)
    body = await Reader(redis, layout, project, cache).models(start, end, filters(entity_type, entity_id))
    return respond(body, fmt, ["model", "provider", *METRIC_COLUMNS, "percentage_of_total"], cache)


@router.get("/entities/top", response_model=None, responses=_ok(TopEntitiesResponse, "ranked entities"))
async def entities_top(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    start_date: StartDate,
    end_date: EndDate,
    entity_type: EntityType = None,
    limit: Annotated[int, Query(ge=1, le=100, description="number of results, 1-100")] = 10,
    order: Annotated[Order, Query(description="desc (default) or asc")] = Order.DESC,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Entities ranked by cost; `rank` starts at 1, ties are broken by entity_type, entity_id."""
    start, end = parse_range(start_date, end_date)
    body = await Reader(redis, layout, project, cache).top_entities(
        start, end, check_text("entity_type", entity_type), limit, order is Order.DESC
    )
    return respond(body, fmt, ["entity_type", "entity_id", "total_cost", "total_events", "rank"], cache)


@router.get(
    "/sessions",
    response_model=None,
    responses=_ok(SessionsResponse, "a page of sessions and a summary"),
)
async def sessions(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    start_date: StartDate,
    end_date: EndDate,
    entity_type: EntityType = None,
    entity_id: EntityId = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 100,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Sessions that started in the range, newest first; `summary` covers every matching session."""
    start, end = parse_range(start_date, end_date)
    body = await Reader(redis, layout, project, cache).sessions(
        start,
        end,
        check_text("entity_type", entity_type),
        check_text("entity_id", entity_id),
        limit,
    )
    return respond(
        body,
        fmt,
        [
            "session_id",
            "entity_type",
            "entity_id",
            "started_at",
            "ended_at",
            "turn_count",
            "total_cost",
            "total_tokens",
        ],
        cache,
    )


@router.get("/anomalies", response_model=None, responses=_ok(AnomaliesResponse, "anomalies, newest first"))
async def anomalies(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    start_date: StartDate,
    end_date: EndDate,
    entity_type: EntityType = None,
    status: Annotated[AnomalyStatus | None, Query(description="active, resolved or dismissed")] = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Detected anomalies whose `detected_at` falls in the range, newest first."""
    start, end = parse_range(start_date, end_date)
    body = await Reader(redis, layout, project).anomalies(
        start, end, check_text("entity_type", entity_type), None if status is None else status.value
    )
    return respond(body, fmt, ANOMALY_COLUMNS)


@router.post(
    "/anomalies/{anomaly_id}/dismiss",
    response_model=None,
    responses={
        **_ok(DismissResponse, "the dismissed anomaly"),
        404: {"model": ErrorEnvelope, "description": "no such anomaly"},
    },
)
async def dismiss_anomaly(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    anomaly_id: Annotated[str, Path(min_length=1, max_length=128, description="the anomaly's id")],
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Dismiss an anomaly of the key's project (the only write); the detector will not reopen it."""
    body = await Reader(redis, layout, project).dismiss(anomaly_id)
    if body is None:
        raise NotFound(f"no anomaly {anomaly_id!r}")
    return respond(body, fmt, ANOMALY_COLUMNS)


@router.get("/compare", response_model=None, responses=_ok(CompareResponse, "two periods and their changes"))
async def compare(
    redis: RedisDep,
    layout: LayoutDep,
    project: ProjectDep,
    cache: CacheDep,
    period1_start: Annotated[
        str, Query(description="first period start", pattern=DATE_PATTERN, examples=["2025-01-01"])
    ],
    period1_end: Annotated[str, Query(description="first period end", pattern=DATE_PATTERN, examples=["2025-01-15"])],
    period2_start: Annotated[
        str, Query(description="second period start", pattern=DATE_PATTERN, examples=["2024-12-16"])
    ],
    period2_end: Annotated[str, Query(description="second period end", pattern=DATE_PATTERN, examples=["2024-12-31"])],
    entity_type: EntityType = None,
    entity_id: EntityId = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """Totals of two periods; `changes` are period1 minus period2, percents relative to period2."""
    period1 = parse_range(period1_start, period1_end, "period1_start", "period1_end")
    period2 = parse_range(period2_start, period2_end, "period2_start", "period2_end")
    body = await Reader(redis, layout, project, cache).compare(period1, period2, filters(entity_type, entity_id))
    columns = [
        f"{period}.{name}"
        for period in ("period1", "period2")
        for name in ("start", "end", "total_cost", "total_events")
    ] + [f"changes.{name}" for name in ("cost_change", "cost_change_percent", "events_change", "events_change_percent")]
    return respond(body, fmt, columns, cache)

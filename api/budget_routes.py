"""`/v1/budgets`: a project key sets budgets and reads their status.

Spend is read from the rollups by the plans `/costs` uses, in the project's reporting zone
(`infraprism projects set-timezone`). A scoped key gets 403 `forbidden`: a budget is the
project's business, not its customer's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from infraprism.api.budgets import BudgetService, public_budget
from infraprism.api.deps import ProjectKeyDep, RepositoryDep
from infraprism.api.errors import Conflict, InvalidParameter, NotFound
from infraprism.api.params import DATE_PATTERN, parse_date
from infraprism.api.routes import BODY_ERRORS, CSV_CONTENT, ERRORS, Format, FormatParam, respond
from infraprism.api.schemas import (
    BUDGET_ID,
    BudgetBody,
    BudgetOut,
    BudgetsResponse,
    BudgetStatus,
    BudgetStatusesResponse,
    ErrorEnvelope,
)
from infraprism.core.budgets import Budget, BudgetPeriod, BudgetScope
from infraprism.core.money import usd_to_nano
from infraprism.stores import budgets
from infraprism.stores.projects import reporting_zone

router = APIRouter(prefix="/v1/budgets", tags=["budgets"], responses=ERRORS)

# A project's budgets are read whole for `GET /v1/budgets/status`: a bound on that work.
MAX_BUDGETS_PER_PROJECT = 1000
RESERVED_IDS = frozenset({"status"})
BUDGET_COLUMNS = [
    "id",
    "name",
    "amount",
    "period",
    "scope.entity_type",
    "scope.entity_id",
    "scope.model",
    "scope.tags",
    "thresholds",
    "created_at",
    "updated_at",
]
STATUS_COLUMNS = [
    "error.code",
    "error.message",
    "budget.id",
    "budget.name",
    "budget.amount",
    "period.start",
    "period.end",
    "period.tz",
    "spent",
    "remaining",
    "percent_used",
    "forecast",
    "forecast_percent",
    "thresholds_crossed",
]
BudgetIdParam = Annotated[str, Path(pattern=BUDGET_ID, description="1-64 characters of [A-Za-z0-9._-]")]
DateParam = Annotated[
    str | None,
    Query(
        alias="date", pattern=DATE_PATTERN, description="a day of the period (default: today, in the project's zone)"
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorEnvelope, "description": "no such budget"}}


def _joined(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)


def budget_cells(budget: dict[str, Any]) -> dict[str, Any]:
    """A budget as one CSV row: tags `key:value,...` as the `tags` filter writes them,
    thresholds comma-separated."""
    scope = dict(budget["scope"])
    if "tags" in scope:
        scope["tags"] = ",".join(f"{k}:{v}" for k, v in sorted(scope["tags"].items()))
    return {**budget, "scope": scope, "thresholds": _joined(budget["thresholds"])}


def status_cells(status: dict[str, Any]) -> dict[str, Any]:
    if "error" in status:  # a row the status could not be computed for: its budget, and why
        return {**status, "budget": budget_cells(status["budget"])}
    return {
        **status,
        "budget": budget_cells(status["budget"]),
        "thresholds_crossed": _joined(status["thresholds_crossed"]),
    }


def _respond(body: dict[str, Any], fmt: Format, columns: list[str], cells: Callable[[Any], Any]) -> Response:
    """`routes.respond`, with each row in CSV made one line of cells (`cells`)."""
    if fmt is Format.CSV:
        data = body.get("data", body)
        body = {"data": [cells(row) for row in (data if isinstance(data, list) else [data])]}
    return respond(body, fmt, columns)


def _checked_id(budget_id: str) -> str:
    if budget_id in RESERVED_IDS:
        raise InvalidParameter("budget_id", f"{budget_id!r} is reserved (GET /v1/budgets/status)")
    return budget_id


async def _budget(repository: Any, budget_id: str) -> Budget:
    found = await budgets.get(repository.redis, repository.layout, repository.project, budget_id)
    if found is None:
        raise NotFound(f"no budget {budget_id!r}")
    return found


def _day(value: str | None) -> date | None:
    return None if value is None else parse_date("date", value)


@router.get(
    "/status",
    response_model=None,
    responses={200: {"model": BudgetStatusesResponse, "description": "every budget's status", "content": CSV_CONTENT}},
)
async def all_statuses(
    _key: ProjectKeyDep, repository: RepositoryDep, date_: DateParam = None, fmt: FormatParam = Format.JSON
) -> Response:
    """Every budget's status for the period holding `date`, in one answer, for a dashboard."""
    day = _day(date_)
    zone = await reporting_zone(repository.redis, repository.layout, repository.project)
    found = await budgets.list_all(repository.redis, repository.layout, repository.project)
    # One budget that cannot be answered exactly (expired buckets, a scan over its bound) is
    # said in its row; the dashboard still gets every other one.
    statuses = await BudgetService(repository).statuses(found, day, zone)
    return _respond({"data": statuses}, fmt, STATUS_COLUMNS, status_cells)


@router.get(
    "",
    response_model=None,
    responses={200: {"model": BudgetsResponse, "description": "the budgets, by id", "content": CSV_CONTENT}},
)
async def list_budgets(_key: ProjectKeyDep, repository: RepositoryDep, fmt: FormatParam = Format.JSON) -> Response:
    """The project's budgets, by id."""
    found = await budgets.list_all(repository.redis, repository.layout, repository.project)
    return _respond({"data": [public_budget(b) for b in found]}, fmt, BUDGET_COLUMNS, budget_cells)


@router.put(
    "/{budget_id}",
    response_model=None,
    responses={
        200: {"model": BudgetOut, "description": "the stored budget"},
        409: {"model": ErrorEnvelope, "description": "the project holds 1,000 budgets"},
        **BODY_ERRORS,
    },
)
async def put_budget(
    _key: ProjectKeyDep, repository: RepositoryDep, budget_id: BudgetIdParam, body: BudgetBody
) -> Response:
    """Create or replace a budget. Replacing keeps what its current period has crossed: those
    alerts are not raised again."""
    budget_id = _checked_id(budget_id)
    amount_nano = usd_to_nano(body.amount)
    if amount_nano < 1:
        raise InvalidParameter("amount", "must be at least one nano-dollar ($0.000000001)")
    if await budgets.count(repository.redis, repository.layout, repository.project) >= MAX_BUDGETS_PER_PROJECT:
        if await budgets.get(repository.redis, repository.layout, repository.project, budget_id) is None:
            raise Conflict(f"the project holds {MAX_BUDGETS_PER_PROJECT} budgets: delete one first")
    scope = body.scope
    budget = Budget(
        budget_id=budget_id,
        name=body.name,
        amount_nano=amount_nano,
        period=BudgetPeriod(body.period),
        scope=BudgetScope(
            entity_type=scope.entity_type,
            entity_id=scope.entity_id,
            model=scope.model,
            tags=tuple(sorted((scope.tags or {}).items())),
        ),
        thresholds=tuple(sorted(set(body.thresholds))),
    )
    stored = await budgets.put(repository.redis, repository.layout, repository.project, budget)
    return Response(orjson.dumps(public_budget(stored)), media_type="application/json")


@router.get(
    "/{budget_id}",
    response_model=None,
    responses={200: {"model": BudgetOut, "description": "the budget"}, **NOT_FOUND},
)
async def get_budget(_key: ProjectKeyDep, repository: RepositoryDep, budget_id: BudgetIdParam) -> Response:
    """One budget, as stored."""
    return Response(orjson.dumps(public_budget(await _budget(repository, budget_id))), media_type="application/json")


@router.delete(
    "/{budget_id}",
    status_code=204,
    response_model=None,
    responses={204: {"description": "deleted"}, **NOT_FOUND},
)
async def delete_budget(_key: ProjectKeyDep, repository: RepositoryDep, budget_id: BudgetIdParam) -> Response:
    """Delete a budget; the alerts its periods raised stay on /v1/analytics/anomalies."""
    if not await budgets.delete(repository.redis, repository.layout, repository.project, budget_id):
        raise NotFound(f"no budget {budget_id!r}")
    return Response(status_code=204)


@router.get(
    "/{budget_id}/status",
    response_model=None,
    responses={
        200: {
            "model": BudgetStatus,
            "description": "the period's spend, forecast and thresholds",
            "content": CSV_CONTENT,
        },
        **NOT_FOUND,
    },
)
async def budget_status(
    _key: ProjectKeyDep,
    repository: RepositoryDep,
    budget_id: BudgetIdParam,
    date_: DateParam = None,
    fmt: FormatParam = Format.JSON,
) -> Response:
    """The status of the budget's period that holds `date` (default: today)."""
    budget = await _budget(repository, budget_id)
    zone = await reporting_zone(repository.redis, repository.layout, repository.project)
    body = await BudgetService(repository).status(budget, _day(date_), zone)
    return _respond(body, fmt, STATUS_COLUMNS, status_cells)

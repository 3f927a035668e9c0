"""`/v1/budgets`: a budget's status, read from the same rollups and by the same plans as `/costs`,
so `spent` is exactly what `/costs` gives for the budget's scope and period.

The forecast (infraprism/core/budgets.py) reads the scope's daily spend of the four weeks
before today along with the period's spend: both plans in one MULTI/EXEC, and for
`GET /v1/budgets/status` the plans of every budget in one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from infraprism.api.errors import ApiError
from infraprism.api.planner import Filters, Grouping, Interval, Plan, plan_costs, plan_timeseries
from infraprism.api.repository import Repository
from infraprism.api.shaping import ratio
from infraprism.api.sums import CellsByPeriodGroup, by_period, grand_total, read_sums
from infraprism.core import zones
from infraprism.core.buckets import days
from infraprism.core.budgets import (
    HISTORY_DAYS,
    Budget,
    DaySpend,
    crossed,
    forecast_nano,
    period_of,
)
from infraprism.core.cell import COST, Cell
from infraprism.core.money import nano_to_usd


def public_budget(budget: Budget) -> dict[str, Any]:
    return {
        "id": budget.budget_id,
        "name": budget.name,
        "amount": nano_to_usd(budget.amount_nano),
        "period": budget.period.value,
        "scope": budget.scope.public(),
        "thresholds": list(budget.thresholds),
        "created_at": budget.created_at,
        "updated_at": budget.updated_at,
    }


def filters_of(budget: Budget) -> Filters:
    scope = budget.scope
    return Filters(entity_type=scope.entity_type, entity_id=scope.entity_id, model=scope.model, tags=scope.tags)


@dataclass(frozen=True, slots=True)
class BudgetMeasure:
    """A budget period's figures, in nano-dollars: what the status shows, before rounding."""

    start: date
    end: date
    spent_nano: int
    forecast_nano: int


def _history(daily: list[DaySpend], today: date) -> list[DaySpend]:
    """The complete days before today, from the scope's first spend on: days before a scope
    existed are not days of no spend, and would weigh its weekdays and level down to zero."""
    history = [d for d in daily if d.day < today]
    first = next((n for n, d in enumerate(history) if d.nano), len(history))
    return history[first:]


@dataclass(frozen=True, slots=True)
class _MeasurePlan:
    """What measuring one budget period reads: the period's plan, and for a period not over yet
    the scope's daily series of the history before today."""

    start: date
    end: date
    today: date
    now_ms: int
    tz: str
    period_plan: Plan
    series_plan: Plan | None
    history_start: date

    @property
    def plans(self) -> list[Plan]:
        return [self.period_plan] if self.series_plan is None else [self.period_plan, self.series_plan]


@dataclass(frozen=True, slots=True)
class BudgetService:
    repository: Repository

    async def measure(self, budget: Budget, day: date | None, tz: str, now_ms: int | None = None) -> BudgetMeasure:
        """The period of `budget` that holds `day` (default: today, in `tz`): its exact spend,
        and its forecast (the spend itself once the period is over)."""
        planned = _measure_plan(budget, day, tz, now_ms)
        return _measured(planned, await read_sums(self.repository, planned.plans))

    async def statuses(self, found: list[Budget], day: date | None, tz: str) -> list[dict[str, Any]]:
        """Every budget's status, read in one round trip. A budget that cannot be answered
        exactly (expired buckets, a scan over its bound) is said in its row, with the error."""
        now_ms = time.time_ns() // 1_000_000
        planned: list[tuple[Budget, _MeasurePlan | ApiError]] = []
        for budget in found:
            try:
                planned.append((budget, _measure_plan(budget, day, tz, now_ms)))
            except ApiError as exc:
                planned.append((budget, exc))
        plans = [plan for _, measure in planned if isinstance(measure, _MeasurePlan) for plan in measure.plans]
        try:
            sums = iter(await read_sums(self.repository, plans))
        except ApiError:
            sums = None  # one of them cannot be read: read each on its own, to say which
        out = []
        for budget, measure in planned:
            if isinstance(measure, ApiError):
                out.append(_error_row(budget, measure))
                continue
            try:
                measured = (
                    _measured(measure, [next(sums) for _ in measure.plans])
                    if sums is not None
                    else _measured(measure, await read_sums(self.repository, measure.plans))
                )
            except ApiError as exc:
                out.append(_error_row(budget, exc))
                continue
            out.append(_status(budget, measured, tz))
        return out

    async def status(self, budget: Budget, day: date | None, tz: str, now_ms: int | None = None) -> dict[str, Any]:
        """The status of the period of `budget` that holds `day` (default: today, in `tz`)."""
        return _status(budget, await self.measure(budget, day, tz, now_ms), tz)


def _measure_plan(budget: Budget, day: date | None, tz: str, now_ms: int | None) -> _MeasurePlan:
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    today = zones.local_date(zones.zone(tz), now_ms)
    start, end = period_of(day or today, budget.period)
    filters = filters_of(budget)
    period_plan = plan_costs(start, end, filters, Grouping(), tz)
    history_start = today - timedelta(days=HISTORY_DAYS)
    # A period over needs no history: nothing more will be spent in it.
    series_plan = None if end < today else plan_timeseries(history_start, today, filters, Interval.DAY, tz)
    return _MeasurePlan(start, end, today, now_ms, tz, period_plan, series_plan, history_start)


def _measured(planned: _MeasurePlan, sums: list[CellsByPeriodGroup]) -> BudgetMeasure:
    start, end, today = planned.start, planned.end, planned.today
    spent = grand_total(sums[0])[COST]
    if planned.series_plan is None:
        return BudgetMeasure(start, end, spent, spent)
    by_day = by_period(sums[1])
    zero = Cell.zero()
    daily = [
        DaySpend(day_, by_day.get(label, zero)[COST])
        for day_, label in zip(days(planned.history_start, today), planned.series_plan.periods, strict=True)
    ]
    history = _history(daily, today)
    if start > today:  # a period still to come: all of it is forecast
        return BudgetMeasure(start, end, spent, forecast_nano(0, history, today, 0, 1.0, list(days(start, end))))
    today_start, today_end = zones.day_range_ms(zones.zone(planned.tz), today, today)
    fraction = min(1.0, max(0.0, (planned.now_ms - today_start) / (today_end - today_start)))
    rest = list(days(today + timedelta(days=1), end)) if today < end else []
    forecast = forecast_nano(spent, history, today, daily[-1].nano, fraction, rest)
    return BudgetMeasure(start, end, spent, forecast)


def _error_row(budget: Budget, exc: ApiError) -> dict[str, Any]:
    return {"budget": public_budget(budget), "error": {"code": exc.code, "message": exc.message}}


def _status(budget: Budget, measured: BudgetMeasure, tz: str) -> dict[str, Any]:
    amount, spent, forecast = budget.amount_nano, measured.spent_nano, measured.forecast_nano
    return {
        "budget": public_budget(budget),
        "period": {"start": measured.start.isoformat(), "end": measured.end.isoformat(), "tz": tz},
        "spent": nano_to_usd(spent),
        "remaining": nano_to_usd(amount - spent),
        "percent_used": ratio(spent * 100, amount),
        "forecast": nano_to_usd(forecast),
        "forecast_percent": ratio(forecast * 100, amount),
        "thresholds_crossed": crossed(budget.thresholds, spent, amount),
    }


__all__ = ["BudgetMeasure", "BudgetService", "filters_of", "public_budget"]

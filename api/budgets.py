"""`/v1/budgets`: a budget's status, read from the same rollups and by the same plans as `/costs`,
so `spent` is exactly what `/costs` gives for the budget's scope and period.

The forecast (infraprism/core/budgets.py) reads the scope's daily spend of the four weeks
before today along with the period's spend: both plans in one MULTI/EXEC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from infraprism.api.planner import Filters, Grouping, Interval, plan_costs, plan_timeseries
from infraprism.api.repository import Repository
from infraprism.api.shaping import ratio
from infraprism.api.sums import by_period, grand_total, read_sums
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
class BudgetService:
    repository: Repository

    async def measure(self, budget: Budget, day: date | None, tz: str, now_ms: int | None = None) -> BudgetMeasure:
        """The period of `budget` that holds `day` (default: today, in `tz`): its exact spend,
        and its forecast (the spend itself once the period is over)."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        zone = zones.zone(tz)
        today = zones.local_date(zone, now_ms)
        start, end = period_of(day or today, budget.period)
        filters = filters_of(budget)
        period_plan = plan_costs(start, end, filters, Grouping(), tz)
        if end < today:  # over: nothing more will be spent in it, and no history is needed
            (period_sums,) = await read_sums(self.repository, [period_plan])
            spent = grand_total(period_sums)[COST]
            return BudgetMeasure(start, end, spent, spent)
        history_start = today - timedelta(days=HISTORY_DAYS)
        series_plan = plan_timeseries(history_start, today, filters, Interval.DAY, tz)
        period_sums, series_sums = await read_sums(self.repository, [period_plan, series_plan])
        spent = grand_total(period_sums)[COST]
        by_day = by_period(series_sums)
        zero = Cell.zero()
        daily = [
            DaySpend(day_, by_day.get(label, zero)[COST])
            for day_, label in zip(days(history_start, today), series_plan.periods, strict=True)
        ]
        history = _history(daily, today)
        if start > today:  # a period still to come: all of it is forecast
            return BudgetMeasure(start, end, spent, forecast_nano(0, history, today, 0, 1.0, list(days(start, end))))
        today_start, today_end = zones.day_range_ms(zone, today, today)
        fraction = min(1.0, max(0.0, (now_ms - today_start) / (today_end - today_start)))
        rest = list(days(today + timedelta(days=1), end)) if today < end else []
        forecast = forecast_nano(spent, history, today, daily[-1].nano, fraction, rest)
        return BudgetMeasure(start, end, spent, forecast)

    async def status(self, budget: Budget, day: date | None, tz: str, now_ms: int | None = None) -> dict[str, Any]:
        """The status of the period of `budget` that holds `day` (default: today, in `tz`)."""
        measured = await self.measure(budget, day, tz, now_ms)
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

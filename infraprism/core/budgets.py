"""Budgets: what one is, the period that holds a day, which thresholds a spend has crossed,
and the month-end (or week-end, day-end) forecast. Pure: the API reads the spend, this decides.

Money is integer nano-dollars throughout; a threshold is a whole percentage of the amount,
crossed when spend * 100 >= threshold * amount, exactly.

The forecast (docs/budgets.md explains and measures it) is the spend so far plus, for what is
left of the period, a daily rate per remaining day:

- the level is the median of the last seven complete days' spend, each first divided by its
  weekday's factor: robust to one day's spike or outage;
- a weekday's factor is its mean over the last four weeks divided by the mean of all those
  days, used once three weeks of history exist (before that every factor is 1);
- the rest of today is the day's rate times the part of the local day still to come;
- with no complete day of history at all, the rate is today's own run-rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from infraprism.core.buckets import month_end, month_start, week_start

# Days of history the forecast reads before today: four weeks of weekdays.
HISTORY_DAYS = 28
LEVEL_DAYS = 7
# Complete days needed before weekday factors are used: three of each weekday.
WEEKDAY_HISTORY_DAYS = 21
# Below this part of today elapsed, today's own run-rate is too noisy to extrapolate.
MIN_RUN_RATE_FRACTION = 0.05


class BudgetPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """What a budget counts: any of an entity type, an entity id, a model and tags (all
    must match); empty is the whole project."""

    entity_type: str | None = None
    entity_id: str | None = None
    model: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def public(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in ("entity_type", "entity_id", "model"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.tags:
            out["tags"] = dict(self.tags)
        return out


@dataclass(frozen=True, slots=True)
class Budget:
    budget_id: str
    name: str
    amount_nano: int
    period: BudgetPeriod
    scope: BudgetScope = BudgetScope()
    thresholds: tuple[int, ...] = (80, 100)
    created_at: str = ""
    updated_at: str = ""


def period_of(day: date, period: BudgetPeriod) -> tuple[date, date]:
    """The local days, first and last, of the budget period that holds `day`."""
    if period is BudgetPeriod.DAY:
        return day, day
    if period is BudgetPeriod.WEEK:
        first = week_start(day)
        return first, first + timedelta(days=6)
    return month_start(day), month_end(day)


def crossed(thresholds: Sequence[int], spent_nano: int, amount_nano: int) -> list[int]:
    """The thresholds (percent of the amount) that `spent_nano` has reached, in rising order."""
    return sorted(t for t in thresholds if spent_nano * 100 >= t * amount_nano)


@dataclass(frozen=True, slots=True)
class DaySpend:
    day: date
    nano: int


def _weekday_factors(history: Sequence[DaySpend]) -> list[float]:
    """Each weekday's mean over the history divided by the mean of all of it (1 when unknown)."""
    if len(history) < WEEKDAY_HISTORY_DAYS:
        return [1.0] * 7
    recent = history[-HISTORY_DAYS:]
    overall = statistics.fmean(d.nano for d in recent)
    if overall <= 0:
        return [1.0] * 7
    factors = []
    for weekday in range(7):
        of_day = [d.nano for d in recent if d.day.weekday() == weekday]
        factors.append(statistics.fmean(of_day) / overall if of_day else 1.0)
    return factors


def daily_rates(history: Sequence[DaySpend], days: Sequence[date]) -> list[float]:
    """The expected spend (nano-dollars, as floats) of each of `days`, from the complete
    days of `history` (oldest first, consecutive, ending the day before the first of `days`)."""
    if not history:
        return [0.0 for _ in days]
    factors = _weekday_factors(history)
    # A weekday whose factor is zero (no spend on it in four weeks) says nothing of the level.
    deseasonalized = [d.nano / factors[d.day.weekday()] for d in history[-LEVEL_DAYS:] if factors[d.day.weekday()] > 0]
    level = statistics.median(deseasonalized) if deseasonalized else 0.0
    return [level * factors[day.weekday()] for day in days]


def forecast_nano(
    spent_nano: int,
    history: Sequence[DaySpend],
    today: date,
    today_spent_nano: int,
    today_fraction: float,
    remaining_days: Sequence[date],
) -> int:
    """The spend expected by the end of the period: `spent_nano` so far (today's included),
    plus the rest of today, plus each of `remaining_days` (the period's days after today).

    `history`: the complete days before today, oldest first; `today_fraction`: the part of
    the local day gone (0 to 1)."""
    if history:
        today_rate, *rates = daily_rates(history, [today, *remaining_days])
    elif today_fraction >= MIN_RUN_RATE_FRACTION:
        today_rate = today_spent_nano / today_fraction
        rates = [today_rate] * len(remaining_days)
    else:
        today_rate, rates = 0.0, [0.0] * len(remaining_days)
    rest_of_today = max(0.0, today_rate * (1 - today_fraction))
    return spent_nano + round(rest_of_today + sum(rates))


__all__ = [
    "HISTORY_DAYS",
    "Budget",
    "BudgetPeriod",
    "BudgetScope",
    "DaySpend",
    "crossed",
    "daily_rates",
    "forecast_nano",
    "period_of",
]

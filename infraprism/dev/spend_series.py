"""Daily spend series to measure budget forecasts on (bench/forecast.py, tests/core/test_budgets.py).

`synthetic_year`: a year of one scope's daily spend as a product usage curve looks: growth,
a weekly rhythm (weekends a third of a weekday), day-to-day noise, and the days that break
naive run-rates: spikes (a batch job, a runaway loop) and outages. `demo_daily`: the daily
spend of the demo dataset (infraprism/dev/demo.py), as the pipeline would count it.

`month_end_errors` replays the forecast at the end of chosen days of each month, as the
budget status computes it on the next morning, and returns each forecast's error against the
month's true total, next to the naive run-rate's (spend so far / days gone * days in month).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

from infraprism.core.buckets import days, month_end
from infraprism.core.budgets import HISTORY_DAYS, DaySpend, forecast_nano

WEEKDAY_SHAPE = (1.0, 1.05, 1.1, 1.05, 0.95, 0.35, 0.3)  # Monday .. Sunday


def synthetic_year(seed: int = 7, start: date = date(2025, 1, 1), length: int = 365) -> list[DaySpend]:
    """`length` days of nano-dollar spend from `start`: $200 a weekday growing 60% over the
    year, weekends a third of that, 15% day-to-day noise, a spike (3-8x) one day in 25 and
    an outage (a tenth) one day in 60."""
    rng = random.Random(seed)  # noqa: S311 - measurement data, not a secret
    out = []
    for n, day in enumerate(days(start, start + timedelta(days=length - 1))):
        usd = 200 * (1 + 0.6 * n / length) * WEEKDAY_SHAPE[day.weekday()] * math.exp(rng.gauss(0, 0.15))
        roll = rng.random()
        if roll < 1 / 25:
            usd *= rng.uniform(3, 8)
        elif roll < 1 / 25 + 1 / 60:
            usd *= 0.1
        out.append(DaySpend(day, round(usd * 1e9)))
    return out


def demo_daily(days_: int = 35, end: datetime = datetime(2025, 12, 2, tzinfo=UTC)) -> list[DaySpend]:
    """The demo dataset's spend per UTC day, each event counted once (the retries planted in it
    are repeats), malformed lines left out, as the pipeline counts them."""
    from infraprism.core.events import validate_event
    from infraprism.dev.demo import generate

    seen: set[str] = set()
    per_day: dict[date, int] = {}
    for line in generate(days=days_, end=end):
        try:
            event = validate_event(orjson.loads(line))
        except ValueError:  # InvalidEvent, or a line that is not JSON: the dead letters
            continue
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        day = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date()
        per_day[day] = per_day.get(day, 0) + event.cost_nano
    first, last = min(per_day), max(per_day)
    return [DaySpend(day, per_day.get(day, 0)) for day in days(first, last)]


@dataclass(frozen=True, slots=True)
class ForecastError:
    month: date
    checkpoint: int  # the day of the month whose end the forecast was made at
    forecast_error: float  # (forecast - actual) / actual
    run_rate_error: float


def month_end_errors(series: Sequence[DaySpend], checkpoints: Iterable[int]) -> list[ForecastError]:
    """The forecast's and the run-rate's errors at the end of each checkpoint day of every
    whole month of `series`. A month early in the series is forecast with what history it has
    before it (none at the very start), as a new budget would be."""
    spend = {d.day: d.nano for d in series}
    first, last = series[0].day, series[-1].day
    months = []
    month = first.replace(day=1) if first.day == 1 else month_end(first) + timedelta(days=1)
    while month_end(month) <= last:
        months.append(month)
        month = month_end(month) + timedelta(days=1)
    out = []
    for month in months:
        end = month_end(month)
        actual = sum(spend[d] for d in days(month, end))
        if actual <= 0:
            continue
        for checkpoint in checkpoints:
            if checkpoint >= end.day:
                continue
            today = month + timedelta(days=checkpoint)  # the next morning: day `checkpoint` is complete
            history = [d for d in series if today - timedelta(days=HISTORY_DAYS) <= d.day < today]
            spent = sum(spend[d] for d in days(month, today - timedelta(days=1)))
            remaining = list(days(today + timedelta(days=1), end))
            forecast = forecast_nano(spent, history, today, 0, 0.0, remaining)
            run_rate = spent / checkpoint * end.day
            out.append(ForecastError(month, checkpoint, (forecast - actual) / actual, (run_rate - actual) / actual))
    return out


__all__ = ["ForecastError", "WEEKDAY_SHAPE", "demo_daily", "month_end_errors", "synthetic_year"]

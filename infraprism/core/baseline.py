"""Rolling baselines and the spike rules of the anomaly detector. Pure: no Redis, no Kafka.

A *subject* is an entity (entity_type, entity_id) or a whole project. Its
history is its hourly rollup cells (events, cost nano-dollars, latency sum in
microseconds, latency count) for the last `baseline_days` + 1 days, keyed by
the UTC hour index (epoch hours). Missing hours are hours without traffic
(zero), except before the subject's first hour, which are unknown.

Two windows are judged, both on values that only grow while their bucket
fills, so a spike is reported as soon as the bucket so far crosses the
threshold, never only when it closes:

- the hour so far against the subject's hourly values of the last
  `baseline_days` days (median, MAD, 99th percentile), leaving out hours
  already found anomalous;
- the UTC day so far against its daily totals of the last `baseline_days`
  full days (median, MAD).

A window is anomalous when it exceeds every one of: (1 + min_relative_change)
x the median; the median + robust_z x sigma (sigma = 1.4826 x MAD); the
median + the minimum absolute impact of its type; and, for the hour window,
(1 + min_relative_change / 4) x the 99th percentile of the hours, which keeps
daily-seasonal subjects (busy hours, a nightly batch) quiet. The hour window
is only used for subjects with at least HOUR_WINDOW_MIN_EVENTS events in a
median hour: below that, hourly counts are Poisson noise, and sparse or bursty
subjects are judged on the day so far alone.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from infraprism.core.anomalies import AnomalyType

HOURS_PER_DAY = 24
MS_PER_HOUR = 3_600_000
MAD_TO_SIGMA = 1.4826  # MAD x this estimates sigma for normal noise
HOUR_GUARD_QUANTILE = 0.99
# The hour must also exceed (1 + min_relative_change x this) x the HOUR_GUARD_QUANTILE hour.
HOUR_GUARD_SHARE = 0.25
# Below this many events in a median hour, hourly counts are too noisy (Poisson) to judge
# an hour on its own without false alarms; such subjects are judged on the day so far only.
HOUR_WINDOW_MIN_EVENTS = 10
# How much one call's cost varies around the mean (sd / mean), assumed for the noise floor of cost.
COST_PER_EVENT_CV = 1.0


class Window(StrEnum):
    HOUR = "hour"
    DAY = "day"


class Kind(StrEnum):
    """What is measured; its value is the type of the anomaly it raises."""

    COST = AnomalyType.COST_SPIKE.value
    VOLUME = AnomalyType.VOLUME_SPIKE.value
    LATENCY = AnomalyType.LATENCY_SPIKE.value


class HourValues(NamedTuple):
    """One hourly cell: counters as the rollup holds them."""

    events: int = 0
    cost_nano: int = 0
    latency_sum_us: int = 0
    latency_count: int = 0


ZERO = HourValues()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The detector's configuration, in metric units (nano-dollars, events, ms)."""

    baseline_days: int = 7
    min_history_days: int = 3
    min_relative_change: float = 1.0  # +100%: the window must at least double its baseline
    robust_z: float = 5.0
    min_impact_cost_nano: int = 5_000_000_000  # $5
    min_excess_events: int = 100
    min_latency_increase_ms: float = 1000.0
    min_latency_samples: int = 20

    def min_impact(self, kind: Kind) -> float:
        if kind is Kind.COST:
            return float(self.min_impact_cost_nano)
        if kind is Kind.VOLUME:
            return float(self.min_excess_events)
        return self.min_latency_increase_ms


@dataclass(frozen=True, slots=True)
class Stats:
    """Robust summary of a baseline sample."""

    median: float
    sigma: float
    high: float  # the HOUR_GUARD_QUANTILE quantile
    samples: int


def robust_stats(values: Sequence[float]) -> Stats:
    """Median, sigma from the median absolute deviation, and a high quantile. Empty -> zeros."""
    n = len(values)
    if n == 0:
        return Stats(0.0, 0.0, 0.0, 0)
    ordered = sorted(values)
    median = _median(ordered)
    mad = _median(sorted(abs(v - median) for v in ordered))
    high = ordered[min(n - 1, max(0, math.ceil(HOUR_GUARD_QUANTILE * n) - 1))]
    return Stats(median, MAD_TO_SIGMA * mad, float(high), n)


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass(slots=True)
class History:
    """The rolling hourly history of one subject."""

    first_hour: int
    hours: dict[int, HourValues] = field(default_factory=dict)
    # (kind, window) -> (the hour or day start it was computed for, stats); a baseline
    # only depends on hours before that key, so it stays valid until one of those changes.
    stats_cache: dict[tuple[Kind, Window], tuple[int, Stats]] = field(default_factory=dict)
    # Hours found anomalous: left out of later hourly baselines, so a spike does not
    # raise the bar for the next one (a spike is not "normal" for the next 7 days).
    flagged: set[int] = field(default_factory=set)
    # Every hour from here on is in `hours` (or had no traffic); older hours were never
    # loaded or have expired and must be read from the rollups before they are used
    # as a baseline. -1: nothing is known yet.
    covered_from: int = -1

    def flag(self, hour: int) -> bool:
        """Mark `hour` anomalous; True if it was not already."""
        if hour in self.flagged:
            return False
        self.flagged.add(hour)
        self._invalidate_after(hour)
        return True

    def _invalidate_after(self, hour: int) -> None:
        stale = [key for key, (at, _) in self.stats_cache.items() if at > hour]
        for key in stale:
            del self.stats_cache[key]

    def put(self, hour: int, values: HourValues) -> None:
        if self.hours.get(hour, ZERO) == values and hour >= self.first_hour:
            return
        self.hours[hour] = values
        if hour < self.first_hour:
            self.first_hour = hour
            self.stats_cache.clear()
        else:
            self._invalidate_after(hour)

    def baseline(self, kind: Kind, window: Window, hour: int, days: int) -> Stats:
        """hour_baseline / day_baseline, cached."""
        key_hour = hour if window is Window.HOUR else day_start_hour(hour)
        cached = self.stats_cache.get((kind, window))
        if cached is not None and cached[0] == key_hour:
            return cached[1]
        if window is Window.HOUR:
            stats = hour_baseline(self, hour, kind, days)
        else:
            stats = day_baseline(self, hour, kind, days)
        self.stats_cache[(kind, window)] = (key_hour, stats)
        return stats

    def expired(self, newest_hour: int, baseline_days: int) -> list[int]:
        """Hours older than the baseline needs (kept: baseline_days + 1 days before newest_hour)."""
        oldest = newest_hour - (baseline_days + 1) * HOURS_PER_DAY
        return [hour for hour in self.hours.keys() | self.flagged if hour < oldest]

    def drop(self, hours: list[int]) -> None:
        for hour in hours:
            self.hours.pop(hour, None)
            self.flagged.discard(hour)
        if hours:
            self.covered_from = max(self.covered_from, max(hours) + 1)

    def get(self, hour: int) -> HourValues:
        return self.hours.get(hour, ZERO)

    def record(self, hour: int, values: HourValues) -> None:
        """Put an hour's current value; a history's first hour recorded is where it starts."""
        if self.first_hour < 0:
            self.first_hour = hour
        self.put(hour, values)

    def cover(self, start: int, cells: Mapping[int, HourValues]) -> None:
        """Take the hours from `start` on that the history lacked (read from the rollups).

        `cells` holds only hours with traffic. A subject found to be older than
        thought starts earlier, and every cached baseline may have changed.
        """
        if cells and (self.first_hour < 0 or min(cells) < self.first_hour):
            self.first_hour = min(cells)
            self.stats_cache.clear()
        for hour, values in cells.items():
            self.put(hour, values)
        self.covered_from = start

    def drop_expired(self, baseline_days: int) -> tuple[list[int], list[int]]:
        """Drop the hours no baseline of the newest hour needs; (dropped hours, those that were flagged)."""
        if not self.hours:
            return [], []
        expired = self.expired(max(self.hours), baseline_days)
        flagged = [hour for hour in expired if hour in self.flagged]
        self.drop(expired)
        return expired, flagged


@dataclass(frozen=True, slots=True)
class HistoryWrite:
    """One change to a subject's stored history, as a HistoryStore persists it."""

    member: str  # the subject: its rollup member ("" for the project's total)
    hours: Mapping[int, HourValues] = field(default_factory=dict)  # hours to set to these values
    flagged: Collection[int] = ()  # hours to mark anomalous
    dropped: Collection[int] = ()  # hours to remove
    unflagged: Collection[int] = ()  # hours whose anomalous mark to remove
    first_hour: int | None = None  # None: unchanged
    covered_from: int | None = None  # None: unchanged


class HistoryStore(Protocol):
    """Where the detector keeps its subjects' histories between deltas.

    Written through: every change the detector makes to a History from `load`
    it also passes to `write`, so forgetting a History (a full cache, moved
    partitions) loses nothing.
    """

    async def load(self, project: str, members: Collection[str]) -> dict[str, History]:
        """The histories of these members (an empty one for a subject never seen)."""
        ...

    async def write(self, project: str, changes: Iterable[HistoryWrite]) -> None: ...

    def forget(self) -> None:
        """Drop what is held in memory: another worker may have changed the stored state."""
        ...


def measure(values: HourValues, kind: Kind) -> float | None:
    """The metric of a cell or window sum; None for latency without enough samples."""
    if kind is Kind.COST:
        return float(values.cost_nano)
    if kind is Kind.VOLUME:
        return float(values.events)
    if values.latency_count == 0:
        return None
    return values.latency_sum_us / values.latency_count / 1000.0


def _sum(cells: Sequence[HourValues]) -> HourValues:
    return HourValues(
        sum(c.events for c in cells),
        sum(c.cost_nano for c in cells),
        sum(c.latency_sum_us for c in cells),
        sum(c.latency_count for c in cells),
    )


def day_start_hour(hour: int) -> int:
    return hour - hour % HOURS_PER_DAY


def history_days(history: History, hour: int) -> float:
    """How many days of history precede `hour`."""
    return (hour - history.first_hour) / HOURS_PER_DAY


def active_days(history: History, hour: int, days: int) -> int:
    """Days among the `days` before `hour`'s day on which the subject had any event.

    The span since the first hour seen is not enough history by itself: a
    bulk replay delivers partitions out of time order, so a subject can have
    an early hour and nothing yet for the days in between. Judging against
    those empty days would call every ordinary day a spike "from nothing".
    """
    today = day_start_hour(hour)
    start = today - days * HOURS_PER_DAY
    return len({day_start_hour(h) for h, cell in history.hours.items() if start <= h < today and cell.events})


def hour_baseline(history: History, hour: int, kind: Kind, days: int) -> Stats:
    """Stats of the hourly values of the `days` days before `hour` (known, unflagged hours only)."""
    start = max(history.first_hour, hour - days * HOURS_PER_DAY)
    hours, flagged = history.hours, history.flagged
    # The hot path of the detector: plain comprehensions, no helper calls per hour.
    cells = [hours.get(h, ZERO) for h in range(start, hour) if h not in flagged]
    if kind is Kind.COST:
        return robust_stats([float(c.cost_nano) for c in cells])
    if kind is Kind.VOLUME:
        return robust_stats([float(c.events) for c in cells])
    return robust_stats([c.latency_sum_us / c.latency_count / 1000.0 for c in cells if c.latency_count])


def day_baseline(history: History, hour: int, kind: Kind, days: int) -> Stats:
    """Stats of the subject's daily totals over the `days` full days before `hour`'s day.

    A day that began before the subject's first hour is left out (it is not
    known to be a full day).
    """
    today = day_start_hour(hour)
    values: list[float] = []
    for day in range(today - days * HOURS_PER_DAY, today, HOURS_PER_DAY):
        if day < history.first_hour:
            continue
        value = measure(_sum([history.get(h) for h in range(day, day + HOURS_PER_DAY)]), kind)
        if value is not None:
            values.append(value)
    return robust_stats(values)


def day_so_far(history: History, hour: int) -> HourValues:
    """The UTC day of `hour` from 00:00 up to and including `hour`."""
    return _sum([history.get(h) for h in range(day_start_hour(hour), hour + 1)])


@dataclass(frozen=True, slots=True)
class Finding:
    """A window that crossed its threshold."""

    kind: Kind
    window: Window
    expected: float  # the baseline median, in metric units
    actual: float  # the window so far, in metric units
    threshold: float
    days: int  # days of history the baseline covered (at most baseline_days)

    @property
    def ratio(self) -> float:
        return math.inf if self.expected <= 0 else self.actual / self.expected


def poisson_sigma(stats: Stats, kind: Kind, median_events: float) -> float:
    """The least noise a count-driven metric has: events are Poisson, so sd >= sqrt(mean).

    Volume: sqrt(events); cost: also counting that calls differ in cost. Keeps
    a subject whose MAD happens to be small (few samples, few events) from
    alarming on ordinary Poisson swings. None for latency (a mean, not a count).
    """
    if kind is Kind.LATENCY:
        return 0.0
    events = max(median_events, 1.0)
    if kind is Kind.VOLUME:
        return math.sqrt(events)
    # A sum of N calls whose costs vary with coefficient of variation CV has sd mean x sqrt((1 + CV^2) / N).
    return stats.median * math.sqrt((1.0 + COST_PER_EVENT_CV**2) / events)


def threshold(stats: Stats, kind: Kind, window: Window, t: Thresholds, *, median_events: float = 0.0) -> float:
    """The value a window must exceed to be anomalous."""
    factor = 1.0 + t.min_relative_change
    sigma = max(stats.sigma, poisson_sigma(stats, kind, median_events))
    bound = max(
        stats.median * factor,
        stats.median + t.robust_z * sigma,
        stats.median + t.min_impact(kind),
    )
    if window is Window.HOUR:
        bound = max(bound, stats.high * (1.0 + t.min_relative_change * HOUR_GUARD_SHARE))
    return bound


def judge(
    history: History,
    hour: int,
    kind: Kind,
    t: Thresholds,
    *,
    windows: Sequence[Window] = tuple(Window),
) -> Finding | None:
    """The first window (hour, then day) whose value so far crosses its threshold, else None.

    None as well while the subject has less than `min_history_days` of history,
    counted as days with events among the baseline's days; and None against a
    baseline whose median is zero (a subject idle most days is not "spiking"
    the day it is used). Latency is judged on the hour window only (a day's
    mean dilutes a spike), and only when the hour has `min_latency_samples` latencies.
    """
    if history_days(history, hour) < t.min_history_days:
        return None
    if active_days(history, hour, t.baseline_days) < t.min_history_days:
        return None
    volume = history.baseline(Kind.VOLUME, Window.HOUR, hour, t.baseline_days)
    dense = volume.median >= HOUR_WINDOW_MIN_EVENTS
    for window in windows:
        if window is Window.HOUR:
            if not dense:
                continue
            cell = history.get(hour)
        else:
            if kind is Kind.LATENCY or dense:
                continue
            cell = day_so_far(history, hour)
        if kind is Kind.LATENCY and cell.latency_count < t.min_latency_samples:
            continue
        actual = measure(cell, kind)
        if actual is None:
            continue
        stats = history.baseline(kind, window, hour, t.baseline_days)
        if stats.samples == 0 or stats.median <= 0:
            continue
        events = history.baseline(Kind.VOLUME, window, hour, t.baseline_days).median
        bound = threshold(stats, kind, window, t, median_events=events)
        if actual > bound:
            if window is Window.HOUR:
                days = min(t.baseline_days, (hour - history.first_hour) // HOURS_PER_DAY)
            else:
                days = stats.samples
            return Finding(kind, window, stats.median, actual, bound, max(1, days))
    return None

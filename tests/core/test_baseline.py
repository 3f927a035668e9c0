"""The pure detection core: robust statistics, thresholds and the spike rules, as tables."""

from __future__ import annotations

import pytest

from infraprism.core.baseline import (
    History,
    HourValues,
    Kind,
    Stats,
    Thresholds,
    Window,
    judge,
    robust_stats,
    threshold,
)
from infraprism.core.episodes import describe

T = Thresholds()
NANO = 1_000_000_000
DAY0 = 480_000  # an epoch hour at 00:00 UTC (480000 % 24 == 0)


@pytest.mark.parametrize(
    ("values", "median", "sigma", "high"),
    [
        ([], 0.0, 0.0, 0.0),
        ([5], 5.0, 0.0, 5.0),
        ([1, 2, 3, 4, 100], 3.0, 1.4826, 100.0),
        ([10, 10, 10, 10], 10.0, 0.0, 10.0),
        (list(range(1, 201)), 100.5, 1.4826 * 50, 198.0),
    ],
)
def test_robust_stats(values: list[float], median: float, sigma: float, high: float) -> None:
    stats = robust_stats(values)
    assert stats.median == pytest.approx(median)
    assert stats.sigma == pytest.approx(sigma)
    assert stats.high == pytest.approx(high)
    assert stats.samples == len(values)


@pytest.mark.parametrize(
    ("stats", "kind", "window", "events", "expected"),
    [
        # relative change dominates: 2 x median
        (Stats(100 * NANO, 0.0, 100 * NANO, 168), Kind.COST, Window.HOUR, 10_000, 200 * NANO),
        # minimum impact dominates: median + $5
        (Stats(1 * NANO, 0.0, 1 * NANO, 168), Kind.COST, Window.HOUR, 10_000, 6 * NANO),
        # robust z dominates: median + 5 sigma
        (Stats(100 * NANO, 30 * NANO, 100 * NANO, 168), Kind.COST, Window.HOUR, 10_000, 250 * NANO),
        # the 99th percentile guard (hour window only): 1.25 x high
        (Stats(100 * NANO, 0.0, 180 * NANO, 168), Kind.COST, Window.HOUR, 10_000, 225 * NANO),
        (Stats(100 * NANO, 0.0, 180 * NANO, 7), Kind.COST, Window.DAY, 10_000, 200 * NANO),
        # cost noise floor: 4 events of CV 1 -> sigma >= median x sqrt(2 / 4) -> 10 + 5 x 7.07
        (Stats(10 * NANO, 0.0, 10 * NANO, 7), Kind.COST, Window.DAY, 4, (10 + 50 * 0.5**0.5) * NANO),
        # Poisson floor: 16 events -> sigma >= 4 events, but the +100 events minimum dominates
        (Stats(16.0, 0.0, 16.0, 168), Kind.VOLUME, Window.HOUR, 16, 116.0),
        (Stats(400.0, 0.0, 400.0, 168), Kind.VOLUME, Window.HOUR, 400, 800.0),
        (Stats(9.0, 0.0, 9.0, 7), Kind.VOLUME, Window.DAY, 9, 109.0),
        # latency: 2 x median, at least +1000 ms
        (Stats(800.0, 50.0, 900.0, 168), Kind.LATENCY, Window.HOUR, 100, 1800.0),
        (Stats(2000.0, 50.0, 2100.0, 168), Kind.LATENCY, Window.HOUR, 100, 4000.0),
    ],
)
def test_threshold(stats: Stats, kind: Kind, window: Window, events: float, expected: float) -> None:
    assert threshold(stats, kind, window, T, median_events=events) == pytest.approx(expected)


def steady(days: int, events: int, cost_usd: float, latency_ms: float = 500.0) -> History:
    """`days` days of identical hours starting at DAY0."""
    history = History(first_hour=DAY0)
    for hour in range(DAY0, DAY0 + days * 24):
        history.put(hour, cell(events, cost_usd, latency_ms))
    return history


def cell(events: int, cost_usd: float, latency_ms: float = 500.0) -> HourValues:
    return HourValues(events, int(cost_usd * NANO), int(latency_ms * 1000 * events), events)


def test_steady_traffic_is_not_anomalous() -> None:
    history = steady(8, 200, 20.0)
    now = DAY0 + 8 * 24
    history.put(now, cell(200, 20.0))
    assert all(judge(history, now, kind, T) is None for kind in Kind)


def test_cost_spike_in_the_hour_so_far() -> None:
    history = steady(8, 200, 20.0)
    now = DAY0 + 8 * 24 + 5
    history.put(now, cell(300, 45.0))  # partial hour, already > 2 x $20
    finding = judge(history, now, Kind.COST, T)
    assert finding is not None
    assert finding.window is Window.HOUR
    assert finding.expected == 20 * NANO
    assert finding.actual == 45 * NANO
    assert describe(finding) == "Cost increased 125% compared to 7-day median hourly cost"
    # 300 events is +100 over 200 but not 2x: no volume spike
    assert judge(history, now, Kind.VOLUME, T) is None


def test_below_minimum_impact_is_not_anomalous() -> None:
    history = steady(8, 200, 1.0)  # $1 an hour
    now = DAY0 + 8 * 24
    history.put(now, cell(200, 5.5))  # 5.5x, but only $4.50 more
    assert judge(history, now, Kind.COST, T) is None
    history.put(now, cell(200, 6.5))
    assert judge(history, now, Kind.COST, T) is not None


def test_minimum_history() -> None:
    history = steady(2, 200, 20.0)
    now = DAY0 + 2 * 24 + 3
    history.put(now, cell(200, 500.0))
    assert judge(history, now, Kind.COST, T) is None  # 2 days < 3 days of history
    assert judge(history, now, Kind.COST, Thresholds(min_history_days=2)) is not None


def test_history_counts_days_with_events_not_the_span_since_the_first_hour() -> None:
    # A bulk replay out of time order: one early day is known, the week before
    # today is not yet. An ordinary day must not read as a spike "from nothing".
    history = History(first_hour=DAY0)
    for hour in range(DAY0, DAY0 + 24):
        history.put(hour, cell(2, 4.0))
    now = DAY0 + 10 * 24 + 10
    history.put(now, cell(50, 300.0))
    assert judge(history, now, Kind.COST, T) is None
    # Once the days before arrive, the same day so far is judged (and is a spike).
    for hour in range(DAY0 + 3 * 24, DAY0 + 10 * 24):
        history.put(hour, cell(2, 4.0))
    assert judge(history, now, Kind.COST, T) is not None


def test_a_subject_idle_most_days_is_not_spiking_when_used() -> None:
    history = History(first_hour=DAY0)
    for day in (0, 2, 4, 6):  # active 4 days of 8: the daily median over the last 7 is $0
        for hour in range(DAY0 + day * 24, DAY0 + day * 24 + 3):
            history.put(hour, cell(2, 4.0))
    now = DAY0 + 8 * 24 + 10
    history.put(now, cell(5, 40.0))
    assert judge(history, now, Kind.COST, T) is None


def test_sparse_subject_is_judged_on_the_day_so_far() -> None:
    history = steady(8, 2, 4.0)  # 2 events, $4 an hour: $96 a day
    now = DAY0 + 8 * 24 + 10
    history.put(now, cell(6, 150.0))  # 37x the median hour, but the day so far $150 < 2 x $96
    assert judge(history, now, Kind.COST, T) is None
    history.put(now + 1, cell(10, 60.0))  # day so far $210 > $192
    finding = judge(history, now + 1, Kind.COST, T)
    assert finding is not None
    assert finding.window is Window.DAY
    assert describe(finding).endswith("7-day median daily cost (day so far)")


def test_latency_spike_needs_samples() -> None:
    history = steady(8, 100, 20.0, latency_ms=400)
    now = DAY0 + 8 * 24
    history.put(now, cell(10, 2.0, latency_ms=3000))  # 10 samples < 20
    assert judge(history, now, Kind.LATENCY, T) is None
    history.put(now, cell(40, 8.0, latency_ms=3000))
    finding = judge(history, now, Kind.LATENCY, T)
    assert finding is not None
    assert finding.actual == pytest.approx(3000.0)
    assert finding.expected == pytest.approx(400.0)


def test_late_data_refreshes_a_cached_baseline() -> None:
    history = steady(8, 200, 20.0)
    now = DAY0 + 8 * 24
    history.put(now, cell(200, 45.0))
    assert judge(history, now, Kind.COST, T) is not None
    for hour in range(now - 7 * 24, now):  # the past turns out to have been busier
        history.put(hour, cell(200, 40.0))
    assert judge(history, now, Kind.COST, T) is None


def test_an_anomalous_hour_does_not_raise_the_bar_for_the_next_spike() -> None:
    history = steady(8, 200, 20.0)
    spike = DAY0 + 8 * 24
    history.put(spike, cell(1000, 100.0))
    assert judge(history, spike, Kind.COST, T) is not None
    history.flag(spike)
    for hour in range(spike + 1, spike + 24):
        history.put(hour, cell(200, 20.0))
    later = spike + 24
    history.put(later, cell(600, 60.0))
    finding = judge(history, later, Kind.COST, T)
    assert finding is not None
    assert finding.expected == 20 * NANO


def test_expired_hours_are_dropped() -> None:
    history = steady(10, 200, 20.0)
    history.flag(DAY0 + 3)
    newest = DAY0 + 10 * 24 - 1
    expired = history.expired(newest, 7)
    assert sorted(expired) == list(range(DAY0, newest - 8 * 24))
    history.drop(expired)
    assert min(history.hours) == newest - 8 * 24
    assert not history.flagged


@pytest.mark.parametrize(
    ("first", "hour", "first_after"),
    [
        pytest.param(-1, DAY0 + 5, DAY0 + 5, id="a new history starts at its first hour"),
        pytest.param(DAY0, DAY0 + 5, DAY0, id="a later hour"),
        pytest.param(DAY0, DAY0 - 3, DAY0 - 3, id="a late event before the first hour"),
    ],
)
def test_record(first: int, hour: int, first_after: int) -> None:
    history = History(first_hour=first)
    history.record(hour, cell(5, 1.0))
    assert (history.first_hour, history.get(hour)) == (first_after, cell(5, 1.0))


@pytest.mark.parametrize(
    ("first", "start", "cells", "first_after"),
    [
        pytest.param(-1, DAY0, {DAY0 + 2: cell(1, 1.0)}, DAY0 + 2, id="unknown subject: starts at its oldest cell"),
        pytest.param(-1, DAY0, {}, -1, id="unknown subject, no traffic: still unknown"),
        pytest.param(DAY0 + 9, DAY0, {DAY0 + 2: cell(1, 1.0)}, DAY0 + 2, id="older than thought"),
        pytest.param(DAY0, DAY0 - 24, {DAY0 + 2: cell(1, 1.0)}, DAY0, id="hours after the first"),
    ],
)
def test_cover(first: int, start: int, cells: dict[int, HourValues], first_after: int) -> None:
    history = History(first_hour=first)
    history.stats_cache[(Kind.COST, Window.HOUR)] = (DAY0 + 100, Stats(1.0, 0.0, 1.0, 1))
    history.cover(start, cells)
    assert history.first_hour == first_after
    assert history.covered_from == start
    assert all(history.get(hour) == values for hour, values in cells.items())
    if first_after != first:
        assert not history.stats_cache  # every baseline may have changed


def test_drop_expired_says_what_went() -> None:
    history = steady(10, 200, 20.0)
    history.flag(DAY0 + 3)
    newest = DAY0 + 10 * 24 - 1
    dropped, unflagged = history.drop_expired(7)
    assert sorted(dropped) == list(range(DAY0, newest - 8 * 24))
    assert unflagged == [DAY0 + 3]
    assert history.covered_from == newest - 8 * 24
    assert history.drop_expired(7) == ([], [])
    assert History(first_hour=-1).drop_expired(7) == ([], [])

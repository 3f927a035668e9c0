"""Bucket arithmetic tables: labels, the signed cover of a range, weeks, hours."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraprism.core.buckets import (
    Granularity,
    day_label,
    days,
    hour_label,
    hours,
    labels_for_ms,
    month_end,
    month_label,
    next_month,
    parse_day_label,
    signed_cover,
    week_start,
)

Y, M, D = Granularity.YEAR, Granularity.MONTH, Granularity.DAY


def ms(text: str) -> int:
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


@pytest.mark.parametrize(
    ("ts_ms", "expected"),
    [
        (0, ("1970010100", "19700101", "197001")),
        (ms("2024-02-29T23:59:59.999"), ("2024022923", "20240229", "202402")),
        (ms("2024-03-01T00:00:00.000"), ("2024030100", "20240301", "202403")),
        (ms("2023-02-28T23:59:59.999"), ("2023022823", "20230228", "202302")),
        (ms("2023-03-01T00:00:00.000"), ("2023030100", "20230301", "202303")),
        (ms("2024-12-31T23:59:59.999"), ("2024123123", "20241231", "202412")),
        (ms("2025-01-01T00:00:00.000"), ("2025010100", "20250101", "202501")),
        (ms("2024-01-31T12:59:59.999"), ("2024013112", "20240131", "202401")),
        (ms("2024-01-31T13:00:00.000"), ("2024013113", "20240131", "202401")),
        (ms("2000-02-29T05:00:00.000"), ("2000022905", "20000229", "200002")),  # 400-year leap
        (ms("2100-02-28T23:59:59.999"), ("2100022823", "21000228", "210002")),  # 100-year: no leap
        (ms("2100-03-01T00:00:00.000"), ("2100030100", "21000301", "210003")),
    ],
)
def test_labels_for_ms(ts_ms, expected):
    assert labels_for_ms(ts_ms) == expected


def adds(granularity, label):
    return (granularity, label, 1)


def subtracts(granularity, label):
    return (granularity, label, -1)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2024, 5, 15), date(2024, 5, 15), [adds(D, "20240515")]),
        (date(2024, 1, 1), date(2024, 1, 31), [adds(M, "202401")]),
        (date(2024, 2, 1), date(2024, 2, 29), [adds(M, "202402")]),  # leap February is whole at the 29th
        # 28 of 29 days: the month minus the one day outside.
        (date(2024, 2, 1), date(2024, 2, 28), [adds(M, "202402"), subtracts(D, "20240229")]),
        # 16 days in, 15 out: a tie in reads, so the days (nothing to subtract).
        (date(2024, 1, 1), date(2024, 1, 16), [adds(D, f"202401{d:02d}") for d in range(1, 17)]),
        (
            date(2024, 1, 1),
            date(2024, 1, 17),
            [adds(M, "202401")] + [subtracts(D, f"202401{d}") for d in range(18, 32)],
        ),
        (
            date(2024, 1, 30),
            date(2024, 3, 2),
            [adds(D, "20240130"), adds(D, "20240131"), adds(M, "202402"), adds(D, "20240301"), adds(D, "20240302")],
        ),
        # The last 31 days: the earlier month's days, the later month minus its remaining days.
        (
            date(2026, 10, 24),
            date(2026, 11, 23),
            [adds(D, f"202610{d}") for d in range(24, 32)]
            + [adds(M, "202611")]
            + [subtracts(D, f"202611{d}") for d in range(24, 31)],
        ),
        (date(2024, 12, 31), date(2025, 1, 1), [adds(D, "20241231"), adds(D, "20250101")]),
        (date(2024, 12, 1), date(2025, 1, 31), [adds(M, "202412"), adds(M, "202501")]),
        (date(2024, 1, 1), date(2024, 12, 31), [adds(M, f"2024{m:02d}") for m in range(1, 13)]),
        (date(2024, 3, 2), date(2024, 3, 1), []),
    ],
)
def test_signed_cover_by_months(start, end, expected):
    assert signed_cover(start, end) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2024, 1, 1), date(2024, 12, 31), [adds(Y, "2024")]),
        (date(2024, 2, 1), date(2024, 2, 29), [adds(M, "202402")]),
        # 365 days ending 2026-11-23: seven days and a month of 2025, then 2026 minus what is left of it.
        (
            date(2025, 11, 24),
            date(2026, 11, 23),
            [adds(D, f"202511{d}") for d in range(24, 31)]
            + [adds(M, "202512"), adds(Y, "2026")]
            + [subtracts(D, f"202611{d}") for d in range(24, 31)]
            + [subtracts(M, "202612")],
        ),
        # A subtracted month that is itself partial flips its own signs back.
        (
            date(2024, 1, 1),
            date(2024, 12, 3),
            [adds(Y, "2024"), subtracts(M, "202412"), adds(D, "20241201"), adds(D, "20241202"), adds(D, "20241203")],
        ),
    ],
)
def test_signed_cover_with_years(start, end, expected):
    assert signed_cover(start, end, years=True) == expected


def additive_reads(start: date, end: date) -> int:
    """Whole months plus edge days: the plain cover's size, counted independently."""
    reads, day = 0, start
    while day <= end:
        if day.day == 1 and month_end(day) <= end:
            day = next_month(day)
        else:
            day = date.fromordinal(day.toordinal() + 1)
        reads += 1
    return reads


@given(
    st.dates(min_value=date(2019, 1, 1), max_value=date(2027, 12, 31)),
    st.integers(min_value=0, max_value=800),
    st.booleans(),
)
def test_signed_cover_counts_every_day_of_the_range_once_and_nothing_else(start, length, years):
    end = date.fromordinal(start.toordinal() + length)
    count: dict[date, int] = {}
    buckets = signed_cover(start, end, years=years)
    for granularity, label, sign in buckets:
        if granularity is Y:
            first, last = date(int(label), 1, 1), date(int(label), 12, 31)
        else:
            first = parse_day_label(label if granularity is D else label + "01")
            last = first if granularity is D else month_end(first)
        for day in days(first, last):
            count[day] = count.get(day, 0) + sign
    assert {day for day, n in count.items() if n} == set(days(start, end))
    assert all(n == 1 for n in count.values() if n)
    assert len(buckets) <= additive_reads(start, end)
    assert years or all(granularity is not Y for granularity, _, _ in buckets)


@pytest.mark.parametrize(
    ("day", "monday"),
    [
        (date(2024, 2, 29), date(2024, 2, 26)),  # Thursday
        (date(2024, 2, 26), date(2024, 2, 26)),  # Monday is its own week start
        (date(2024, 3, 3), date(2024, 2, 26)),  # Sunday ends the ISO week
        (date(2025, 1, 1), date(2024, 12, 30)),  # across a year end
        (date(2024, 1, 1), date(2024, 1, 1)),
    ],
)
def test_week_start(day, monday):
    assert week_start(day) == monday


@pytest.mark.parametrize(
    ("day", "end", "following"),
    [
        (date(2024, 2, 10), date(2024, 2, 29), date(2024, 3, 1)),
        (date(2023, 2, 10), date(2023, 2, 28), date(2023, 3, 1)),
        (date(2024, 12, 15), date(2024, 12, 31), date(2025, 1, 1)),
        (date(2024, 4, 30), date(2024, 4, 30), date(2024, 5, 1)),
    ],
)
def test_month_end_and_next_month(day, end, following):
    assert month_end(day) == end
    assert next_month(day) == following


@pytest.mark.parametrize(
    ("start", "end", "count", "first", "last"),
    [
        (date(2024, 2, 29), date(2024, 2, 29), 24, "2024022900", "2024022923"),
        (date(2024, 2, 28), date(2024, 3, 1), 72, "2024022800", "2024030123"),
        (date(2024, 12, 31), date(2025, 1, 1), 48, "2024123100", "2025010123"),
    ],
)
def test_hours(start, end, count, first, last):
    moments = list(hours(start, end))
    assert len(moments) == count
    assert hour_label(moments[0]) == first
    assert hour_label(moments[-1]) == last


@pytest.mark.parametrize("day", [date(2024, 2, 29), date(1999, 12, 31), date(2025, 1, 1)])
def test_labels_round_trip(day):
    assert parse_day_label(day_label(day)) == day
    assert month_label(day) == day_label(day)[:6]

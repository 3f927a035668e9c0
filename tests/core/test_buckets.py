"""Bucket arithmetic tables: labels, the month+day cover of a range, weeks, hours."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from infraprism.core.buckets import (
    Granularity,
    cover,
    day_label,
    days,
    hour_label,
    hours,
    labels_for_ms,
    month_end,
    month_label,
    next_month,
    parse_day_label,
    week_start,
)

M, D = Granularity.MONTH, Granularity.DAY


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


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2024, 5, 15), date(2024, 5, 15), [(D, "20240515")]),
        (date(2024, 1, 1), date(2024, 1, 31), [(M, "202401")]),
        (date(2024, 2, 1), date(2024, 2, 29), [(M, "202402")]),  # leap February is whole at the 29th
        (date(2023, 2, 1), date(2023, 2, 28), [(M, "202302")]),
        (date(2024, 2, 1), date(2024, 2, 28), [(D, f"202402{d:02d}") for d in range(1, 29)]),
        (
            date(2024, 1, 30),
            date(2024, 3, 2),
            [(D, "20240130"), (D, "20240131"), (M, "202402"), (D, "20240301"), (D, "20240302")],
        ),
        (date(2024, 12, 31), date(2025, 1, 1), [(D, "20241231"), (D, "20250101")]),
        (date(2024, 12, 1), date(2025, 1, 31), [(M, "202412"), (M, "202501")]),
        (date(2024, 1, 1), date(2024, 12, 31), [(M, f"2024{m:02d}") for m in range(1, 13)]),
        (date(2024, 11, 30), date(2025, 1, 1), [(D, "20241130"), (M, "202412"), (D, "20250101")]),
        (date(2024, 3, 2), date(2024, 3, 1), []),
    ],
)
def test_cover(start, end, expected):
    assert cover(start, end) == expected


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2023, 12, 17), date(2024, 3, 9)),
        (date(2024, 2, 29), date(2024, 2, 29)),
        (date(2023, 1, 1), date(2025, 6, 30)),
    ],
)
def test_cover_is_exact_and_disjoint(start, end):
    """The cover's buckets hold every day of the range exactly once, and nothing else."""
    covered: list[date] = []
    for granularity, label in cover(start, end):
        first = parse_day_label(label if granularity is D else label + "01")
        last = first if granularity is D else month_end(first)
        covered.extend(days(first, last))
    assert covered == list(days(start, end))


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

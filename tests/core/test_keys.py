"""The version fields that validate the API's cached answers (KeyLayout.range_version_fields)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraprism.core.buckets import day_label, days
from infraprism.core.keys import KeyLayout


@pytest.mark.parametrize(
    ("start", "end", "fields"),
    [
        (date(2025, 1, 1), date(2025, 1, 31), ["month:202501"]),
        (date(2025, 1, 30), date(2025, 2, 2), ["day:20250130", "day:20250131", "day:20250201", "day:20250202"]),
        (date(2025, 2, 1), date(2025, 2, 28), ["month:202502"]),  # not a leap year
        (date(2024, 2, 1), date(2024, 2, 28), [f"day:202402{d:02d}" for d in range(1, 29)]),  # 29 days
        (date(2024, 12, 31), date(2025, 2, 28), ["day:20241231", "month:202501", "month:202502"]),
        (date(2025, 3, 5), date(2025, 3, 5), ["day:20250305"]),
    ],
)
def test_range_version_fields(start: date, end: date, fields: list[str]) -> None:
    assert KeyLayout.range_version_fields(start, end) == fields


@given(st.dates(date(2020, 1, 1), date(2030, 12, 31)), st.integers(0, 400))
def test_every_day_of_the_range_moves_exactly_one_field_and_no_other_day_moves_any(start: date, length: int) -> None:
    """A batch bumps its events' day and month fields (event_day_version_fields). An answer's
    fields must move for every day inside its range, and for no day outside it."""
    end = start + timedelta(days=length)
    fields = set(KeyLayout.range_version_fields(start, end))
    for day in days(start - timedelta(days=40), end + timedelta(days=40)):
        moved = fields & set(KeyLayout.event_day_version_fields(day_label(day)))
        assert len(moved) == (1 if start <= day <= end else 0), day

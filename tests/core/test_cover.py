"""Exact covers of instant ranges: evaluated against the events themselves."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infraprism.core.buckets import MS_PER_QUARTER, Granularity, labels_for_ms
from infraprism.core.cover import CellRead, Misaligned, cover_ms
from infraprism.core.zones import day_range_ms, zone

BASE_MS = int(datetime(2024, 1, 20, tzinfo=UTC).timestamp()) * 1000  # spans Feb 29 and month ends
SPAN_MS = 80 * 86_400_000


def stored_cells(events: list[int]) -> Counter:
    """What the layout keeps for events at these instants: each weighs its own instant, so a
    wrong cell shows in the sum, not only in the count."""
    cells: Counter = Counter()
    for ts in events:
        hour, day, month = labels_for_ms(ts)
        for where in ((Granularity.HOUR, hour, 0), (Granularity.DAY, day, 0), (Granularity.MONTH, month, 0)):
            cells[where] += ts
        quarter = ts // MS_PER_QUARTER % 4
        if quarter:
            cells[(Granularity.HOUR, hour, quarter)] += ts
    return cells


def evaluate(reads: list[CellRead], cells: Counter) -> int:
    return sum(read.sign * cells[(read.granularity, read.label, read.quarter)] for read in reads)


quarters = st.integers(min_value=0, max_value=SPAN_MS // MS_PER_QUARTER)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.integers(min_value=BASE_MS, max_value=BASE_MS + SPAN_MS), max_size=60),
    ends=st.tuples(quarters, quarters).map(sorted),
)
def test_a_cover_sums_exactly_the_events_in_its_range(events: list[int], ends: list[int]) -> None:
    start_ms, end_ms = (BASE_MS + quarter * MS_PER_QUARTER for quarter in ends)
    # Events on and next to the edges too: the half-open range must keep exactly one side.
    events = events + [start_ms - 1, start_ms, end_ms - 1, end_ms]
    reads = cover_ms(start_ms, end_ms)
    assert evaluate(reads, stored_cells(events)) == sum(ts for ts in events if start_ms <= ts < end_ms)


@pytest.mark.parametrize(
    ("name", "day", "most_reads"),
    [
        ("UTC", date(2025, 3, 9), 1),
        ("America/Los_Angeles", date(2025, 3, 9), 16),  # a 23-hour day: 9 reads before UTC midnight, 7 after
        ("Asia/Kolkata", date(2025, 1, 15), 15),
        ("Asia/Kathmandu", date(2025, 1, 15), 18),
        ("Australia/Lord_Howe", date(2025, 10, 5), 24),
    ],
)
def test_a_local_day_is_a_few_reads(name: str, day: date, most_reads: int) -> None:
    reads = cover_ms(*day_range_ms(zone(name), day, day))
    assert len(reads) <= most_reads


def test_a_whole_utc_month_is_one_read() -> None:
    start = int(datetime(2025, 2, 1, tzinfo=UTC).timestamp()) * 1000
    end = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp()) * 1000
    assert cover_ms(start, end) == [CellRead(Granularity.MONTH, "202502", 0, 1)]


def test_an_empty_range_reads_nothing() -> None:
    assert cover_ms(BASE_MS, BASE_MS) == []


@pytest.mark.parametrize("offset_ms", [1, 60_000, 14 * 60_000, 29 * 60_000 + 30_000])
def test_an_end_off_the_quarter_hours_is_refused(offset_ms: int) -> None:
    with pytest.raises(Misaligned, match="not on a UTC quarter hour"):
        cover_ms(BASE_MS, BASE_MS + 3_600_000 + offset_ms)

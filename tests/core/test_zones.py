"""Local buckets against a brute-force reference: every minute's local date, hour and offset.

The reference reads the same pinned database with the standard library's zoneinfo,
but finds the boundaries by walking minute by minute, not by the product's arithmetic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infraprism.core.zones import (
    UnknownZone,
    day_range_ms,
    local_days,
    local_hours,
    local_months,
    local_weeks,
    offset_ms,
    zone,
    zone_names,
)

ZONES = [
    "UTC",
    "America/Los_Angeles",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Chatham",
    "America/Santiago",  # clocks go forward at midnight: the day starts at 01:00
]
DAYS = [
    date(2025, 3, 9),  # US spring forward
    date(2025, 11, 2),  # US fall back
    date(2025, 3, 30),  # EU spring forward
    date(2025, 10, 26),  # EU fall back
    date(2025, 4, 6),  # southern fall back (Sydney, Lord Howe, Chatham, Santiago)
    date(2025, 10, 5),  # southern spring forward
    date(2025, 9, 7),  # Santiago spring forward at midnight
    date(2024, 2, 29),
    date(2024, 12, 31),
    date(2025, 1, 1),
]


def reference_zone(name: str) -> ZoneInfo:
    folder, _, leaf = name.rpartition("/")
    package = "tzdata.zoneinfo" + ("." + folder.replace("/", ".") if folder else "")
    with resources.files(package).joinpath(leaf).open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def reference_hours(name: str, day: date) -> list[tuple[int, int, str]]:
    """(start_ms, end_ms, label) of each run of minutes of local `day` sharing hour and offset."""
    tz = reference_zone(name)
    around = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    runs: list[list] = []
    for minute in range(3 * 24 * 60):
        moment = around + timedelta(minutes=minute)
        local = moment.astimezone(tz)
        if local.date() != day:
            continue
        key = (local.hour, local.utcoffset())
        ms = int(moment.timestamp()) * 1000
        if runs and runs[-1][3] == key and runs[-1][1] == ms:
            runs[-1][1] = ms + 60_000
        else:
            text = local.isoformat()
            runs.append([ms, ms + 60_000, text.replace("+00:00", "Z") if name == "UTC" else text, key])
    return [(start, end, label) for start, end, label, _ in runs]


@pytest.mark.parametrize("name", ZONES)
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_local_hours_and_day_match_the_minute_by_minute_reference(name: str, day: date) -> None:
    tz = zone(name)
    start_ms, end_ms = day_range_ms(tz, day, day)
    expected = reference_hours(name, day)
    assert (start_ms, end_ms) == (expected[0][0], expected[-1][1])
    got = [(bucket.start_ms, bucket.end_ms, bucket.label) for bucket in local_hours(tz, start_ms, end_ms)]
    assert got == expected
    assert all(bucket.period == day.isoformat() for bucket in local_hours(tz, start_ms, end_ms))


def test_dst_days_have_the_lengths_the_issue_names() -> None:
    def hours(name: str, day: date) -> tuple[float, int]:
        tz = zone(name)
        start_ms, end_ms = day_range_ms(tz, day, day)
        return (end_ms - start_ms) / 3_600_000, len(local_hours(tz, start_ms, end_ms))

    assert hours("America/Los_Angeles", date(2025, 3, 9)) == (23, 23)
    assert hours("America/Los_Angeles", date(2025, 11, 2)) == (25, 25)
    assert hours("Australia/Lord_Howe", date(2025, 10, 5)) == (23.5, 24)
    assert hours("Australia/Lord_Howe", date(2025, 4, 6)) == (24.5, 25)
    assert hours("Asia/Kolkata", date(2025, 3, 9)) == (24, 24)


def test_labels_carry_the_local_offset() -> None:
    tz = zone("America/Los_Angeles")
    labels = [bucket.label for bucket in local_days(tz, date(2025, 3, 9), date(2025, 3, 10))]
    assert labels == ["2025-03-09T00:00:00-08:00", "2025-03-10T00:00:00-07:00"]
    kathmandu = local_hours(
        zone("Asia/Kathmandu"), *day_range_ms(zone("Asia/Kathmandu"), date(2025, 1, 1), date(2025, 1, 1))
    )
    assert kathmandu[0].label == "2025-01-01T00:00:00+05:45"
    assert datetime.fromisoformat(kathmandu[0].label).astimezone(UTC).isoformat() == "2024-12-31T18:15:00+00:00"


@pytest.mark.parametrize("name", ZONES)
def test_days_weeks_and_months_tile_the_range_without_gaps(name: str) -> None:
    tz = zone(name)
    start, end = date(2024, 2, 20), date(2025, 4, 10)
    whole = day_range_ms(tz, start, end)
    for buckets in (local_days(tz, start, end), local_weeks(tz, start, end), local_months(tz, start, end)):
        assert buckets[0].start_ms == whole[0]
        assert buckets[-1].end_ms == whole[1]
        assert all(a.end_ms == b.start_ms for a, b in zip(buckets, buckets[1:], strict=False))
    weeks = local_weeks(tz, start, end)
    assert all(date.fromisoformat(week.period).weekday() == 0 for week in weeks[1:])
    months = local_months(tz, start, end)
    assert [month.period for month in months[:3]] == ["2024-02-20", "2024-03-01", "2024-04-01"]


def test_offsets_of_half_and_quarter_hour_zones() -> None:
    instant = int(datetime(2025, 1, 15, tzinfo=UTC).timestamp()) * 1000
    assert offset_ms(zone("Asia/Kolkata"), instant) == 330 * 60_000
    assert offset_ms(zone("Asia/Kathmandu"), instant) == 345 * 60_000
    assert offset_ms(zone("America/St_Johns"), instant) == -210 * 60_000
    assert offset_ms(zone("Pacific/Chatham"), instant) == 825 * 60_000  # +13:45 in the southern summer


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "utc ", "../etc/passwd", "Europe", "Europe/Berlin\x00"])
def test_unknown_zones_are_refused_by_name(name: str) -> None:
    with pytest.raises(UnknownZone, match="unknown time zone"):
        zone(name)


def test_the_pinned_database_holds_the_zones_the_docs_name() -> None:
    assert {"UTC", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"} <= zone_names()


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(zone_names())), day=st.dates(min_value=date(1973, 1, 1), max_value=date(2037, 12, 31))
)
def test_any_zone_any_day_matches_the_reference(name: str, day: date) -> None:
    tz = zone(name)
    start_ms, end_ms = day_range_ms(tz, day, day)
    expected = reference_hours(name, day)
    assert (start_ms, end_ms) == (expected[0][0], expected[-1][1])
    assert [(b.start_ms, b.end_ms, b.label) for b in local_hours(tz, start_ms, end_ms)] == expected

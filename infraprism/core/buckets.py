"""Bucket arithmetic in UTC event time. Pure.

A bucket is named by a compact label of its first instant:
hour `YYYYMMDDHH`, day `YYYYMMDD`, month `YYYYMM`, year `YYYY`. Labels sort in time order
as strings, and are what the Redis key layout puts in a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

MS_PER_HOUR = 3_600_000
MS_PER_QUARTER = 900_000


class Granularity(StrEnum):
    """The rollup granularities kept in Redis."""

    HOUR = "h"
    DAY = "d"
    MONTH = "m"
    YEAR = "y"  # leaderboards only


# A bucket read with its sign: +1 adds the bucket, -1 subtracts it (a month minus its days outside a range).
SignedBucket = tuple[Granularity, str, int]


@lru_cache(maxsize=65_536)
def labels_for_hour(hour_index: int) -> tuple[str, str, str]:
    """(hour, day, month) labels of the UTC hour `hour_index` hours after the epoch."""
    moment = datetime.fromtimestamp(hour_index * 3600, tz=UTC)
    hour = moment.strftime("%Y%m%d%H")
    return hour, hour[:8], hour[:6]


def labels_for_ms(ts_ms: int) -> tuple[str, str, str]:
    """(hour, day, month) labels of the bucket holding epoch milliseconds `ts_ms`."""
    return labels_for_hour(ts_ms // MS_PER_HOUR)


def day_label(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def month_label(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


def hour_label(moment: datetime) -> str:
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}"


def parse_day_label(label: str) -> date:
    return date(int(label[:4]), int(label[4:6]), int(label[6:8]))


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    """First day of the month after `day`'s month."""
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def month_end(day: date) -> date:
    return next_month(day) - timedelta(days=1)


def week_start(day: date) -> date:
    """The Monday (ISO week start) of `day`'s week."""
    return day - timedelta(days=day.weekday())


def days(start: date, end: date) -> Iterator[date]:
    """Every day from start to end, both inclusive."""
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def _month_part(first: date, last: date) -> list[SignedBucket]:
    """[first, last], inside one calendar month: its days, or the month minus the days
    outside the range, whichever reads fewer buckets (the days on a tie: nothing to subtract)."""
    begin, end = month_start(first), month_end(first)
    inside = (last - first).days + 1
    outside = (end - begin).days + 1 - inside
    if outside == 0:
        return [(Granularity.MONTH, month_label(first), 1)]
    if inside <= 1 + outside:
        return [(Granularity.DAY, day_label(day), 1) for day in days(first, last)]
    before = days(begin, first - timedelta(days=1))
    after = days(last + timedelta(days=1), end)
    return [(Granularity.MONTH, month_label(first), 1)] + [
        (Granularity.DAY, day_label(day), -1) for day in (*before, *after)
    ]


def _months_cover(start: date, end: date) -> list[SignedBucket]:
    buckets: list[SignedBucket] = []
    first = start
    while first <= end:
        last = min(end, month_end(first))
        buckets.extend(_month_part(first, last))
        first = last + timedelta(days=1)
    return buckets


def _year_part(first: date, last: date) -> list[SignedBucket]:
    """[first, last], inside one calendar year: by months and days, or the year minus the
    cover of what lies outside the range, whichever reads fewer buckets."""
    by_months = _months_cover(first, last)
    year_first, year_last = date(first.year, 1, 1), date(first.year, 12, 31)
    outside = _months_cover(year_first, first - timedelta(days=1)) if first > year_first else []
    if last < year_last:
        outside += _months_cover(last + timedelta(days=1), year_last)
    by_year = [(Granularity.YEAR, f"{first.year:04d}", 1)] + [(g, label, -sign) for g, label, sign in outside]
    return by_year if len(by_year) < len(by_months) else by_months


def signed_cover(start: date, end: date, *, years: bool = False) -> list[SignedBucket]:
    """The fewest buckets whose signed sum is exactly the days [start, end] (both inclusive).

    Each calendar month of the range is read whole, as its days, or as the
    month minus its days outside the range: the last 31 days read the earlier
    month's days plus the later month minus its few remaining days, not 31 day
    buckets. With `years` (leaderboards, which keep year buckets) a year may
    likewise be read as the year minus the months and days outside the range,
    so 365 days read about one year, one month and a few days, not 12 months.
    Counters are exact integers, so a subtraction is exact; a member counted
    only in subtracted buckets sums to zero events, and readers drop it.
    """
    if start > end:
        return []
    if not years:
        return _months_cover(start, end)
    buckets: list[SignedBucket] = []
    first = start
    while first <= end:
        last = min(end, date(first.year, 12, 31))
        buckets.extend(_year_part(first, last))
        first = last + timedelta(days=1)
    return buckets


def hours(start: date, end: date) -> Iterator[datetime]:
    """Every UTC hour from start 00:00 to end 23:00, both days inclusive."""
    moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    while moment < stop:
        yield moment
        moment += timedelta(hours=1)

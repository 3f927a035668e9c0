"""Bucket arithmetic in UTC event time. Pure.

A bucket is named by a compact label of its first instant:
hour `YYYYMMDDHH`, day `YYYYMMDD`, month `YYYYMM`. Labels sort in time order
as strings, and are what the Redis key layout puts in a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

MS_PER_HOUR = 3_600_000


class Granularity(StrEnum):
    """The rollup granularities kept in Redis."""

    HOUR = "h"
    DAY = "d"
    MONTH = "m"


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


def cover(start: date, end: date) -> list[tuple[Granularity, str]]:
    """The fewest month and day buckets that exactly cover [start, end] (days inclusive).

    Whole calendar months inside the range are read as one month bucket; the
    edge days outside whole months are read as day buckets. A year therefore
    reads 12 month buckets (plus edge days), not 365 day buckets.
    """
    buckets: list[tuple[Granularity, str]] = []
    day = start
    while day <= end:
        if day.day == 1 and month_end(day) <= end:
            buckets.append((Granularity.MONTH, month_label(day)))
            day = next_month(day)
        else:
            buckets.append((Granularity.DAY, day_label(day)))
            day += timedelta(days=1)
    return buckets


def hours(start: date, end: date) -> Iterator[datetime]:
    """Every UTC hour from start 00:00 to end 23:00, both days inclusive."""
    moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    while moment < stop:
        yield moment
        moment += timedelta(hours=1)

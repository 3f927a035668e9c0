"""How much one request may make the API and Redis read. docs/api.md ("Limits") lists them.

Each bound is on what a request reads, counted before it is read: a request over one is a
422 naming the parameter to narrow, so that no key, however it is used, can make one request
hold Redis or a worker for long. The figures leave every dashboard query room: a year by day
with any filter, an hourly series of three months, `/costs` by entity over ten years of a
project with tens of thousands of entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from infraprism.api.errors import InvalidParameter

# Time buckets of one answer: the rows of a time series or of `/costs` by day, week or month.
# Six years by day, or an hourly series of 100 days (counting 25 hours a day), is at most this.
MAX_PERIODS = 2_500
# An hourly series' span: its hours, 25 a day at most, within MAX_PERIODS.
MAX_HOURLY_RANGE_DAYS = MAX_PERIODS // 25
# Rollup cells one request reads: its cover's hours, days and months, each with its quarter
# hours where the zone's days start inside a UTC hour (Asia/Kolkata's by day: about 13 a day).
MAX_BUCKET_READS = 40_000
# Fields of the whole hashes a scan reads (`group_by=entity`, a model or tag filter, ...):
# each is a member's cell in one bucket.
MAX_SCAN_FIELDS = 2_000_000
# Sessions one `/sessions` request reads: its page and its summary cover every session started
# in the range.
MAX_SESSIONS = 100_000
# Members the leaderboards of one `/entities/top` range hold, all boards together, plus the
# fields of its edge hashes: what its script walks inside Redis.
MAX_BOARD_MEMBERS = 1_000_000
# Anomaly records one `/anomalies` request reads.
MAX_ANOMALIES = 20_000


def too_much(
    what: str, count: int | None, bound: int, parameter: str = "end_date", advice: str = ""
) -> InvalidParameter:
    """The 422 of a bound; `count` None leaves out how much there was (a scoped key's count
    may include other entities' data, which it must not learn)."""
    if count is None:
        problem = f"this request would read more than the {bound:,} {what} one request may"
    else:
        problem = f"this request would read {count:,} {what}, and at most {bound:,} may be"
    return InvalidParameter(parameter, f"{problem}: {advice or 'narrow the range'}")


_LONGER = "narrow the range, or ask by a longer interval (week or month instead of day, day instead of hour)"


def period_count(start: date, end: date, kind: str) -> int:
    """How many `kind` periods (hour, day, week, month; anything else: one) the local days
    start..end make, counted from the dates alone: an hour count allows each day 25."""
    days = (end - start).days + 1
    if kind == "hour":
        return days * 25
    if kind == "day":
        return days
    if kind == "week":
        return (end - (start - timedelta(days=start.weekday()))).days // 7 + 1
    if kind == "month":
        return (end.year - start.year) * 12 + end.month - start.month + 1
    return 1


def check_periods(start: date, end: date, kind: str) -> None:
    """Refuse a range of more time buckets than an answer may have, before planning it: the
    plan of ten years by day in a half-hour zone alone takes 0.4 s to build."""
    periods = period_count(start, end, kind)
    if periods > MAX_PERIODS:
        raise too_much("time buckets", periods, MAX_PERIODS, advice=_LONGER)


def check_bucket_reads(reads: Sequence[Any]) -> None:
    """Refuse a plan (its BucketReads) with more rollup reads than a request may make."""
    if len(reads) > MAX_BUCKET_READS:
        raise too_much("rollup cells", len(reads), MAX_BUCKET_READS, advice=_LONGER)


__all__ = [
    "MAX_ANOMALIES",
    "MAX_BOARD_MEMBERS",
    "MAX_BUCKET_READS",
    "MAX_HOURLY_RANGE_DAYS",
    "MAX_PERIODS",
    "MAX_SCAN_FIELDS",
    "MAX_SESSIONS",
    "check_bucket_reads",
    "check_periods",
    "period_count",
    "too_much",
]

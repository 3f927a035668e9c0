"""Local calendars as UTC instants: the IANA zones InfraPrism pins, and the exact bounds of local buckets.

Pure. Every local day, week, month and hour is a half-open range of epoch
milliseconds [start, end), computed from the zone database of the pinned
`tzdata` package (not the host's /usr/share/zoneinfo), so every deployment
and every test draws the same boundaries. A DST day is 23 or 25 hours long
(23.5 or 24.5 in Australia/Lord_Howe); an hour bucket is a maximal run of
instants that share a local date, a local hour and a UTC offset, so a
repeated hour is two buckets and a skipped one is none.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

from infraprism.core import CoreError

MS_PER_MINUTE = 60_000
# Offsets change at most twice a year; stepping by this finds every change in a
# range, and a bisection then finds its instant to the millisecond.
_SCAN_STEP_MS = 15 * MS_PER_MINUTE


class UnknownZone(CoreError, ValueError):
    """A name that is not a zone of the pinned IANA database."""


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """Every canonical and alias zone name of the pinned database, and UTC."""
    listed = resources.files("tzdata").joinpath("zones").read_text().split()
    return frozenset(listed) | {"UTC"}


def tzdata_version() -> str:
    import tzdata

    return str(tzdata.IANA_VERSION)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The zone `name` from the pinned database; UnknownZone for anything else."""
    if name not in zone_names():
        raise UnknownZone(f"unknown time zone {name[:64]!r}: use an IANA name such as Europe/Berlin or UTC")
    if name == "UTC":
        return ZoneInfo.from_file(resources.files("tzdata.zoneinfo").joinpath("UTC").open("rb"), key="UTC")
    folder, _, leaf = name.rpartition("/")
    package = "tzdata.zoneinfo" + ("." + folder.replace("/", ".") if folder else "")
    with resources.files(package).joinpath(leaf).open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def _moment(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _epoch_ms(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def offset_ms(tz: ZoneInfo, ms: int) -> int:
    """The zone's UTC offset at instant `ms`."""
    offset = _moment(ms).astimezone(tz).utcoffset()
    assert offset is not None
    return (offset.days * 86_400 + offset.seconds) * 1000 + offset.microseconds // 1000


def local_midnight_ms(tz: ZoneInfo, day: date) -> int:
    """The first instant of local `day`. When midnight falls in a DST gap, the day starts
    at the transition, which is what fold=0 resolves a gap time to (PEP 495)."""
    return _epoch_ms(datetime(day.year, day.month, day.day, tzinfo=tz))


def day_range_ms(tz: ZoneInfo, start: date, end: date) -> tuple[int, int]:
    """Local midnight of `start` to local midnight after `end`: what start_date..end_date covers."""
    return local_midnight_ms(tz, start), local_midnight_ms(tz, end + timedelta(days=1))


def transitions_ms(tz: ZoneInfo, start_ms: int, end_ms: int) -> list[int]:
    """Every instant in (start_ms, end_ms) where the zone's offset changes."""
    found: list[int] = []
    before = offset_ms(tz, start_ms)
    at = start_ms
    while at < end_ms:
        step = min(at + _SCAN_STEP_MS, end_ms)
        after = offset_ms(tz, step)
        if after != before:
            low, high = at, step  # offset(low) == before != offset(high)
            while high - low > 1:
                middle = (low + high) // 2
                if offset_ms(tz, middle) == before:
                    low = middle
                else:
                    high = middle
            found.append(high)
            before = after
        at = step
    return found


@dataclass(frozen=True, slots=True)
class LocalBucket:
    """[start_ms, end_ms) and its label: the local wall time of its first instant with the offset."""

    start_ms: int
    end_ms: int
    label: str  # e.g. 2025-03-09T00:00:00-08:00
    period: str  # the local date of its first instant, YYYY-MM-DD


def label_at(tz: ZoneInfo, ms: int) -> str:
    """RFC 3339 local wall time with offset, to the second: 2025-03-10T00:00:00-07:00, and
    2025-03-10T00:00:00Z in the zone UTC (not in a zone whose offset is merely zero)."""
    local = _moment(ms).astimezone(tz)
    text = local.replace(microsecond=0).isoformat()
    if tz.key == "UTC":
        return text.replace("+00:00", "Z")
    return text


def _bucket(tz: ZoneInfo, start_ms: int, end_ms: int) -> LocalBucket:
    local = _moment(start_ms).astimezone(tz)
    return LocalBucket(start_ms, end_ms, label_at(tz, start_ms), local.date().isoformat())


def local_hours(tz: ZoneInfo, start_ms: int, end_ms: int) -> list[LocalBucket]:
    """Every local hour that occurs in [start_ms, end_ms), in order.

    A boundary is the start of a wall-clock hour or a change of offset, so an
    hour repeated when clocks go back is two buckets (one per offset), and on
    Lord Howe's 30-minute shift the shortened hour is one 30-minute bucket.
    """
    boundaries = {start_ms, end_ms, *transitions_ms(tz, start_ms, end_ms)}
    first = _moment(start_ms).astimezone(tz)
    day = first.date() - timedelta(days=1)
    last_day = _moment(end_ms).astimezone(tz).date() + timedelta(days=1)
    while day <= last_day:
        for hour in range(24):
            # Both folds: a repeated wall hour starts twice. A wall time in a gap does not
            # occur (it would resolve to some other instant): the transition, already a
            # boundary, starts that hour.
            for fold in (0, 1):
                wall = datetime(day.year, day.month, day.day, hour, tzinfo=tz, fold=fold)
                ms = _epoch_ms(wall)
                back = _moment(ms).astimezone(tz)
                if start_ms < ms < end_ms and (back.date(), back.hour, back.minute) == (day, hour, 0):
                    boundaries.add(ms)
        day += timedelta(days=1)
    ordered = sorted(boundaries)
    return [_bucket(tz, low, high) for low, high in zip(ordered, ordered[1:], strict=False)]


def local_days(tz: ZoneInfo, start: date, end: date) -> list[LocalBucket]:
    return [_bucket(tz, *day_range_ms(tz, day, day)) for day in _dates(start, end)]


def local_weeks(tz: ZoneInfo, start: date, end: date) -> list[LocalBucket]:
    """ISO weeks (Monday first) meeting start..end, each cut to the range."""
    cuts = [start] + [day for day in _dates(start + timedelta(days=1), end) if day.weekday() == 0]
    return _spans(tz, cuts, end)


def local_months(tz: ZoneInfo, start: date, end: date) -> list[LocalBucket]:
    """Calendar months meeting start..end, each cut to the range."""
    cuts = [start] + [day for day in _dates(start + timedelta(days=1), end) if day.day == 1]
    return _spans(tz, cuts, end)


def _spans(tz: ZoneInfo, cuts: list[date], end: date) -> list[LocalBucket]:
    after = end + timedelta(days=1)
    bounds = [local_midnight_ms(tz, day) for day in [*cuts, after]]
    return [_bucket(tz, low, high) for low, high in zip(bounds, bounds[1:], strict=False)]


def _dates(start: date, end: date) -> list[date]:
    return [start + timedelta(days=index) for index in range((end - start).days + 1)]


def local_date(tz: ZoneInfo, ms: int) -> date:
    """The local calendar date of instant `ms`."""
    return _moment(ms).astimezone(tz).date()


def bucket_index(buckets: list[LocalBucket], ms: int) -> int | None:
    """Which of `buckets` (contiguous, ordered) holds instant `ms`; None outside them."""
    starts = [bucket.start_ms for bucket in buckets]
    index = bisect.bisect_right(starts, ms) - 1
    if index < 0 or ms >= buckets[index].end_ms:
        return None
    return index


__all__ = [
    "LocalBucket",
    "UnknownZone",
    "bucket_index",
    "day_range_ms",
    "label_at",
    "local_date",
    "local_days",
    "local_hours",
    "local_midnight_ms",
    "local_months",
    "local_weeks",
    "offset_ms",
    "transitions_ms",
    "tzdata_version",
    "zone",
    "zone_names",
]

"""Which stored cells sum exactly to an instant range [start_ms, end_ms). Pure.

The rollups are kept in UTC months, days and hours, and each hour hash also
holds the cells of its last three quarter hours (keys.quarter_member), so any
range whose ends fall on UTC quarter hours is a signed sum of whole cells.
That is every local day, week and month since 1972 in every zone of the
database (core/zones.py); a range that is not gets `Misaligned`, never an
approximation.

Each part is read the cheaper of two ways: as its pieces, or as the enclosing
bucket minus the pieces outside the range. A local day in Asia/Kolkata
(18:30 to 18:30 UTC) is 15 reads: five hours and two quarters before UTC
midnight, then that UTC day minus five hours and two quarters.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from infraprism.core import CoreError
from infraprism.core.buckets import MS_PER_HOUR, MS_PER_QUARTER, Granularity, day_label, labels_for_hour, signed_cover

MS_PER_DAY = 86_400_000


class Misaligned(CoreError, ValueError):
    """A range end that is not on a UTC quarter hour: no sum of stored cells is exactly that range."""


class CellRead(NamedTuple):
    """One stored cell to add (sign 1) or subtract (sign -1): a bucket, or with `quarter` 1-3
    that quarter hour's field of an hour bucket."""

    granularity: Granularity
    label: str
    quarter: int
    sign: int


Signed = dict[tuple[Granularity, str, int], int]


def cover_ms(start_ms: int, end_ms: int) -> list[CellRead]:
    """The fewest-reads signed cells whose sum is exactly the events in [start_ms, end_ms)."""
    for name, value in (("start", start_ms), ("end", end_ms)):
        if value % MS_PER_QUARTER:
            raise Misaligned(f"range {name} {_iso(value)} is not on a UTC quarter hour")
    signed: Signed = {}
    if start_ms < end_ms:
        first_midnight = -(-start_ms // MS_PER_DAY) * MS_PER_DAY
        last_midnight = end_ms // MS_PER_DAY * MS_PER_DAY
        if first_midnight <= last_midnight:
            if first_midnight < last_midnight:
                first = _date(first_midnight)
                last = _date(last_midnight) - timedelta(days=1)
                _add(signed, ((g, label, 0, sign) for g, label, sign in signed_cover(first, last)))
            _add(signed, _within_day(start_ms, first_midnight))
            _add(signed, _within_day(last_midnight, end_ms))
        else:
            _add(signed, _within_day(start_ms, end_ms))
    return [CellRead(g, label, quarter, sign) for (g, label, quarter), sign in signed.items() if sign]


def _within_day(start_ms: int, end_ms: int) -> list[tuple[Granularity, str, int, int]]:
    """[start, end) inside one UTC day: its hours and quarters, or the day minus the rest."""
    if start_ms >= end_ms:
        return []
    day_start = start_ms // MS_PER_DAY * MS_PER_DAY
    pieces = _hours(start_ms, end_ms)
    if end_ms - start_ms == MS_PER_DAY:
        return [(Granularity.DAY, day_label(_date(day_start)), 0, 1)]
    rest = _hours(day_start, start_ms) + _hours(end_ms, day_start + MS_PER_DAY)
    if 1 + len(rest) < len(pieces):
        return [(Granularity.DAY, day_label(_date(day_start)), 0, 1)] + [(g, b, q, -s) for g, b, q, s in rest]
    return pieces


def _hours(start_ms: int, end_ms: int) -> list[tuple[Granularity, str, int, int]]:
    """[start, end) inside one UTC day, additively: whole hours, and the quarters of partial ones."""
    out: list[tuple[Granularity, str, int, int]] = []
    at = start_ms
    while at < end_ms:
        hour_start = at // MS_PER_HOUR * MS_PER_HOUR
        until = min(end_ms, hour_start + MS_PER_HOUR)
        out.extend(_quarters(hour_start, (at - hour_start) // MS_PER_QUARTER, (until - hour_start) // MS_PER_QUARTER))
        at = until
    return out


def _quarters(hour_start_ms: int, first: int, stop: int) -> list[tuple[Granularity, str, int, int]]:
    """Quarters first..stop-1 (of 0-3) of one hour. Quarters 1-3 are fields of their own; the
    first is the hour minus them. The whole hour is one read; a part is its quarters or the
    hour minus the others, whichever is fewer."""
    label = labels_for_hour(hour_start_ms // MS_PER_HOUR)[0]
    if (first, stop) == (0, 4):
        return [(Granularity.HOUR, label, 0, 1)]
    inside = [quarter for quarter in range(first, stop)]
    outside = [quarter for quarter in range(4) if quarter not in inside]
    if 0 in inside:  # the hour minus the quarters outside
        return [(Granularity.HOUR, label, 0, 1)] + [(Granularity.HOUR, label, quarter, -1) for quarter in outside]
    return [(Granularity.HOUR, label, quarter, 1) for quarter in inside]


def _add(signed: Signed, reads: Iterable[tuple[Granularity, str, int, int]]) -> None:
    for granularity, label, quarter, sign in reads:
        where = (granularity, label, quarter)
        signed[where] = signed.get(where, 0) + sign


def _date(ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ms // MS_PER_DAY)


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


__all__ = ["CellRead", "Misaligned", "cover_ms"]

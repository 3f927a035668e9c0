"""Query parameters that FastAPI's types cannot check alone. Each failure names its parameter."""

from __future__ import annotations

import re
from datetime import date
from typing import NamedTuple

from infraprism.api.errors import InvalidParameter
from infraprism.api.planner import Filters, GroupBy, Grouping
from infraprism.core.keys import ALL_ENTITY_TYPES

# Data starts at the epoch; the far end keeps month arithmetic inside `date`'s range.
MIN_DATE = date(1970, 1, 1)
MAX_DATE = date(9998, 12, 31)
# A range is read as months plus edge days; ten years is at most ~150 bucket reads. (An
# hourly series spans less: api/bounds.py.)
MAX_RANGE_DAYS = 3660
MAX_TAG_FILTERS = 32
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_DATE_RE = re.compile(DATE_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class DateRange(NamedTuple):
    """Both days inclusive, UTC."""

    start: date
    end: date


def parse_date(name: str, value: str) -> date:
    if not _DATE_RE.match(value):
        raise InvalidParameter(name, f"must be a date YYYY-MM-DD, got {value[:40]!r}")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(name, f"not a calendar date: {value!r}") from None
    if not MIN_DATE <= day <= MAX_DATE:
        raise InvalidParameter(name, f"must be between {MIN_DATE} and {MAX_DATE}")
    return day


def parse_range(
    start_value: str,
    end_value: str,
    start_name: str = "start_date",
    end_name: str = "end_date",
    max_days: int = MAX_RANGE_DAYS,
) -> DateRange:
    start = parse_date(start_name, start_value)
    end = parse_date(end_name, end_value)
    if end < start:
        raise InvalidParameter(end_name, f"{end} is before {start_name} {start}")
    if (end - start).days + 1 > max_days:
        raise InvalidParameter(end_name, f"the range may span at most {max_days} days")
    return DateRange(start, end)


def check_text(name: str, value: str | None) -> str | None:
    """An identifier filter: 1-256 characters, no control characters (they never occur in data)."""
    if value is None:
        return None
    if not value or len(value) > 256 or _CONTROL_RE.search(value):
        raise InvalidParameter(name, "must be 1-256 characters without control characters")
    return value


def check_entity_type(value: str | None) -> str | None:
    """An entity-type filter. `*` names the leaderboard of every type inside the store and no
    event may have it (docs/events.md), so asking for it is a mistake, not an empty answer."""
    if value == ALL_ENTITY_TYPES:
        raise InvalidParameter(
            "entity_type", f"{ALL_ENTITY_TYPES!r} is not an entity type: leave entity_type out for all types"
        )
    return check_text("entity_type", value)


def parse_tags(value: str | None) -> tuple[tuple[str, str], ...]:
    """`key:value,key:value` (AND); a value may contain ':' (split at the first one)."""
    if value is None:
        return ()
    pairs: dict[tuple[str, str], None] = {}
    for item in value.split(","):
        key, colon, tag_value = item.partition(":")
        if not colon or not key or not tag_value:
            raise InvalidParameter("tags", f"expected key:value[,key:value...], got {item[:80]!r}")
        if len(key) > 64 or len(tag_value) > 256 or _CONTROL_RE.search(item):
            raise InvalidParameter("tags", "keys are 1-64 and values 1-256 characters, no control characters")
        pairs[(key, tag_value)] = None
    if len(pairs) > MAX_TAG_FILTERS:
        raise InvalidParameter("tags", f"at most {MAX_TAG_FILTERS} key:value pairs")
    return tuple(sorted(pairs))


def parse_group_by(value: str | None) -> Grouping:
    if value is None or value == "":
        return Grouping()
    if value.startswith("tags."):
        key = value[len("tags.") :]
        if not key or len(key) > 64 or _CONTROL_RE.search(key):
            raise InvalidParameter("group_by", "tags.{key} needs a tag key of 1-64 characters")
        return Grouping(GroupBy.TAG, key)
    try:
        kind = GroupBy(value)
    except ValueError:
        kind = None
    if kind is None or kind in (GroupBy.NONE, GroupBy.TAG):
        raise InvalidParameter(
            "group_by",
            f"must be entity, model, day, week, month or tags.{{key}}, got {value[:40]!r}",
        )
    return Grouping(kind)


def filters(
    entity_type: str | None = None,
    entity_id: str | None = None,
    model: str | None = None,
    tags: str | None = None,
) -> Filters:
    return Filters(
        entity_type=check_entity_type(entity_type),
        entity_id=check_text("entity_id", entity_id),
        model=check_text("model", model),
        tags=parse_tags(tags),
    )

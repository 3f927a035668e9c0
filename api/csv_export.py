"""CSV rendering of response rows: a header, one line per row, nested objects flattened with '.'.

Also the columns each endpoint's CSV has, in order: the header is fixed by the
endpoint (and grouping), not taken from the rows, so an empty answer has one too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from infraprism.api.planner import GroupBy

METRIC_COLUMNS = ["total_cost", "total_events", "total_input_tokens", "total_output_tokens", "avg_latency_ms"]
_GROUP_COLUMNS = {
    GroupBy.NONE: [],
    GroupBy.ENTITY: ["entity_type", "entity_id"],
    GroupBy.MODEL: ["model", "provider"],
    GroupBy.DAY: ["period"],
    GroupBy.WEEK: ["period"],
    GroupBy.MONTH: ["period"],
    GroupBy.TAG: ["tag_key", "tag_value"],
}
TIMESERIES_COLUMNS = ["timestamp", "cost", "events"]
MODELS_COLUMNS = ["model", "provider", *METRIC_COLUMNS, "percentage_of_total", "price_source"]
TOP_ENTITIES_COLUMNS = ["entity_type", "entity_id", "total_cost", "total_events", "rank"]
SESSION_COLUMNS = [
    "session_id",
    "entity_type",
    "entity_id",
    "started_at",
    "ended_at",
    "turn_count",
    "total_cost",
    "total_tokens",
]
ANOMALY_COLUMNS = [
    "id",
    "detected_at",
    "entity_type",
    "entity_id",
    "type",
    "severity",
    "description",
    "expected_value",
    "actual_value",
    "status",
    "budget_id",
    "threshold",
]
COMPARE_COLUMNS = [
    f"{period}.{name}" for period in ("period1", "period2") for name in ("start", "end", "total_cost", "total_events")
] + [f"changes.{name}" for name in ("cost_change", "cost_change_percent", "events_change", "events_change_percent")]


def costs_columns(grouping: GroupBy) -> list[str]:
    """`/costs`: the grouping's fields, then the metrics."""
    return _GROUP_COLUMNS[grouping] + METRIC_COLUMNS


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"period1": {"total_cost": 1}} -> {"period1.total_cost": 1}."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        column = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(flatten(value, column + "."))
        else:
            out[column] = value
    return out


# OWASP's CSV-injection advice: a spreadsheet reads a cell that starts with one of
# these as a formula (tab and carriage return hide a formula after them).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A cell's text. Text that a spreadsheet would run as a formula gets a leading `'`
    (the original follows it unchanged); numbers, booleans and nulls are never text, so
    a negative number stays a number."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_PREFIXES) else value
    return str(value)


def render(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with `columns` as the header (flattened names) and one line per row.

    Text cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return get a
    leading `'`; the csv module then quotes commas, quotes and line breaks as usual."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        flat = flatten(row)
        writer.writerow([_cell(flat.get(column)) for column in columns])
    return buffer.getvalue()

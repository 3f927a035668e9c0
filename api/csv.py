"""CSV rendering of response rows: a header, one line per row, nested objects flattened with '.'."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with `columns` as the header (flattened names) and one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        flat = flatten(row)
        writer.writerow([_cell(flat.get(column)) for column in columns])
    return buffer.getvalue()


def columns_of(example: Mapping[str, Any]) -> list[str]:
    """The flattened column names of a row, in order."""
    return list(flatten(example))

"""Response arithmetic: exact counters turned into the API's numbers and rows, in their order.

Counters stay integers until a row is shaped; only then do they become USD (half-even
to 6 decimals), rounded means and shares.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from infraprism.api.cache import ShapedRows
from infraprism.api.columns import Matrix, column_totals, cost_descending_order, mean_ms_column, usd_column
from infraprism.api.planner import GroupBy
from infraprism.core.cell import COST, EVENTS, INPUT, LATENCY_COUNT, LATENCY_SUM, OUTPUT, Cell
from infraprism.core.money import div_round_half_even, nano_to_usd

Group = tuple[str | None, ...]

# The response fields of a dimension grouping's group (the groupings of the column path).
DIMENSION_FIELDS: dict[GroupBy, tuple[str, str]] = {
    GroupBy.ENTITY: ("entity_type", "entity_id"),
    GroupBy.MODEL: ("model", "provider"),
}


def ratio(numerator: int, denominator: int, decimals: int = 1) -> float | None:
    """numerator / denominator rounded half-even to `decimals` places; None when the denominator is 0.

    Exact: the rounding is done on integers, and int / int gives the nearest double.
    """
    if denominator == 0:
        return None
    scale = 10**decimals
    return div_round_half_even(numerator * scale, denominator) / scale


def avg_latency_ms(cell: Cell) -> float | None:
    """Mean latency in ms (sums are microseconds), 1 decimal; None when no event reported one."""
    return ratio(cell[LATENCY_SUM], cell[LATENCY_COUNT] * 1000)


def metric_fields(cell: Cell, row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The five metric fields of a row, added to `row` (after its group fields) or to a new dict."""
    if row is None:
        row = {}
    row["total_cost"] = nano_to_usd(cell[COST])
    row["total_events"] = cell[EVENTS]
    row["total_input_tokens"] = cell[INPUT]
    row["total_output_tokens"] = cell[OUTPUT]
    row["avg_latency_ms"] = avg_latency_ms(cell)
    return row


def _null_last_order(item: tuple[Group, Cell]) -> tuple[Any, ...]:
    group, cell = item
    return (-cell[COST], tuple((value is None, value or "") for value in group))


def sorted_groups(cells_by_group: dict[Group, Cell]) -> list[tuple[Group, Cell]]:
    """Cost descending, then by the group's values; a null value (untagged) after the others."""
    items = list(cells_by_group.items())
    if any(None in group for group, _ in items):
        return sorted(items, key=_null_last_order)
    return sorted(items, key=lambda item: (-item[1][COST], item[0]))


def dimension_rows(
    groups: list[Group],
    sums: Matrix,
    fields: tuple[str, str],
    previous: ShapedRows | None = None,
) -> tuple[list[dict[str, Any]], Cell, ShapedRows]:
    """The rows of a dimension grouping from its groups and their summed counters, row for
    row, as `metric_fields` shapes them, in `sorted_groups` order; the grand total; and the
    rows as shaped, for the next time. A row of `previous` whose group and sums are unchanged
    is taken as it is: after a batch of 100 events, 100 of 10,000 rows are shaped again."""
    total = column_totals(sums)
    order = cost_descending_order(sums, groups)
    sums = sums[order]
    groups = [groups[row] for row in order]
    rows: list[dict[str, Any] | None] = _unchanged_rows(previous, groups, sums)
    changed = [position for position, row in enumerate(rows) if row is None]
    if changed:
        changed_sums = sums[changed]
        first, second = fields
        for position, cost_usd, events, input_tokens, output_tokens, latency_ms in zip(
            changed,
            usd_column(changed_sums[:, COST]),
            changed_sums[:, EVENTS].tolist(),
            changed_sums[:, INPUT].tolist(),
            changed_sums[:, OUTPUT].tolist(),
            mean_ms_column(changed_sums[:, LATENCY_SUM], changed_sums[:, LATENCY_COUNT]),
            strict=True,
        ):
            group = groups[position]
            rows[position] = {
                first: group[0],
                second: group[1],
                "total_cost": cost_usd,
                "total_events": events,
                "total_input_tokens": input_tokens,
                "total_output_tokens": output_tokens,
                "avg_latency_ms": latency_ms,
            }
    shaped_rows: list[dict[str, Any]] = rows  # type: ignore[assignment]  # every row is shaped by now
    shaped = ShapedRows({group: position for position, group in enumerate(groups)}, sums, shaped_rows)
    return shaped_rows, total, shaped


def _unchanged_rows(previous: ShapedRows | None, groups: list[Group], sums: Matrix) -> list[dict[str, Any] | None]:
    """Per row, `previous`'s row of the same group if it was shaped from the same sums, else None."""
    if previous is None or not groups:
        return [None] * len(groups)
    positions = np.fromiter(
        map(previous.position_of.get, groups, itertools.repeat(-1)), dtype=np.int64, count=len(groups)
    )
    same = positions >= 0
    same[same] = (previous.sums[positions[same]] == sums[same]).all(axis=1)
    old_rows = previous.rows
    return [
        old_rows[position] if unchanged else None
        for position, unchanged in zip(positions.tolist(), same.tolist(), strict=True)
    ]


__all__ = ["DIMENSION_FIELDS", "avg_latency_ms", "dimension_rows", "metric_fields", "ratio", "sorted_groups"]

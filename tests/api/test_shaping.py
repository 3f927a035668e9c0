"""Response arithmetic: ratios and means against Decimal, row order, and the column-wise rows
against the row-at-a-time shaping they stand in for."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from infraprism.api.shaping import avg_latency_ms, dimension_rows, metric_fields, ratio, sorted_groups
from infraprism.core.cell import Cell


def decimal_ratio(numerator: int, denominator: int, decimals: int) -> float:
    with localcontext(prec=80):  # enough digits that the reference itself never rounds
        quantum = Decimal(1).scaleb(-decimals)
        return float((Decimal(numerator) / Decimal(denominator)).quantize(quantum, rounding=ROUND_HALF_EVEN))


@given(
    st.integers(min_value=-(10**24), max_value=10**24),
    st.integers(min_value=1, max_value=10**15),
    st.sampled_from([1, 6]),
)
def test_ratio_is_decimal_half_even(numerator: int, denominator: int, decimals: int) -> None:
    assert ratio(numerator, denominator, decimals) == decimal_ratio(numerator, denominator, decimals)


def test_ratio_ties_go_to_even_and_nothing_over_zero_is_none() -> None:
    assert (ratio(25, 100), ratio(35, 100), ratio(-25, 100)) == (0.2, 0.4, -0.2)
    assert ratio(5, 0) is None


@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=10**9))
def test_avg_latency_is_half_even_tenths_of_a_millisecond(latency_sum_us: int, latency_count: int) -> None:
    cell = Cell([max(1, latency_count), 0, 0, 0, latency_sum_us, latency_count])
    expected = None if latency_count == 0 else decimal_ratio(latency_sum_us, latency_count * 1000, 1)
    assert avg_latency_ms(cell) == expected


def test_metric_fields_follow_the_group_fields() -> None:
    cell = Cell([3, 1_234_567_500, 100, 50, 2_250, 1])
    row = metric_fields(cell, {"entity_type": "customer", "entity_id": "acme"})
    assert list(row.items()) == [
        ("entity_type", "customer"),
        ("entity_id", "acme"),
        ("total_cost", 1.234568),  # half-even to the micro-dollar: ...567.5 -> ...568
        ("total_events", 3),
        ("total_input_tokens", 100),
        ("total_output_tokens", 50),
        ("avg_latency_ms", 2.2),  # 2.25 ms -> 2.2
    ]
    assert metric_fields(Cell([1, 0, 0, 0, 0, 0]))["avg_latency_ms"] is None


def test_sorted_groups_cost_descending_then_values_with_the_untagged_row_last() -> None:
    def cell(cost: int) -> Cell:
        return Cell([1, cost, 0, 0, 0, 0])

    tagged = {("b",): cell(5), (None,): cell(5), ("a",): cell(5), ("",): cell(5), ("c",): cell(9)}
    assert [group for group, _ in sorted_groups(tagged)] == [("c",), ("",), ("a",), ("b",), (None,)]
    entities = {("team", "a"): cell(1), ("customer", "z"): cell(1), ("customer", "a"): cell(2)}
    assert [group for group, _ in sorted_groups(entities)] == [("customer", "a"), ("customer", "z"), ("team", "a")]


counters = st.lists(st.integers(0, 10**12), min_size=6, max_size=6)
rows_drawn = st.dictionaries(st.tuples(st.sampled_from("abc"), st.text("xyz", max_size=2)), counters, max_size=12)


@given(rows_drawn)
def test_dimension_rows_are_the_rows_metric_fields_shapes_in_sorted_order(drawn) -> None:
    groups = list(drawn)
    sums = np.array(list(drawn.values()), dtype=np.int64).reshape(-1, 6)
    rows, total, _ = dimension_rows(groups, sums, ("entity_type", "entity_id"))
    cells = {group: Cell(values) for group, values in drawn.items()}
    assert rows == [
        metric_fields(cell, {"entity_type": group[0], "entity_id": group[1]}) for group, cell in sorted_groups(cells)
    ]
    assert total == Cell.total(cells.values())


def test_dimension_rows_take_the_unchanged_rows_as_they_were_shaped() -> None:
    """After a batch, only the rows whose sums changed are shaped again."""
    usd = 10**9  # nano-dollars

    def matrix(rows: list[tuple[int, int]]) -> np.ndarray:
        return np.array([[events, cost, 0, 0, 0, 0] for events, cost in rows], dtype=np.int64)

    groups = [("customer", "a"), ("customer", "b"), ("customer", "c")]
    first, _, shaped = dimension_rows(groups, matrix([(1, 1 * usd), (1, 2 * usd), (1, 3 * usd)]), ("t", "id"))
    by_id = {row["id"]: row for row in first}

    # b changed, d is new, a and c are as they were (the groups in another order).
    groups = [("customer", "c"), ("customer", "b"), ("customer", "d"), ("customer", "a")]
    sums = matrix([(1, 3 * usd), (2, 7 * usd), (1, usd // 2), (1, 1 * usd)])
    second, total, _ = dimension_rows(groups, sums, ("t", "id"), shaped)
    assert [row["id"] for row in second] == ["b", "c", "a", "d"]
    again = {row["id"]: row for row in second}
    assert again["a"] is by_id["a"]
    assert again["c"] is by_id["c"]
    assert again["b"] is not by_id["b"]
    assert (again["b"]["total_cost"], again["b"]["total_events"]) == (7.0, 2)
    assert (again["d"]["total_cost"], again["d"]["total_events"]) == (0.5, 1)
    assert total[:2] == [5, 11 * usd + usd // 2]

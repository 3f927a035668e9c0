"""The bulk (numpy) arithmetic of api/columns against the plain-int code it stands in for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraprism.api.columns import (
    EXACT_DOUBLE,
    column_totals,
    cost_descending_order,
    mean_ms_column,
    parse_cells,
    signed_sum,
    usd_column,
    within_exact_range,
)
from infraprism.api.shaping import avg_latency_ms, sorted_groups
from infraprism.core.cell import Cell
from infraprism.core.money import nano_to_usd

counter = st.integers(min_value=0, max_value=10**15 - 1)
cell = st.lists(counter, min_size=6, max_size=6)


@given(st.lists(cell, max_size=40))
def test_parse_cells_reads_what_cell_unpack_reads(cells: list[list[int]]) -> None:
    packed = [Cell(counters).pack() for counters in cells]
    parsed = parse_cells(packed)
    assert parsed is not None
    assert parsed.shape == (len(cells), 6)
    assert parsed.tolist() == [Cell.unpack(text) for text in packed]


@pytest.mark.parametrize(
    "packed",
    [
        ["1 2 3 4 5"],  # five counters
        ["1 2 3 4 5 6 7"],  # seven
        ["1 2 3 4 5 6", "1 2 3 4 5"],  # one short cell among good ones
        ["1 2  3 4 5 6"],  # an empty counter
        ["1 2 3 4 5 x"],  # not a digit
        ["1 2 3 4 5 -6"],  # negative
        ["1 2 3 4 5 6.5"],  # fractional
        ["1 1000000000000000 3 4 5 6"],  # 10**15: beyond the exact bound, left to Python ints
        ["1 99999999999999999999999 3 4 5 6"],  # beyond int64 too
        ["1 2 3 4 5", "6 1 2 3 4 5 6"],  # five and seven: the right count of counters overall
        ["1 2 3 4 5 6 "],  # a trailing space: an empty seventh counter
        [" 1 2 3 4 5 6"],  # a leading one
        ["1 2 3 4 5 6", " 1 2 3 4 5"],
        ["1 2 3 4 5 6\n7"],  # a newline inside a cell: five spaces, seven counters
        ["1 2 3 4 5 \u0661"],  # a digit, but not an ASCII one
        ["1 2 3 4 5 +6"],
        [""],
    ],
)
def test_parse_cells_refuses_what_it_cannot_read_exactly(packed: list[str]) -> None:
    assert parse_cells(packed) is None


def test_parse_cells_takes_fifteen_digits_and_no_cells() -> None:
    parsed = parse_cells(["999999999999999 0 0 0 0 1"])
    assert parsed is not None
    assert parsed.tolist() == [[999_999_999_999_999, 0, 0, 0, 0, 1]]
    empty = parse_cells([])
    assert empty is not None
    assert empty.shape == (0, 6)


exact = st.integers(min_value=0, max_value=EXACT_DOUBLE - 1)
# Half-way cases are where rounding goes wrong: make them common.
halves = st.integers(min_value=0, max_value=10**12).map(lambda micro: micro * 1000 + 500)


@given(st.lists(st.one_of(exact, halves), min_size=1, max_size=50))
def test_usd_column_is_nano_to_usd(costs_nano: list[int]) -> None:
    assert usd_column(np.array(costs_nano, dtype=np.int64)) == [nano_to_usd(cost) for cost in costs_nano]


@given(st.lists(st.tuples(exact, st.integers(min_value=0, max_value=10**9)), min_size=1, max_size=50))
def test_mean_ms_column_is_avg_latency_ms(pairs: list[tuple[int, int]]) -> None:
    sums = np.array([latency_sum for latency_sum, _ in pairs], dtype=np.int64)
    counts = np.array([count for _, count in pairs], dtype=np.int64)
    expected = [avg_latency_ms(Cell([0, 0, 0, 0, latency_sum, count])) for latency_sum, count in pairs]
    assert mean_ms_column(sums, counts) == expected


def test_mean_ms_column_ties_go_to_even_and_no_samples_is_null() -> None:
    # 2,250 us over 1 sample is 2.25 ms -> 2.2; 2,350 -> 2.4; no samples -> None.
    means = mean_ms_column(np.array([2_250, 2_350, 0]), np.array([1, 1, 0]))
    assert means == [2.2, 2.4, None]


def test_within_exact_range_bounds() -> None:
    assert within_exact_range(np.array([[EXACT_DOUBLE - 1, -(EXACT_DOUBLE - 1)]], dtype=np.int64))
    assert not within_exact_range(np.array([[EXACT_DOUBLE]], dtype=np.int64))
    assert not within_exact_range(np.array([[-EXACT_DOUBLE]], dtype=np.int64))
    assert within_exact_range(np.zeros((0, 6), dtype=np.int64))


def test_column_totals_are_exact_past_int64() -> None:
    big = np.full((2000, 6), EXACT_DOUBLE - 1, dtype=np.int64)
    big[:, 1] = 7
    assert column_totals(big) == [2000 * (EXACT_DOUBLE - 1), 14_000] + [2000 * (EXACT_DOUBLE - 1)] * 4
    small = np.array([[1, -2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60]], dtype=np.int64)
    assert column_totals(small) == [11, 18, 33, 44, 55, 66]
    assert column_totals(np.zeros((0, 6), dtype=np.int64)) == [0] * 6


buckets = st.lists(
    st.tuples(
        st.dictionaries(st.integers(0, 30), st.lists(st.integers(0, 10**6), min_size=6, max_size=6), max_size=8),
        st.sampled_from([1, -1]),
    ),
    max_size=6,
)


@given(buckets)
def test_signed_sum_is_the_sum_of_cells_per_member(drawn: list[tuple[dict[int, list[int]], int]]) -> None:
    parts = [
        (np.array(list(cells), dtype=np.int64), np.array(list(cells.values()), dtype=np.int64).reshape(-1, 6))
        for cells, _ in drawn
    ]
    present, sums = signed_sum(parts, [sign for _, sign in drawn])
    expected: dict[int, Cell] = {}
    for cells, sign in drawn:
        for member, counters in cells.items():
            expected.setdefault(member, Cell.zero()).add(counters, sign)
    assert present.tolist() == sorted(expected)
    assert sums.tolist() == [expected[member] for member in sorted(expected)]


def test_signed_sum_of_no_buckets_is_empty() -> None:
    present, sums = signed_sum([], [])
    assert present.shape == (0,)
    assert sums.shape == (0, 6)


groups = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), unique=True, max_size=9)


@given(groups, st.data())
def test_cost_descending_order_is_the_order_of_sorted_groups(drawn: list[tuple[str, str]], data) -> None:
    costs = data.draw(st.lists(st.sampled_from([0, 1, 5, 10**12]), min_size=len(drawn), max_size=len(drawn)))
    matrix = np.array([[1, cost, 0, 0, 0, 0] for cost in costs], dtype=np.int64).reshape(-1, 6)
    order = cost_descending_order(matrix, drawn)
    by_group = {group: Cell(row) for group, row in zip(drawn, matrix.tolist(), strict=True)}
    assert [drawn[row] for row in order] == [group for group, _ in sorted_groups(by_group)]

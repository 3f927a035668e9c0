"""Bulk arithmetic for scanned rollup hashes: cells parsed, summed and rounded a column at a time.

A costs-by-entity answer over a month sums 10,000 to 15,000 packed cells and
shapes 10,000 rows. Done one Python int at a time that is most of the request
(about 12 microseconds per row on this project's 2-core machine); with numpy the
arithmetic is a few vector operations and only the row dicts remain per row.

Exactness is kept by refusing, not by approximating: `parse_cells` refuses a
counter of 10**15 or more, the caller sums at most `MAX_SUMMED_BUCKETS`
buckets (so int64 cannot overflow on the way) and checks `within_exact_range`
before the column functions, which are exact below 2**53. On a refusal the
caller uses the plain-int path (`api.sums`), which has no bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from infraprism.core.cell import COST, METRICS, Cell

Matrix = npt.NDArray[np.int64]
MemberIds = npt.NDArray[np.int64]

EXACT_DOUBLE = 2**53
# Buckets a bulk sum may add or subtract: 1,023 counters each below 2**53 sum below 2**63.
MAX_SUMMED_BUCKETS = 1023
_COUNTERS = len(METRICS)
# Every counter below 10**15 < 2**53.
_COUNTER_LIMIT = 10**15
_CELL_BYTES = b"0123456789 \n"
_NO_IDS = np.zeros(0, dtype=np.int64)


def parse_cells(packed: list[str]) -> Matrix | None:
    """Packed cells ("events cost input output latency_sum latency_count") as an (n, 6)
    int64 matrix; None if any cell is not six decimal counters, each below 10**15.

    The cells are parsed by numpy's C text reader in one call, once checks that cost a
    few C passes over the text have shown it holds exactly six counters a cell: five
    single spaces in each, digits only, no empty counter. A value too long for int64
    is read as int64's maximum, so the bound refuses it too.
    """
    if not packed:
        return np.zeros((0, _COUNTERS), dtype=np.int64)
    if set(map(str.count, packed, itertools.repeat(" "))) != {_COUNTERS - 1}:
        return None  # a cell with more or fewer than six counters
    text = "\n".join(packed).encode()
    if text.translate(None, _CELL_BYTES):
        return None  # not a decimal digit (a sign, a point, a letter, non-ASCII)
    if b"  " in text or b" \n" in text or b"\n " in text or text[:1] == b" " or text[-1:] == b" ":
        return None  # an empty counter
    counters = np.fromstring(text, dtype=np.int64, sep=" ")  # any whitespace separates
    if counters.size != _COUNTERS * len(packed) or counters.max() >= _COUNTER_LIMIT:
        return None  # a newline inside a cell; a counter beyond the exact bound
    return counters.reshape(len(packed), _COUNTERS)


def half_even_quotient(numerators: Matrix, denominators: Matrix | int) -> Matrix:
    """numerators / denominators rounded half-even to integers (denominators > 0), as
    `infraprism.core.money.div_round_half_even` does for one pair."""
    quotients, remainders = np.divmod(numerators, denominators)  # floor: 0 <= remainder < denominator
    twice = 2 * remainders
    up = (twice > denominators) | ((twice == denominators) & (quotients % 2 == 1))
    return quotients + up


def usd_column(cost_nano: Matrix) -> list[float]:
    """`nano_to_usd` of each value (half-even to 6 decimals); values below 2**53."""
    micro = half_even_quotient(cost_nano, 1000)
    # An integer below 2**53 is an exact double, and the IEEE division by 1e6 is
    # correctly rounded, as Python's int / int is: the same float.
    return (micro / 1_000_000).tolist()  # type: ignore[no-any-return]


def mean_ms_column(latency_sum_us: Matrix, latency_count: Matrix) -> list[float | None]:
    """`avg_latency_ms` of each row: sum_us / (count * 1000) to one decimal, half-even,
    None for a row without latency samples; values below 2**53."""
    reported = latency_count > 0
    # sum / (count * 1000) to one decimal is the integer sum / (count * 100), divided by 10.
    tenths = half_even_quotient(latency_sum_us, np.where(reported, latency_count * 100, 1))
    means: list[float | None] = (tenths / 10).tolist()
    if not reported.all():
        for index in np.flatnonzero(~reported).tolist():
            means[index] = None
    return means


def within_exact_range(matrix: Matrix) -> bool:
    """Whether every value lies in (-2**53, 2**53), where the column functions above are exact."""
    return not matrix.size or bool(matrix.max() < EXACT_DOUBLE and matrix.min() > -EXACT_DOUBLE)


def signed_sum(buckets: Sequence[tuple[MemberIds, Matrix]], signs: Sequence[int]) -> tuple[MemberIds, Matrix]:
    """The members present in any bucket (sorted ids), and each one's counters summed over
    the buckets, a bucket added or subtracted by its sign. At most `MAX_SUMMED_BUCKETS`
    buckets of counters below 2**53: int64 cannot overflow."""
    present = np.unique(np.concatenate([member_ids for member_ids, _ in buckets])) if buckets else _NO_IDS
    sums = np.zeros((len(present), _COUNTERS), dtype=np.int64)
    for (member_ids, counters), sign in zip(buckets, signs, strict=True):
        rows = np.searchsorted(present, member_ids)
        # Plain fancy-index addition is right: a bucket holds each member once.
        if sign > 0:
            sums[rows] += counters
        else:
            sums[rows] -= counters
    return present, sums


def column_totals(matrix: Matrix) -> Cell:
    """The sum of each column, exact: in int64 where the bound of its values proves it cannot
    overflow, else as Python ints."""
    if not matrix.size:
        return Cell([0] * matrix.shape[1])
    bound = int(np.abs(matrix).max())
    if bound * matrix.shape[0] < 2**63:
        return Cell(int(value) for value in matrix.sum(axis=0))
    return Cell(int(value) for value in matrix.sum(axis=0, dtype=object))


def cost_descending_order(matrix: Matrix, groups: Sequence[tuple[str | None, ...]]) -> list[int]:
    """Row positions by cost descending, equal costs by group (`api.shaping.sorted_groups`'
    order for groups without a null). Sorted by numpy, and only the runs of equal costs
    (rare but for zero) by Python."""
    costs_nano = matrix[:, COST]
    order = np.argsort(-costs_nano, kind="stable")
    ordered = costs_nano[order]
    order_list: list[int] = order.tolist()
    tied = np.flatnonzero(ordered[1:] == ordered[:-1]).tolist()
    run_start = None
    for position, next_position in itertools.zip_longest(tied, tied[1:]):
        if run_start is None:
            run_start = position
        if next_position != position + 1:  # the run of equal costs ends at position + 1
            run = slice(run_start, position + 2)
            order_list[run] = sorted(order_list[run], key=groups.__getitem__)
            run_start = None
    return order_list

"""Bulk arithmetic for scanned rollup hashes: cells parsed, summed and rounded a column at a time.

A costs-by-entity answer over a month sums 10,000 to 15,000 packed cells and
shapes 10,000 rows. Done one Python int at a time that is most of the request
(about 12 microseconds per row on this project's 2-core machine); with numpy the
arithmetic is a few vector operations and only the row dicts remain per row.

Exactness is kept by refusing, not by approximating: `parse_cells` refuses a
counter of 10**15 or more, the caller sums at most `MAX_SUMMED_BUCKETS`
buckets (so int64 cannot overflow on the way) and checks `within_exact_range`
before the column functions, which are exact below 2**53. On a refusal the
caller uses the plain-int path (`api.service`), which has no bound.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from infraprism.core.cell import METRICS

Matrix = npt.NDArray[np.int64]

EXACT_DOUBLE = 2**53
# Buckets a bulk sum may add or subtract: 1,023 counters each below 2**53 sum below 2**63.
MAX_SUMMED_BUCKETS = 1023
_COUNTERS = len(METRICS)
# Every counter below 10**15 < 2**53.
_COUNTER_LIMIT = 10**15
_CELL_BYTES = b"0123456789 \n"


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

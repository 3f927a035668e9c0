"""A rollup cell: the six counters one member holds in one bucket, and their exact arithmetic.

Every counter is an integer (nano-dollars, tokens, microseconds), so sums and
differences are exact however many cells are combined. A `Cell` is a list of the
six in `METRICS` order, so the hot loops index it as cheaply as a plain list.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Metric(StrEnum):
    """The six counters of a cell, in the order a cell (and its packed text) holds them."""

    EVENTS = "e"
    COST_NANO = "c"
    INPUT_TOKENS = "i"
    OUTPUT_TOKENS = "o"
    LATENCY_SUM_US = "l"  # latency in integer microseconds, so the sum is exact
    LATENCY_COUNT = "n"  # events that reported a latency


METRICS: tuple[Metric, ...] = tuple(Metric)

# Each counter's index in a cell.
EVENTS, COST, INPUT, OUTPUT, LATENCY_SUM, LATENCY_COUNT = range(6)

# A batch sums a cell's six counters as one integer, each in a lane of LANE_BITS bits,
# so that adding two such integers adds the six counters at once. No counter of one
# batch reaches 2^96: a cost is at most 10^15 nano-dollars an event, and a batch holds
# far fewer than 10^13 events.
LANE_BITS = 96
_LANE_MASK = (1 << LANE_BITS) - 1


class Cell(list[int]):
    """[events, cost_nano, input_tokens, output_tokens, latency_sum_us, latency_count]."""

    __slots__ = ()

    @classmethod
    def zero(cls) -> Cell:
        return cls((0, 0, 0, 0, 0, 0))

    @classmethod
    def unpack(cls, packed: str | bytes) -> Cell:
        """A stored cell: the six counters as decimal text joined by single spaces.

        Read with or without decode_responses. One field per member rather than one
        per counter: a month of 10,000 entities is 10,000 fields to read, not 60,000,
        and a fifth of the memory (docs/benchmarks.md).
        """
        return cls(map(int, packed.split()))

    @classmethod
    def from_lanes(cls, lanes: int) -> Cell:
        m = _LANE_MASK
        return cls((lanes & m, lanes >> 96 & m, lanes >> 192 & m, lanes >> 288 & m, lanes >> 384 & m, lanes >> 480))

    def pack(self) -> str:
        return f"{self[0]} {self[1]} {self[2]} {self[3]} {self[4]} {self[5]}"

    def lanes(self) -> int:
        """The six counters as one integer of lanes; every counter must be in [0, 2^96)."""
        return self[0] | self[1] << 96 | self[2] << 192 | self[3] << 288 | self[4] << 384 | self[5] << 480

    def add(self, other: Iterable[int], sign: int = 1) -> None:
        """self += other, or self -= other when sign is -1 (a bucket subtracted from a range)."""
        for index, value in enumerate(other):
            self[index] += sign * value

    def negated(self) -> Cell:
        return Cell(-value for value in self)

    def minus(self, other: Cell) -> Cell:
        return Cell(mine - theirs for mine, theirs in zip(self, other, strict=True))

    @classmethod
    def total(cls, cells: Iterable[Cell]) -> Cell:
        out = cls.zero()
        for cell in cells:
            out.add(cell)
        return out

    @property
    def events(self) -> int:
        return self[EVENTS]

    @property
    def cost_nano(self) -> int:
        return self[COST]

    @property
    def input_tokens(self) -> int:
        return self[INPUT]

    @property
    def output_tokens(self) -> int:
        return self[OUTPUT]

    @property
    def latency_sum_us(self) -> int:
        return self[LATENCY_SUM]

    @property
    def latency_count(self) -> int:
        return self[LATENCY_COUNT]


def pack_lanes(lanes: int) -> str:
    """`Cell.pack` of the counters held in `lanes`, without building the Cell."""
    m = _LANE_MASK
    return f"{lanes & m} {lanes >> 96 & m} {lanes >> 192 & m} {lanes >> 288 & m} {lanes >> 384 & m} {lanes >> 480}"


__all__ = [
    "COST",
    "Cell",
    "EVENTS",
    "INPUT",
    "LANE_BITS",
    "LATENCY_COUNT",
    "LATENCY_SUM",
    "METRICS",
    "Metric",
    "OUTPUT",
    "pack_lanes",
]

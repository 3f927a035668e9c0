"""Applies a combined batch to Redis in one atomic Lua call (apply_batch.lua).

The call carries the batch's per-partition offset range; Redis refuses it
unless each range starts at the stored offset, which fences off a consumer
that lost its partition but keeps writing, and makes a crash between "applied"
and "committed" harmless: the batch and its offsets land together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from infraprism.core.keys import QUARTER_LAYOUT, KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.core.text import as_text
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, Retention

APPLY_SCRIPT = files("infraprism.pipeline").joinpath("apply_batch.lua").read_text()
# Marks a store that holds nothing yet as written in the quarter-hour layout (KeyLayout.layout_marker).
CLAIM_LAYOUT = """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('GET', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Fenced:
    """Redis refused the batch: `partition` has `stored_offset` applied, not our from_offset."""

    partition: int
    stored_offset: int


@dataclass(frozen=True, slots=True)
class Duplicates:
    """Redis refused the batch: these (dedupe set key, event_id) were already counted."""

    ids: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Refused:
    """Redis did not apply the batch. `checked`: the script refused it before its first write
    (what it found stored is not what InfraPrism writes); otherwise the script failed (our bug)."""

    reason: str
    checked: bool = True


@dataclass(frozen=True, slots=True)
class StalePrices:
    """Redis refused the batch: it priced events with another price book than `current_version`."""

    current_version: int


@dataclass(frozen=True, slots=True)
class Unmet:
    """Redis refused the batch: a field it requires (`require`) holds `stored`, not what it expects."""

    key: str
    field: str
    stored: str


@dataclass(frozen=True, slots=True)
class Applied:
    pass


ApplyResult = Applied | Fenced | Duplicates | Refused | StalePrices | Unmet

REFUSED_PREFIX = "INFRAPRISM_REFUSED "


class RollupStore:
    """The aggregator's writer: one script call per batch."""

    def __init__(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        *,
        topic: str,
        group: str,
        dedupe_window_days: float,
        retention: Retention | None = None,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(APPLY_SCRIPT)
        self.encoder = BatchEncoder(
            key_prefix=layout.prefix,
            topic=topic,
            group=group,
            dedupe_window_days=dedupe_window_days,
            retention=retention or Retention(),
        )
        self.offsets_key = self.encoder.offsets_key
        self.halted_key = layout.halted_partitions(topic, group)
        self._layout = layout
        self._layout_claimed = False

    async def stored_offsets(self) -> dict[int, int]:
        raw = await self._redis.hgetall(self.offsets_key)
        return {int(partition): int(offset) for partition, offset in raw.items()}

    async def apply(self, rollup: BatchRollup, ranges: list[PartitionRange]) -> ApplyResult:
        """Apply a rollup and its offset ranges atomically."""
        return await self.apply_payload(self.encoder.encode(rollup, ranges))

    async def claim_layout(self) -> bool:
        """Whether every hour this store holds has its quarter-hour fields (and the cube its
        hours). A store with no data yet is marked so here; one written by an earlier build
        is not, until `infraprism rebuild` recomputes it (KeyLayout.layout_marker)."""
        marker = await self._redis.eval(
            CLAIM_LAYOUT, 2, self._layout.layout_marker(), self._layout.projects(), QUARTER_LAYOUT
        )
        self._layout_claimed = True
        return as_text(marker) == QUARTER_LAYOUT if marker is not None else False

    async def apply_payload(self, payload: bytes) -> ApplyResult:
        """Apply a batch already encoded by BatchEncoder (possibly in another process)."""
        if not self._layout_claimed:
            await self.claim_layout()
        try:
            reply = await self._script(keys=[], args=[payload])
        except ResponseError as exc:
            if str(exc).startswith(REFUSED_PREFIX):
                return Refused(str(exc)[len(REFUSED_PREFIX) :])
            raise
        status = as_text(reply[0])
        if status == "ok":
            return Applied()
        if status == "fenced":
            return Fenced(int(reply[1]), int(reply[2]))
        if status == "unmet":
            return Unmet(as_text(reply[1]), as_text(reply[2]), as_text(reply[3]))
        if status == "stale_prices":
            return StalePrices(int(reply[1]))
        pairs = reply[1:]
        return Duplicates(frozenset((as_text(pairs[i]), as_text(pairs[i + 1])) for i in range(0, len(pairs), 2)))


__all__ = [
    "Applied",
    "Duplicates",
    "Fenced",
    "PartitionRange",
    "Refused",
    "Retention",
    "RollupStore",
    "StalePrices",
    "Unmet",
]

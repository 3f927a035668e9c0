"""Applies a combined batch to Redis in one atomic Lua call (apply_batch.lua).

The call carries the batch's per-partition offset range; Redis refuses it
unless each range starts at the stored offset, which fences off a consumer
that lost its partition but keeps writing, and makes a crash between "applied"
and "committed" harmless: the batch and its offsets land together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import time

import orjson
import redis.asyncio as aioredis

from infraprism.core.buckets import Granularity
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup, expire_at, hash_increments

APPLY_SCRIPT = files("pipeline").joinpath("apply_batch.lua").read_text()


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Records [from_offset, to_offset) of one partition."""

    partition: int
    from_offset: int
    to_offset: int


@dataclass(frozen=True, slots=True)
class Fenced:
    """Redis refused the batch: `partition` has `stored_offset` applied, not our from_offset."""

    partition: int
    stored_offset: int


@dataclass(frozen=True, slots=True)
class Duplicates:
    """Redis refused the batch: these (project, event_id) were already counted."""

    ids: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Applied:
    pass


ApplyResult = Applied | Fenced | Duplicates


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each granularity's buckets are kept after they end; None keeps them forever."""

    hour_days: int | None = None
    day_days: int | None = None
    month_days: int | None = None

    def days_for(self, granularity: Granularity) -> int | None:
        return {
            Granularity.HOUR: self.hour_days,
            Granularity.DAY: self.day_days,
            Granularity.MONTH: self.month_days,
        }[granularity]


class RollupStore:
    """The aggregator's writer: one script call per batch."""

    def __init__(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        *,
        topic: str,
        group: str,
        dedupe_window_days: int,
        retention: Retention | None = None,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._script = redis.register_script(APPLY_SCRIPT)
        self.offsets_key = layout.offsets(topic, group)
        self.halted_key = layout.halted_partitions(topic, group)
        self._dedupe_window_days = dedupe_window_days
        self._retention = retention or Retention()

    async def stored_offsets(self) -> dict[int, int]:
        raw = await self._redis.hgetall(self.offsets_key)
        return {int(partition): int(offset) for partition, offset in raw.items()}

    async def apply(
        self, rollup: BatchRollup, ranges: list[PartitionRange], payload: bytes | None = None
    ) -> ApplyResult:
        """Apply atomically. `payload` is `self.payload(rollup, ranges)` when built ahead of time."""
        if payload is None:
            payload = self.payload(rollup, ranges)
        reply = await self._script(keys=[], args=[payload])
        status = _text(reply[0])
        if status == "ok":
            return Applied()
        if status == "fenced":
            return Fenced(int(reply[1]), int(reply[2]))
        dedupe_key_project = {
            self._layout.dedupe(project, day): project for project, day in rollup.event_ids
        }
        pairs = reply[1:]
        return Duplicates(
            frozenset(
                (dedupe_key_project[_text(pairs[i])], _text(pairs[i + 1])) for i in range(0, len(pairs), 2)
            )
        )

    def payload(self, rollup: BatchRollup, ranges: list[PartitionRange]) -> bytes:
        """The JSON document apply_batch.lua reads; every integer as decimal text."""
        layout = self._layout
        retention = self._retention
        # An event day's dedupe set lives for the window after the day ends, and
        # at least for the window after its last write, so a backfill of old
        # days is de-duplicated too.
        not_before = int(time.time()) + self._dedupe_window_days * 86_400
        dedupe = [
            [
                layout.dedupe(project, day),
                str(max(not_before, expire_at(Granularity.DAY, day, self._dedupe_window_days))),
                ids,
            ]
            for (project, day), ids in rollup.event_ids.items()
        ]
        hashes = [
            [
                layout.rollup(project, dimension, granularity, bucket),
                str(expire_at(granularity, bucket, retention.days_for(granularity))),
                hash_increments(members),
            ]
            for (project, dimension, granularity, bucket), members in rollup.cells().items()
        ]
        zsets = [
            [
                layout.leaderboard(project, granularity, bucket, board_type),
                str(expire_at(granularity, bucket, retention.days_for(granularity))),
                [text for member, cost in entities.items() for text in (member, str(cost))],
            ]
            for (project, granularity, bucket, board_type), entities in rollup.leaderboard().items()
        ]
        sessions = [
            [
                layout.session(project, session_id),
                session_id,
                layout.session_index(project),
                layout.session_type_index(project, ""),
                layout.session_index(project) + ":",
                s.entity_type,
                s.entity_id,
                str(s.started_ms),
                str(s.ended_ms),
                str(s.turns),
                str(s.cost_nano),
                str(s.input_tokens),
                str(s.output_tokens),
            ]
            for (project, session_id), s in rollup.sessions.items()
        ]
        sets: list[list[object]] = []
        projects = sorted({project for project, *_ in rollup.groups})
        if projects:
            sets.append([layout.projects(), projects])
        for project, types in rollup.entity_types().items():
            sets.append([layout.entity_types(project), sorted(types)])
        for project, tag_keys in rollup.tag_keys().items():
            if tag_keys:
                sets.append([layout.tag_keys(project), sorted(tag_keys)])
        return orjson.dumps(
            {
                "offsets_key": self.offsets_key,
                "ranges": [[str(r.partition), str(r.from_offset), str(r.to_offset)] for r in ranges],
                "dedupe": dedupe,
                "hashes": hashes,
                "zsets": zsets,
                "sessions": sessions,
                "sets": sets,
            }
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["Applied", "Duplicates", "Fenced", "PartitionRange", "Retention", "RollupStore"]

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

from infraprism.core.buckets import Granularity
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup, expire_at, fields_of

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

    async def apply(self, rollup: BatchRollup, ranges: list[PartitionRange]) -> ApplyResult:
        args = self._script_args(rollup, ranges)
        reply = await self._script(keys=[], args=args)
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

    def _script_args(self, rollup: BatchRollup, ranges: list[PartitionRange]) -> list[str | int]:
        layout = self._layout
        args: list[str | int] = [self.offsets_key, len(ranges)]
        for r in ranges:
            args += [r.partition, r.from_offset, r.to_offset]

        args.append(len(rollup.event_ids))
        for (project, day), ids in rollup.event_ids.items():
            # The dedupe set of an event day lives for the window after that day ends.
            forget_at = expire_at(Granularity.DAY, day, self._dedupe_window_days)
            args += [layout.dedupe(project, day), forget_at, len(ids), *ids]

        cells = rollup.cells()
        args.append(len(cells))
        for (project, dimension, granularity, bucket), members in cells.items():
            fields = list(fields_of(members))
            args += [
                layout.rollup(project, dimension, granularity, bucket),
                expire_at(granularity, bucket, self._retention.days_for(granularity)),
                len(fields),
            ]
            for name, increment in fields:
                args += [name, increment]

        boards = rollup.leaderboard()
        args.append(len(boards))
        for (project, granularity, bucket, board_type), entities in boards.items():
            args += [
                layout.leaderboard(project, granularity, bucket, board_type),
                expire_at(granularity, bucket, self._retention.days_for(granularity)),
                len(entities),
            ]
            for member, cost_nano in entities.items():
                args += [member, cost_nano]

        args.append(len(rollup.sessions))
        for (project, session_id), s in rollup.sessions.items():
            args += [
                layout.session(project, session_id),
                session_id,
                layout.session_index(project),
                layout.session_type_index(project, ""),
                layout.session_index(project) + ":",
                s.entity_type,
                s.entity_id,
                s.started_ms,
                s.ended_ms,
                s.turns,
                s.cost_nano,
                s.input_tokens,
                s.output_tokens,
            ]

        sets: list[tuple[str, list[str]]] = []
        projects = {project for project, *_ in rollup.groups}
        if projects:
            sets.append((layout.projects(), sorted(projects)))
        for project, types in rollup.entity_types().items():
            sets.append((layout.entity_types(project), sorted(types)))
        for project, tag_keys in rollup.tag_keys().items():
            if tag_keys:
                sets.append((layout.tag_keys(project), sorted(tag_keys)))
        args.append(len(sets))
        for key, members in sets:
            args += [key, len(members), *members]
        return args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["Applied", "Duplicates", "Fenced", "PartitionRange", "Retention", "RollupStore"]

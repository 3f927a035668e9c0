"""Encodes a batch for the atomic apply script. Pure and picklable.

The aggregator runs `decode_batch` in a child process: decoding, validating
and encoding are most of its Python work, and in a process of their own they
run on the second core while the parent fetches from Kafka and Redis applies
the previous batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from infraprism.core.buckets import Granularity, labels_for_ms
from infraprism.core.deltas import deltas_of_groups
from infraprism.core.events import CostEvent, InvalidEvent, parse_event
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup, cell_increments, expire_at


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Records [from_offset, to_offset) of one partition."""

    partition: int
    from_offset: int
    to_offset: int


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each granularity's buckets are kept after they end; None keeps them forever.

    Year buckets (leaderboards only) follow the month retention.
    """

    hour_days: int | None = None
    day_days: int | None = None
    month_days: int | None = None

    def days_for(self, granularity: Granularity) -> int | None:
        return {
            Granularity.HOUR: self.hour_days,
            Granularity.DAY: self.day_days,
            Granularity.MONTH: self.month_days,
            Granularity.YEAR: self.month_days,
        }[granularity]


@dataclass(frozen=True, slots=True)
class BatchEncoder:
    """Turns a BatchRollup and its offset ranges into apply_batch.lua's JSON argument."""

    key_prefix: str
    topic: str
    group: str
    dedupe_window_days: int
    retention: Retention = field(default_factory=Retention)

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.key_prefix)

    @property
    def offsets_key(self) -> str:
        return self.layout.offsets(self.topic, self.group)

    def encode(self, rollup: BatchRollup, ranges: list[PartitionRange]) -> bytes:
        """The JSON document apply_batch.lua reads; every integer as decimal text."""
        layout = self.layout
        retention = self.retention
        # An event day's dedupe set lives for the window after the day ends, and
        # at least for the window after its last write, so a backfill of old
        # days is de-duplicated too.
        not_before = int(time.time()) + self.dedupe_window_days * 86_400
        dedupe = [
            [
                layout.dedupe(project, day),
                str(max(not_before, expire_at(Granularity.DAY, day, self.dedupe_window_days))),
                ids,
            ]
            for (project, day), ids in rollup.event_ids.items()
        ]
        # Every rollup and leaderboard key the batch changes, and every day it has events
        # of, per project, for the API's cache validation (KeyLayout.bucket_versions).
        # A set: the days of one month share their month's field.
        touched: dict[str, set[str]] = {}
        for project, day in rollup.event_ids:
            touched.setdefault(project, set()).update(layout.event_day_version_fields(day))
        hashes = []
        for (project, dimension, granularity, bucket), members in rollup.cells().items():
            key = layout.rollup(project, dimension, granularity, bucket)
            hashes.append(
                [key, str(expire_at(granularity, bucket, retention.days_for(granularity))), cell_increments(members)]
            )
            touched.setdefault(project, set()).add(layout.bucket_version_field(project, key))
        zsets = []
        for (project, granularity, bucket, board_type), entities in rollup.leaderboard().items():
            key = layout.leaderboard(project, granularity, bucket, board_type)
            increments = [text for member, cost in entities.items() for text in (member, str(cost))]
            zsets.append([key, str(expire_at(granularity, bucket, retention.days_for(granularity))), increments])
            touched.setdefault(project, set()).add(layout.bucket_version_field(project, key))
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
                "versions": [layout.data_version(project) for project in projects],
                "bucket_versions": [
                    [layout.bucket_versions(project), sorted(fields)] for project, fields in touched.items()
                ],
            }
        )


@dataclass(slots=True)
class DecodedBatch:
    """What the parent needs back from decoding a batch of raw messages."""

    payload: bytes
    events: int
    dead_letters: list[tuple[int, str]]  # (index in the batch, reason)
    duplicates_in_batch: int
    deltas: list[tuple[bytes, bytes]]  # (key, value) for the deltas topic


def decode_batch(
    encoder: BatchEncoder,
    values: list[bytes | None],
    ranges: list[PartitionRange],
    exclude: frozenset[tuple[str, str]] = frozenset(),
) -> DecodedBatch:
    """Validate, de-duplicate, fold and encode one batch of raw event messages.

    `exclude` holds (dedupe set key, event_id) pairs Redis reported as already
    counted; those events are left out.
    """
    layout = encoder.layout
    dead_letters: list[tuple[int, str]] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    rollup = BatchRollup()
    newest: dict[str, int] = {}
    for index, raw in enumerate(values):
        try:
            event: CostEvent = parse_event(raw)
        except InvalidEvent as exc:
            dead_letters.append((index, str(exc)))
            continue
        identity = (event.project_id, event.event_id)
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        if exclude and (layout.dedupe(event.project_id, _day(event.ts_ms)), event.event_id) in exclude:
            continue
        rollup.add(event)
        if event.ts_ms > newest.get(event.project_id, -1):
            newest[event.project_id] = event.ts_ms
    deltas = [(delta.project.encode(), delta.encode()) for delta in deltas_of_groups(rollup.groups, newest)]
    return DecodedBatch(encoder.encode(rollup, ranges), rollup.events, dead_letters, duplicates, deltas)


def _day(ts_ms: int) -> str:
    return labels_for_ms(ts_ms)[1]

"""The detector's processing function: one delta in, anomaly record changes out.

A delta (infraprism/core/deltas.py) names the entity-hours one applied batch
changed and the batch's newest event time (the watermark). For each named
cell the detector reads the current value from the Redis rollups (the
exactly-once source of truth, never the raw events), folds it into the
subject's rolling hourly history, and judges the hour so far and the day so
far against the robust baselines of infraprism/core/baseline.py. What a
finding means for the subject's record is the episode logic of
infraprism/core/episodes.py; records are written through
infraprism/stores/anomaly_store.py, which queues every change for alerting in
the same atomic call. Histories and episodes are kept by a HistoryStore and
an EpisodeStore (in Redis: pipeline/detector_state.py).

The faust worker around it is pipeline/detector.py.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from infraprism.core.anomalies import AnomalyRecord, AnomalyStatus
from infraprism.core.baseline import (
    HOURS_PER_DAY,
    ZERO,
    History,
    HistoryStore,
    HistoryWrite,
    HourValues,
    Kind,
    Thresholds,
    Window,
    judge,
)
from infraprism.core.buckets import Granularity, labels_for_hour
from infraprism.core.cell import COST, EVENTS, LATENCY_COUNT, LATENCY_SUM, Cell
from infraprism.core.deltas import Delta, hour_of_label
from infraprism.core.episodes import (
    TOTAL,
    Change,
    Episode,
    EpisodeStore,
    Sighting,
    episode_field,
    event_time_of,
    on_created,
    on_sighting,
    on_updated,
    recover,
)
from infraprism.core.keys import Dimension, KeyLayout, entity_member
from infraprism.core.money import usd_to_nano
from infraprism.pipeline.detector_state import RedisEpisodes, RedisHistories
from infraprism.settings import Settings
from infraprism.stores import anomaly_store

log = logging.getLogger(__name__)

ENTITY_KINDS = (Kind.COST, Kind.VOLUME, Kind.LATENCY)
TOTAL_KINDS = (Kind.COST,)  # a project as a whole has cost spikes only (docs/anomalies.md)


def thresholds_of(settings: Settings) -> Thresholds:
    return Thresholds(
        baseline_days=settings.detector_baseline_days,
        min_history_days=settings.detector_min_history_days,
        min_relative_change=settings.detector_min_relative_change,
        robust_z=settings.detector_robust_z,
        min_impact_cost_nano=usd_to_nano(settings.detector_min_impact_usd),
        min_excess_events=settings.detector_min_excess_events,
        min_latency_increase_ms=settings.detector_min_latency_increase_ms,
        min_latency_samples=settings.detector_min_latency_samples,
    )


class Detector:
    """One Delta in, record changes out. Keeps its projects' histories and episodes in the given stores."""

    def __init__(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        thresholds: Thresholds,
        *,
        recovery_ms: int,
        histories: HistoryStore | None = None,
        episodes: EpisodeStore | None = None,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._t = thresholds
        self._recovery_ms = recovery_ms
        self._histories = histories if histories is not None else RedisHistories(redis, layout)
        self._episodes = episodes if episodes is not None else RedisEpisodes(redis, layout)

    def forget(self) -> None:
        """Drop the cached state (partitions moved: another worker may have changed it)."""
        self._histories.forget()
        self._episodes.forget()

    async def process(self, delta: Delta) -> int:
        """Read the changed cells, judge them, write changes; returns how many records changed."""
        project = delta.project
        wanted: dict[str, set[int]] = {}
        for entity_type, entity_id, label in delta.cells:
            wanted.setdefault(entity_member(entity_type, entity_id), set()).add(hour_of_label(label))
        if not wanted:
            return 0
        wanted[TOTAL] = set().union(*wanted.values())

        values = await self._read_cells(project, wanted)
        histories = await self._histories.load(project, wanted)
        await self._cover(project, histories, wanted)
        await self._record(project, histories, values)
        episodes = await self._episodes.load(project)

        changed = 0
        dirty: set[str] = set()
        flagged: dict[str, list[int]] = {}
        for member, hours in wanted.items():
            kinds = TOTAL_KINDS if member == TOTAL else ENTITY_KINDS
            history = histories[member]
            for hour in sorted(hours):
                seen_ms = event_time_of(delta.watermark_ms, hour)
                for kind in kinds:
                    finding = judge(history, hour, kind, self._t)
                    if finding is None:
                        continue
                    if finding.window is Window.HOUR and history.flag(hour):
                        flagged.setdefault(member, []).append(hour)
                    field = episode_field(kind, member)
                    changed += await self._on_sighting(
                        Sighting(project, member, hour, seen_ms, finding), episodes, field
                    )
                    dirty.add(field)
        if flagged:
            await self._histories.write(project, [HistoryWrite(m, flagged=hours) for m, hours in flagged.items()])
        # Only now, once every hour of the delta has been judged against the hours before it:
        # a delta of a bulk replay can span weeks, and its first hours need their own baselines.
        await self._expire(project, histories)
        changed += await self._recover(project, delta.watermark_ms, episodes, dirty)
        await self._episodes.save(project, {field: episodes.get(field) for field in dirty})
        return changed

    async def _read_cells(self, project: str, wanted: dict[str, set[int]]) -> dict[tuple[str, int], HourValues]:
        order: list[tuple[str, int]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, hours in wanted.items():
                dimension = Dimension.TOTAL if member == TOTAL else Dimension.ENTITY
                for hour in hours:
                    key = self._layout.rollup(project, dimension, Granularity.HOUR, labels_for_hour(hour)[0])
                    pipe.hget(key, member)
                    order.append((member, hour))
            replies = await pipe.execute()
        values = {}
        for where, packed in zip(order, replies, strict=True):
            if packed is None:
                values[where] = ZERO
            else:
                cell = Cell.unpack(packed)
                values[where] = HourValues(cell[EVENTS], cell[COST], cell[LATENCY_SUM], cell[LATENCY_COUNT])
        return values

    async def _cover(self, project: str, histories: dict[str, History], wanted: dict[str, set[int]]) -> None:
        """Load from the rollups the hours the wanted hours' baselines need and the history lacks.

        A subject the detector has no history for (deployed, or its state reset,
        after data exists) starts from the rollups it already has, so it is judged
        at once instead of after `min_history_days`; a subject that is really new
        finds empty cells. A subject whose history has moved past the wanted hours
        (the project total while a replay's partitions are applied out of step:
        one partition's batch reaches today, the next one's starts weeks ago)
        gets back the hours that had expired, so old hours are judged against
        their own week, not against a hole.
        """
        span = (self._t.baseline_days + 1) * HOURS_PER_DAY
        ranges: dict[str, range] = {}
        for member, hours in wanted.items():
            history = histories[member]
            need = min(hours) - span
            if history.covered_from < 0:
                ranges[member] = range(need, min(hours))
            elif need < history.covered_from:
                ranges[member] = range(need, min(history.covered_from, max(hours)))
        if not ranges:
            return
        found: dict[str, dict[int, HourValues]] = {}
        cells_read = await self._read_cells(project, {member: set(hours) for member, hours in ranges.items()})
        for (member, hour), cell in cells_read.items():
            if cell != ZERO:
                found.setdefault(member, {})[hour] = cell
        writes = []
        for member, hours_read in ranges.items():
            history = histories[member]
            cells = found.get(member, {})
            history.cover(hours_read.start, cells)
            first = history.first_hour if history.first_hour >= 0 else None
            writes.append(HistoryWrite(member, cells, first_hour=first, covered_from=history.covered_from))
        await self._histories.write(project, writes)
        if found:
            log.debug("project %s: %d subjects' hours taken from the rollups", project, len(found))

    async def _record(
        self, project: str, histories: dict[str, History], values: dict[tuple[str, int], HourValues]
    ) -> None:
        """Fold the cells just read into their histories."""
        hours: dict[str, dict[int, HourValues]] = {}
        for (member, hour), cell in values.items():
            histories[member].record(hour, cell)
            hours.setdefault(member, {})[hour] = cell
        await self._histories.write(
            project,
            [HistoryWrite(member, cells, first_hour=histories[member].first_hour) for member, cells in hours.items()],
        )

    async def _expire(self, project: str, histories: dict[str, History]) -> None:
        writes = []
        for member, history in histories.items():
            dropped, unflagged = history.drop_expired(self._t.baseline_days)
            if dropped:
                writes.append(
                    HistoryWrite(member, dropped=dropped, unflagged=unflagged, covered_from=history.covered_from)
                )
        await self._histories.write(project, writes)

    async def _on_sighting(self, sighting: Sighting, episodes: dict[str, Episode], field: str) -> int:
        """Carry out the episode step of one sighting; how many records changed."""
        step = on_sighting(episodes.get(field), sighting, self._recovery_ms)
        changed = 0
        if step.resolve is not None:
            changed += int(await self._apply(sighting.project, step.resolve))
        episode = step.after
        if step.create is not None:
            record = step.create
            created = await anomaly_store.create(self._redis, self._layout, record)
            if created:
                log.info(
                    "anomaly %s: %s %s/%s %s",
                    record.id,
                    record.type,
                    record.entity_type,
                    record.entity_id,
                    record.description,
                )
                changed += 1
                stored: AnomalyRecord | None = record
            else:  # a replayed delta found this episode already recorded
                stored = await anomaly_store.get(self._redis, self._layout, record.project, record.id)
            episode = on_created(step, stored)
        elif step.update is not None:
            applied = await self._apply(sighting.project, step.update)
            episode = on_updated(step, applied)
            changed += int(applied)
        if episode is None:
            episodes.pop(field, None)
        else:
            episodes[field] = episode
        return changed

    async def _recover(self, project: str, watermark_ms: int, episodes: dict[str, Episode], dirty: set[str]) -> int:
        """Close the episodes not anomalous for the recovery window; resolve their records if active."""
        changed = 0
        for field, episode in list(episodes.items()):
            change = recover(episode, watermark_ms, self._recovery_ms)
            if change is None:
                continue
            changed += int(await self._apply(project, change))
            del episodes[field]
            dirty.add(field)
        return changed

    async def _apply(self, project: str, change: Change) -> bool:
        """Apply an episode's change to its record if the record is still active; whether it was."""
        applied, _ = await anomaly_store.transition(
            self._redis, self._layout, project, change.anomaly_id, (AnomalyStatus.ACTIVE,), change.fields
        )
        return applied

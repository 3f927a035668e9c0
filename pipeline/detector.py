"""`infraprism detector`: a faust-streaming app that turns rollup changes into anomaly records.

It consumes the aggregator's change feed (infraprism/core/deltas.py): one
message per applied batch and project naming the entity-hours that changed
and the batch's newest event time (the watermark). For each named cell it
reads the current value from the Redis rollups (the exactly-once source of
truth, never the raw events), folds it into the subject's rolling hourly
history (kept in Redis, cached here), and judges the hour so far and the day
so far against the robust baselines of infraprism/core/baseline.py.

Per (project, subject, type) there is at most one open episode. It opens an
anomaly record, updates it as the spike grows, and resolves it once the
subject has not been anomalous for the recovery window (event time, driven
by the watermark). A dismissed record is never touched again by its episode.
Every record change is queued atomically on an outbox that the leader's
timer delivers (pipeline/alerts.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infraprism.core.baseline import (
    HOURS_PER_DAY,
    MS_PER_HOUR,
    ZERO,
    Finding,
    History,
    HourValues,
    Kind,
    Thresholds,
    Window,
    anomaly_id,
    describe,
    event_time_of,
    judge,
    severity,
)
from infraprism.core.buckets import Granularity
from infraprism.core.cell import COST, EVENTS, LATENCY_COUNT, LATENCY_SUM, Cell
from infraprism.core.deltas import Delta
from infraprism.core.keys import SEP, Dimension, KeyLayout, entity_member
from infraprism.core.money import nano_to_usd, usd_to_nano
from infraprism.pipeline.alerts import Channel, KafkaChannel, Notifier, WebhookChannel
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from infraprism.stores.anomaly_store import AnomalyRecord, AnomalyStatus

log = logging.getLogger(__name__)

PROJECT_ENTITY_TYPE = "project"  # entity_type of a project-wide anomaly; entity_id is the project
TOTAL = ""  # the member of the project's total in the rollups; the subject of project-wide spikes
ENTITY_KINDS = (Kind.COST, Kind.VOLUME, Kind.LATENCY)
TOTAL_KINDS = (Kind.COST,)
MAX_CACHED_SUBJECTS = 200_000  # histories kept in memory (about 5 kB each when dense)
MS_PER_DAY = HOURS_PER_DAY * MS_PER_HOUR
GROWTH_STEP = 0.10  # an open anomaly is updated when its value grows by 10% or its severity rises


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


def hour_index_of(label: str) -> int:
    """Epoch hours of an hour label YYYYMMDDHH."""
    moment = datetime(int(label[:4]), int(label[4:6]), int(label[6:8]), int(label[8:10]), tzinfo=UTC)
    return int(moment.timestamp()) // 3600


def hour_label_of(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, tz=UTC).strftime("%Y%m%d%H")


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_units(kind: Kind, value: float) -> float:
    """Metric units -> the record's: USD (6 decimals) for cost, events, ms (1 decimal)."""
    if kind is Kind.COST:
        return nano_to_usd(round(value))
    if kind is Kind.VOLUME:
        return float(round(value))
    return round(value, 1)


@dataclass(slots=True)
class Episode:
    """The open anomaly of one (subject, type): what was last written, when it was last seen."""

    anomaly_id: str
    window: str
    actual: float  # metric units, the largest value written to the record
    severity: str
    last_anomalous_ms: int

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Episode:
        return cls(**orjson.loads(raw))


class Detector:
    """The processing function: one Delta in, record changes out. Owns its projects' state."""

    def __init__(self, redis: aioredis.Redis, layout: KeyLayout, thresholds: Thresholds, *, recovery_ms: int) -> None:
        self._redis = redis
        self._layout = layout
        self._t = thresholds
        self._recovery_ms = recovery_ms
        self._histories: dict[tuple[str, str], History] = {}
        self._episodes: dict[str, dict[str, Episode]] = {}

    def forget(self) -> None:
        """Drop the caches (partitions moved: another worker may have changed the state)."""
        self._histories.clear()
        self._episodes.clear()

    # --- keys ------------------------------------------------------------------------------------
    def _history_key(self, project: str, member: str) -> str:
        return self._layout.detector_state(project, "ht" if member == TOTAL else f"h:{member}")

    def _episodes_key(self, project: str) -> str:
        return self._layout.detector_state(project, "episodes")

    # --- processing ------------------------------------------------------------------------------
    async def process(self, delta: Delta) -> int:
        """Read the changed cells, judge them, write changes; returns how many records changed."""
        project = delta.project
        wanted: dict[str, set[int]] = {}
        for entity_type, entity_id, label in delta.cells:
            wanted.setdefault(entity_member(entity_type, entity_id), set()).add(hour_index_of(label))
        if not wanted:
            return 0
        wanted[TOTAL] = set().union(*wanted.values())

        values = await self._read_cells(project, wanted)
        histories = await self._histories_of(project, wanted)
        await self._cover(project, histories, wanted)
        await self._store_history(project, histories, values)
        episodes = await self._episodes_of(project)

        changed = 0
        dirty: set[str] = set()
        flagged: list[tuple[str, int]] = []
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
                        flagged.append((member, hour))
                    field = f"{kind.value}{SEP}{member}"
                    changed += await self._on_finding(project, member, hour, seen_ms, finding, episodes, field)
                    dirty.add(field)
        if flagged:
            async with self._redis.pipeline(transaction=False) as pipe:
                for member, hour in flagged:
                    pipe.hset(self._history_key(project, member), f"x{hour}", "1")
                await pipe.execute()
        # Only now, once every hour of the delta has been judged against the hours before it:
        # a delta of a bulk replay can span weeks, and its first hours need their own baselines.
        await self._expire(project, histories)
        changed += await self._recover(project, delta.watermark_ms, episodes, dirty)
        await self._store_episodes(project, episodes, dirty)
        return changed

    async def _read_cells(self, project: str, wanted: dict[str, set[int]]) -> dict[tuple[str, int], HourValues]:
        order: list[tuple[str, int]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, hours in wanted.items():
                dimension = Dimension.TOTAL if member == TOTAL else Dimension.ENTITY
                for hour in hours:
                    key = self._layout.rollup(project, dimension, Granularity.HOUR, hour_label_of(hour))
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

    async def _histories_of(self, project: str, wanted: dict[str, set[int]]) -> dict[str, History]:
        missing = [m for m in wanted if (project, m) not in self._histories]
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for member in missing:
                    pipe.hgetall(self._history_key(project, member))
                raws = await pipe.execute()
            for member, raw in zip(missing, raws, strict=True):
                self._histories[(project, member)] = _parse_history(raw)
        found = {}
        for member in wanted:
            # Re-insert: the dict's order is then least recently used first.
            found[member] = self._histories[(project, member)] = self._histories.pop((project, member))
        # Redis holds every history (written through), so forgetting the coldest ones is safe.
        while len(self._histories) > MAX_CACHED_SUBJECTS:
            del self._histories[next(iter(self._histories))]
        return found

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
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, hours_to_read in ranges.items():
                history = histories[member]
                cells = found.get(member, {})
                if cells and (history.first_hour < 0 or min(cells) < history.first_hour):
                    history.first_hour = min(cells)
                    history.stats_cache.clear()
                for hour, cell in cells.items():
                    history.put(hour, cell)
                history.covered_from = hours_to_read.start
                mapping: dict[Any, Any] = {str(hour): ",".join(map(str, cell)) for hour, cell in cells.items()}
                mapping["covered"] = str(history.covered_from)
                if history.first_hour >= 0:
                    mapping["first"] = str(history.first_hour)
                pipe.hset(self._history_key(project, member), mapping=mapping)
            await pipe.execute()
        if found:
            log.debug("project %s: %d subjects' hours taken from the rollups", project, len(found))

    async def _store_history(
        self, project: str, histories: dict[str, History], values: dict[tuple[str, int], HourValues]
    ) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for (member, hour), cell in values.items():
                history = histories[member]
                if history.first_hour < 0:
                    history.first_hour = hour
                history.put(hour, cell)
                pipe.hset(
                    self._history_key(project, member),
                    mapping={str(hour): ",".join(map(str, cell)), "first": str(history.first_hour)},
                )
            await pipe.execute()

    async def _expire(self, project: str, histories: dict[str, History]) -> None:
        """Drop the hours no baseline of the subject's newest hour needs any more."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for member, history in histories.items():
                if not history.hours:
                    continue
                expired = history.expired(max(history.hours), self._t.baseline_days)
                if expired:
                    flagged = [f"x{hour}" for hour in expired if hour in history.flagged]
                    history.drop(expired)
                    key = self._history_key(project, member)
                    pipe.hdel(key, *map(str, expired), *flagged)
                    pipe.hset(key, "covered", str(history.covered_from))
            await pipe.execute()

    async def _episodes_of(self, project: str) -> dict[str, Episode]:
        episodes = self._episodes.get(project)
        if episodes is None:
            raw = await self._redis.hgetall(self._episodes_key(project))
            episodes = self._episodes[project] = {_text(k): Episode.decode(v) for k, v in raw.items()}
        return episodes

    async def _store_episodes(self, project: str, episodes: dict[str, Episode], dirty: set[str]) -> None:
        if not dirty:
            return
        key = self._episodes_key(project)
        async with self._redis.pipeline(transaction=True) as pipe:
            for field in dirty:
                episode = episodes.get(field)
                if episode is None:
                    pipe.hdel(key, field)
                else:
                    pipe.hset(key, field, episode.encode())
            await pipe.execute()

    async def _on_finding(
        self,
        project: str,
        member: str,
        hour: int,
        seen_ms: int,
        finding: Finding,
        episodes: dict[str, Episode],
        field: str,
    ) -> int:
        episode = episodes.get(field)
        closed = 0
        if episode is not None and self._ended_before(episode, finding, seen_ms):
            # A delta of a bulk replay can span weeks: the episode ended (recovered) before
            # this hour, so this is a new spike, not the old one growing.
            closed = await self._resolve(project, episode, seen_ms)
            del episodes[field]
            episode = None
        if episode is None:
            return closed + await self._open(project, member, hour, seen_ms, finding, episodes, field)
        episode.last_anomalous_ms = max(episode.last_anomalous_ms, seen_ms)
        rising = _rank(severity(finding.ratio)) > _rank(episode.severity)
        if finding.window != episode.window or not (finding.actual >= episode.actual * (1 + GROWTH_STEP) or rising):
            return 0
        kind = finding.kind
        changes = {
            "severity": severity(finding.ratio).value,
            "description": describe(finding),
            "expected_value": str(to_units(kind, finding.expected)),
            "actual_value": str(to_units(kind, finding.actual)),
            "updated_ms": str(seen_ms),
        }
        updated, record = await anomaly_store.transition(
            self._redis, self._layout, project, episode.anomaly_id, (AnomalyStatus.ACTIVE,), changes
        )
        # Dismissed (or gone): the episode stays open, so the spike is not raised again.
        episode.actual = max(episode.actual, finding.actual)
        episode.severity = changes["severity"] if updated else episode.severity
        return int(updated)

    def _ended_before(self, episode: Episode, finding: Finding, seen_ms: int) -> bool:
        """Whether `episode` had recovered before `seen_ms` (event time within one delta).

        A day-window episode lasts its whole UTC day: the day so far never falls
        back, and a sparse subject's hours with events can be hours apart.
        """
        if seen_ms - episode.last_anomalous_ms < self._recovery_ms:
            return False
        same_day = seen_ms // MS_PER_DAY == episode.last_anomalous_ms // MS_PER_DAY
        return not (finding.window is Window.DAY and episode.window == Window.DAY.value and same_day)

    async def _open(
        self,
        project: str,
        member: str,
        hour: int,
        seen_ms: int,
        finding: Finding,
        episodes: dict[str, Episode],
        field: str,
    ) -> int:
        if member == TOTAL:
            entity_type, entity_id = PROJECT_ENTITY_TYPE, project
        else:
            entity_type, entity_id = member.split(SEP, 1)
        kind = finding.kind
        level = severity(finding.ratio)
        record = AnomalyRecord(
            id=anomaly_id(project, kind, entity_type, entity_id, hour),
            project=project,
            detected_at=rfc3339(seen_ms),
            detected_ms=seen_ms,
            entity_type=entity_type,
            entity_id=entity_id,
            type=kind.value,
            severity=level.value,
            description=describe(finding),
            expected_value=to_units(kind, finding.expected),
            actual_value=to_units(kind, finding.actual),
            status=AnomalyStatus.ACTIVE.value,
            updated_ms=seen_ms,
            version=1,
        )
        created = await anomaly_store.create(self._redis, self._layout, record)
        if not created:
            # A replayed delta found an episode that was already recorded: adopt it, unless it
            # has ended (a later delta resolved it; replaying will resolve it again).
            existing = await anomaly_store.get(self._redis, self._layout, project, record.id)
            if existing is None or existing.status == AnomalyStatus.RESOLVED:
                return 0
            record = existing
        else:
            log.info(
                "anomaly %s: %s %s/%s %s",
                record.id,
                record.type,
                entity_type,
                entity_id,
                record.description,
            )
        episodes[field] = Episode(record.id, finding.window.value, finding.actual, record.severity, seen_ms)
        return int(created)

    async def _recover(self, project: str, watermark_ms: int, episodes: dict[str, Episode], dirty: set[str]) -> int:
        """Close episodes not anomalous for the recovery window; resolve their records if active."""
        changed = 0
        for field, episode in list(episodes.items()):
            if watermark_ms - episode.last_anomalous_ms < self._recovery_ms:
                continue
            changed += await self._resolve(project, episode, watermark_ms)
            del episodes[field]
            dirty.add(field)
        return changed

    async def _resolve(self, project: str, episode: Episode, at_ms: int) -> int:
        """Resolve an episode's record if it is still active; 1 if it changed."""
        updated, _ = await anomaly_store.transition(
            self._redis,
            self._layout,
            project,
            episode.anomaly_id,
            (AnomalyStatus.ACTIVE,),
            {"status": AnomalyStatus.RESOLVED.value, "updated_ms": str(at_ms)},
        )
        return int(updated)


_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def _rank(level: str) -> int:
    return _SEVERITY_RANK.get(str(level), 0)


def _parse_history(raw: dict[Any, Any]) -> History:
    text = {_text(k): _text(v) for k, v in raw.items()}
    history = History(first_hour=int(text.pop("first", "-1")))
    covered = text.pop("covered", None)
    for name, cell in text.items():
        if name.startswith("x"):
            history.flagged.add(int(name[1:]))
        else:
            history.hours[int(name)] = HourValues(*map(int, cell.split(",")))
    if covered is not None:
        history.covered_from = int(covered)
    elif history.hours:
        # Written before the field existed: what is held is what is known.
        history.covered_from = min(history.hours)
    return history


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the faust application ----------------------------------------------------------------------


class Runtime:
    """The clients of one worker, made when the app starts and closed when it stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: aioredis.Redis | None = None
        self.detector: Detector | None = None
        self.notifier: Notifier | None = None
        self.webhook: WebhookChannel | None = None
        self._lock = asyncio.Lock()

    async def start(self, send: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        async with self._lock:
            if self.redis is not None:
                return
            s = self.settings
            redis = aioredis.Redis.from_url(s.redis_dsn())
            await redis.ping()  # a bad address fails loudly, at start
            layout = KeyLayout(s.key_prefix)
            self.detector = Detector(redis, layout, thresholds_of(s), recovery_ms=s.detector_recovery_minutes * 60_000)
            channels: list[Channel] = [KafkaChannel(send)]
            if s.alert_webhook_url:
                secret = s.alert_webhook_secret.get_secret_value().encode() if s.alert_webhook_secret else None
                self.webhook = WebhookChannel(s.alert_webhook_url, secret)
                channels.append(self.webhook)
            self.notifier = Notifier(redis, layout, channels, max_backoff_s=s.alert_retry_max_seconds)
            self.redis = redis

    async def stop(self) -> None:
        if self.webhook is not None:
            await self.webhook.close()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None


MERGE_MAX_DELTAS = 200
MERGE_WITHIN_S = 0.05


def merge(deltas: list[Delta]) -> list[Delta]:
    """Merge a project's consecutive deltas whose watermarks lie in the same event hour.

    The union of their cells with the newest watermark: each cell is read and
    judged once. Deltas of different hours stay apart, so event-time decisions
    (detected_at, recovery) keep their hourly resolution during a replay.
    """
    out: list[Delta] = []
    open_groups: dict[str, tuple[int, int, set[tuple[str, str, str]]]] = {}  # project -> (hour, wm, cells)

    def flush(project: str) -> None:
        _, watermark, cells = open_groups.pop(project)
        out.append(Delta(project, watermark, tuple(sorted(cells))))

    for delta in deltas:
        hour = delta.watermark_ms // MS_PER_HOUR
        group = open_groups.get(delta.project)
        if group is not None and group[0] != hour:
            flush(delta.project)
            group = None
        if group is None:
            open_groups[delta.project] = (hour, delta.watermark_ms, set(delta.cells))
        else:
            group[2].update(delta.cells)
            open_groups[delta.project] = (hour, max(group[1], delta.watermark_ms), group[2])
    for project in list(open_groups):
        flush(project)
    return out


async def process_until_done(detector: Detector, delta: Delta, where: str) -> None:
    """Process a delta, retrying while Redis is unreachable: a delta is never skipped.

    Retrying is safe: processing is idempotent (cells are re-read, records are
    only changed when their values do).
    """
    delay_s = 0.2
    while True:
        try:
            await detector.process(delta)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("delta at %s: Redis unavailable (%r), retrying in %.1fs", where, exc, delay_s)
            detector.forget()  # what was half-written is re-read from Redis
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)


def build_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The detector's faust app: an agent on the deltas topic, the alert timer on the leader."""
    app = faust.App(
        settings.detector_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_rebalance_timeout=10.0,
        datadir=os.path.join(tempfile.gettempdir(), f"infraprism-detector-{settings.detector_group}"),
    )
    runtime = Runtime(settings)
    deltas = app.topic(settings.deltas_topic, value_serializer="raw", key_serializer="raw")
    anomalies = app.topic(settings.anomalies_topic, value_serializer="raw", key_serializer="raw")

    async def publish(key: bytes, value: bytes) -> None:
        pending = await anomalies.send(key=key, value=value)
        await pending  # the broker's acknowledgement, before the outbox cursor moves

    @app.agent(deltas)
    async def detect(stream: Any) -> None:
        await runtime.start(publish)
        assert runtime.detector is not None
        # When the detector lags (a replay, a burst), the deltas waiting for it are merged per
        # project, so a cell changed by many batches is read and judged once.
        async for events in stream.take_events(MERGE_MAX_DELTAS, within=MERGE_WITHIN_S):
            decoded: list[Delta] = []
            for event in events:
                where = f"{event.message.topic}[{event.message.partition}]@{event.message.offset}"
                try:
                    delta = Delta.decode(event.value)
                    for _, _, label in delta.cells:
                        hour_index_of(label)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    # Only the aggregator writes this topic; a bad message is a bug to see, not to stop on.
                    log.error("undecodable delta at %s skipped: %r", where, exc)
                    continue
                decoded.append(delta)
            for delta in merge(decoded):
                await process_until_done(runtime.detector, delta, delta.project)

    @app.timer(settings.alert_poll_seconds, on_leader=True)
    async def deliver() -> None:
        await runtime.start(publish)
        assert runtime.notifier is not None
        try:
            await runtime.notifier.drain()
        except RedisError as exc:
            log.warning("alert delivery paused, Redis unavailable: %r", exc)  # the next tick retries

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        if runtime.detector is not None:
            runtime.detector.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: Any, **kwargs: Any) -> None:
        await runtime.stop()

    return app, runtime


def main(settings: Settings) -> None:
    """`infraprism detector`: run the faust worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            [settings.deltas_topic, settings.anomalies_topic],
            settings.topic_partitions,
        )
    )
    app, _ = build_app(settings)
    worker = Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()


async def _dismiss(settings: Settings, anomaly_id: str) -> dict[str, Any] | None:
    redis = aioredis.Redis.from_url(settings.redis_dsn())
    try:
        record = await anomaly_store.dismiss(redis, KeyLayout(settings.key_prefix), anomaly_id)
    finally:
        await redis.aclose()
    return None if record is None else {**record.public(), "project": record.project, "version": record.version}


def dismiss_cli(settings: Settings, anomaly_id: str) -> dict[str, Any] | None:
    """`infraprism anomalies dismiss ID`: the dismissed record, or None when there is no such id."""
    return asyncio.run(_dismiss(settings, anomaly_id))

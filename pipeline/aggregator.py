"""The aggregation worker: Kafka cost events -> exact Redis rollups, exactly once.

A plain aiokafka consumer in a consumer group (measured ~4x faster than a
faust agent here; see docs/benchmarks.md). Per batch:

1. decode and validate every message; bad ones go to the dead-letter topic
   (and that produce is awaited *before* the batch is applied, so a crash can
   only re-send a dead letter, never lose one);
2. fold the good events into a BatchRollup (pure, in memory);
3. apply the rollup together with each partition's offset range in one atomic
   Redis call, which refuses it unless the range starts at the stored offset.

Redis, not Kafka, holds the authoritative offsets: on assignment the worker
seeks to them; Kafka commits serve lag monitoring only. docs/exactly-once.md
has the whole argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from infraprism.core.deltas import deltas_of_groups
from infraprism.core.events import CostEvent, InvalidEvent, parse_event
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.settings import Settings
from pipeline.deadletter import dead_letter_record
from pipeline.metrics import AggregatorMetrics
from pipeline.store import Applied, Duplicates, Fenced, PartitionRange, Retention, RollupStore
from pipeline.topics import ensure_topics

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0


@dataclass(slots=True)
class PreparedBatch:
    """One getmany() worth of messages, decoded and validated."""

    ranges: list[PartitionRange] = field(default_factory=list)
    records: list[ConsumerRecord] = field(default_factory=list)
    events: list[CostEvent] = field(default_factory=list)
    dead_letters: list[tuple[str, ConsumerRecord]] = field(default_factory=list)
    oldest_produce_ms: int | None = None
    messages: int = 0
    duplicates_in_batch: int = 0
    rollup: BatchRollup | None = None
    payload: bytes | None = None  # the apply script's argument, built while the previous batch applies


class Aggregator:
    """Consumes the events topic and keeps the Redis aggregates exact.

    `stop_at_end=True` (used by `infraprism rebuild`) reads every partition from
    the stored offsets up to the log end seen at start, without a consumer
    group, and returns.
    """

    def __init__(self, settings: Settings, *, stop_at_end: bool = False) -> None:
        self.settings = settings
        self.layout = KeyLayout(settings.key_prefix)
        self.metrics = AggregatorMetrics()
        self.stop_at_end = stop_at_end
        self._expected: dict[TopicPartition, int] = {}  # next offset Redis holds, per owned partition
        # Next offset to prepare: ahead of _expected while a batch is in flight.
        self._prepared: dict[TopicPartition, int] = {}
        self._inflight: asyncio.Task[tuple[PreparedBatch, BatchRollup | None]] | None = None
        self._halted: set[TopicPartition] = set()
        self._last_commit = 0.0
        self._redis: aioredis.Redis | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._store: RollupStore | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s.kafka_bootstrap, [s.events_topic, s.dlq_topic, s.deltas_topic], s.topic_partitions)
        self._redis = aioredis.Redis.from_url(s.redis_dsn())
        await self._redis.ping()  # a bad address fails here, loudly
        self._store = RollupStore(
            self._redis,
            self.layout,
            topic=s.events_topic,
            group=s.aggregator_group,
            dedupe_window_days=s.dedupe_window_days,
            retention=Retention(s.retention_hour_days, s.retention_day_days, s.retention_month_days),
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=None if self.stop_at_end else s.aggregator_group,
            enable_auto_commit=False,
            # Positions come from Redis; an out-of-range position is an error we handle, never a guess.
            auto_offset_reset="none",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        await self._consumer.start()
        if self.stop_at_end:
            partitions = self._consumer.partitions_for_topic(s.events_topic) or set()
            tps = [TopicPartition(s.events_topic, p) for p in sorted(partitions)]
            self._consumer.assign(tps)
            await self._on_assigned(tps)
        else:
            self._consumer.subscribe([s.events_topic], listener=_Rebalance(self))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._drain()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()
        if self._redis is not None:
            await self._redis.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set (or, with stop_at_end, until caught up)."""
        await self.start()
        try:
            end_offsets = await self._end_offsets() if self.stop_at_end else {}
            while not stop.is_set():
                if self.stop_at_end and all(self._expected.get(tp, 0) >= end for tp, end in end_offsets.items()):
                    return
                await self.step()
        finally:
            await self.stop()

    # ---- one batch ------------------------------------------------------------------------

    async def step(self) -> int:
        """Fetch and validate one batch, then apply it while the next one is prepared.

        Redis executes batch N while Python decodes batch N+1: on two cores the
        two overlap. Order is kept (N is finished before N+1 is sent), and the
        fence makes a batch prepared on top of a refused one refused too.
        """
        assert self._consumer is not None
        try:
            fetched = await self._consumer.getmany(
                timeout_ms=self.settings.batch_max_wait_ms or 1, max_records=self.settings.batch_max_events
            )
        except OffsetOutOfRangeError as exc:
            await self._drain()
            await self._out_of_range(exc)
            return 0
        batch = self._slice(fetched) if fetched else None
        if batch is not None and batch.ranges:
            # Decoding runs in a thread so the event loop keeps flushing the
            # previous batch's (multi-MB) script call to Redis meanwhile.
            await asyncio.to_thread(self._decode, batch)
        await self._drain()
        if batch is None or not batch.ranges:
            await self._commit_for_lag()
            return 0
        await self._dead_letter(batch)
        self.metrics.events_duplicate.inc(batch.duplicates_in_batch)
        self._inflight = asyncio.create_task(self._apply(batch))
        return batch.messages

    async def _drain(self) -> None:
        """Finish the batch in flight, if any."""
        if self._inflight is None:
            return
        inflight, self._inflight = self._inflight, None
        batch, rollup = await inflight
        if rollup is not None:
            self._observe(batch)
            await self._publish_deltas(batch, rollup)
            await self._commit_for_lag()

    def _slice(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> PreparedBatch:
        """Take the records that follow what is already prepared, per owned partition."""
        batch = PreparedBatch()
        for tp, records in fetched.items():
            expected = self._prepared.get(tp)
            if expected is None or tp in self._halted:
                continue  # revoked or halted meanwhile: not ours to apply
            records = [r for r in records if r.offset >= expected]
            if not records:
                continue
            batch.ranges.append(PartitionRange(tp.partition, expected, records[-1].offset + 1))
            batch.records.extend(records)
            self._prepared[tp] = records[-1].offset + 1
        return batch

    def _decode(self, batch: PreparedBatch) -> None:
        """Validate, fold and encode a batch. Touches nothing but `batch` (runs in a thread)."""
        for record in batch.records:
            if batch.oldest_produce_ms is None or record.timestamp < batch.oldest_produce_ms:
                batch.oldest_produce_ms = record.timestamp
            try:
                batch.events.append(parse_event(record.value))
            except InvalidEvent as exc:
                batch.dead_letters.append((str(exc), record))
        batch.messages = len(batch.records)
        batch.events, batch.duplicates_in_batch = unique_events(batch.events)
        batch.rollup = BatchRollup()
        for event in batch.events:
            batch.rollup.add(event)
        assert self._store is not None
        batch.payload = self._store.payload(batch.rollup, batch.ranges)

    async def _dead_letter(self, batch: PreparedBatch) -> None:
        """Produce every rejected message to the DLQ and wait for the broker's ack."""
        if not batch.dead_letters:
            return
        assert self._producer is not None
        futures = []
        for reason, record in batch.dead_letters:
            log.warning(
                "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
            )
            value = dead_letter_record(
                reason, record.value, topic=record.topic, partition=record.partition,
                offset=record.offset, key=record.key,
            )
            futures.append(await self._producer.send(self.settings.dlq_topic, value=value, key=record.key))
            kind = reason.split(":", 1)[0]
            self.metrics.events_dead_lettered.labels(reason_kind=kind[:40]).inc()
        await asyncio.gather(*futures)

    async def _apply(self, batch: PreparedBatch) -> tuple[PreparedBatch, BatchRollup | None]:
        """Apply the batch atomically; the rollup is None when Redis fenced it off (we re-seek)."""
        assert self._store is not None and batch.rollup is not None
        events, rollup, payload = batch.events, batch.rollup, batch.payload
        while True:
            started = time.perf_counter()
            result = await self._store.apply(rollup, batch.ranges, payload)
            self.metrics.apply_seconds.observe(time.perf_counter() - started)
            if isinstance(result, Applied):
                for r in batch.ranges:
                    tp = TopicPartition(self.settings.events_topic, r.partition)
                    if tp in self._expected:  # still ours after any rebalance meanwhile
                        self._expected[tp] = r.to_offset
                self.metrics.events_applied.inc(rollup.events)
                return batch, rollup
            if isinstance(result, Duplicates):
                self.metrics.events_duplicate.inc(len(result.ids))
                events = [e for e in events if (e.project_id, e.event_id) not in result.ids]
                rollup = BatchRollup()
                for event in events:
                    rollup.add(event)
                payload = None
                continue
            assert isinstance(result, Fenced)
            self.metrics.batches_fenced.inc()
            log.warning(
                "batch fenced: partition %d has offset %d applied already; re-seeking to Redis offsets",
                result.partition, result.stored_offset,
            )
            await self._seek_to_stored(list(self._expected))
            return batch, None

    def _observe(self, batch: PreparedBatch) -> None:
        self.metrics.batch_size.observe(batch.messages)
        if batch.oldest_produce_ms is not None:
            self.metrics.freshness_seconds.observe(max(0.0, time.time() - batch.oldest_produce_ms / 1000))
        assert self._consumer is not None
        for tp, expected in self._expected.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(max(0, highwater - expected))

    async def _publish_deltas(self, batch: PreparedBatch, rollup: BatchRollup) -> None:
        """Tell the detector which entity-hours changed. At-least-once; not awaited per message."""
        assert self._producer is not None
        if not rollup.groups:
            return
        newest: dict[str, int] = {}
        for event in batch.events:
            if event.ts_ms > newest.get(event.project_id, -1):
                newest[event.project_id] = event.ts_ms
        for delta in deltas_of_groups(rollup.groups, newest):
            await self._producer.send(self.settings.deltas_topic, value=delta.encode(), key=delta.project.encode())

    async def _commit_for_lag(self) -> None:
        """Commit positions to Kafka for lag monitoring only; Redis holds the truth."""
        if self.stop_at_end or time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = time.monotonic()
        assert self._consumer is not None
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in self._expected.items()}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            log.info("lag-monitoring commit skipped: %s", exc)

    # ---- positions ------------------------------------------------------------------------

    async def _on_assigned(self, assigned: list[TopicPartition] | set[TopicPartition]) -> None:
        for tp in assigned:
            self._halted.discard(tp)
        await self._seek_to_stored(list(assigned))

    def _on_revoked(self, revoked: list[TopicPartition] | set[TopicPartition]) -> None:
        for tp in revoked:
            self._expected.pop(tp, None)
            self._prepared.pop(tp, None)
            self._halted.discard(tp)
            self.metrics.partition_halted.labels(partition=str(tp.partition)).set(0)

    async def _seek_to_stored(self, tps: list[TopicPartition]) -> None:
        """Position each partition at its Redis offset, or at the log start when none is stored."""
        assert self._consumer is not None and self._store is not None
        if not tps:
            return
        stored = await self._store.stored_offsets()
        beginnings = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            offset = stored.get(tp.partition)
            if offset is None:
                offset = beginnings[tp]
            elif offset > ends[tp] or offset < beginnings[tp]:
                await self._halt(tp, offset, beginnings[tp], ends[tp])
                continue
            self._consumer.seek(tp, offset)
            self._expected[tp] = offset
            self._prepared[tp] = offset

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        assert self._consumer is not None
        positions: dict[TopicPartition, int] = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        tps = list(positions) or list(self._expected)
        log.error("fetch offsets out of range for %s; checking them against Redis", tps)
        await self._seek_to_stored(tps)

    async def _halt(self, tp: TopicPartition, stored: int, beginning: int, end: int) -> None:
        """Stop applying a partition whose stored offset the log no longer has."""
        assert self._consumer is not None and self._redis is not None and self._store is not None
        reason = (
            f"stored offset {stored} is outside the log [{beginning}, {end}] of {tp.topic}[{tp.partition}]: "
            "the broker lost or truncated its log. The aggregates stay as they are; nothing from this "
            "partition is applied until an operator runs `infraprism rebuild` or resets the offset."
        )
        log.error("HALTED partition %d: %s", tp.partition, reason)
        self._halted.add(tp)
        self._expected.pop(tp, None)
        self._prepared.pop(tp, None)
        self._consumer.pause(tp)
        self.metrics.partition_halted.labels(partition=str(tp.partition)).set(1)
        await self._redis.hset(self._store.halted_key, str(tp.partition), reason)

    async def _end_offsets(self) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        tps = list(self._consumer.assignment())
        return dict(await self._consumer.end_offsets(tps)) if tps else {}

    @property
    def halted(self) -> set[TopicPartition]:
        return set(self._halted)


def unique_events(events: list[CostEvent]) -> tuple[list[CostEvent], int]:
    """Drop repeats of an event_id inside one batch (Redis checks earlier batches).

    Returns the events kept, in order, and how many were dropped.
    """
    seen: set[tuple[str, str]] = set()
    unique: list[CostEvent] = []
    for event in events:
        identity = (event.project_id, event.event_id)
        if identity not in seen:
            seen.add(identity)
            unique.append(event)
    return unique, len(events) - len(unique)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, aggregator: Aggregator) -> None:
        self._aggregator = aggregator

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._aggregator._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._aggregator._on_assigned(assigned)


async def run_until_signalled(settings: Settings, metrics_port: int | None = None) -> None:
    aggregator = Aggregator(settings)
    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port:
        aggregator.metrics.serve(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await aggregator.run(stop)


def main(settings: Settings, metrics_port: int | None = None) -> None:
    """`infraprism aggregator`: run until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_until_signalled(settings, metrics_port))

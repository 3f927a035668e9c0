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
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import PriceBook
from infraprism.pipeline.deadletter import dead_letter_record, minimal_dead_letter_record
from infraprism.pipeline.decode import REDRIVEN, DecodedBatch, PartitionRange, Retention, decode_batch
from infraprism.pipeline.metrics import AggregatorMetrics
from infraprism.pipeline.price_marks import redriven_positions
from infraprism.pipeline.store import Applied, ApplyResult, Duplicates, Fenced, Refused, RollupStore, StalePrices
from infraprism.pipeline.topics import ensure_topics, log_ends
from infraprism.settings import Settings
from infraprism.stores import prices

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
# Backoff while a dependency (the DLQ producer, Redis) fails: nothing is skipped meanwhile.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 30.0
# Redis errors that pass: the same call is retried. Any other error from the apply
# script means it refused the batch before writing (or is our bug): that halts.
TRANSIENT_REDIS_ERRORS = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT")
# Batches smaller than this are applied at once instead of overlapping with the next fetch.
PIPELINE_MIN_RECORDS = 2_000
# How often the worker looks for a new price book while its batches do not meet one. A batch
# that prices an event is refused by Redis when its book is not current anyway (StalePrices);
# this bounds how long a batch of only supplied costs and dead letters runs on an old book.
PRICE_BOOK_CHECK_S = 1.0


@dataclass(slots=True)
class PreparedBatch:
    """One getmany() worth of messages: their offset ranges, and once decoded, the encoded batch."""

    ranges: list[PartitionRange] = field(default_factory=list)
    records: list[ConsumerRecord] = field(default_factory=list)
    decoded: DecodedBatch | None = None
    # (partition, offset) -> reason of every message sent to the DLQ: a re-decode keeps them
    # dead letters, so none is both counted and in the DLQ, whatever the price book says now.
    dead_reasons: dict[tuple[int, int], str] = field(default_factory=dict)
    seq: int = 0  # increasing per worker; the decoder's memo of counted ids is ordered by it
    epoch: int = 0  # the worker's epoch when it was sliced: a re-seek since makes it stale

    @property
    def oldest_produce_ms(self) -> int:
        return min(record.timestamp for record in self.records)


class WorkerStopping(Exception):
    """A stop was requested while the worker waited to retry a dependency."""


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
        self._inflight: asyncio.Task[tuple[PreparedBatch, bool]] | None = None  # applying in Redis
        self._decoding: tuple[PreparedBatch, asyncio.Future[DecodedBatch]] | None = None  # in the decoder
        self._decoder: ProcessPoolExecutor | None = None
        self._halted: set[TopicPartition] = set()
        self._seq = 0
        # Moves with every re-seek: a batch decoded under an older epoch may rest on one that
        # did not land, so it is dropped rather than sent (see encode.RecentlyCounted).
        self._epoch = 0
        self._last_commit = 0.0
        self._redis: aioredis.Redis | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._store: RollupStore | None = None
        self._stopping = asyncio.Event()  # set by run()'s stop: ends a retry's wait
        self._book = PriceBook()  # prices events without `cost`; replaced when its version moves
        self._book_checked = 0.0
        self._book_sent: int | None = None  # the version the decoder process holds
        # (partition, offset) of the messages `dlq redrive` re-submitted: a rebuild leaves them out.
        self._redriven: set[tuple[int, int]] = set()

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
        self._book = await prices.load_book(self._redis, self.layout)
        self._book_checked = time.monotonic()
        if self.stop_at_end:
            # Only a rebuild re-reads messages that were dead letters once: the live worker meets
            # each message when it is new, before any re-drive.
            self._redriven = await redriven_positions(self._redis, self.layout, s.events_topic)
        if not await self._store.claim_layout():
            log.warning(
                "this store was written by an earlier build: hours lack their quarter-hour fields and the cube "
                "its hours, so the API refuses answers that need them; run `infraprism rebuild` to recompute them"
            )
        self._decoder = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        # Spawn the decoder now, so the first batch does not wait for it.
        await asyncio.get_running_loop().run_in_executor(self._decoder, _warm_up)
        self._producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=None if self.stop_at_end else s.aggregator_group,
            enable_auto_commit=False,
            # Positions come from Redis; an out-of-range position is an error we handle, never a guess.
            auto_offset_reset="none",
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # The broker answers a fetch as soon as there is data, or after this at the latest.
            fetch_max_wait_ms=100,
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
            await self._flush()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()
        if self._redis is not None:
            await self._redis.aclose()
        if self._decoder is not None:
            self._decoder.shutdown(wait=True, cancel_futures=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set (or, with stop_at_end, until caught up)."""
        await self.start()
        relay = asyncio.create_task(_relay(stop, self._stopping))
        try:
            end_offsets = await self._end_offsets() if self.stop_at_end else {}
            while not stop.is_set():
                if self.stop_at_end and all(self._expected.get(tp, 0) >= end for tp, end in end_offsets.items()):
                    return
                await self.step()
        except WorkerStopping:
            log.info("stopped while waiting to retry; the batch was not applied and is read again on restart")
        finally:
            relay.cancel()
            await self.stop()

    # ---- one batch ------------------------------------------------------------------------

    async def step(self) -> int:
        """Fetch batch N+1 while batch N decodes and batch N-1 applies; then move each one on.

        Three stages overlap on two cores: this process fetches, the decoder
        process validates and encodes, Redis applies. Order is kept (N-1 is
        finished before N is sent), and the fence makes a batch prepared on
        top of a refused one refused too. Returns the messages sent to Redis.
        """
        assert self._consumer is not None
        try:
            fetched = await self._consumer.getmany(
                timeout_ms=self.settings.batch_max_wait_ms or 1, max_records=self.settings.batch_max_events
            )
        except OffsetOutOfRangeError as exc:
            await self._flush()
            await self._out_of_range(exc)
            return 0
        except NoOffsetForPartitionError as exc:
            # A race, not a lost log: right after an assignment the fetcher looks for a
            # Kafka-committed position before on_partitions_assigned has seeked to the
            # Redis offset, and auto_offset_reset="none" turns "none committed" into this.
            await self._flush()
            await self._no_position(exc)
            return 0
        if fetched and time.monotonic() - self._book_checked >= PRICE_BOOK_CHECK_S:
            await self._refresh_book()
        incoming = self._slice(fetched) if fetched else None
        sent = await self._send_decoded()
        if incoming is not None and incoming.ranges:
            self._decoding = (incoming, self._start_decode(incoming))
            if len(incoming.records) < PIPELINE_MIN_RECORDS:
                # A small batch means the worker keeps up: apply it now rather
                # than one fetch later, for freshness over throughput.
                sent += await self._send_decoded()
                await self._drain()
        elif sent == 0:
            await self._drain()
            await self._commit_for_lag()
        return sent

    async def _send_decoded(self) -> int:
        """Wait for the batch being decoded, finish the one applying, and send the decoded one."""
        if self._decoding is None:
            return 0
        (batch, decoding), self._decoding = self._decoding, None
        batch.decoded = await decoding
        await self._drain()
        if batch.epoch != self._epoch:
            return 0  # positions were re-seeked meanwhile: these records are fetched again
        await self._dead_letter(batch, batch.decoded)
        self.metrics.events_duplicate.inc(batch.decoded.duplicates_in_batch)
        self._inflight = asyncio.create_task(self._apply(batch))
        return len(batch.records)

    async def _flush(self) -> None:
        """Apply everything fetched so far (before a re-seek or a stop)."""
        await self._send_decoded()
        await self._drain()

    async def _drain(self) -> None:
        """Finish the batch in flight, if any."""
        if self._inflight is None:
            return
        inflight, self._inflight = self._inflight, None
        batch, applied = await inflight
        if applied:
            await self._publish_deltas(batch)
            await self._commit_for_lag()

    def _slice(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> PreparedBatch:
        """Take the records that follow what is already prepared, per owned partition."""
        self._seq += 1
        batch = PreparedBatch(seq=self._seq, epoch=self._epoch)
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
        if self._redriven:  # a rebuild leaves re-driven originals out (decode_batch's REDRIVEN)
            batch.dead_reasons = {
                (record.partition, record.offset): REDRIVEN
                for record in batch.records
                if (record.partition, record.offset) in self._redriven
            }
        return batch

    async def _refresh_book(self, version: int | None = None) -> None:
        """Load the price book when its version moved (to `version` when Redis named it).

        A failure keeps the book held: the apply script refuses what it would misprice, and
        the next check tries again. Nothing here may stop the worker."""
        assert self._redis is not None
        self._book_checked = time.monotonic()
        try:
            if version is None:
                version = await prices.current_version(self._redis, self.layout)
            if version != self._book.version:
                self._book = await prices.book_at(self._redis, self.layout, version)
                log.info("price book version %d loaded: events without cost are priced with it from now on", version)
        except (RedisConnectionError, RedisTimeoutError, ResponseError, prices.CorruptPriceBook) as exc:
            log.error(
                "the price book could not be loaded (%s); pricing with version %d meanwhile", exc, self._book.version
            )
            self.metrics.retries.labels(dependency="prices").inc()

    def _start_decode(
        self, batch: PreparedBatch, exclude: frozenset[tuple[str, str]] = frozenset()
    ) -> asyncio.Future[DecodedBatch]:
        assert self._decoder is not None
        assert self._store is not None
        values = [record.value for record in batch.records]
        record_times = [record.timestamp for record in batch.records]
        dead = batch.dead_reasons
        verdicts = (
            [
                None if reason is None else (record.partition, record.offset, reason)
                for record in batch.records
                for reason in (dead.get((record.partition, record.offset)),)
            ]
            if dead
            else None
        )
        decode = functools.partial(
            decode_batch,
            self._store.encoder,
            values,
            record_times,
            batch.ranges,
            exclude,
            seq=batch.seq,
            epoch=batch.epoch,
            book=self._book.version if self._book_sent == self._book.version else self._book,
            known_dead=verdicts,
        )
        self._book_sent = self._book.version
        return asyncio.get_running_loop().run_in_executor(self._decoder, decode)

    async def _dead_letter(self, batch: PreparedBatch, decoded: DecodedBatch) -> None:
        """Produce every message `decoded` rejects that no earlier decode of the batch sent to
        the DLQ, and wait for the broker's ack.

        Called before each apply of the batch, a re-decode's included (another price book may
        refuse what the first one priced): until the broker has them all, the batch is not
        applied. While the DLQ cannot be written the worker waits with backoff, so no event
        is skipped and none is applied without its dead letters. A retry may send a dead
        letter twice, never lose one.
        """
        assert self._producer is not None
        new = [
            (index, reason)
            for index, reason in decoded.dead_letters
            if (batch.records[index].partition, batch.records[index].offset) not in batch.dead_reasons
        ]
        if not new:
            return
        letters = []
        for index, reason in new:
            record = batch.records[index]
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
            value = dead_letter_record(
                reason,
                record.value,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
            )
            letters.append((value, record.key))
            kind = reason.split(":", 1)[0]
            self.metrics.events_dead_lettered.labels(reason_kind=kind[:40]).inc()
        delay = RETRY_FIRST_S
        while True:
            try:
                futures = [await self._producer.send(self.settings.dlq_topic, value=v, key=k) for v, k in letters]
                await asyncio.gather(*futures)
                batch.dead_reasons.update(
                    ((batch.records[index].partition, batch.records[index].offset), reason) for index, reason in new
                )
                return
            except MessageSizeTooLargeError as exc:
                # Cannot happen with the bounded records; if it does, the payloads go, never the letters.
                log.error("dead letters refused as too large (%r); sending them without their payloads", exc)
                letters = [
                    (
                        minimal_dead_letter_record(
                            reason,
                            batch.records[index].value,
                            topic=batch.records[index].topic,
                            partition=batch.records[index].partition,
                            offset=batch.records[index].offset,
                        ),
                        None,
                    )
                    for index, reason in new
                ]
            except KafkaError as exc:
                log.error(
                    "dead-letter topic %s not writable (%r); retrying in %.1f s, nothing is applied meanwhile",
                    self.settings.dlq_topic,
                    exc,
                    delay,
                )
                self.metrics.retries.labels(dependency="dlq").inc()
                await self._backoff(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _backoff(self, delay: float) -> None:
        """Wait before a retry; a stop request ends the wait and the batch (nothing of it is applied)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            raise WorkerStopping

    async def _apply(self, batch: PreparedBatch) -> tuple[PreparedBatch, bool]:
        """Apply the batch atomically; False when Redis fenced or refused it (we re-seek)."""
        assert self._store is not None
        assert batch.decoded is not None
        decoded = batch.decoded
        excluded: frozenset[tuple[str, str]] = frozenset()
        stale_delay = RETRY_FIRST_S
        while True:
            started = time.perf_counter()
            result = await self._apply_payload(decoded.payload)
            self.metrics.apply_seconds.observe(time.perf_counter() - started)
            if isinstance(result, Applied):
                self._advance(batch.ranges)
                self.metrics.events_applied.inc(decoded.events)
                batch.decoded = decoded
                self._observe(batch)
                return batch, True
            if isinstance(result, Duplicates):
                # Rare (producer retries, replays): re-encode without the ids Redis has. Every
                # refusal adds to the exclusions, so this ends: leaving one copy out can bring
                # back another of the same id, which the next refusal names in turn.
                self.metrics.events_duplicate.inc(len(result.ids))
                excluded |= result.ids
                decoded = await self._start_decode(batch, excluded)
                await self._dead_letter(batch, decoded)
                continue
            if isinstance(result, StalePrices):
                # Prices changed since this batch was decoded: price it again with the new book.
                # What was dead-lettered stays a dead letter (decode_batch's known_dead); what
                # the new book cannot price (an override deleted) becomes one, sent first.
                held = self._book.version
                await self._refresh_book(result.current_version)
                if self._book.version == held:  # it could not be loaded: wait, as for Redis
                    await self._backoff(stale_delay)
                    stale_delay = min(stale_delay * 2, RETRY_MAX_S)
                decoded = await self._start_decode(batch, excluded)
                await self._dead_letter(batch, decoded)
                continue
            if isinstance(result, Refused):
                await self._apply_each_partition(batch, result)
                return batch, False
            assert isinstance(result, Fenced)
            self.metrics.batches_fenced.inc()
            log.warning(
                "batch fenced: partition %d has offset %d applied already; re-seeking to Redis offsets",
                result.partition,
                result.stored_offset,
            )
            await self._seek_to_stored(list(self._expected))
            return batch, False

    async def _apply_payload(self, payload: bytes) -> ApplyResult:
        """One apply call, retried with backoff while Redis is unreachable or busy.

        A retry after a lost reply is safe: a batch that did land is fenced the second time.
        """
        assert self._store is not None
        delay = RETRY_FIRST_S
        while True:
            try:
                return await self._store.apply_payload(payload)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                problem = repr(exc)
            except ResponseError as exc:
                if not str(exc).startswith(TRANSIENT_REDIS_ERRORS):
                    return Refused(f"the apply script failed: {exc}", checked=False)
                problem = str(exc)
            log.error("redis apply failed (%s); retrying in %.1f s", problem, delay)
            self.metrics.retries.labels(dependency="redis").inc()
            await self._backoff(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _apply_each_partition(self, batch: PreparedBatch, refusal: Refused) -> None:
        """After a refusal, apply the batch partition by partition: only a partition whose own
        records Redis refuses halts, loudly; the others go on. Batches prepared on top of
        this one are fenced when they arrive and re-read from the stored offsets."""
        if len(batch.ranges) > 1:
            for part in _by_partition(batch):
                if TopicPartition(self.settings.events_topic, part.ranges[0].partition) in self._expected:
                    part.decoded = await self._start_decode(part)
                    await self._dead_letter(part, part.decoded)  # only those no earlier decode sent
                    _, applied = await self._apply(part)
                    if applied:
                        await self._publish_deltas(part)
            return
        refused = batch.ranges[0]
        self.metrics.batches_refused.inc()
        offsets = f"[{refused.from_offset}, {refused.to_offset})"
        what = (
            f"refused the batch of offsets {offsets} and wrote nothing of it"
            if refusal.checked
            else f"failed on the batch of offsets {offsets}, whose offsets did not move"
        )
        await self._halt(
            TopicPartition(self.settings.events_topic, refused.partition),
            f"Redis {what}: {refusal.reason}. Nothing from this partition is applied until the stored "
            "state is repaired (or `infraprism rebuild` runs) and the aggregator restarts.",
        )
        # Batches decoded on top of this one took its ids as counted: drop them and read again.
        await self._seek_to_stored(list(self._expected))

    def _advance(self, ranges: list[PartitionRange]) -> None:
        for r in ranges:
            tp = TopicPartition(self.settings.events_topic, r.partition)
            if tp in self._expected:  # still ours after any rebalance meanwhile
                self._expected[tp] = r.to_offset

    def _observe(self, batch: PreparedBatch) -> None:
        self.metrics.batch_size.observe(len(batch.records))
        self.metrics.freshness_seconds.observe(max(0.0, time.time() - batch.oldest_produce_ms / 1000))
        assert self._consumer is not None
        # The consumer's assignment can change before our rebalance listener has run,
        # and highwater() asserts that the partition is assigned.
        assigned = self._consumer.assignment()
        for tp, expected in self._expected.items():
            if tp not in assigned:
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(max(0, highwater - expected))

    async def _publish_deltas(self, batch: PreparedBatch) -> None:
        """Tell the detector which entity-hours changed. At-least-once; not awaited per message."""
        assert self._producer is not None
        assert batch.decoded is not None
        for key, value in batch.decoded.deltas:
            await self._producer.send(self.settings.deltas_topic, value=value, key=key)

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
        assert self._consumer is not None
        assert self._store is not None
        assert self._redis is not None
        if not tps:
            return
        self._epoch += 1
        stored = await self._store.stored_offsets()
        beginnings = await self._consumer.beginning_offsets(tps)
        ends = await self._log_ends(tps)
        # Look again after the awaits: a rebalance may have taken some away meanwhile,
        # and seek() on a partition no longer assigned raises IllegalStateError.
        assigned = self._consumer.assignment()
        resumed: list[str] = []
        for tp in tps:
            if tp not in assigned:
                continue  # its new owner seeks it
            offset = stored.get(tp.partition)
            if offset is None:
                offset = beginnings[tp]
            elif offset > ends[tp] or offset < beginnings[tp]:
                await self._halt(
                    tp,
                    (
                        f"stored offset {offset} is outside the log [{beginnings[tp]}, {ends[tp]}] of "
                        f"{tp.topic}[{tp.partition}]: the broker lost or truncated its log. The aggregates stay as "
                        "they are; nothing from this partition is applied until an operator runs `infraprism "
                        "rebuild` or resets the offset."
                    ),
                )
                continue
            self._consumer.seek(tp, offset)
            self._expected[tp] = offset
            self._prepared[tp] = offset
            resumed.append(str(tp.partition))
        if resumed:  # a reason left by an earlier halt no longer holds
            await self._redis.hdel(self._store.halted_key, *resumed)

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        assert self._consumer is not None
        positions: dict[TopicPartition, int] = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        tps = list(positions) or list(self._expected)
        log.error("fetch offsets out of range for %s; checking them against Redis", tps)
        await self._seek_to_stored(tps)

    async def _no_position(self, exc: NoOffsetForPartitionError) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        tps = [tp for tp in exc.args if isinstance(tp, TopicPartition) and tp in assigned and tp not in self._halted]
        log.info("no position yet for %s; seeking to the Redis offsets", tps)
        await self._seek_to_stored(tps)

    async def _halt(self, tp: TopicPartition, reason: str) -> None:
        """Stop applying a partition, loudly: a log line, a metric and the reason in Redis."""
        assert self._consumer is not None
        assert self._redis is not None
        assert self._store is not None
        log.error("HALTED partition %d: %s", tp.partition, reason)
        self._halted.add(tp)
        self._expected.pop(tp, None)
        self._prepared.pop(tp, None)
        if tp in self._consumer.assignment():
            self._consumer.pause(tp)
        self.metrics.partition_halted.labels(partition=str(tp.partition)).set(1)
        await self._redis.hset(self._store.halted_key, str(tp.partition), reason)

    async def _end_offsets(self) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        tps = list(self._consumer.assignment())
        return await self._log_ends(tps) if tps else {}

    async def _log_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's log end (topics.log_ends: a Fetch's high watermark, since Tansu's
        ListOffsets(latest) made a healthy partition look truncated after every restart or
        rebalance, and made `rebuild` stop short of the last batch)."""
        return await log_ends(self.settings.kafka_bootstrap, tps)


def _exit_with_parent(parent_pid: int) -> None:
    """Runs first in the decoder process: exit as soon as the aggregator is gone.

    A worker killed with -9 cannot shut its pool down, and the pool's child
    would otherwise wait on its queue for ever.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _warm_up() -> None:
    """Runs once in the decoder process: import the decoding code before the first batch."""
    import infraprism.pipeline.decode  # noqa: F401


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def _by_partition(batch: PreparedBatch) -> list[PreparedBatch]:
    """The batch cut into one batch per partition, in offset order."""
    parts = []
    for r in batch.ranges:
        records = [record for record in batch.records if record.partition == r.partition]
        parts.append(
            PreparedBatch(
                ranges=[r],
                records=records,
                dead_reasons=batch.dead_reasons,
                seq=batch.seq,
                epoch=batch.epoch,
            )
        )
    return parts


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

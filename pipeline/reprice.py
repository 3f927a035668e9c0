"""`infraprism reprice`: one project's aggregates over a range of days, priced again with today's prices.

What each counted event was priced at is known exactly, without storing a price per
event:

* the apply script refuses a batch priced with a book that is no longer current, and
  marks each partition stretch with the book version that priced it
  (`KeyLayout.price_marks`); a message an earlier decode sent to the DLQ but which that
  version would price is marked "dead";
* every finished re-price is recorded with its range, its version and the offsets it
  covered (`KeyLayout.reprice_history`).

So an event's price is the one its book version gives, the latest of its mark and of
the re-prices that covered it. The events themselves are still in Kafka. A re-price
reads the project's events from the start of each partition up to the offsets applied
when it began (the dedupe of the live path is replayed, to know which copies were
counted), and for each counted event of the range whose cost is not its own it adds
"minus the event at its old price, plus the event at today's" to every aggregate. The
corrections commute with the live aggregator's increments, so ingest goes on; the API
answers throughout and sees each chunk land atomically.

Exactly once: corrections are applied in chunks of a partition's offsets, each in one
call of the aggregator's apply script with the job's progress hash as its offsets
(`KeyLayout.reprice_progress`): the same fence. A rerun after a crash resumes the
job where its progress stands; two runs at once fence each other; a finished job is
recorded and never applied again.

Not re-derived: anomaly baselines (the detector's history) and budget alerts already
raised stay as they were; budget status reads the rollups, so it follows at once.
Events priced by a genai-prices catalog that has since changed (an upgrade) cannot be
priced as they were: after an upgrade, `infraprism rebuild` is the way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from infraprism.core.cell import Cell
from infraprism.core.dedupe import DedupeWindow
from infraprism.core.events import DEFAULT_PROJECT
from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import SUPPLIED, PriceBook
from infraprism.core.rollup import BatchRollup, Retention, SessionDelta, expire_at, is_kept
from infraprism.core.text import as_text, rfc3339_now
from infraprism.core.zones import day_range_ms, zone
from infraprism.pipeline import PipelineError
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, judge, session_entry
from infraprism.pipeline.price_marks import PriceMarks
from infraprism.pipeline.store import Applied, Fenced, RollupStore, Unmet
from infraprism.pipeline.topics import log_ends
from infraprism.settings import Settings
from infraprism.stores import prices
from infraprism.stores.projects import reporting_zone

log = logging.getLogger(__name__)

# Offsets of one partition applied in one atomic call (a chunk's corrections are at most this many events).
CHUNK_RECORDS = 20_000
FETCH_RECORDS = 5_000


_STARTED_TOGETHER = "another re-price of {project!r} started at the same moment; let it finish, then rerun this"


class RepriceError(PipelineError):
    """The re-price cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class RepriceJob:
    """A re-price of `project` over the local days start..end, to the book at `version`,
    of the events at offsets below `offsets` (what was applied when it began)."""

    project: str
    start: date
    end: date
    start_ms: int
    end_ms: int
    version: int
    offsets: dict[int, int]
    started_at: str
    token: str  # names this job: a chunk applies only while the job record still holds it

    def to_record(self) -> dict[str, str]:
        return {
            "project": self.project,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "start_ms": str(self.start_ms),
            "end_ms": str(self.end_ms),
            "version": str(self.version),
            "offsets": orjson.dumps({str(p): o for p, o in self.offsets.items()}).decode(),
            "started_at": self.started_at,
            "token": self.token,
            "status": "running",
        }

    @classmethod
    def from_record(cls, raw: dict[str, str]) -> RepriceJob:
        return cls(
            project=raw["project"],
            start=date.fromisoformat(raw["start"]),
            end=date.fromisoformat(raw["end"]),
            start_ms=int(raw["start_ms"]),
            end_ms=int(raw["end_ms"]),
            version=int(raw["version"]),
            offsets={int(p): int(o) for p, o in orjson.loads(raw["offsets"]).items()},
            started_at=raw["started_at"],
            token=raw.get("token", raw["started_at"]),
        )

    def covers(self, partition: int, offset: int, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms and offset < self.offsets.get(partition, 0)


@dataclass(slots=True)
class RepriceResult:
    job: RepriceJob
    resumed: bool
    events_read: int = 0
    events_repriced: int = 0  # counted events of the range whose cost or price source changed
    cost_change_nano: int = 0
    unpriced_now: int = 0  # counted events today's prices cannot price: kept at their old price
    chunks_applied: int = 0
    book_moved_to: int | None = None  # the book changed while re-pricing: run again to apply it


@dataclass(slots=True)
class _PriceHistory:
    """What priced each event of the project: the price marks and the finished re-prices."""

    marks: PriceMarks
    done: list[RepriceJob]
    books: dict[int, PriceBook] = field(default_factory=dict)

    def repriced_versions(self, partition: int, offset: int, ts_ms: int) -> list[int]:
        """The versions of the finished re-prices that covered the event, the latest first."""
        return [job.version for job in reversed(self.done) if job.covers(partition, offset, ts_ms)]

    def versions(self) -> set[int]:
        return self.marks.versions() | {job.version for job in self.done}


async def reprice(
    settings: Settings,
    project: str,
    start: date,
    end: date,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> RepriceResult:
    """Re-price `project`'s events of the local days start..end (both inclusive, in the
    project's reporting zone) with today's prices; resumes an interrupted run of the same
    range. `on_progress(done, total)` counts records read."""
    if end < start:
        raise RepriceError(f"--to {end} is before --from {start}")
    layout = KeyLayout(settings.key_prefix)
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        if not await prices.project_exists(redis, layout, project):
            raise RepriceError(f"unknown project {project!r}: it has no events, settings or API keys")
        job, resumed = await _start_job(redis, layout, settings, project, start, end)
        result = RepriceResult(job, resumed)
        marks = await PriceMarks.load(redis, layout, settings.events_topic, settings.aggregator_group)
        done = [
            RepriceJob.from_record(orjson.loads(entry))
            for entry in await redis.lrange(layout.reprice_history(project), 0, -1)
        ]
        history = _PriceHistory(marks, [job for job in done if job.project == project])
        for version in history.versions() | {job.version}:
            history.books[version] = await prices.book_at(redis, layout, version)
        new_book = history.books[job.version]
        progress = {int(p): int(o) for p, o in (await redis.hgetall(layout.reprice_progress(project))).items()}
        store = RollupStore(
            redis,
            layout,
            topic=settings.events_topic,
            group=settings.aggregator_group,
            dedupe_window_days=settings.dedupe_window_days,
            retention=Retention(
                settings.retention_hour_days, settings.retention_day_days, settings.retention_month_days
            ),
        )
        await _run(settings, store, job, history, new_book, progress, result, on_progress)
        await _finish(redis, layout, job)
        current = await prices.current_version(redis, layout)
        if current != job.version:
            result.book_moved_to = current
        return result
    finally:
        await redis.aclose()


async def _start_job(
    redis: aioredis.Redis, layout: KeyLayout, settings: Settings, project: str, start: date, end: date
) -> tuple[RepriceJob, bool]:
    """The job to run: the unfinished one of this range, or a new one. An unfinished job of
    another range must be finished first (its corrections are half applied)."""
    job_key, progress_key = layout.reprice_job(project), layout.reprice_progress(project)
    stored = {as_text(name): as_text(value) for name, value in (await redis.hgetall(job_key)).items()}
    if stored.get("status") == "running":
        job = RepriceJob.from_record(stored)
        if (job.start, job.end) != (start, end):
            raise RepriceError(
                f"a re-price of {project!r} for {job.start}..{job.end} (started {job.started_at}) is unfinished; "
                f"run `infraprism reprice --project {project} --from {job.start} --to {job.end}` to finish it first"
            )
        return job, True
    start_ms, end_ms = day_range_ms(zone(await reporting_zone(redis, layout, project)), start, end)
    offsets_key = layout.offsets(settings.events_topic, settings.aggregator_group)
    beginnings = await _beginnings(settings, [int(p) for p in await redis.hkeys(offsets_key)])
    async with redis.pipeline(transaction=True) as pipe:
        # Another run starting at the same moment: one of the two transactions fails.
        await pipe.watch(job_key)
        if await pipe.hget(job_key, "status") == "running":
            raise RepriceError(_STARTED_TOGETHER.format(project=project))
        # The version and the applied offsets are read together: every batch applied after
        # this priced the project's events with its book as of this version (the apply
        # script refuses one priced with an older book of the project).
        version_raw = await pipe.get(layout.prices_version())
        offsets_raw = await pipe.hgetall(offsets_key)
        if any(int(offset) < 0 for offset in offsets_raw.values()):
            raise RepriceError("`infraprism rebuild` is running (the offsets are fenced); re-price after it")
        job = RepriceJob(
            project=project,
            start=start,
            end=end,
            start_ms=start_ms,
            end_ms=end_ms,
            version=int(version_raw or 0),
            offsets={int(p): int(o) for p, o in offsets_raw.items()},
            started_at=rfc3339_now(),
            token=uuid.uuid4().hex,
        )
        pipe.multi()
        pipe.delete(job_key, progress_key)
        record: dict[FieldT, EncodableT] = {name: value for name, value in job.to_record().items()}
        pipe.hset(job_key, mapping=record)
        if job.offsets:
            pipe.hset(progress_key, mapping={str(p): str(beginnings.get(p, 0)) for p in job.offsets})
        try:
            await pipe.execute()
        except WatchError:
            raise RepriceError(_STARTED_TOGETHER.format(project=project)) from None
    return job, False


async def _finish(redis: aioredis.Redis, layout: KeyLayout, job: RepriceJob) -> None:
    """Record the job as done, once: the history entry and the status move together."""
    job_key = layout.reprice_job(job.project)
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(job_key)
        if await pipe.hget(job_key, "status") != "running" or await pipe.hget(job_key, "token") != job.token:
            await pipe.unwatch()
            return  # another run of the same job finished it
        pipe.multi()
        pipe.rpush(layout.reprice_history(job.project), orjson.dumps(job.to_record()))
        pipe.hset(job_key, mapping={"status": "done", "finished_at": rfc3339_now()})
        pipe.delete(layout.reprice_progress(job.project))
        await pipe.execute()


async def _beginnings(settings: Settings, partitions: list[int]) -> dict[int, int]:
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in (await consumer.beginning_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _run(
    settings: Settings,
    store: RollupStore,
    job: RepriceJob,
    history: _PriceHistory,
    new_book: PriceBook,
    progress: dict[int, int],
    result: RepriceResult,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    layout = KeyLayout(settings.key_prefix)
    window = DedupeWindow.of_days(settings.dedupe_window_days)
    counted: dict[str, list[int]] = {}  # event_id -> dedupe slots of the copies counted
    total = sum(job.offsets.values())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in sorted(job.offsets)]
        ends = await log_ends(settings.kafka_bootstrap, tps) if tps else {}
        for tp, end in ends.items():
            applied = job.offsets[tp.partition]
            if end < applied:
                raise RepriceError(
                    f"partition {tp.partition} of {tp.topic} ends at offset {end}, before the {applied} "
                    "applied from it: the broker lost events the aggregates count, so they cannot be re-priced; "
                    "`infraprism rebuild` recomputes the aggregates from what the broker has"
                )
        for partition in sorted(job.offsets):
            stop_at = job.offsets[partition]
            tp = TopicPartition(settings.events_topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            chunk = _Chunk(progress.get(partition, 0))
            while True:
                fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=FETCH_RECORDS)
                records = fetched.get(tp, [])
                if not records:
                    if await consumer.position(tp) >= stop_at:
                        break
                    continue
                for record in records:
                    if record.offset >= stop_at:
                        break
                    result.events_read += 1
                    _consider(record, job, history, new_book, window, counted, chunk, result)
                    if record.offset + 1 - chunk.from_offset >= CHUNK_RECORDS and record.offset >= chunk.from_offset:
                        await _apply_chunk(store, layout, job, partition, chunk, record.offset + 1, result)
                        chunk = _Chunk(record.offset + 1)
                if on_progress is not None:
                    on_progress(result.events_read, total)
                if records[-1].offset + 1 >= stop_at:
                    break
            if chunk.from_offset < stop_at:
                await _apply_chunk(store, layout, job, partition, chunk, stop_at, result)
    finally:
        await consumer.stop()


@dataclass(slots=True)
class _Chunk:
    """The corrections of one partition's offsets [from_offset, ...): the events at their old
    price (to subtract) and at today's (to add)."""

    from_offset: int
    minus: BatchRollup = field(default_factory=BatchRollup)
    plus: BatchRollup = field(default_factory=BatchRollup)


def _consider(
    record: ConsumerRecord,
    job: RepriceJob,
    history: _PriceHistory,
    new_book: PriceBook,
    window: DedupeWindow,
    counted: dict[str, list[int]],
    chunk: _Chunk,
    result: RepriceResult,
) -> None:
    """Replay one record's verdict and dedupe as the live path decided them; add its
    correction to the chunk when it is a counted, priced event of the range not yet corrected."""
    partition, offset, raw = record.partition, record.offset, record.value
    if raw is None or (partition, offset) in history.marks.left_out:
        return
    # A cheap test before the verdict: only this project's events matter (an event without
    # project_id is of the default project; one may spell its project with JSON escapes).
    if job.project != DEFAULT_PROJECT and job.project.encode() not in raw and b"\\u" not in raw:
        return
    # The marks say which book priced it when it was applied; the latest finished re-price
    # that covered it and could price it says which book priced it since (one that could not
    # kept the price it had). Its time does not depend on the book.
    marked = history.marks.marked_version(partition, offset)
    old = judge(raw, history.books[marked])
    if isinstance(old, str) or old.project_id != job.project:
        return  # a dead letter when it was applied, or another project's: never counted here
    for version in history.repriced_versions(partition, offset, old.ts_ms):
        repriced = judge(raw, history.books[version])
        if not isinstance(repriced, str):
            old = repriced
            break
    slot = window.slot_of(record.timestamp)
    slots = counted.get(old.event_id)
    if slots is not None and any(window.are_near(slot, other) for other in slots):
        return  # a copy the live path dropped as a duplicate
    counted.setdefault(old.event_id, []).append(slot)
    if offset < chunk.from_offset or old.price_source == SUPPLIED or not job.start_ms <= old.ts_ms < job.end_ms:
        return
    new = judge(raw, new_book)
    if isinstance(new, str):
        result.unpriced_now += 1  # today's prices cannot price it (an override was deleted): kept
        return
    if (new.cost_nano, new.price_source, new.provider) == (old.cost_nano, old.price_source, old.provider):
        return
    chunk.minus.add(old)
    chunk.plus.add(new)
    result.events_repriced += 1
    result.cost_change_nano += new.cost_nano - old.cost_nano


async def _apply_chunk(
    store: RollupStore,
    layout: KeyLayout,
    job: RepriceJob,
    partition: int,
    chunk: _Chunk,
    to_offset: int,
    result: RepriceResult,
) -> None:
    payload = encode_correction(
        store.encoder, job.project, chunk.minus, chunk.plus, layout.reprice_progress(job.project)
    )
    # Only while this job is the project's running one: a rebuild deletes it, a new job replaces it.
    job_key = layout.reprice_job(job.project)
    payload["require"] = [[job_key, "token", job.token], [job_key, "status", "running"]]
    ranges = [PartitionRange(partition, chunk.from_offset, to_offset)]
    applied = await store.apply_payload(_with_ranges(payload, ranges))
    if isinstance(applied, Fenced):
        log.info("chunk %d [%d, %d) was applied by another run of this job", partition, chunk.from_offset, to_offset)
        return
    if isinstance(applied, Unmet):
        raise RepriceError(
            f"this re-price of {job.project!r} is no longer the project's running one: another run of it finished "
            "it, or a rebuild (which prices every event anew) removed it. Nothing more of it was applied"
        )
    if not isinstance(applied, Applied):
        raise RepriceError(
            f"Redis refused the corrections of partition {partition} offsets [{chunk.from_offset}, {to_offset}): "
            f"{applied}. Nothing of that chunk was applied; the aggregates do not hold what the events say, so "
            "`infraprism rebuild` is the way to recompute them"
        )
    result.chunks_applied += 1


def _with_ranges(payload: dict, ranges: list[PartitionRange]) -> bytes:
    payload["ranges"] = [[str(r.partition), str(r.from_offset), str(r.to_offset)] for r in ranges]
    return orjson.dumps(payload)


def encode_correction(
    encoder: BatchEncoder, project: str, minus: BatchRollup, plus: BatchRollup, progress_key: str
) -> dict:
    """The apply script's document for "minus these events, plus those": signed increments
    of every cell, leaderboard and session they touch, and the versions the API's caches
    validate. No dedupe ids, no catalogue sets: the events were counted already."""
    layout = encoder.layout
    retention = encoder.retention
    now_s = int(time.time())
    touched: set[str] = set()
    for rollup in (minus, plus):
        for _, day in rollup.event_days():
            touched.update(layout.event_day_version_fields(day))
    hashes: list[list[object]] = []
    plus_cells, minus_cells = plus.cell_lanes(), minus.cell_lanes()
    for where in sorted(set(plus_cells) | set(minus_cells)):
        _, dimension, granularity, bucket = where
        if not is_kept(granularity, bucket, retention, now_s):
            continue  # expired: nothing left to correct
        cell_changes = _cell_changes(plus_cells.get(where, {}), minus_cells.get(where, {}))
        if cell_changes:
            key = layout.rollup(project, dimension, granularity, bucket)
            hashes.append([key, str(expire_at(granularity, bucket, retention.days_for(granularity))), cell_changes])
            touched.add(layout.bucket_version_field(project, key))
    zsets: list[list[object]] = []
    plus_boards, minus_boards = plus.leaderboard(), minus.leaderboard()
    for board in sorted(set(plus_boards) | set(minus_boards)):
        _, board_granularity, board_bucket, board_type = board
        if not is_kept(board_granularity, board_bucket, retention, now_s):
            continue
        added, removed = plus_boards.get(board, {}), minus_boards.get(board, {})
        score_changes = [
            text
            for member in sorted(set(added) | set(removed))
            if added.get(member, 0) != removed.get(member, 0)
            for text in (member, str(added.get(member, 0) - removed.get(member, 0)))
        ]
        if score_changes:
            key = layout.leaderboard(project, board_granularity, board_bucket, board_type)
            expire = expire_at(board_granularity, board_bucket, retention.days_for(board_granularity))
            zsets.append([key, str(expire), score_changes])
            touched.add(layout.bucket_version_field(project, key))
    sessions = []
    for session_key in sorted(set(plus.sessions) | set(minus.sessions)):
        new, old = plus.sessions.get(session_key), minus.sessions.get(session_key)
        base = new or old
        assert base is not None
        change = SessionDelta(
            base.entity_type,
            base.entity_id,
            base.started_ms,
            base.ended_ms,
            turns=(new.turns if new else 0) - (old.turns if old else 0),
            cost_nano=(new.cost_nano if new else 0) - (old.cost_nano if old else 0),
            input_tokens=(new.input_tokens if new else 0) - (old.input_tokens if old else 0),
            output_tokens=(new.output_tokens if new else 0) - (old.output_tokens if old else 0),
        )
        if change.turns or change.cost_nano or change.input_tokens or change.output_tokens:
            sessions.append(session_entry(layout, project, session_key[1], change))
    return {
        "offsets_key": progress_key,
        "prices": None,
        "ranges": [],
        "dedupe": [],
        "hashes": hashes,
        "zsets": zsets,
        "sessions": sessions,
        "sets": [],
        "versions": [layout.data_version(project)] if hashes or zsets or sessions else [],
        "bucket_versions": [[layout.bucket_versions(project), sorted(touched)]] if hashes or zsets else [],
    }


def _cell_changes(added: dict[str, int], removed: dict[str, int]) -> list[str]:
    """[member, signed packed change, ...] of one hash: the added cells (lanes) less the removed."""
    changes: list[str] = []
    for member in sorted(set(added) | set(removed)):
        change = Cell.from_lanes(added.get(member, 0)).minus(Cell.from_lanes(removed.get(member, 0)))
        if any(change):
            changes.extend((member, " ".join(str(value) for value in change)))
    return changes


def main(settings: Settings, project: str, start: date, end: date) -> RepriceResult:
    return asyncio.run(reprice(settings, project, start, end))


__all__ = ["RepriceError", "RepriceJob", "RepriceResult", "encode_correction", "reprice"]

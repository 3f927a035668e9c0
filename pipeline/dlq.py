"""`infraprism dlq`: what the dead-letter topic holds, and re-driving what would now pass.

Every message the aggregator refused is in the dead-letter topic with its reason
(pipeline/deadletter.py). Some refusals are final (bad JSON, a missing field);
others hold until something changes, above all "cost: absent and the price catalog
does not know model ...", which a price override (`infraprism prices set`) cures.
`redrive` re-submits those to the events topic, where the aggregator judges them
again like any other event; the dead letters themselves stay where they are (a
topic is append-only), and the ledger says which were re-driven.

Exactly once. A dead letter goes into the ledger `KeyLayout.dlq_redriven(dlq_topic)`
(as its DLQ `partition:offset`) only after the broker acknowledged its copy on the
events topic, and every run skips what the ledger holds. A crash between the ack
and the ledger write re-sends that copy on the next run: the copy falls in the same
dedupe slots as the first, and the aggregator drops it (docs/exactly-once.md), as
long as the next run comes within the dedupe window. Besides the ledger, a run skips

* a dead letter of the same (project, event_id) as one re-driven before or earlier
  in the run: the DLQ is at-least-once, so one refused message may be in it twice,
  and a producer may have sent one event twice;
* one whose event is already counted, by the aggregator's dedupe sets near the time
  it was dead-lettered or near now. The first happens when a batch's dead letters
  were sent and the batch was then fenced and read again with a newer price book;
  the second after a crashed run whose copies the aggregator has counted since.
  Such a dead letter joins the ledger too, so no run after the sets expired sends it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from infraprism.core.dedupe import DedupeWindow
from infraprism.core.events import DEFAULT_PROJECT
from infraprism.core.keys import KeyLayout, redriven_member
from infraprism.core.price_book import PriceBook
from infraprism.pipeline import PipelineError
from infraprism.pipeline.decode import UNPRICED_REASON, judge
from infraprism.pipeline.price_marks import PriceMarks
from infraprism.pipeline.replay import event_producer, line_key, topics_of
from infraprism.pipeline.topics import ensure_topics, log_ends
from infraprism.settings import Settings
from infraprism.stores import prices

log = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 3
PAYLOAD_PREFIX_CHARS = 120
# Acks are awaited in windows of this many sends, and the ledger is written after each
# window: a crash re-sends at most about two windows, which the aggregator then drops.
_ACK_WINDOW = 1_000
# A read that gets nothing for this long while records remain is a broker problem, not an end.
_STALL_S = 60.0

# The variable part of a reason (the offending value, a JSON error's position) is masked,
# so that one kind of refusal is one line of the summary. Applied in order.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r": line \d+ column \d+ \(char \d+\)$"), ""),
    (re.compile(r"(, got ).*$", re.S), r"\1…"),
    (re.compile(r"(priced at )[\d,.]+( USD)"), r"\1…\2"),
    (re.compile(r"^(tags\.).*?(: value must)", re.S), r"\1…\2"),
    (re.compile(r"^(internal error: [^:]+: ).*$", re.S), r"\1…"),
    (re.compile(r"(: )(?:'.*'|\".*\"|-?\d[\d.eE+-]*)$", re.S), r"\1…"),
)


class DeadLetterError(PipelineError):
    """The dead-letter topic could not be read to its end, or a re-drive was not delivered."""


def reason_group(reason: str) -> str:
    """The line of the summary a reason falls in: the reason with its variable part masked.

    An unknown model keeps its name (and provider): it is what a price is set for.
    """
    if reason.startswith(UNPRICED_REASON + " and "):
        return reason
    for pattern, replacement in _MASKS:
        reason = pattern.sub(replacement, reason)
    return reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, at `partition`/`offset` of that topic."""

    partition: int
    offset: int
    record: dict[str, Any]

    @classmethod
    def of(cls, partition: int, offset: int, value: bytes | None) -> DeadLetter:
        try:
            record = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            record = None
        return cls(partition, offset, record if isinstance(record, dict) else {})

    @property
    def position(self) -> str:
        """Its member of the ledger."""
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        reason = self.record.get("reason")
        return reason if isinstance(reason, str) else "(not a dead-letter record)"

    @property
    def source(self) -> str:
        """Where the refused message was: topic[partition]@offset."""
        source = self.record.get("source")
        if not isinstance(source, dict):
            return "?"
        return f"{source.get('topic')}[{source.get('partition')}]@{source.get('offset')}"

    def source_in(self, topic: str) -> tuple[int, int] | None:
        """(partition, offset) of the refused message when it came from `topic`, else None."""
        source = self.record.get("source")
        if not isinstance(source, dict) or source.get("topic") != topic:
            return None
        partition, offset = source.get("partition"), source.get("offset")
        if type(partition) is not int or type(offset) is not int:
            return None
        return partition, offset

    @property
    def dead_lettered_at_ms(self) -> int | None:
        value = self.record.get("dead_lettered_at_ms")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def not_kept(self) -> str | None:
        """Why the refused message cannot be rebuilt from this record, None when it can."""
        record = self.record
        if not isinstance(record.get("reason"), str):
            return "not a dead-letter record"
        if record.get("payload_truncated"):
            whole = record.get("payload_bytes")
            return f"the dead letter kept only part of its {whole}-byte payload"
        if "payload_base64" in record:
            try:
                base64.b64decode(record["payload_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                return "the dead letter's payload_base64 is not base64"
        elif not isinstance(record.get("payload"), str | None):
            return "the dead letter's payload is not text"
        return None

    def original(self) -> bytes | None:
        """The refused message's bytes as it arrived (None for a null message); check `not_kept` first."""
        record = self.record
        if "payload_base64" in record:
            return base64.b64decode(record["payload_base64"])
        payload = record.get("payload")
        return None if payload is None else payload.encode()

    def original_key(self, original: bytes | None) -> bytes | None:
        """The refused message's key; the entity_id when only part of it was kept (any key is correct)."""
        record = self.record
        if record.get("key_truncated"):
            return None if original is None else line_key(original)
        if isinstance(record.get("key_base64"), str):
            try:
                return base64.b64decode(record["key_base64"], validate=True)
            except (binascii.Error, ValueError):
                return None if original is None else line_key(original)
        key = record.get("key")
        return key.encode() if isinstance(key, str) else None

    def payload_prefix(self, limit: int = PAYLOAD_PREFIX_CHARS) -> str:
        record = self.record
        if "payload_base64" in record:
            text = f"base64:{record['payload_base64']}"
        elif isinstance(record.get("payload"), str):
            text = record["payload"]
        else:
            return "(not kept)" if record.get("payload_truncated") else "(null)"
        return text if len(text) <= limit else text[:limit] + "…"

    def matches(self, reason_filter: str | None) -> bool:
        return reason_filter is None or reason_filter.casefold() in self.reason.casefold()


class _DeadLetterReader:
    """Reads the dead-letter topic from its start to the log end seen when opened, as often as asked.

    No consumer group: nothing is committed, and a read disturbs no one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.dlq_topic
        self.total = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._starts: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> _DeadLetterReader:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            if self.topic not in await consumer.topics():
                return self  # never written: no dead letters
            tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
            starts = await consumer.beginning_offsets(tps)
            ends = await log_ends(self.settings.kafka_bootstrap, tps)
        except BaseException:
            await consumer.stop()
            raise
        self._starts = {tp: starts[tp] for tp in tps if ends[tp] > starts[tp]}
        self._ends = {tp: ends[tp] for tp in self._starts}
        self.total = sum(self._ends[tp] - self._starts[tp] for tp in self._starts)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def batches(self) -> AsyncIterator[list[DeadLetter]]:
        """Every dead letter up to the ends seen at open, in offset order per partition, a fetch at a time."""
        consumer = self._consumer
        assert consumer is not None
        remaining = dict(self._ends)
        if not remaining:
            return
        consumer.assign(list(remaining))
        consumer.resume(*remaining)
        for tp, start in self._starts.items():
            consumer.seek(tp, start)
        last_progress = time.monotonic()
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=500)
            batch = [
                DeadLetter.of(tp.partition, record.offset, record.value)
                for tp, records in sorted(fetched.items(), key=lambda item: item[0].partition)
                if tp in remaining
                for record in records
                if record.offset < remaining[tp]
            ]
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
                    consumer.pause(tp)
            if batch:
                last_progress = time.monotonic()
                yield batch
            elif remaining and time.monotonic() - last_progress > _STALL_S:
                left = {tp.partition: end for tp, end in remaining.items()}
                raise DeadLetterError(
                    f"{self.topic} gave nothing for {_STALL_S:.0f} s before the log ends {left} seen at the start"
                )


async def _redis(settings: Settings) -> aioredis.Redis:
    client = aioredis.Redis.from_url(settings.redis_dsn())
    await client.ping()  # a bad address fails here, loudly
    return client


async def _in_ledger(redis: aioredis.Redis, ledger_key: str, batch: list[DeadLetter]) -> list[bool]:
    return [bool(found) for found in await redis.smismember(ledger_key, [letter.position for letter in batch])]


# ---- dlq list ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    dlq_partition: int
    dlq_offset: int
    source: str
    reason: str
    payload_prefix: str
    redriven: bool


@dataclass(slots=True)
class ReasonSummary:
    """The dead letters of one reason group: how many, how many re-driven, a few of them."""

    reason: str
    count: int = 0
    redriven: int = 0
    examples: list[Example] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "redriven": self.redriven,
            "examples": [
                {
                    "dlq_partition": e.dlq_partition,
                    "dlq_offset": e.dlq_offset,
                    "source": e.source,
                    "reason": e.reason,
                    "payload_prefix": e.payload_prefix,
                    "redriven": e.redriven,
                }
                for e in self.examples
            ],
        }


async def summarise(settings: Settings, reason_filter: str | None = None) -> list[ReasonSummary]:
    """The dead letters up to the log end seen at start, by reason group (`reason_group`),
    largest group first; `reason_filter` keeps those whose reason contains it (any case)."""
    ledger_key = KeyLayout(settings.key_prefix).dlq_redriven(settings.dlq_topic)
    groups: dict[str, ReasonSummary] = {}
    redis = await _redis(settings)
    try:
        async with _DeadLetterReader(settings) as reader:
            async for batch in reader.batches():
                kept = [letter for letter in batch if letter.matches(reason_filter)]
                if not kept:
                    continue
                for letter, redriven in zip(kept, await _in_ledger(redis, ledger_key, kept), strict=True):
                    group = reason_group(letter.reason)
                    summary = groups.get(group)
                    if summary is None:
                        summary = groups[group] = ReasonSummary(group)
                    summary.count += 1
                    summary.redriven += redriven
                    if len(summary.examples) < EXAMPLES_PER_REASON:
                        summary.examples.append(
                            Example(
                                letter.partition,
                                letter.offset,
                                letter.source,
                                letter.reason,
                                letter.payload_prefix(),
                                redriven,
                            )
                        )
    finally:
        await redis.aclose()
    return sorted(groups.values(), key=lambda s: (-s.count, s.reason))


# ---- dlq redrive ------------------------------------------------------------------------------


@dataclass(slots=True)
class RedriveResult:
    """What one `redrive` did. Reason groups are `reason_group` lines."""

    dry_run: bool = False
    scanned: int = 0  # dead letters read
    matched: int = 0  # of them, those the reason filter kept
    redriven: Counter[str] = field(default_factory=Counter)  # group as dead-lettered -> re-submitted
    still_failing: Counter[str] = field(default_factory=Counter)  # group as judged now -> left in the DLQ
    not_kept: Counter[str] = field(default_factory=Counter)  # why the message cannot be rebuilt -> how many
    redriven_before: int = 0  # in the ledger already
    copies: int = 0  # the same (project, event_id) as one re-driven before or earlier in this run
    already_counted: int = 0  # counted already: its message was applied with a book that prices it, or a copy was
    waiting: int = 0  # its message is not applied yet: the aggregator judges it with today's book when it is

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "redriven": dict(self.redriven),
            "still_failing": dict(self.still_failing),
            "not_kept": dict(self.not_kept),
            "redriven_before": self.redriven_before,
            "copies": self.copies,
            "already_counted": self.already_counted,
            "waiting": self.waiting,
        }


def _identity_of(original: bytes | None) -> tuple[str, str] | None:
    """(project, event_id) of a message that passed once, without judging it again
    (it may not pass now, after a price was deleted)."""
    try:
        obj = orjson.loads(original) if original is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event_id"), str):
        return None
    project = obj.get("project_id")
    return (project if isinstance(project, str) else DEFAULT_PROJECT, obj["event_id"])


async def _redriven_identities(
    reader: _DeadLetterReader, redis: aioredis.Redis, ledger_key: str, progressed: Callable[[int], None]
) -> set[tuple[str, str]]:
    """(project, event_id) of every dead letter the ledger holds."""
    identities: set[tuple[str, str]] = set()
    async for batch in reader.batches():
        for letter, redriven in zip(batch, await _in_ledger(redis, ledger_key, batch), strict=True):
            if redriven and letter.not_kept is None:
                identity = _identity_of(letter.original())
                if identity is not None:
                    identities.add(identity)
        progressed(len(batch))
    return identities


async def _counted(
    redis: aioredis.Redis,
    layout: KeyLayout,
    window: DedupeWindow,
    candidates: list[tuple[tuple[str, str], int | None]],
) -> list[bool]:
    """Whether each ((project, event_id), dead-lettered at ms) is in a dedupe set near then or near now."""
    now_slot = window.slot_of(int(time.time() * 1000))
    checks: list[list[tuple[str, str]]] = []
    async with redis.pipeline(transaction=False) as pipe:
        for (project, event_id), at_ms in candidates:
            slots = set(window.nearby(now_slot))
            if at_ms is not None:
                slots.update(window.nearby(window.slot_of(at_ms)))
            keys = [layout.dedupe(project, window.slot_ms, slot) for slot in sorted(slots)]
            checks.append([(key, event_id) for key in keys])
            for key in keys:
                pipe.sismember(key, event_id)
        found = iter(await pipe.execute())
    return [any([bool(next(found)) for _ in check]) for check in checks]


async def redrive(
    settings: Settings,
    reason_filter: str | None = None,
    *,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> RedriveResult:
    """Re-submit to the events topic every dead letter that the current price book now passes.

    Reads the DLQ from its start to the log end seen at start, in offset order per
    partition; `reason_filter` keeps those whose reason contains it (any case). Each
    re-submitted message is sent as it arrived, with its key. Those that still fail
    stay in the DLQ, counted by their reason now. `dry_run` sends and records nothing.
    `on_progress(read, total)` follows the reads (two when the ledger is not empty).
    Raises DeadLetterError when the broker refuses a copy, after recording those it took.
    """
    redis = await _redis(settings)
    run = _Redrive(settings, redis, dry_run=dry_run)
    try:
        await run.run(reason_filter, on_progress)
    finally:
        if run.producer is not None:
            await run.producer.stop()
        await redis.aclose()
    log.info(
        "re-drove %d dead letters from %s to %s%s",
        run.result.redriven.total(),
        settings.dlq_topic,
        settings.events_topic,
        " (dry run)" if dry_run else "",
    )
    return run.result


class _Redrive:
    """One run of `redrive`: judge each dead letter, send what passes, ledger what the broker took."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, *, dry_run: bool) -> None:
        self.settings = settings
        self.redis = redis
        self.layout = KeyLayout(settings.key_prefix)
        self.ledger_key = self.layout.dlq_redriven(settings.dlq_topic)
        self.window = DedupeWindow.of_days(settings.dedupe_window_days)
        self.dry_run = dry_run
        self.result = RedriveResult(dry_run=dry_run)
        self.producer: AIOKafkaProducer | None = None
        # (project, event_id) of what an earlier run or this one re-drove.
        self.done: set[tuple[str, str]] = set()
        # Sends awaiting their ack: (future, ledger member, reason group as dead-lettered).
        self.pending: deque[tuple[asyncio.Future[RecordMetadata], str, str | None, str]] = deque()
        self.failures: list[KafkaError] = []
        self.marks = PriceMarks({}, frozenset())  # loaded by run()
        self.applied_until: dict[int, int] = {}
        self.books: dict[int, PriceBook] = {}

    async def run(self, reason_filter: str | None, on_progress: Callable[[int, int], None] | None) -> None:
        book = await prices.load_book(self.redis, self.layout)
        s = self.settings
        # Read after the book: whatever the aggregator applied since was priced with it or later.
        self.marks = await PriceMarks.load(self.redis, self.layout, s.events_topic, s.aggregator_group)
        applied = await self.redis.hgetall(self.layout.offsets(s.events_topic, s.aggregator_group))
        self.applied_until = {int(p): int(o) for p, o in applied.items()}
        self.books = {book.version: book}
        async with _DeadLetterReader(self.settings) as reader:
            reads = 2 if await self.redis.scard(self.ledger_key) > 0 else 1
            read = 0

            def progressed(count: int) -> None:
                nonlocal read
                read += count
                if on_progress is not None:
                    on_progress(read, reader.total * reads)

            if reads == 2:
                # A copy of a dead letter an earlier run re-drove may come before it in the
                # topic (on another partition): every earlier run's events are known first.
                self.done = await _redriven_identities(reader, self.redis, self.ledger_key, progressed)
            if not self.dry_run and reader.total:
                await ensure_topics(s.kafka_bootstrap, topics_of(s), s.topic_partitions)
                self.producer = event_producer(s)
                await self.producer.start()
            async for batch in reader.batches():
                self.result.scanned += len(batch)
                kept = [letter for letter in batch if letter.matches(reason_filter)]
                self.result.matched += len(kept)
                await self._resubmit(await self._passing(kept, book))
                progressed(len(batch))
                if self.failures:
                    break
            if self.producer is not None:
                await self.producer.flush()
            await self._settle(0)
        if self.failures:
            raise DeadLetterError(
                f"the broker took {self.result.redriven.total()} re-driven events and refused others "
                f"({self.failures[0]!r}); run `infraprism dlq redrive` again for the rest"
            )

    async def _passing(self, letters: list[DeadLetter], book: PriceBook) -> list[tuple[DeadLetter, bytes | None]]:
        """The dead letters to re-submit, with their messages; counts the others in the result."""
        result = self.result
        passing: list[tuple[DeadLetter, bytes | None]] = []
        identities: list[tuple[tuple[str, str], int | None]] = []
        for letter, redriven in zip(letters, await _in_ledger(self.redis, self.ledger_key, letters), strict=True):
            if redriven:
                result.redriven_before += 1
                continue
            why = letter.not_kept
            if why is not None:
                result.not_kept[why] += 1
                continue
            original = letter.original()
            verdict = judge(original, book)
            if isinstance(verdict, str):
                result.still_failing[reason_group(verdict)] += 1
                continue
            identity = (verdict.project_id, verdict.event_id)
            if identity in self.done:
                result.copies += 1
                continue
            where = await self._counted_where_it_is(letter, original)
            if where == "waiting":
                result.waiting += 1
                continue
            if where == "counted":
                result.already_counted += 1
                if not self.dry_run:
                    await self.redis.sadd(self.ledger_key, letter.position)
                continue
            self.done.add(identity)
            passing.append((letter, original))
            identities.append((identity, letter.dead_lettered_at_ms))
        counted = await _counted(self.redis, self.layout, self.window, identities)
        settled = [letter.position for (letter, _), is_counted in zip(passing, counted, strict=True) if is_counted]
        result.already_counted += len(settled)
        if settled and not self.dry_run:
            await self.redis.sadd(self.ledger_key, *settled)
        return [one for one, is_counted in zip(passing, counted, strict=True) if not is_counted]

    async def _counted_where_it_is(self, letter: DeadLetter, original: bytes | None) -> str:
        """ "counted" when the aggregates count the dead letter's message itself, "waiting" when
        the aggregator has not applied it yet, else "dead".

        A message can be both a dead letter and counted: its batch was not applied (a crash)
        and was read again once a price existed, or a rebuild judged it with today's book.
        The price marks say with which book its batch was applied; if that book prices it,
        and it was not kept a dead letter, the aggregates count it."""
        source = letter.source_in(self.settings.events_topic)
        if source is None:
            return "dead"
        partition, offset = source
        if offset >= self.applied_until.get(partition, 0):
            return "waiting"
        if (partition, offset) in self.marks.left_out:
            return "dead"
        version = self.marks.marked_version(partition, offset)
        book = self.books.get(version)
        if book is None:
            book = self.books[version] = await prices.book_at(self.redis, self.layout, version)
        return "dead" if isinstance(judge(original, book), str) else "counted"

    async def _resubmit(self, passing: list[tuple[DeadLetter, bytes | None]]) -> None:
        for letter, original in passing:
            group = reason_group(letter.reason)
            if self.dry_run:
                self.result.redriven[group] += 1
                continue
            if self.failures:
                return
            assert self.producer is not None
            try:
                future = await self.producer.send(
                    self.settings.events_topic, original, key=letter.original_key(original)
                )
            except KafkaError as exc:  # refused before sending
                self.failures.append(exc)
                return
            source = letter.source_in(self.settings.events_topic)
            member = None if source is None else redriven_member(*source)
            self.pending.append((future, letter.position, member, group))
            if len(self.pending) >= 2 * _ACK_WINDOW:
                await self._settle(_ACK_WINDOW)

    async def _settle(self, keep: int) -> None:
        """Await the oldest acks down to `keep` in flight, then ledger what the broker took.

        The ledger is written after the ack, never before: a crash in between re-sends
        a copy the aggregator drops, where the other order could lose an event.
        """
        acked: list[str] = []
        sources: list[str] = []
        while len(self.pending) > keep:
            future, position, source, group = self.pending.popleft()
            try:
                await future
            except KafkaError as exc:
                self.failures.append(exc)
                continue
            acked.append(position)
            if source is not None:
                sources.append(source)
            self.result.redriven[group] += 1
        if acked:
            # The originals are counted from their re-driven copies from now on: a rebuild and a
            # re-price leave them out (KeyLayout.redriven_sources), whatever today's prices say.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(self.ledger_key, *acked)
                if sources:
                    pipe.sadd(self.layout.redriven_sources(self.settings.events_topic), *sources)
                await pipe.execute()


__all__ = [
    "DeadLetter",
    "DeadLetterError",
    "Example",
    "ReasonSummary",
    "RedriveResult",
    "reason_group",
    "redrive",
    "summarise",
]

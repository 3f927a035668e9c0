"""Kafka records -> one atomic apply: judge each message, fold the batch, encode it. Pure and picklable.

The aggregator runs `decode_batch` in a child process: decoding, validating
and encoding are most of its Python work, and in a process of their own they
run on the second core while the parent fetches from Kafka and Redis applies
the previous batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson

from infraprism.core.dedupe import DedupeWindow
from infraprism.core.deltas import deltas_of_groups
from infraprism.core.events import DEFAULT_PROJECT, CostEvent, InvalidEvent, parse_event
from infraprism.core.keys import KeyLayout, kept_dead_field
from infraprism.core.price_book import EMPTY_BOOK, SUPPLIED, PriceBook
from infraprism.core.rollup import BatchRollup, Retention, SessionDelta, cell_increments, expire_at

log = logging.getLogger(__name__)

# How the dead-letter reason of an event that has no cost and no price begins (core/events.py).
UNPRICED_REASON = "cost: absent"
# The `known_dead` reason of a message whose dead letter `infraprism dlq redrive` re-submitted:
# left out silently (its copy counts it), neither counted nor dead-lettered again.
REDRIVEN = ""


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Records [from_offset, to_offset) of one partition."""

    partition: int
    from_offset: int
    to_offset: int


@dataclass(frozen=True, slots=True)
class BatchEncoder:
    """Turns a BatchRollup and its offset ranges into apply_batch.lua's JSON argument."""

    key_prefix: str
    topic: str
    group: str
    dedupe_window_days: float
    retention: Retention = field(default_factory=Retention)

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.key_prefix)

    @property
    def dedupe_window(self) -> DedupeWindow:
        return DedupeWindow.of_days(self.dedupe_window_days)

    def dedupe_key(self, project: str, slot: int) -> str:
        return self.layout.dedupe(project, self.dedupe_window.slot_ms, slot)

    @property
    def offsets_key(self) -> str:
        return self.layout.offsets(self.topic, self.group)

    def encode(
        self,
        rollup: BatchRollup,
        ranges: list[PartitionRange],
        price_version: int | None = None,
        kept_dead: list[str] | None = None,
        priced_projects: list[str] | None = None,
    ) -> bytes:
        """The JSON document apply_batch.lua reads; every integer as decimal text.

        `price_version` is the price book's version when the batch priced any event (None
        when every event supplied its cost): the script applies it only while no project of
        `priced_projects` changed its prices since, marks each partition range with it, and
        `kept_dead` ("P@OFFSET": a message kept a dead letter that this version would price)
        with "dead".
        """
        layout = self.layout
        retention = self.retention
        window = self.dedupe_window
        now_s = int(time.time())
        dedupe = [
            [
                layout.dedupe(project, window.slot_ms, slot),
                str(window.expire_at_s(slot, now_s)),
                [layout.dedupe(project, window.slot_ms, near) for near in window.nearby(slot)],
                ids,
            ]
            for (project, slot), ids in rollup.event_ids.items()
        ]
        # Every rollup and leaderboard key the batch changes, and every day it has events
        # of, per project, for the API's cache validation (KeyLayout.bucket_versions).
        # A set: the days of one month share their month's field.
        touched: dict[str, set[str]] = {}
        for project, day in rollup.event_days():
            touched.setdefault(project, set()).update(layout.event_day_version_fields(day))
        hashes = []
        for (project, dimension, granularity, bucket), members in rollup.cell_lanes().items():
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
            session_entry(layout, project, session_id, s) for (project, session_id), s in rollup.sessions.items()
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
        prices = (
            None
            if price_version is None
            else {
                "version_key": layout.prices_version(),
                "version": str(price_version),
                "changed_key": layout.prices_changed(),
                "projects": priced_projects or [],
                "marks_key": layout.price_marks(self.topic, self.group),
                "kept_dead": kept_dead or [],
            }
        )
        return orjson.dumps(
            {
                "offsets_key": self.offsets_key,
                "prices": prices,
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


def session_entry(layout: KeyLayout, project: str, session_id: str, s: SessionDelta) -> list[str]:
    """apply_batch.lua's entry of what a batch adds to one session (its counters may be negative)."""
    return [
        layout.session(project, session_id),
        session_id,
        layout.session_index(project),
        layout.session_type_index_prefix(project),
        layout.session_entity_index_prefix(project),
        s.entity_type,
        s.entity_id,
        str(s.started_ms),
        str(s.ended_ms),
        str(s.turns),
        str(s.cost_nano),
        str(s.input_tokens),
        str(s.output_tokens),
        "1" if s.shared else "",
    ]


class RecentlyCounted:
    """The ids this worker's latest batches counted, kept in the decoder process.

    A producer retry usually lands on the same partition a few thousand
    messages later, in a later batch: dropped here, it never makes Redis
    refuse a batch that must then be decoded and sent again. Redis stays the
    judge of everything this memo does not hold (another worker's batches,
    older ones). It may treat the batch still being applied as counted: a
    batch that does not land is followed by a re-seek, which moves the epoch,
    and the worker then drops whatever was decoded under the old one
    (pipeline/aggregator.py), and this memo starts empty.
    """

    def __init__(self, max_ids: int = 500_000) -> None:
        self.max_ids = max_ids
        self.epoch: int | None = None
        # (project, event_id) -> (batch seq, dedupe slot) of the last counted copy. An id
        # counted twice (copies more than a window apart) keeps its last copy only:
        # missing an earlier one costs a refusal by Redis, never a wrong count.
        self._copies: dict[tuple[str, str], tuple[int, int]] = {}
        self._batches: dict[int, list[tuple[str, str]]] = {}  # batch seq -> its identities, oldest first
        self._size = 0

    def start(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._copies.clear()
            self._batches.clear()
            self._size = 0

    def counted_near(self, identity: tuple[str, str], slot: int, seq: int, window: DedupeWindow) -> bool:
        """Whether an earlier batch than `seq` counted a copy near `slot`."""
        copy = self._copies.get(identity)
        return copy is not None and copy[0] < seq and window.are_near(slot, copy[1])

    def remember(self, seq: int, counted: dict[tuple[str, str], list[int]]) -> None:
        """Record what batch `seq` counts, replacing an earlier decode of the same batch."""
        self._forget(seq)
        copies = self._copies
        for identity, slots in counted.items():
            copies[identity] = (seq, slots[-1])
        self._batches[seq] = list(counted)
        self._size += len(counted)
        while self._size > self.max_ids and len(self._batches) > 1:
            self._forget(next(iter(self._batches)))

    def _forget(self, seq: int) -> None:
        identities = self._batches.pop(seq, None)
        if identities is None:
            return
        self._size -= len(identities)
        copies = self._copies
        for identity in identities:
            copy = copies.get(identity)
            if copy is not None and copy[0] == seq:
                del copies[identity]


# One memo per (prefix, topic, group) in the decoder process; it outlives a call.
_RECENTLY_COUNTED: dict[tuple[str, str, str], RecentlyCounted] = {}
# The price book last sent to this process: the worker sends a book once per version and
# its version alone after that (a big book pickled with every batch would cost more than
# decoding it).
_BOOK_HELD: list[PriceBook] = [EMPTY_BOOK]


def _book_of(book: PriceBook | int) -> PriceBook:
    if isinstance(book, PriceBook):
        _BOOK_HELD[0] = book
        return book
    held = _BOOK_HELD[0]
    if held.version != book:
        raise RuntimeError(f"internal error: the decoder holds price book {held.version}, not {book}")
    return held


@dataclass(slots=True)
class DecodedBatch:
    """What the parent needs back from decoding a batch of raw messages."""

    payload: bytes
    events: int
    dead_letters: list[tuple[int, str]]  # (index in the batch, reason)
    duplicates_in_batch: int
    deltas: list[tuple[bytes, bytes]]  # (key, value) for the deltas topic
    price_version: int | None = None  # the price book's version, when the batch priced an event


def decode_batch(
    encoder: BatchEncoder,
    values: list[bytes | None],
    record_times_ms: list[int],
    ranges: list[PartitionRange],
    exclude: frozenset[tuple[str, str]] = frozenset(),
    *,
    seq: int | None = None,
    epoch: int = 0,
    book: PriceBook | int = EMPTY_BOOK,
    known_dead: list[tuple[int, int, str] | None] | None = None,
) -> DecodedBatch:
    """Validate, de-duplicate, fold and encode one batch of raw event messages.

    `record_times_ms` are the Kafka record timestamps, which place each copy in
    the dedupe window (core/dedupe.py). `exclude` holds (dedupe set key, event_id)
    pairs Redis reported as already counted; those copies are left out. With a
    batch `seq` (increasing per worker) and the worker's `epoch`, the copies
    earlier batches counted are dropped here too (`RecentlyCounted`).

    Nothing one message holds can make this raise: a message that fails any
    step becomes a dead letter with its reason, "internal error: ..." when the
    failure is a bug of ours rather than a broken contract. An event without `cost`
    is priced by `book` (or by the book of that version this process was sent last);
    the batch then applies only while that book is current.
    `known_dead`, aligned with `values`, holds (partition, offset, reason) of messages
    already sent to the DLQ by an earlier decode of this batch: they stay dead letters.
    One that `book` would price now is marked as kept dead in Redis with the batch
    (KeyLayout.price_marks), so a re-price knows it was not counted. One of reason
    REDRIVEN is left out altogether.
    """
    book = _book_of(book)
    window = encoder.dedupe_window
    dead_letters: list[tuple[int, str]] = []
    # (project, event_id) -> the slots of the copies this batch counts.
    counted: dict[tuple[str, str], list[int]] = {}
    duplicates = 0
    accepted: list[tuple[int, CostEvent, int]] = []  # (index in the batch, event, dedupe slot)
    recent = None
    if seq is not None:
        recent = _RECENTLY_COUNTED.setdefault((encoder.key_prefix, encoder.topic, encoder.group), RecentlyCounted())
        recent.start(epoch)
    kept_dead: list[str] = []
    unpriced_projects: set[str] = set()  # of the messages refused for want of a price
    for index, raw in enumerate(values):
        known = None if known_dead is None else known_dead[index]
        if known is None:
            event = judge(raw, book)
        else:
            partition, offset, event = known
            if event == REDRIVEN:
                continue
            if not isinstance(judge(raw, book), str):
                kept_dead.append(kept_dead_field(partition, offset))
        if isinstance(event, str):
            dead_letters.append((index, event))
            if event.startswith(UNPRICED_REASON):
                unpriced_projects.add(_project_of(raw))
            continue
        slot = window.slot_of(record_times_ms[index])
        identity = (event.project_id, event.event_id)
        slots = counted.get(identity)
        if (slots is not None and any(window.are_near(slot, other) for other in slots)) or (
            recent is not None and recent.counted_near(identity, slot, seq, window)  # type: ignore[arg-type]
        ):
            duplicates += 1
            continue
        if exclude and (encoder.dedupe_key(event.project_id, slot), event.event_id) in exclude:
            continue
        counted.setdefault(identity, []).append(slot)
        accepted.append((index, event, slot))
    try:
        decoded = _fold_and_encode(
            encoder, accepted, ranges, dead_letters, duplicates, book.version, kept_dead, unpriced_projects
        )
    except Exception:
        log.exception("a batch failed to fold or encode; retrying its events one at a time")
        # Find the events that trigger the failure, each on its own, and set them aside.
        kept = []
        for one in accepted:
            try:
                _fold_and_encode(encoder, [one], [], [], 0, book.version, [], set())
            except Exception as exc:
                dead_letters.append((one[0], internal_error_reason(exc)))
                counted.pop((one[1].project_id, one[1].event_id), None)  # not counted after all
                continue
            kept.append(one)
        decoded = _fold_and_encode(
            encoder, kept, ranges, sorted(dead_letters), duplicates, book.version, kept_dead, unpriced_projects
        )
    if recent is not None:
        recent.remember(seq, counted)  # type: ignore[arg-type]
    return decoded


def _fold_and_encode(
    encoder: BatchEncoder,
    accepted: list[tuple[int, CostEvent, int]],
    ranges: list[PartitionRange],
    dead_letters: list[tuple[int, str]],
    duplicates: int,
    price_version: int,
    kept_dead: list[str],
    unpriced_projects: set[str],
) -> DecodedBatch:
    rollup = BatchRollup()
    newest: dict[str, int] = {}
    # The projects whose verdicts depend on the price book: a message refused for want of
    # a price as much as a priced one.
    priced = set(unpriced_projects)
    for _, event, slot in accepted:
        rollup.add(event, slot)
        if event.ts_ms > newest.get(event.project_id, -1):
            newest[event.project_id] = event.ts_ms
        if event.price_source != SUPPLIED:
            priced.add(event.project_id)
    deltas = [(delta.project.encode(), delta.encode()) for delta in deltas_of_groups(rollup.groups, newest)]
    version = price_version if priced else None
    payload = encoder.encode(rollup, ranges, version, kept_dead, sorted(priced))
    return DecodedBatch(payload, rollup.events, dead_letters, duplicates, deltas, version)


def _project_of(raw: bytes | None) -> str:
    """The project of a message that was valid up to its price (so a JSON object)."""
    try:
        project = orjson.loads(raw or b"{}").get("project_id")
    except (orjson.JSONDecodeError, AttributeError):
        return DEFAULT_PROJECT
    return project if isinstance(project, str) else DEFAULT_PROJECT


def judge(raw: bytes | None, book: PriceBook = EMPTY_BOOK) -> CostEvent | str:
    """One message's verdict: the event, or the reason it is a dead letter.

    Never raises: a failure that is a bug of ours rather than a broken contract
    sets the message aside as "internal error: ...", and the partition flows on.
    """
    try:
        return parse_event(raw, book)
    except InvalidEvent as exc:
        return str(exc)
    except Exception as exc:
        return internal_error_reason(exc)


def internal_error_reason(exc: BaseException) -> str:
    """The dead-letter reason for a failure that is our bug, not the message's."""
    return f"internal error: {type(exc).__name__}: {exc}"[:500]

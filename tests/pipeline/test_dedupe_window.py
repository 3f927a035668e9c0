"""Which copy of an event_id counts depends on the log alone, never on how it was cut into batches.

A stream of (event, Kafka record time) with repeated event_ids (each copy with
its own `timestamp`, record times within and beyond the window, before and
after each other) is applied as one batch, as one-event batches and in random
batches, through decode_batch + RollupStore with the Duplicates retry the
aggregator does; the three Redis states must be equal, and equal to a small
reference that applies the window rule of core/dedupe.py copy by copy.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from infraprism.core.dedupe import DedupeWindow
from infraprism.core.keys import KeyLayout
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, decode_batch
from infraprism.pipeline.store import Applied, Duplicates, RollupStore
from tests.pipeline import reference
from tests.pipeline.poison import T0_MS, valid_event

WINDOW_DAYS = 1.0
# The rule, restated: a window of 86,400,000 ms is 7 slots of 12,342,858 ms; a copy is a
# duplicate when a counted copy of the same (project, event_id) is at most 7 slots away.
WINDOW_MS = 86_400_000
SLOT_MS = -(-WINDOW_MS // 7)  # seven slots hold the window (rounded up)
# The aggregator re-decodes and retries on each Duplicates answer; more rounds than
# copies in a batch means it never ends.
MAX_ROUNDS = 50

Stream = list[tuple[dict[str, Any], int]]

# ---- the reference -------------------------------------------------------------------------


def counted_copies(stream: Stream) -> list[dict[str, Any]]:
    """The copies that count, in log order: each one not within 7 slots of a copy already counted."""
    counted: dict[tuple[str, str], list[int]] = {}
    out = []
    for event, record_ms in stream:
        identity = (event.get("project_id", "default"), event["event_id"])
        slot = record_ms // SLOT_MS
        slots = counted.setdefault(identity, [])
        if any(abs(slot - other) <= 7 for other in slots):
            continue
        slots.append(slot)
        out.append(event)
    return out


# ---- driving the product as the aggregator does ----------------------------------------------


async def apply_like_the_aggregator(
    store: RollupStore, values: list[bytes], record_times_ms: list[int], ranges: list[PartitionRange]
) -> int:
    """decode_batch + apply, and on Duplicates re-decode excluding every id named so far (Aggregator._apply)."""
    decoded = decode_batch(store.encoder, values, record_times_ms, ranges)
    answers = []
    excluded: frozenset[tuple[str, str]] = frozenset()
    for _ in range(MAX_ROUNDS):
        result = await store.apply_payload(decoded.payload)
        if isinstance(result, Applied):
            return decoded.events
        assert isinstance(result, Duplicates), result
        answers.append(sorted(result.ids))
        excluded |= result.ids
        decoded = decode_batch(store.encoder, values, record_times_ms, ranges, excluded)
    raise AssertionError(f"the Duplicates retry never ends; Redis answered, in turn: {answers[:6]} ...")


async def ingest(redis_client, prefix: str, stream: Stream, cuts: list[int]) -> int:
    """Apply `stream` cut before each index in `cuts`; returns the events counted."""
    store = RollupStore(redis_client, KeyLayout(prefix), topic="events", group="agg", dedupe_window_days=WINDOW_DAYS)
    values = [orjson.dumps(event) for event, _ in stream]
    times = [record_ms for _, record_ms in stream]
    bounds = [0, *sorted(set(cuts) - {0, len(stream)}), len(stream)]
    counted = 0
    for start, end in zip(bounds, bounds[1:], strict=False):
        counted += await apply_like_the_aggregator(
            store, values[start:end], times[start:end], [PartitionRange(0, start, end)]
        )
    return counted


async def contents(redis_client, prefix: str) -> dict[str, object]:
    """Every key's content without its prefix, TTL, or the version counters (they count batches)."""
    out: dict[str, object] = {}
    async for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key[len(prefix) :]
        kind = await redis_client.type(key)
        if name.endswith(":ver"):
            continue
        if name.endswith(":bv"):
            out[name] = frozenset(await redis_client.hkeys(key))  # which buckets moved, not how often
        elif kind == "hash":
            out[name] = await redis_client.hgetall(key)
        elif kind == "set":
            out[name] = frozenset(await redis_client.smembers(key))
        elif kind == "zset":
            out[name] = await redis_client.zrange(key, 0, -1, withscores=True)
        else:
            out[name] = (kind, await redis_client.get(key))
    return out


# ---- the stream ------------------------------------------------------------------------------

# Gaps around the slot and window edges, and beyond.
GAPS_MS = [0, 1, SLOT_MS - 1, SLOT_MS, WINDOW_MS - 1, WINDOW_MS, 8 * SLOT_MS, 8 * SLOT_MS + 1, 2 * WINDOW_MS]
ENTITY_OF = {"a": "c1", "b": "c2", "c": "c3"}  # a copy repeats its entity, as a producer retry does


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    stream = []
    for _ in range(draw(st.integers(1, 24))):
        event_id = draw(st.sampled_from(sorted(ENTITY_OF)))
        entity = ENTITY_OF[event_id]
        event = valid_event(
            0,
            event_id=event_id,
            entity_id=entity,
            # Each copy its own instant: which copy counts decides the buckets.
            timestamp=T0_MS + draw(st.integers(0, 3 * 86_400_000)),
            cost=draw(st.sampled_from([0.25, 1, 3.5])),
            session_id=f"s-{entity}",
        )
        if draw(st.booleans()):
            event["project_id"] = "acme"  # the same event_id in another project is another event
        offset = draw(st.sampled_from(GAPS_MS) | st.integers(0, 5 * WINDOW_MS))
        # Record times go back too: producer clocks differ.
        stream.append((event, T0_MS + offset if draw(st.booleans()) else T0_MS + 5 * WINDOW_MS - offset))
    return stream


def copy_at(record_ms: int, ts_ms: int) -> tuple[dict[str, Any], int]:
    return valid_event(0, event_id="a", entity_id="c1", timestamp=ts_ms, session_id="s-c1"), record_ms


# A copy counted, then two retries within its window whose record times fall in two slots,
# in one batch: each retry is a duplicate.
TWO_SLOT_RETRY = [
    copy_at(T0_MS, T0_MS),
    copy_at(T0_MS + 3 * SLOT_MS, T0_MS + 1),
    copy_at(T0_MS + 4 * SLOT_MS, T0_MS + 2),
]


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(stream=streams(), data=st.data())
@example(stream=TWO_SLOT_RETRY, data=None).via("the retry of two copies in two slots")
async def test_any_cut_of_the_stream_gives_the_same_state(redis_client, settings, stream, data):
    if data is None:
        cuts = [1]
    else:
        cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=6), label="cuts")
    run = f"{settings.key_prefix}:{uuid.uuid4().hex[:8]}"
    runs = {"one batch": [], "one event a batch": list(range(len(stream))), "random cuts": cuts}
    prefixes = {name: f"{run}:{n}" for n, name in enumerate(runs)}
    counted = {name: await ingest(redis_client, prefixes[name], stream, runs[name]) for name in runs}
    states = {name: await contents(redis_client, prefixes[name]) for name in runs}

    expected = counted_copies(stream)
    assert counted == dict.fromkeys(runs, len(expected))
    assert states["one event a batch"] == states["one batch"]
    assert states["random cuts"] == states["one batch"]
    # The copies that count, with their own timestamps, are what the aggregates hold.
    renamed = [copy | {"event_id": f"{copy['event_id']}#{n}"} for n, copy in enumerate(expected)]
    want = reference.expected_state(renamed)
    got = await reference.read_state(redis_client, prefixes["one batch"])
    for section in ("cells", "leaderboards", "sessions", "session_index", "projects", "entity_types"):
        assert got[section] == want[section], reference.diff({section: want[section]}, {section: got[section]})


async def test_the_duplicates_retry_ends_when_two_copies_fall_in_two_slots(redis_client, settings):
    """The smallest case of the stream above: one copy applied, then its two retries in one batch."""
    store = RollupStore(
        redis_client, KeyLayout(settings.key_prefix), topic="events", group="agg", dedupe_window_days=WINDOW_DAYS
    )
    (first, first_ms), *retries = TWO_SLOT_RETRY
    assert await apply_like_the_aggregator(store, [orjson.dumps(first)], [first_ms], [PartitionRange(0, 0, 1)]) == 1

    counted = await apply_like_the_aggregator(
        store, [orjson.dumps(e) for e, _ in retries], [ms for _, ms in retries], [PartitionRange(0, 1, 3)]
    )

    assert counted == 0


# ---- the rule itself: a plain table ----------------------------------------------------------


def window_ms_of(days: float) -> int:
    return DedupeWindow.of_days(days).window_ms


def slot_ms_of(days: float) -> int:
    return DedupeWindow.of_days(days).slot_ms


# (window in days, record time of the first copy, of the second, the copies are one event)
RULE = [
    (1.0, 0, 0, True),
    (1.0, 0, 1, True),
    (1.0, 0, WINDOW_MS - 1, True),
    (1.0, WINDOW_MS - 1, 0, True),  # a retry with an earlier record time
    (1.0, SLOT_MS - 1, SLOT_MS - 1 + WINDOW_MS - 1, True),  # the worst alignment to the slots
    (1.0, SLOT_MS, SLOT_MS + WINDOW_MS - 1, True),
    (1.0, 0, 8 * SLOT_MS, False),  # eight slots (8/7 of a window) later
    (1.0, 8 * SLOT_MS, 0, False),  # eight slots earlier
    (1.0, 0, 5 * WINDOW_MS, False),
    (7.0, 0, 7 * 86_400_000 - 1, True),
    (7.0, 86_400_000 - 1, 8 * 86_400_000 - 2, True),
    (7.0, 0, 8 * 86_400_000, False),
    (7.0, 8 * 86_400_000, 0, False),
    (0.5, 0, window_ms_of(0.5) - 1, True),
    (0.5, 0, 8 * slot_ms_of(0.5), False),
    # A window that is not a multiple of 7 ms (2 days): the slots round up, so seven hold it.
    (2.0, slot_ms_of(2.0) - 1, slot_ms_of(2.0) - 1 + window_ms_of(2.0) - 1, True),
]


@pytest.mark.parametrize(("days", "first_ms", "second_ms", "one_event"), RULE)
def test_copies_less_than_a_window_apart_are_one_event_and_8_7_apart_count_again(days, first_ms, second_ms, one_event):
    window = DedupeWindow.of_days(days)
    first, second = window.slot_of(first_ms), window.slot_of(second_ms)
    assert window.are_near(first, second) is one_event
    assert (second in window.nearby(first)) is one_event
    # And as decode_batch applies it, with both copies in one batch.
    encoder = BatchEncoder(key_prefix="p", topic="events", group="agg", dedupe_window_days=days)
    raw = orjson.dumps(valid_event(1))
    decoded = decode_batch(encoder, [raw, raw], [first_ms, second_ms], [PartitionRange(0, 0, 2)])
    assert decoded.events == (1 if one_event else 2)

"""Whatever a message holds, the decoder answers with an event or a dead letter, and the apply adds exactly.

The first half is pure (no broker, no Redis): arbitrary JSON values, mutated
events and random bytes go through `judge` and `decode_batch` with a real
BatchEncoder; nothing may raise, every message is counted or dead-lettered
with a reason, and a batch counts exactly the messages `judge` accepts. The
second half applies events at the contract's bounds to the real redis-server
and compares the stored counters with Python's exact sums.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from infraprism.core.buckets import Granularity
from infraprism.core.cell import Cell
from infraprism.core.events import MAX_COST_USD, MAX_EPOCH_MS, MAX_LATENCY_MS, MAX_TOKENS, CostEvent
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.pipeline.deadletter import DLQ_PAYLOAD_MAX_BYTES, dead_letter_record
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, Retention, decode_batch, judge
from infraprism.pipeline.store import Applied, RollupStore
from tests.pipeline import reference
from tests.pipeline.poison import WHAT_WAS_SEEN, encode, non_utf8_line, valid_event

# As RollupStore builds it, with a retention so every bucket's expiry is computed too.
ENCODER = BatchEncoder(
    key_prefix="fuzz", topic="events", group="agg", dedupe_window_days=7.0, retention=Retention(30, 400, 3650)
)
ONE_MIB = 1 << 20

# ---- strategies --------------------------------------------------------------------------

HUGE_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 2**70, -(2**70), 10**12, 10**12 + 1, 10**400]
ODD_FLOATS = [1e306, -1e306, 1e300, -0.0, 0.0, 5e-324, -5e-324, 1.7976931348623157e308, 1e6, 1e6 + 1e-9, 0.1]
# Control characters, bidi marks, a BOM, a lone surrogate (not encodable as UTF-8), astral characters.
ODD_CHARS = ["\x00", "\x1f", "\x7f", "\u200f", "\u202e", "\ufeff", "\ud800", "\U0001f600", "\U0010ffff"]
ODD_TEXT = [*ODD_CHARS, "a:b", "\u200fgpt-4o", ""]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=40),
    st.sampled_from(ODD_TEXT),
    st.text(alphabet=st.sampled_from([*ODD_CHARS, "x", "0"]), max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)

EVENT_FIELDS = [
    *valid_event(0),
    "project_id",
    "latency_ms",
    "session_id",
    "tags",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
]


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one to three fields replaced by arbitrary values, or removed."""
    event = valid_event(draw(st.integers(0, 10**6)), session_id="s1", latency_ms=120, tags={"env": "prod"})
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(EVENT_FIELDS) | st.text(max_size=8))
        if draw(st.integers(0, 5)) == 0:
            event.pop(name, None)
        else:
            event[name] = draw(json_values)
    return event


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON text of any value: big integers included, lone surrogates as escapes or as invalid UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


raw_messages = st.one_of(
    st.builds(to_bytes, json_values, st.booleans()),
    st.builds(to_bytes, mutated_events(), st.booleans()),
    st.binary(max_size=200),
    st.builds(lambda tail: b"\xff" + tail, st.binary(max_size=50)),
    st.sampled_from([b"", b"   ", b"null", b"{}", b"[]", b'"x"', b"\xef\xbb\xbf{}", b"\xc0\x80", b"\xed\xa0\x80"]),
    st.none(),
)


def assert_verdict(raw: bytes | None) -> CostEvent | str:
    verdict = judge(raw)
    assert isinstance(verdict, CostEvent | str)
    if isinstance(verdict, str):
        assert verdict.strip(), f"empty reason for {raw!r:.200}"
        # A reason of that kind is a bug of ours, not a broken contract.
        assert not verdict.startswith("internal error"), verdict
    return verdict


# ---- judge: one message --------------------------------------------------------------------


@pytest.mark.parametrize("poison", WHAT_WAS_SEEN, ids=lambda p: p.name)
def test_what_was_seen_is_a_dead_letter_with_its_reason(poison):
    verdict = judge(poison.raw)
    assert isinstance(verdict, str)
    assert verdict.startswith(poison.reason_start), verdict


@pytest.mark.parametrize("poison", WHAT_WAS_SEEN, ids=lambda p: p.name)
def test_what_was_seen_next_to_a_valid_event_leaves_the_valid_one_counted(poison):
    values = [encode(valid_event(100)), poison.raw, encode(valid_event(101))]
    decoded = decode_batch(ENCODER, values, [0, 0, 0], [PartitionRange(0, 0, 3)])
    assert decoded.events == 2
    assert [index for index, _ in decoded.dead_letters] == [1]
    assert decoded.dead_letters[0][1].startswith(poison.reason_start)


def test_the_800_kb_non_utf8_line_makes_a_dead_letter_under_1_mib():
    raw = non_utf8_line(800_000)
    assert len(raw) > 790_000
    record = dead_letter_record(judge(raw), raw, topic="events", partition=3, offset=41, key=b"k")
    assert len(record) < ONE_MIB
    letter = orjson.loads(record)
    assert letter["payload_truncated"] is True
    assert letter["payload_bytes"] == len(raw)
    assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(letter["payload_base64"]) == raw[:DLQ_PAYLOAD_MAX_BYTES]
    assert letter["reason"].startswith("not valid UTF-8 JSON")
    assert letter["source"] == {"topic": "events", "partition": 3, "offset": 41}


@pytest.mark.parametrize("depth", [1, 100, 1023, 1024, 1025, 5_000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_values_are_judged_without_raising(depth, opener):
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    for raw in (nested.encode(), orjson.dumps(valid_event(1)).replace(b'"gpt-4o"', nested.encode())):
        verdict = assert_verdict(raw)
        assert isinstance(verdict, str)  # a nested value is never a valid event nor a valid model


@hypothesis_settings(max_examples=400, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value_is_judged_without_raising(value, ascii_only):
    assert_verdict(to_bytes(value, ascii_only))


@hypothesis_settings(max_examples=400, deadline=None)
@given(event=mutated_events(), ascii_only=st.booleans())
def test_a_mutated_event_is_an_event_or_a_dead_letter(event, ascii_only):
    verdict = assert_verdict(to_bytes(event, ascii_only))
    if isinstance(verdict, CostEvent):
        # What it accepted respects the contract's bounds, whatever the mutation.
        assert 0 <= verdict.input_tokens <= MAX_TOKENS
        assert 0 <= verdict.output_tokens <= MAX_TOKENS
        assert 0 <= verdict.cost_nano <= MAX_COST_USD * 10**9
        assert 0 <= verdict.ts_ms <= MAX_EPOCH_MS
        assert verdict.latency_us is None or 0 <= verdict.latency_us <= MAX_LATENCY_MS * 1000


@hypothesis_settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300) | st.none())
def test_random_bytes_are_judged_without_raising(raw):
    assert_verdict(raw)


# ---- decode_batch: a batch counts exactly its valid messages -------------------------------


def payload_totals(payload: bytes) -> dict[str, list[int]]:
    """day -> the six counters of the TOTAL day cells in an encoded batch."""
    layout = KeyLayout(ENCODER.key_prefix)
    totals: dict[str, list[int]] = {}
    for key, _, cells in orjson.loads(payload)["hashes"]:
        for member, packed in zip(cells[::2], cells[1::2], strict=True):
            day = key.rsplit(":", 1)[1]
            if key == layout.rollup(key.split(":")[2], Dimension.TOTAL, Granularity.DAY, day):
                assert member == ""
                totals[day] = [a + b for a, b in zip(totals.get(day, [0] * 6), Cell.unpack(packed), strict=True)]
    return totals


@hypothesis_settings(max_examples=150, deadline=None)
@given(values=st.lists(raw_messages | st.builds(orjson.dumps, st.integers(0, 50).map(valid_event)), max_size=40))
def test_a_batch_counts_exactly_the_messages_judge_accepts(values):
    verdicts = [assert_verdict(raw) for raw in values]
    decoded = decode_batch(ENCODER, values, [0] * len(values), [PartitionRange(0, 0, len(values))])

    poison = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, str)]
    assert decoded.dead_letters == poison
    # All copies share one record-time slot: the first copy of each (project, event_id) counts.
    first: dict[tuple[str, str], CostEvent] = {}
    for verdict in verdicts:
        if isinstance(verdict, CostEvent):
            first.setdefault((verdict.project_id, verdict.event_id), verdict)
    assert decoded.events == len(first)
    assert decoded.duplicates_in_batch == len(values) - len(poison) - len(first)
    expected: dict[str, list[int]] = {}
    for event in first.values():
        day = reference.labels(event.ts_ms)[reference.DAY]
        counters = expected.setdefault(day, [0] * 6)
        latency = event.latency_us
        for index, value in enumerate(
            (1, event.cost_nano, event.input_tokens, event.output_tokens, latency or 0, latency is not None)
        ):
            counters[index] += int(value)
    # Summed over projects on both sides: the batch mixes them.
    assert payload_totals(decoded.payload) == expected


# ---- dead letters: always JSON, always under 1 MiB, exact when not cut ----------------------


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Bytes of a random size up to ~600 kB: random, ASCII, multi-byte UTF-8, or control characters."""
    size = draw(
        st.sampled_from([0, 1, DLQ_PAYLOAD_MAX_BYTES - 1, DLQ_PAYLOAD_MAX_BYTES, DLQ_PAYLOAD_MAX_BYTES + 1])
        | st.integers(0, 600_000)
    )
    rng = random.Random(draw(st.integers(0, 2**32)))
    kind = draw(st.sampled_from(["random", "ascii", "utf8", "control"]))
    if kind == "random":
        return rng.randbytes(size)
    if kind == "ascii":
        return bytes(rng.choices(b'{}"\\ abcxyz0123456789:,', k=size))
    if kind == "utf8":
        # Characters of 1 to 4 bytes, so a cut at the limit can fall inside one.
        text = "".join(rng.choices(["a", "\u00e9", "\u20ac", "\U0001f600", "\u200f"], k=size // 2))
        return text.encode()[:size] if draw(st.booleans()) else text.encode()
    return bytes(rng.choices(range(32), k=size))


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=payloads() | st.none(), key=st.none() | st.binary(max_size=64), reason=st.text(max_size=3000))
@example(raw=b"\x01" * DLQ_PAYLOAD_MAX_BYTES, key=None, reason="x")  # escapes to 6 bytes a byte
def test_a_dead_letter_is_json_under_1_mib_and_keeps_the_payload(raw, key, reason):
    record = dead_letter_record(reason, raw, topic="events", partition=0, offset=7, key=key)
    assert len(record) < ONE_MIB, f"a dead letter of {len(record)} bytes is over the producer's 1 MiB limit"
    letter = orjson.loads(record)
    assert letter["source"] == {"topic": "events", "partition": 0, "offset": 7}
    if raw is None:
        assert letter["payload"] is None
        return
    kept = base64.b64decode(letter["payload_base64"]) if "payload_base64" in letter else letter["payload"].encode()
    if len(raw) <= DLQ_PAYLOAD_MAX_BYTES:
        assert kept == raw
        assert "payload_truncated" not in letter
    else:
        assert raw.startswith(kept)
        assert len(kept) >= DLQ_PAYLOAD_MAX_BYTES - 3  # at most a cut character is dropped
        assert letter["payload_truncated"] is True
        assert letter["payload_bytes"] == len(raw)
        assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()


# ---- the apply: values at the contract's bounds add exactly in Redis --------------------------

EDGE_TIMESTAMPS = [
    0,
    "1970-01-01T00:00:00Z",
    "1970-01-01T05:30:00+05:30",  # epoch 0, given east of UTC
    MAX_EPOCH_MS,
    "9998-12-31T23:59:59.999Z",
    "9998-12-31T18:59:59.999-05:00",  # the last instant, given west of UTC
]


@st.composite
def extreme_events(draw: st.DrawFn, index: int) -> dict[str, Any]:
    tokens = st.sampled_from([0, 1, MAX_TOKENS - 1, MAX_TOKENS]) | st.integers(0, MAX_TOKENS)
    event = valid_event(
        index,
        entity_id=draw(st.sampled_from(["c1", "c2"])),
        timestamp=draw(st.sampled_from(EDGE_TIMESTAMPS)),
        input_tokens=draw(tokens),
        output_tokens=draw(tokens),
        cost=draw(
            st.sampled_from([0, 0.0, MAX_COST_USD, float(MAX_COST_USD), 999_999.999999999, 5e-324])
            | st.floats(0, MAX_COST_USD)
        ),
        session_id=draw(st.sampled_from(["s1", "s2"])),
    )
    latency = draw(st.sampled_from([None, 0, MAX_LATENCY_MS, MAX_LATENCY_MS - 0.001]) | st.floats(0, MAX_LATENCY_MS))
    if latency is not None:
        event["latency_ms"] = latency
    return event


@st.composite
def extreme_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 300))
    return [draw(extreme_events(i)) for i in range(count)]


def exact_day_totals(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """day -> six counters, from the raw values by the reference's own arithmetic."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
    for raw in events:
        event = reference.normalize(raw)
        counters = totals[reference.labels(event.ts_ms)[reference.DAY]]
        latency = event.latency_us
        for index, value in enumerate(
            (1, event.cost_nano, event.input_tokens, event.output_tokens, latency or 0, int(latency is not None))
        ):
            counters[index] += value
    return dict(totals)


async def apply_in_batches(store: RollupStore, events: list[dict[str, Any]], cuts: int) -> None:
    values = [orjson.dumps(event) for event in events]
    size = max(1, -(-len(values) // cuts))
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        decoded = decode_batch(store.encoder, chunk, [0] * len(chunk), [PartitionRange(0, start, start + len(chunk))])
        assert decoded.dead_letters == []
        assert await store.apply_payload(decoded.payload) == Applied()


async def stored_day_totals(redis_client, layout: KeyLayout, days: list[str]) -> dict[str, list[int]]:
    totals = {}
    for day in days:
        packed = await redis_client.hget(layout.rollup("default", Dimension.TOTAL, Granularity.DAY, day), "")
        if packed is not None:
            totals[day] = Cell.unpack(packed)
    return totals


@hypothesis_settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(events=extreme_streams(), cuts=st.integers(1, 4))
async def test_events_at_the_bounds_apply_and_add_exactly(redis_client, settings, events, cuts):
    # A prefix of its own per example: examples share the test's fixtures.
    layout = KeyLayout(f"{settings.key_prefix}:{uuid.uuid4().hex[:12]}")
    # No retention: a 1970 bucket with one would expire as it is written.
    store = RollupStore(redis_client, layout, topic="events", group="agg", dedupe_window_days=7.0)
    await apply_in_batches(store, events, cuts)

    expected = exact_day_totals(events)
    assert await stored_day_totals(redis_client, layout, list(expected)) == expected
    for session_id in ("s1", "s2"):
        turns = [reference.normalize(e) for e in events if e["session_id"] == session_id]
        stored = await redis_client.hgetall(layout.session("default", session_id))
        if not turns:
            assert stored == {}
            continue
        assert int(stored["turns"]) == len(turns)
        assert int(stored["cost"]) == sum(t.cost_nano for t in turns)
        assert int(stored["input"]) == sum(t.input_tokens for t in turns)
        assert int(stored["output"]) == sum(t.output_tokens for t in turns)
        assert int(stored["started_ms"]) == min(t.ts_ms for t in turns)
        assert int(stored["ended_ms"]) == max(t.ts_ms for t in turns)


async def test_a_session_adds_exactly_past_2_63_nano_dollars(redis_client, settings):
    """10,000 turns of $1,000,000: 10^19 nano-dollars, past HINCRBY's 2^63 - 1, in four batches."""
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="events", group="agg", dedupe_window_days=7.0)
    events = [valid_event(i, cost=MAX_COST_USD, input_tokens=MAX_TOKENS, session_id="big") for i in range(10_000)]
    await apply_in_batches(store, events, cuts=4)

    total_nano = 10_000 * MAX_COST_USD * 10**9
    assert total_nano > 2**63
    session = await redis_client.hgetall(layout.session("default", "big"))
    assert session["cost"] == str(total_nano)
    assert session["input"] == str(10_000 * MAX_TOKENS)
    assert session["turns"] == "10000"
    cell = await redis_client.hget(layout.rollup("default", Dimension.TOTAL, Granularity.DAY, "20250115"), "")
    assert Cell.unpack(cell)[:4] == [10_000, total_nano, 10_000 * MAX_TOKENS, 10_000 * 20]

"""Random event streams through Kafka and the real aggregator == the independent reference.

Each hypothesis example gets its own topics, group and key prefix, produces a
stream with exact repeats (retries/replays), out-of-order delivery, malformed
messages, timestamps in every accepted form (Z, offsets, epoch ms) at bucket
edges (23:59:59.999, month ends, 29 February, year end), runs the aggregator
until Redis holds the log end, and compares the whole Redis state with
tests/pipeline/reference.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from infraprism.settings import Settings
from tests.pipeline import reference
from tests.pipeline.helpers import produce, running_aggregator, wait_caught_up

EDGES = [
    "2024-02-29T23:59:59.999Z",  # the leap day's last millisecond
    "2024-02-28T23:59:59.999Z",
    "2024-03-01T00:00:00.000Z",
    "2023-02-28T23:59:59.999Z",  # not a leap year
    "2024-01-31T23:59:59.999Z",  # month ends
    "2024-04-30T23:59:59.999Z",
    "2024-12-31T23:59:59.999Z",  # year end
    "2025-01-01T00:00:00.000Z",
    "2025-06-15T12:30:00.000Z",
]
EDGE_MS = [reference.timestamp_ms(text) for text in EDGES]
OFFSETS_MIN = [0, 330, -480, 345, 840, -720]  # Z, +05:30, -08:00, +05:45, +14:00, -12:00

MODELS = [("gpt-4o", "openai"), ("claude-3-5-sonnet", "anthropic"), ("m:x é", "custom")]
ENTITIES = [
    ("customer", "acme"),
    ("customer", "globex"),
    ("team", "日本-corp"),
    ("user:x", "a:b c"),
    ("team", "ml"),
    ("customer", "initech"),
]
TAG_POOL = [("env", "production"), ("env", "staging"), ("feature", "chat:bot"), ("région", "eu west")]
SESSIONS = [None, None, "s1", "s2", "s:3 é"]
PROJECTS = [None, "default", "p1", "acme.prod_2"]

# Costs: ordinary decimals, half-even edges at the nano-dollar, integers, zero.
COSTS = st.one_of(
    st.decimals(min_value=0, max_value=3, places=9, allow_nan=False).map(float),
    st.decimals(min_value=0, max_value=1, places=12, allow_nan=False).map(float),
    st.sampled_from([0, 0.0, 2, 5e-10, 1.5e-9, 2.5e-9, 0.0000000025, 0.01858, 1e-12, 123.456789012]),
)
LATENCIES = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=120_000),
    st.decimals(min_value=0, max_value=5000, places=3, allow_nan=False).map(float),
    st.sampled_from([0.0005, 0.0015, 0.0025]),
)

BAD_MESSAGES = [
    b"not json",
    b"\xff\xfe not utf-8",
    b"[1, 2, 3]",
    orjson.dumps(
        {
            "event_id": "bad-1",
            "timestamp": "2024-02-29",
            "entity_type": "c",
            "entity_id": "x",
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 1,
            "output_tokens": 1,
            "cost": 0.1,
        }
    ),
    orjson.dumps(
        {
            "event_id": "bad-2",
            "timestamp": "2024-02-29T10:00:00Z",
            "entity_type": "c",
            "entity_id": "x",
            "model": "gpt-4o",
            "input_tokens": -1,
            "output_tokens": 1,
            "cost": 0.1,
        }
    ),
]


def format_timestamp(ts_ms: int, style: Any) -> int | str:
    """The instant as epoch ms, or RFC 3339 with an offset (written with datetime, parsed by the reference)."""
    if style == "ms":
        return ts_ms
    offset_min, fraction, sep, zulu = style
    moment = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts_ms)).astimezone(
        timezone(timedelta(minutes=offset_min))
    )
    if ts_ms % 1000 == 0 and fraction == "none":
        text = moment.isoformat(sep=sep, timespec="seconds")
    else:
        text = moment.isoformat(sep=sep, timespec="microseconds" if fraction == "micro" else "milliseconds")
    if offset_min == 0:
        text = text.replace("+00:00", zulu)
    return text


TIMESTAMP_STYLES = st.one_of(
    st.just("ms"),
    st.tuples(
        st.sampled_from(OFFSETS_MIN),
        st.sampled_from(["none", "milli", "micro"]),
        st.sampled_from(["T", "T", " "]),
        st.sampled_from(["Z", "z", "+00:00"]),
    ),
)
INSTANTS = st.one_of(
    st.builds(
        lambda edge, jitter: edge + jitter,
        st.sampled_from(EDGE_MS),
        st.sampled_from([0, 0, 1, -1, 999, -1000, -3_599_999, 86_400_000]),
    ),
    st.integers(min_value=EDGE_MS[3], max_value=EDGE_MS[-1]),
)


@st.composite
def events(draw: st.DrawFn, index: int) -> dict[str, Any]:
    model, provider = draw(st.sampled_from(MODELS))
    etype, eid = draw(st.sampled_from(ENTITIES))
    event: dict[str, Any] = {
        "event_id": f"ev-{index}" if index % 4 else f"id:{index}/é",
        "timestamp": format_timestamp(draw(INSTANTS), draw(TIMESTAMP_STYLES)),
        "entity_type": etype,
        "entity_id": eid,
        "model": model,
        "provider": provider,
        "input_tokens": draw(st.integers(min_value=0, max_value=2_000_000)),
        "output_tokens": draw(st.integers(min_value=0, max_value=100_000)),
        "cost": draw(COSTS),
    }
    project = draw(st.sampled_from(PROJECTS))
    if project is not None:
        event["project_id"] = project
    latency = draw(LATENCIES)
    if latency is not None:
        event["latency_ms"] = latency
    session = draw(st.sampled_from(SESSIONS))
    if session is not None:
        event["session_id"] = session
    tags = draw(st.lists(st.sampled_from(TAG_POOL), max_size=3, unique_by=lambda kv: kv[0]))
    if tags or draw(st.booleans()):
        event["tags"] = dict(tags)
    return event


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any] | bytes]:
    """Distinct events, exact repeats of some of them, a few malformed messages, in a random order."""
    count = draw(st.integers(min_value=1, max_value=60))
    distinct = [draw(events(i)) for i in range(count)]
    # A session whose earliest instant has turns of two entities has no defined entity
    # (arrival order would decide); give such sessions one entity.
    ambiguous = reference.ambiguous_sessions(distinct)
    first_entity: dict[tuple[str, str], tuple[str, str]] = {}
    for event in distinct:
        key = (event.get("project_id") or "default", event.get("session_id"))
        if key in ambiguous:
            etype, eid = first_entity.setdefault(key, (event["entity_type"], event["entity_id"]))
            event["entity_type"], event["entity_id"] = etype, eid
    repeats = draw(st.lists(st.sampled_from(range(count)), max_size=count))
    bad = draw(st.lists(st.sampled_from(BAD_MESSAGES), max_size=3))
    messages: list[dict[str, Any] | bytes] = [*distinct, *(dict(distinct[i]) for i in repeats), *bad]
    order = draw(st.permutations(range(len(messages))))
    return [messages[i] for i in order]


def example_settings(base: Settings, batch_max_events: int, partitions: int) -> Settings:
    unique = uuid.uuid4().hex[:12]
    return base.model_copy(
        update={
            "key_prefix": f"t{unique}",
            "events_topic": f"events-{unique}",
            "dlq_topic": f"events-{unique}.dlq",
            "deltas_topic": f"deltas-{unique}",
            "aggregator_group": f"agg-{unique}",
            "topic_partitions": partitions,
            "batch_max_events": batch_max_events,
            # Test events lie in 2023-2025; the default 7-day window would already have expired them.
            "dedupe_window_days": 3650,
        }
    )


async def ingest_and_compare(cfg: Settings, stream: list[dict[str, Any] | bytes]) -> None:
    client = aioredis.Redis.from_url(cfg.redis_dsn(), decode_responses=True)
    try:
        await produce(cfg, stream)
        async with running_aggregator(cfg):
            await wait_caught_up(client, cfg)
        valid = [m for m in stream if isinstance(m, dict)]
        expected = reference.expected_state(valid)
        actual = await reference.read_state(client, cfg.key_prefix)
        assert actual == expected, reference.diff(expected, actual)
    finally:
        async for key in client.scan_iter(match=f"{cfg.key_prefix}:*", count=1000):
            await client.delete(key)
        await client.aclose()


@pytest.mark.timeout(600)
# No shrinking: every example costs a real ingest (seconds); the falsifying stream is printed whole.
@hsettings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), batch_max_events=st.sampled_from([1, 7, 5000]), partitions=st.sampled_from([1, 3]))
def test_random_streams_match_the_reference(settings, stream, batch_max_events, partitions):
    cfg = example_settings(settings, batch_max_events, partitions)
    asyncio.run(ingest_and_compare(cfg, stream))


def test_reference_parses_what_it_formats():
    """The reference's own calendar arithmetic agrees with datetime on the edges it is fed."""
    for edge_ms in EDGE_MS:
        for offset in OFFSETS_MIN:
            for jitter in (0, 1, -1, 999):
                style = (offset, "milli", "T", "Z")
                assert reference.timestamp_ms(format_timestamp(edge_ms + jitter, style)) == edge_ms + jitter
    assert reference.labels(reference.timestamp_ms("2024-02-29T23:59:59.999-08:00")) == {
        "h": "2024030107",
        "d": "20240301",
        "m": "202403",
        "y": "2024",
    }
    assert reference.labels(reference.timestamp_ms("2025-01-01T05:29:59.999+05:30")) == {
        "h": "2024123123",
        "d": "20241231",
        "m": "202412",
        "y": "2024",
    }
    assert reference.cost_nano(2.5e-9) == 2
    assert reference.cost_nano(1.5e-9) == 2
    assert reference.cost_nano(5e-10) == 0
    assert reference.cost_nano(0.01858) == 18_580_000


async def test_same_event_id_in_two_projects_counts_in_both(settings, redis_client):
    base = {
        "event_id": "same",
        "timestamp": "2024-02-29T23:59:59.999Z",
        "entity_type": "customer",
        "entity_id": "acme",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 1,
        "output_tokens": 2,
        "cost": 0.5,
    }
    stream = [base, {**base, "project_id": "other"}, base, {**base, "project_id": "other"}]
    cfg = settings.model_copy(update={"dedupe_window_days": 3650})
    await produce(cfg, stream)
    async with running_aggregator(cfg):
        await wait_caught_up(redis_client, cfg)
    expected = reference.expected_state(stream)
    assert expected["cells"][("other", "t", "d", "20240229", (), "e")] == 1
    assert expected["cells"][("default", "t", "d", "20240229", (), "e")] == 1
    actual = await reference.read_state(redis_client, cfg.key_prefix)
    assert actual == expected, reference.diff(expected, actual)


async def test_late_turn_renames_session_entity_across_batches(settings, redis_client):
    """A session's earliest turn names its entity even when it arrives last, in a later batch."""
    turn = {
        "timestamp": "2024-03-01T10:00:00Z",
        "entity_type": "team",
        "entity_id": "later",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 5,
        "output_tokens": 5,
        "cost": 0.25,
        "session_id": "conv",
    }
    stream = [
        {**turn, "event_id": "t2"},
        {**turn, "event_id": "t3", "timestamp": "2024-03-01T11:00:00Z"},
        {
            **turn,
            "event_id": "t1",
            "timestamp": "2024-02-29T23:59:59.999Z",
            "entity_type": "customer",
            "entity_id": "first",
        },
    ]
    cfg = settings.model_copy(update={"dedupe_window_days": 3650, "batch_max_events": 1, "topic_partitions": 1})
    await produce(cfg, stream)
    async with running_aggregator(cfg):
        await wait_caught_up(redis_client, cfg)
    expected = reference.expected_state(stream)
    assert expected["sessions"][("default", "conv")]["entity_id"] == "first"
    assert ("default", "team") not in expected["session_index"]
    actual = await reference.read_state(redis_client, cfg.key_prefix)
    assert actual == expected, reference.diff(expected, actual)

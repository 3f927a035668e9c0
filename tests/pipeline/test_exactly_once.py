"""Exactly once under crashes, rebalances, stalls and broker trouble: the Redis state equals the reference.

Workers run as real processes (what `infraprism aggregator` runs) so they can be
killed with SIGKILL or frozen with SIGSTOP; the broker and redis-server are the
session's real ones (a separate Tansu for the lost-log test). Every test ends
with the whole Redis state compared to tests/pipeline/reference.py with ==.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import signal

import orjson
import pytest
import redis.asyncio as aioredis

from infraprism.core.events import validate_event
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.dev.local_services import free_port, start_broker
from infraprism.pipeline.store import Applied, Duplicates, Fenced, PartitionRange, RollupStore
from tests.pipeline import reference
from tests.pipeline.helpers import end_offsets, read_all, running_aggregator, wait_caught_up
from tests.pipeline.workers import Worker, produce_paced, realistic_events, stored_offsets_total, worker_env

log = logging.getLogger(__name__)

# Each test draws its own seed; it is printed so a failure can be replayed (EXACTLY_ONCE_SEED=...).
SEED = int(os.environ.get("EXACTLY_ONCE_SEED", random.randrange(1 << 30)))


async def assert_state_equals_reference(redis_client, settings, produced) -> None:
    expected = reference.expected_state([m for m in produced if isinstance(m, dict)])
    actual = await reference.read_state(redis_client, settings.key_prefix)
    assert actual == expected, reference.diff(expected, actual)


async def wait_progress(redis_client, settings, at_least: int, *, timeout_s: float = 90.0) -> int:
    """Wait until the offsets Redis holds add up to `at_least` messages applied."""
    async with asyncio.timeout(timeout_s):
        while (total := await stored_offsets_total(redis_client, settings)) < at_least:
            await asyncio.sleep(0.02)
    return total


@pytest.mark.timeout(300)
async def test_kill_9_at_random_moments_during_one_ingest(settings, settings_env, redis_client, tmp_path):
    rng = random.Random(SEED)
    log.warning("seed %d (EXACTLY_ONCE_SEED replays it)", SEED)
    events = realistic_events(30_000, seed=SEED)
    env = worker_env(settings_env, batch_max_events=rng.choice([300, 1000, 2500]))
    # Bursts of events over ~50 s: each kill lands while events arrive or wait in a backlog.
    producing = asyncio.create_task(produce_paced(settings, events, chunk=1500, pause_s=2.5))
    worker = Worker(env, tmp_path / "worker-0.log").start()
    kills = 3
    try:
        for k in range(1, kills + 1):
            # After a random share of the ingest is applied, plus a random delay: mid-batch or idle.
            share = rng.uniform(k - 0.8, k - 0.2) / (kills + 1)
            await wait_progress(redis_client, settings, int(len(events) * share))
            await asyncio.sleep(rng.uniform(0, 0.1))
            worker.kill()
            applied = await stored_offsets_total(redis_client, settings)
            assert applied < len(events), "the worker had applied everything before the kill"
            log.warning("kill %d after %d of %d messages applied", k, applied, len(events))
            assert "Traceback" not in worker.log(), worker.log()
            worker = Worker(env, tmp_path / f"worker-{k}.log").start()
        await producing
        await wait_caught_up(redis_client, settings, timeout_s=120)
        assert worker.alive, worker.log()
        assert "HALTED" not in worker.log(), worker.log()
    finally:
        producing.cancel()
        worker.stop()
    await assert_state_equals_reference(redis_client, settings, events)


@pytest.mark.timeout(300)
async def test_two_workers_and_rebalances(settings, settings_env, redis_client, tmp_path):
    """One worker, a second joins mid-ingest (rebalance), then the first is killed (rebalance)."""
    events = realistic_events(20_000, seed=SEED + 1)
    env = worker_env(settings_env, batch_max_events=1000)
    producing = asyncio.create_task(produce_paced(settings, events, chunk=1000, pause_s=1.5))
    first = Worker(env, tmp_path / "first.log").start()
    second = Worker(env, tmp_path / "second.log")
    try:
        await wait_progress(redis_client, settings, len(events) // 5)
        second.start()
        # Both own partitions now: the second got some in a rebalance and applies them.
        await wait_progress(redis_client, settings, len(events) // 2)
        assert not producing.done(), "the ingest ended too early: pace the producer slower"
        first.kill()
        await producing
        await wait_caught_up(redis_client, settings, timeout_s=120)
        assert second.alive, second.log()
        assert "Setting newly assigned partitions" in second.log()
        for worker in (first, second):
            assert "HALTED" not in worker.log(), worker.log()
    finally:
        producing.cancel()
        first.kill()
        second.stop()
    await assert_state_equals_reference(redis_client, settings, events)


@pytest.mark.timeout(300)
async def test_worker_stopped_past_its_session_timeout_cannot_double_count(
    settings, settings_env, redis_client, tmp_path
):
    """SIGSTOP a worker mid-ingest for longer than session_timeout_ms (10 s), let another take over, SIGCONT it.

    The frozen worker usually wakes up holding records fetched before the
    takeover and sends them to Redis before it learns it lost its partitions:
    Redis refuses them (the offset fence, infraprism_batches_fenced).
    """
    events = realistic_events(16_000, seed=SEED + 2)
    backlog, later = events[:12_000], events[12_000:]
    env = worker_env(settings_env, batch_max_events=500)
    await produce_paced(settings, backlog, chunk=4000)
    frozen = Worker(env, tmp_path / "frozen.log").start()
    other = Worker(env, tmp_path / "other.log")
    try:
        await wait_progress(redis_client, settings, len(backlog) // 4)
        frozen.signal(signal.SIGSTOP)
        assert await stored_offsets_total(redis_client, settings) < len(backlog), "froze too late"
        other.start()
        await wait_caught_up(redis_client, settings, timeout_s=120)  # only the other worker can do this
        frozen.signal(signal.SIGCONT)
        await produce_paced(settings, later, chunk=500, pause_s=0.5)
        await wait_caught_up(redis_client, settings, timeout_s=120)
        fenced = await frozen.metric("infraprism_batches_fenced_total")
        log.warning("batches fenced in the resumed worker: %s", fenced)
        # On waking it either sends a batch it held (Redis refuses it: fenced) or first hears from
        # the coordinator that its partitions are gone (revoked). Which one comes first is a race;
        # either way it must not count anything, which the comparison below proves.
        revoked = "Revoking previously assigned partitions frozenset({" in frozen.log()
        assert fenced >= 1 or revoked, frozen.log()
        assert frozen.alive, frozen.log()
        assert other.alive, other.log()
    finally:
        frozen.stop()
        other.stop()
    await assert_state_equals_reference(redis_client, settings, events)


@pytest.mark.timeout(300)
async def test_broker_outage_past_client_timeouts(settings, settings_env, redis_client, tmp_path, broker_service):
    if broker_service is None:
        pytest.skip("needs the embedded broker, to SIGSTOP it")
    events = realistic_events(30_000, seed=SEED + 3)
    before, after = events[:24_000], events[24_000:]
    await produce_paced(settings, before, chunk=4000)
    worker = Worker(worker_env(settings_env, batch_max_events=500), tmp_path / "worker.log").start()
    try:
        await wait_progress(redis_client, settings, len(before) // 4)
        broker_service.pause()
        applied_at_pause = await stored_offsets_total(redis_client, settings)
        assert applied_at_pause < len(before), "the worker finished before the outage: produce more"
        try:
            await asyncio.sleep(16)  # past the 10 s session timeout; the worker's requests hang
        finally:
            broker_service.resume()
        await produce_paced(settings, after, chunk=1000)
        await wait_caught_up(redis_client, settings, timeout_s=150)
        assert worker.alive, worker.log()
    finally:
        worker.stop()
    await assert_state_equals_reference(redis_client, settings, events)


@pytest.mark.timeout(180)
async def test_lost_broker_log_halts_the_partitions_and_changes_nothing(settings, redis_client):
    """Tansu keeps its log in memory: a restart on the same port comes back empty.

    The stored offsets now lie beyond the new log's end. The worker must stop
    applying those partitions (halted hash + metric + log), never re-count the
    new log's first records as if they followed the old ones.
    """
    port = free_port()
    broker = start_broker(port)
    cfg = settings.model_copy(update={"kafka_bootstrap": broker.address, "topic_partitions": 4})
    try:
        first = realistic_events(2_000, seed=SEED + 4, duplicate_rate=0)
        await produce_paced(cfg, first)
        async with running_aggregator(cfg):
            await wait_caught_up(redis_client, cfg)
        before = await reference.read_state(redis_client, cfg.key_prefix)
        assert before == reference.expected_state(first)
        layout = KeyLayout(cfg.key_prefix)
        offsets_before = await redis_client.hgetall(layout.offsets(cfg.events_topic, cfg.aggregator_group))
        assert len(offsets_before) == 4
        assert all(int(offset) > 50 for offset in offsets_before.values())

        broker.stop()
        broker = start_broker(port)  # same address, empty log
        second = realistic_events(40, seed=SEED + 5, duplicate_rate=0)  # ~10 per partition: fewer than stored
        await produce_paced(cfg, second)
        ends = await end_offsets(cfg)
        assert all(ends[int(p)] < int(o) for p, o in offsets_before.items())

        halted_key = layout.halted_partitions(cfg.events_topic, cfg.aggregator_group)
        async with running_aggregator(cfg) as aggregator:
            async with asyncio.timeout(60):
                while await redis_client.hlen(halted_key) < 4:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(2)  # time to (wrongly) apply anything, were it going to
            gauges = {
                sample.labels["partition"]: sample.value
                for family in aggregator.metrics.registry.collect()
                if family.name == "infraprism_partition_halted"
                for sample in family.samples
            }
        assert gauges == {str(p): 1.0 for p in range(4)}
        reasons = await redis_client.hgetall(halted_key)
        for partition, reason in reasons.items():
            assert f"stored offset {offsets_before[partition]} is outside the log" in reason
        assert await reference.read_state(redis_client, cfg.key_prefix) == before
        assert await redis_client.hgetall(layout.offsets(cfg.events_topic, cfg.aggregator_group)) == offsets_before
    finally:
        broker.stop()


GOOD = {
    "timestamp": "2024-02-29T23:59:59.999Z",
    "entity_type": "customer",
    "entity_id": "acme",
    "model": "gpt-4o",
    "provider": "openai",
    "input_tokens": 100,
    "output_tokens": 20,
    "cost": 0.0125,
}


def _without(name: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != name}


# (payload, the start of the reason events.md asks for): every kind of malformed event.
MALFORMED: list[tuple[bytes | None, str]] = [
    (None, "empty message"),
    (b"{not json", "not valid UTF-8 JSON"),
    (b"\xff\xfe\x00", "not valid UTF-8 JSON"),
    (b'{"cost": NaN}', "not valid UTF-8 JSON"),
    (b"[1, 2]", "event must be a JSON object"),
    (b'"text"', "event must be a JSON object"),
    *[
        (orjson.dumps({"event_id": f"m-{name}", **_without(name)}), f"{name}: required")
        for name in ("timestamp", "entity_type", "entity_id", "model", "input_tokens", "output_tokens")
    ],
    (orjson.dumps(GOOD), "event_id: required"),
    (orjson.dumps({**GOOD, "event_id": 7}), "event_id: must be a string"),
    (orjson.dumps({**GOOD, "event_id": "x" * 129}), "event_id: length must be 1-128"),
    (orjson.dumps({**GOOD, "event_id": ""}), "event_id: length must be 1-128"),
    (orjson.dumps({**GOOD, "event_id": "m-ts1", "timestamp": "yesterday"}), "timestamp: not RFC 3339"),
    (orjson.dumps({**GOOD, "event_id": "m-ts2", "timestamp": "2024-02-29"}), "timestamp: not RFC 3339"),
    (orjson.dumps({**GOOD, "event_id": "m-ts3", "timestamp": "2024-02-29T10:00:00"}), "timestamp: not RFC 3339"),
    (orjson.dumps({**GOOD, "event_id": "m-ts8", "timestamp": "2024-02-29T10:00:00.000"}), "timestamp: RFC 3339 needs"),
    (orjson.dumps({**GOOD, "event_id": "m-ts4", "timestamp": "2023-02-29T10:00:00Z"}), "timestamp: not RFC 3339"),
    (orjson.dumps({**GOOD, "event_id": "m-ts5", "timestamp": -1}), "timestamp: epoch milliseconds out of range"),
    (orjson.dumps({**GOOD, "event_id": "m-ts6", "timestamp": True}), "timestamp: must be"),
    (orjson.dumps({**GOOD, "event_id": "m-ts7", "timestamp": 1.5e12}), "timestamp: must be"),
    (orjson.dumps({**GOOD, "event_id": "m-p1", "project_id": "has space"}), "project_id: must be"),
    (orjson.dumps({**GOOD, "event_id": "m-p2", "project_id": "p" * 65}), "project_id: must be"),
    (orjson.dumps({**GOOD, "event_id": "m-et", "entity_type": "t" * 65}), "entity_type: length must be 1-64"),
    (orjson.dumps({**GOOD, "event_id": "m-ei", "entity_id": "e" * 257}), "entity_id: length must be 1-256"),
    (orjson.dumps({**GOOD, "event_id": "m-ec", "entity_id": "a\u0000b"}), "entity_id: control characters"),
    (orjson.dumps({**GOOD, "event_id": "m-mo", "model": "m" * 129}), "model: length must be 1-128"),
    (orjson.dumps({**GOOD, "event_id": "m-mt", "model": 4}), "model: must be a string"),
    (orjson.dumps({**GOOD, "event_id": "m-i1", "input_tokens": -1}), "input_tokens: must be 0-1000000000000"),
    (orjson.dumps({**GOOD, "event_id": "m-i2", "input_tokens": "100"}), "input_tokens: must be an integer"),
    (orjson.dumps({**GOOD, "event_id": "m-i3", "input_tokens": 1.5}), "input_tokens: must be an integer"),
    (orjson.dumps({**GOOD, "event_id": "m-i4", "input_tokens": True}), "input_tokens: must be an integer"),
    (orjson.dumps({**GOOD, "event_id": "m-o1", "output_tokens": -5}), "output_tokens: must be 0-1000000000000"),
    (orjson.dumps({**GOOD, "event_id": "m-cr", "cache_read_tokens": 101}), "cache_read_tokens + cache_write"),
    (orjson.dumps({**GOOD, "event_id": "m-cw", "cache_write_tokens": -1}), "cache_write_tokens: must be 0-"),
    (orjson.dumps({**GOOD, "event_id": "m-rt", "reasoning_tokens": 21}), "reasoning_tokens: part of"),
    (orjson.dumps({**GOOD, "event_id": "m-c1", "cost": -0.01}), "cost: must be 0-1000000, got -0.01"),
    (orjson.dumps({**GOOD, "event_id": "m-c2", "cost": "0.01"}), "cost: must be a number"),
    (orjson.dumps({**GOOD, "event_id": "m-l1", "latency_ms": -3}), "latency_ms: must be 0-86400000, got -3"),
    (orjson.dumps({**GOOD, "event_id": "m-l2", "latency_ms": "fast"}), "latency_ms: must be a number"),
    (orjson.dumps({**GOOD, "event_id": "m-s1", "session_id": "s" * 129}), "session_id: length must be 1-128"),
    (orjson.dumps({**GOOD, "event_id": "m-t1", "tags": ["env"]}), "tags: must be an object"),
    (orjson.dumps({**GOOD, "event_id": "m-t2", "tags": {"env": 1}}), "tags.env: value must be a string"),
    (orjson.dumps({**GOOD, "event_id": "m-t3", "tags": {"k" * 65: "v"}}), "tags: key must be 1-64"),
    (orjson.dumps({**GOOD, "event_id": "m-t4", "tags": {"env": "v" * 257}}), "tags.env: value must be 1-256"),
    (orjson.dumps({**GOOD, "event_id": "m-t5", "tags": {f"k{i}": "v" for i in range(33)}}), "tags: at most 32"),
    (
        orjson.dumps({**_without("cost"), "event_id": "m-price", "model": "no-such-model-xyz", "provider": "acme"}),
        "cost: absent and",
    ),
]


@pytest.mark.timeout(120)
async def test_malformed_events_go_to_the_dlq_and_the_partition_keeps_flowing(settings, redis_client):
    cfg = settings.model_copy(update={"topic_partitions": 1, "batch_max_events": 7})
    messages: list[dict | bytes | None] = []
    good: list[dict] = []
    for index, (payload, _) in enumerate(MALFORMED):
        messages.append(payload)
        event = {**GOOD, "event_id": f"good-{index}", "latency_ms": index}
        messages.append(event)  # after each bad one, a good one on the same partition
        good.append(event)
    await produce_paced(cfg, messages)
    async with running_aggregator(cfg) as aggregator:
        await wait_caught_up(redis_client, cfg)
        dead = [orjson.loads(value) for value in await read_all(cfg, cfg.dlq_topic, expect=len(MALFORMED))]
        dead_lettered = sum(
            sample.value
            for family in aggregator.metrics.registry.collect()
            if family.name == "infraprism_events_dead_lettered"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    assert dead_lettered == len(MALFORMED)
    by_offset = {record["source"]["offset"]: record for record in dead}
    assert sorted(by_offset) == [2 * i for i in range(len(MALFORMED))]
    for index, (payload, reason) in enumerate(MALFORMED):
        record = by_offset[2 * index]
        assert record["reason"].startswith(reason), (payload, record["reason"])
        assert record["source"]["topic"] == cfg.events_topic
        if payload is None:
            assert record["payload"] is None
        elif "payload" in record:
            assert record["payload"].encode() == payload
        else:
            assert base64.b64decode(record["payload_base64"]) == payload
    await assert_state_equals_reference(redis_client, cfg, good)


async def test_apply_script_fences_and_dedupes_atomically(settings, redis_client):
    """The Lua call itself: a batch that does not start at the stored offset, or repeats a counted
    event_id, is refused whole (nothing written), and the refusal says why."""
    redis = aioredis.Redis.from_url(settings.redis_dsn())
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis, layout, topic="t", group="g", dedupe_window_days=3650)
    events = realistic_events(50, seed=SEED + 6, duplicate_rate=0)

    def rollup_of(batch):
        rollup = BatchRollup()
        for raw in batch:
            rollup.add(validate_event(raw))
        return rollup

    try:
        assert await store.apply(rollup_of(events[:20]), [PartitionRange(0, 0, 20)]) == Applied()
        after_first = await reference.read_state(redis_client, settings.key_prefix)
        assert after_first == reference.expected_state(events[:20])
        # A stale writer re-sending offsets 10..30: fenced, nothing written.
        assert await store.apply(rollup_of(events[10:30]), [PartitionRange(0, 10, 30)]) == Fenced(0, 20)
        # The right offsets but an event already counted: refused whole, naming the repeat.
        result = await store.apply(rollup_of([events[3], *events[20:30]]), [PartitionRange(0, 20, 31)])
        assert isinstance(result, Duplicates)
        assert {event_id for _, event_id in result.ids} == {events[3]["event_id"]}
        assert await reference.read_state(redis_client, settings.key_prefix) == after_first
        assert await store.stored_offsets() == {0: 20}
        # Resent without the repeat, it applies.
        assert await store.apply(rollup_of(events[20:30]), [PartitionRange(0, 20, 31)]) == Applied()
        assert await reference.read_state(redis_client, settings.key_prefix) == reference.expected_state(events[:30])
        assert await store.stored_offsets() == {0: 31}
    finally:
        await redis.aclose()

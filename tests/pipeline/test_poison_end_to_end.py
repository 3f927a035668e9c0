"""Poison through the real broker and a running aggregator: dead-lettered, never a crash, never a stall.

The aggregator runs as a real process (what `infraprism aggregator` runs), so
"still running" means its process is alive. Poison and a canary go to one
partition, in order: the canary is counted only if every poison message before
it was set aside. A corrupted stored cell halts only the partition whose batch
touches it, and nothing of that batch is written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import time

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from infraprism.core.buckets import Granularity
from infraprism.core.cell import Cell
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.pipeline.decode import judge
from infraprism.pipeline.topics import ensure_topics
from tests.pipeline.helpers import read_all, wait_caught_up
from tests.pipeline.poison import WHAT_WAS_SEEN, valid_event
from tests.pipeline.workers import Worker, worker_env

DAY = "20250115"  # valid_event's day


async def produce_to_partition(
    settings, partition: int, values: list[bytes | None], *, record_times_ms: list[int] | None = None
) -> list[int]:
    """Produce `values` in order to one partition of the events topic; returns their offsets."""
    topics = [settings.events_topic, settings.dlq_topic, settings.deltas_topic]
    await ensure_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    times = record_times_ms or [None] * len(values)
    try:
        futures = [
            await producer.send(settings.events_topic, value, key=b"k", partition=partition, timestamp_ms=ms)
            for value, ms in zip(values, times, strict=True)
        ]
        return [(await future).offset for future in futures]
    finally:
        await producer.stop()


async def day_total(redis_client, settings, project: str) -> list[int] | None:
    cell = await redis_client.hget(
        KeyLayout(settings.key_prefix).rollup(project, Dimension.TOTAL, Granularity.DAY, DAY), ""
    )
    return None if cell is None else Cell.unpack(cell)


async def wait_for(condition, *, timeout_s: float, what: str, worker: Worker) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await condition():
                assert worker.alive, f"the aggregator exited:\n{worker.log()[-3000:]}"
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{what} within {timeout_s} s; aggregator log:\n{worker.log()[-3000:]}")


def random_poison(seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, 5000)) for _ in range(3)] + [b"", None]


@pytest.mark.timeout(180)
async def test_poison_on_one_partition_is_dead_lettered_and_the_canary_after_it_counted(
    settings, settings_env, redis_client, tmp_path
):
    poison = [p.raw for p in WHAT_WAS_SEEN] + random_poison(seed=7)
    canary = orjson.dumps(valid_event(1))
    worker = Worker(worker_env(settings_env), tmp_path / "aggregator.log").start()
    try:
        *poison_offsets, canary_offset = await produce_to_partition(settings, 2, [*poison, canary])
        await wait_caught_up(redis_client, settings, timeout_s=60)
        letters = [orjson.loads(v) for v in await read_all(settings, settings.dlq_topic, expect=len(poison))]
        assert worker.alive, worker.log()
        log = worker.log()
    finally:
        worker.stop()

    assert await day_total(redis_client, settings, "default") == [1, 250_000_000, 10, 20, 0, 0]
    assert "Traceback" not in log
    assert "HALTED" not in log
    by_offset = {letter["source"]["offset"]: letter for letter in letters}
    assert sorted(by_offset) == poison_offsets  # each once, and the canary not among them
    assert canary_offset not in by_offset
    for raw, offset in zip(poison, poison_offsets, strict=True):
        letter = by_offset[offset]
        assert letter["source"] == {"topic": settings.events_topic, "partition": 2, "offset": offset}
        assert letter["reason"] == judge(raw)
        if raw is None:
            assert letter["payload"] is None
        elif letter.get("payload_truncated"):
            assert letter["payload_bytes"] == len(raw)
            assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
        else:
            kept = base64.b64decode(letter["payload_base64"]) if "payload_base64" in letter else letter["payload"]
            assert kept == (raw if "payload_base64" in letter else raw.decode())
    for case, offset in zip(WHAT_WAS_SEEN, poison_offsets, strict=False):
        assert by_offset[offset]["reason"].startswith(case.reason_start), case.name


@pytest.mark.timeout(120)
async def test_a_line_of_control_characters_is_dead_lettered_without_stalling(
    settings, settings_env, redis_client, tmp_path
):
    """200 kB of \\x01 is UTF-8, so its dead letter keeps it as text, where each byte escapes to 6."""
    poison = b"\x01" * 200_000
    worker = Worker(worker_env(settings_env), tmp_path / "aggregator.log").start()
    try:
        await produce_to_partition(settings, 0, [poison, orjson.dumps(valid_event(1))])
        await wait_for(
            lambda: day_total(redis_client, settings, "default"),
            timeout_s=20,
            what="the canary after a control-character line was not counted",
            worker=worker,
        )
        letters = await read_all(settings, settings.dlq_topic, expect=1)
    finally:
        worker.kill()  # a worker stuck retrying the DLQ does not stop on SIGTERM
    assert orjson.loads(letters[0])["reason"] == judge(poison)


@pytest.mark.timeout(180)
async def test_a_corrupted_cell_halts_only_its_partition_and_nothing_of_its_batch_is_written(
    settings, settings_env, redis_client, tmp_path
):
    layout = KeyLayout(settings.key_prefix)
    offsets_key = layout.offsets(settings.events_topic, settings.aggregator_group)
    halted_key = layout.halted_partitions(settings.events_topic, settings.aggregator_group)
    corrupted = layout.rollup("p0", Dimension.TOTAL, Granularity.DAY, DAY)
    raw_redis = aioredis.Redis.from_url(settings.redis_dsn())
    worker = Worker(worker_env(settings_env), tmp_path / "aggregator.log").start()
    try:
        # Partition 0 carries project p0, partition 1 project p1: their batches share no cell.
        await produce_to_partition(settings, 0, [orjson.dumps(valid_event(1, project_id="p0"))])
        await produce_to_partition(settings, 1, [orjson.dumps(valid_event(2, project_id="p1"))])
        await wait_caught_up(redis_client, settings, timeout_s=60)
        await redis_client.hset(corrupted, "", "not six counters")
        p0_keys = [key async for key in raw_redis.scan_iter(match=f"{layout.root}:p0:*")]
        p0_before = {key: await raw_redis.dump(key) for key in p0_keys}
        shared_before = await raw_redis.dump(layout.projects())

        # Most likely one batch of both partitions: refused whole, then re-applied partition by partition.
        await asyncio.gather(
            produce_to_partition(settings, 0, [orjson.dumps(valid_event(3, project_id="p0"))]),
            produce_to_partition(settings, 1, [orjson.dumps(valid_event(i, project_id="p1")) for i in (4, 5, 6)]),
        )
        await wait_for(lambda: redis_client.hexists(halted_key, "0"), timeout_s=30, what="no halt", worker=worker)

        async def p1_events() -> int:
            return (await day_total(redis_client, settings, "p1") or [0])[0]

        await wait_for(lambda: _equals(p1_events, 4), timeout_s=30, what="partition 1 stopped", worker=worker)
        # After the halt, partition 1 still flows.
        await produce_to_partition(settings, 1, [orjson.dumps(valid_event(7, project_id="p1"))])
        await wait_for(lambda: _equals(p1_events, 5), timeout_s=30, what="partition 1 stopped", worker=worker)

        assert worker.alive, worker.log()
        refused = await worker.metric("infraprism_batches_refused_total")
        halted = await redis_client.hgetall(halted_key)
        stored_offsets = await redis_client.hgetall(offsets_key)
        p0_after = {key: await raw_redis.dump(key) async for key in raw_redis.scan_iter(match=f"{layout.root}:p0:*")}
        shared_after = await raw_redis.dump(layout.projects())
        log = worker.log()
    finally:
        worker.stop()
        await raw_redis.aclose()

    assert list(halted) == ["0"]
    assert corrupted in halted["0"]
    assert "wrote nothing of it" in halted["0"]
    assert refused == 1
    assert "HALTED partition 0" in log
    assert "HALTED partition 1" not in log
    assert "Traceback" not in log
    assert stored_offsets["0"] == "1"  # the refused event's offset not passed
    assert stored_offsets["1"] == "5"
    assert p0_after == p0_before
    assert shared_after == shared_before


async def _equals(read, expected: int) -> bool:
    return await read() == expected


@pytest.mark.timeout(120)
async def test_two_retries_of_a_counted_event_in_one_batch_do_not_stall_the_partition(
    settings, settings_env, redis_client, tmp_path
):
    """A copy counted before a restart, then two retries within its window, a day apart, in one batch.

    Both retries are duplicates (the default window is 7 days of one-day slots). The restart
    empties the worker's memo of recent ids, so Redis is the one to say so.
    """
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    event = orjson.dumps(valid_event(1))
    offsets_key = KeyLayout(settings.key_prefix).offsets(settings.events_topic, settings.aggregator_group)
    first = Worker(worker_env(settings_env), tmp_path / "first.log").start()
    try:
        await produce_to_partition(settings, 0, [event], record_times_ms=[now_ms - 5 * day_ms])
        await wait_caught_up(redis_client, settings, timeout_s=60)
    finally:
        first.stop()
    # Both in the log before the next worker starts: its first fetch takes them together.
    await produce_to_partition(settings, 0, [event, event], record_times_ms=[now_ms - 2 * day_ms, now_ms - day_ms])
    second = Worker(worker_env(settings_env), tmp_path / "second.log").start()
    try:
        async with asyncio.timeout(60):
            while int(await redis_client.hget(offsets_key, "0") or 0) < 3:
                assert second.alive, second.log()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    # Two duplicates are expected; a count that keeps growing is the retry going round.
                    retried = await second.metric("infraprism_events_duplicate_total")
                    assert retried < 20, (
                        f"the Duplicates retry goes round ({retried:.0f} so far):\n{second.log()[-2000:]}"
                    )
                await asyncio.sleep(0.2)
        assert second.alive
    finally:
        second.kill()  # a worker stuck in the retry loop does not stop on SIGTERM
    assert await day_total(redis_client, settings, "default") == [1, 250_000_000, 10, 20, 0, 0]

"""Test helpers for the write side: produce events, run workers, read Redis back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infraprism.pipeline.aggregator import Aggregator
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings


async def produce(
    settings: Settings, values: Iterable[bytes | dict], *, topic: str | None = None, record_time_ms: int | None = None
) -> int:
    """Produce values (dicts are JSON-encoded) to the events topic; returns how many. The
    records' Kafka timestamp is now, or `record_time_ms`."""
    topic = topic or settings.events_topic
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    count = 0
    try:
        futures = []
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            key = value.get("entity_id", "").encode() if isinstance(value, dict) else None
            futures.append(await producer.send(topic, raw, key=key, timestamp_ms=record_time_ms))
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def end_offsets(settings: Settings, topic: str | None = None, *, timeout_s: float = 30.0) -> dict[int, int]:
    """The log end (high watermark) of every partition of `topic`.

    Read from Fetch responses, not ListOffsets: Tansu answers ListOffsets(latest)
    with the last record batch's base offset + 1, not the log end, which made
    wait_caught_up return after the first applied batch.
    """
    topic = topic or settings.events_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=1024,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        partitions = (await consumer.topics() and consumer.partitions_for_topic(topic)) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(timeout_s):
            while any(consumer.highwater(tp) is None for tp in tps):
                await consumer.getmany(timeout_ms=100)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


async def read_all(settings: Settings, topic: str, *, expect: int, timeout_s: float = 30.0) -> list[bytes]:
    """Read `expect` messages from the start of `topic` (fails the test on timeout)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(values) < expect:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return values


async def wait_caught_up(redis, settings: Settings, *, timeout_s: float = 60.0) -> None:
    """Wait until the Redis offsets reach the log end of every events partition."""
    from infraprism.core.keys import KeyLayout

    key = KeyLayout(settings.key_prefix).offsets(settings.events_topic, settings.aggregator_group)
    ends = await end_offsets(settings)
    async with asyncio.timeout(timeout_s):
        while True:
            stored = {int(p): int(o) for p, o in (await redis.hgetall(key)).items()}
            if all(stored.get(p, 0) >= end for p, end in ends.items() if end > 0):
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_aggregator(settings: Settings) -> AsyncIterator[Aggregator]:
    """An in-process aggregator task, stopped (and its errors raised) on exit."""
    aggregator = Aggregator(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(aggregator.run(stop))
    try:
        yield aggregator
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)

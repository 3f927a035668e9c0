"""`infraprism rebuild`: recompute every aggregate from the events still in Kafka.

The aggregates are derived data and the events topic is the source of truth:
this deletes every derived key (rollups, leaderboards, sessions, dedupe sets,
stored offsets) and replays each partition from its first retained offset to
the log end seen at start, with the same code the live worker runs. Stop the
aggregators first; one left running is fenced off and halts (see `rebuild`),
and resumes from the rebuilt offsets when restarted.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from infraprism.core.keys import QUARTER_LAYOUT, KeyLayout
from infraprism.core.text import as_text
from infraprism.pipeline.aggregator import Aggregator
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings

log = logging.getLogger(__name__)


# No batch ever starts at this offset, so while it is stored every apply is fenced.
FENCE_ALL = -1


async def partition_starts(settings: Settings) -> dict[int, int]:
    """The first retained offset of each events partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.events_topic) or set()
        tps = [TopicPartition(settings.events_topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in (await consumer.beginning_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def delete_derived(redis: aioredis.Redis, layout: KeyLayout, settings: Settings) -> int:
    deleted = 0
    for pattern in layout.derived_patterns(settings.events_topic, settings.aggregator_group):
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += await redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def rebuild(settings: Settings) -> int:
    """Delete the derived keys and re-aggregate the whole topic; returns keys deleted.

    Safe even if an aggregator is still running: the stored offsets are first
    set to a value no batch starts at, which fences every writer while the
    keys are deleted (a running aggregator halts its partitions, loudly), and
    then to each partition's first offset, so exactly one applier can count
    each range again.
    """
    await ensure_topics(settings.kafka_bootstrap, [settings.events_topic], settings.topic_partitions)
    layout = KeyLayout(settings.key_prefix)
    offsets_key = layout.offsets(settings.events_topic, settings.aggregator_group)
    starts = await partition_starts(settings)
    redis = aioredis.Redis.from_url(settings.redis_dsn())
    try:
        await redis.ping()
        if starts:
            await redis.hset(offsets_key, mapping={str(p): str(FENCE_ALL) for p in starts})
        # Cached API answers were computed from what is about to be deleted. The generation
        # moves before and after the deletion: bucket versions restart with the deleted
        # `bv` hashes, so no answer cached before or during the deletion may match again.
        await redis.incr(layout.generation())
        for project in await redis.smembers(layout.projects()):
            await redis.incr(layout.data_version(as_text(project)))
        deleted = await delete_derived(redis, layout, settings)
        # Everything is recomputed in this build's layout, quarter hours included.
        await redis.set(layout.layout_marker(), QUARTER_LAYOUT)
        await redis.incr(layout.generation())
        await redis.delete(offsets_key)
        if starts:
            await redis.hset(offsets_key, mapping={str(p): str(offset) for p, offset in starts.items()})
    finally:
        await redis.aclose()
    log.info("deleted %d derived keys; re-aggregating %s from the start", deleted, settings.events_topic)
    await Aggregator(settings, stop_at_end=True).run(asyncio.Event())
    return deleted


def main(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(rebuild(settings))

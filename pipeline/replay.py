"""Producers behind `infraprism replay` and `infraprism send`: JSON lines -> the events topic.

Every non-blank line is sent as-is, byte for byte, even when it is not valid
JSON: the aggregator is the one place that judges events, and it dead-letters
what does not fit the contract. The message key is the line's `entity_id` when
the line is a JSON object with a string one (the contract's recommended key),
otherwise no key.

Sends are pipelined: a send only appends to the producer's batch, and the
acknowledgements are collected in windows, so throughput is bounded by the
broker, not by one round trip per line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from infraprism.pipeline import PipelineError
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings

log = logging.getLogger(__name__)

# Acks are awaited in windows of this many sends; bounds memory on huge files.
_ACK_WINDOW = 20_000
_PROGRESS_EVERY = 5_000


class ReplayError(PipelineError):
    """A line could not be delivered to the broker."""


def line_key(raw: bytes) -> bytes | None:
    """The Kafka key for one line: its `entity_id` when it has a string one, else None."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        entity_id = obj.get("entity_id")
        if isinstance(entity_id, str):
            return entity_id.encode()
    return None


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of a binary stream without their line ending; blank lines are skipped."""
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


def topics_of(settings: Settings) -> list[str]:
    """Every topic the project creates."""
    return [
        settings.events_topic,
        settings.dlq_topic,
        settings.deltas_topic,
        settings.anomalies_topic,
    ]


def event_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer for the events topic (not started): acks from every replica, batched sends."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=10,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        request_timeout_ms=30_000,
    )


async def replay_lines(
    settings: Settings,
    lines: Iterable[bytes],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce each line to the events topic; returns how many the broker acknowledged.

    `on_progress(n)` is called with the number of lines acknowledged since its
    last call. Raises `ReplayError` on the first line the broker refuses, after
    the lines before it were delivered.
    """
    await ensure_topics(settings.kafka_bootstrap, topics_of(settings), settings.topic_partitions)
    producer = event_producer(settings)
    await producer.start()
    topic = settings.events_topic
    pending: deque[asyncio.Future[RecordMetadata]] = deque()
    acked = 0
    reported = 0

    async def drain(keep: int) -> None:
        nonlocal acked, reported
        while len(pending) > keep:
            future = pending.popleft()
            try:
                await future
            except KafkaError as exc:
                # Futures resolve in send order, so this is message number acked + 1.
                raise ReplayError(f"message {acked + 1} was not delivered: {exc!r}") from exc
            acked += 1
            if on_progress is not None and acked - reported >= _PROGRESS_EVERY:
                on_progress(acked - reported)
                reported = acked

    try:
        for number, raw in enumerate(lines, start=1):
            try:
                pending.append(await producer.send(topic, raw, key=line_key(raw)))
            except KafkaError as exc:  # refused before sending, e.g. larger than a request
                await producer.flush()
                await drain(0)
                raise ReplayError(f"message {number} was refused: {exc!r}") from exc
            if len(pending) >= 2 * _ACK_WINDOW:
                await drain(_ACK_WINDOW)
        await producer.flush()
        await drain(0)
    finally:
        if on_progress is not None and acked > reported:
            on_progress(acked - reported)
        for future in pending:
            future.cancel()
        await producer.stop()
    log.info("replayed %d lines to %s", acked, topic)
    return acked


async def send_event(settings: Settings, raw: bytes) -> RecordMetadata:
    """Produce one event (raw bytes, as-is) to the events topic and wait for its ack."""
    await ensure_topics(settings.kafka_bootstrap, topics_of(settings), settings.topic_partitions)
    producer = event_producer(settings)
    await producer.start()
    try:
        return await producer.send_and_wait(settings.events_topic, raw, key=line_key(raw))
    finally:
        await producer.stop()

"""`infraprism detector`: the faust-streaming worker around the detector's processing function.

An agent on the deltas topic hands each delta to `Detector.process`
(pipeline/detection.py: rollups -> histories -> episodes -> anomaly records);
a timer on the group's leader drains the alert outbox (pipeline/alerts.py).
This module is only the wiring: clients, batching, retries and signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infraprism.core.deltas import BadDelta, Delta, decode_checked, merge
from infraprism.core.keys import KeyLayout
from infraprism.pipeline import PipelineError
from infraprism.pipeline.alerts import Channel, KafkaChannel, Notifier, WebhookChannel
from infraprism.pipeline.detection import Detector, thresholds_of
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings

log = logging.getLogger(__name__)


class WebhookConfigError(PipelineError):
    """A webhook is configured that would send deliveries no receiver can verify."""


def webhook_secret(settings: Settings) -> bytes | None:
    """The key that signs webhook deliveries; None when there is no webhook or unsigned ones are allowed.

    A webhook URL without a secret (or with an empty one) raises WebhookConfigError, unless
    INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true: anyone who learns the URL could post alerts
    that its receiver cannot tell from ours.
    """
    if not settings.alert_webhook_url:
        return None
    if settings.alert_webhook_secret is not None and settings.alert_webhook_secret.get_secret_value():
        return settings.alert_webhook_secret.get_secret_value().encode()
    if settings.alert_webhook_allow_unsigned:
        return None
    raise WebhookConfigError(
        "INFRAPRISM_ALERT_WEBHOOK_URL is set without INFRAPRISM_ALERT_WEBHOOK_SECRET: set a secret, "
        "or INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true to send the webhook's deliveries unsigned"
    )


class Runtime:
    """The clients of one worker, made when the app starts and closed when it stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: aioredis.Redis | None = None
        self.detector: Detector | None = None
        self.notifier: Notifier | None = None
        self.webhook: WebhookChannel | None = None
        self._webhook_secret = webhook_secret(settings)  # refused here, when the app is built
        if settings.alert_webhook_url and self._webhook_secret is None:
            log.warning(
                "webhook deliveries are unsigned (INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true): "
                "receivers cannot verify them; set INFRAPRISM_ALERT_WEBHOOK_SECRET"
            )
        self._lock = asyncio.Lock()

    async def start(self, send: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        async with self._lock:
            if self.redis is not None:
                return
            s = self.settings
            redis = aioredis.Redis.from_url(s.redis_dsn())
            await redis.ping()  # a bad address fails loudly, at start
            layout = KeyLayout(s.key_prefix)
            self.detector = Detector(redis, layout, thresholds_of(s), recovery_ms=s.detector_recovery_minutes * 60_000)
            channels: list[Channel] = [KafkaChannel(send)]
            if s.alert_webhook_url:
                self.webhook = WebhookChannel(s.alert_webhook_url, self._webhook_secret)
                channels.append(self.webhook)
            self.notifier = Notifier(redis, layout, channels, max_backoff_s=s.alert_retry_max_seconds)
            self.redis = redis

    async def stop(self) -> None:
        if self.webhook is not None:
            await self.webhook.close()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None


MERGE_MAX_DELTAS = 200  # the most deltas the agent takes at once to merge (see `detect`)
MERGE_WITHIN_S = 0.05


async def process_until_done(detector: Detector, delta: Delta, where: str) -> None:
    """Process a delta, retrying while Redis is unreachable: a delta is never skipped.

    Retrying is safe: processing is idempotent (cells are re-read, records are
    only changed when their values do).
    """
    delay_s = 0.2
    while True:
        try:
            await detector.process(delta)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("delta at %s: Redis unavailable (%r), retrying in %.1fs", where, exc, delay_s)
            detector.forget()  # what was half-written is re-read from Redis
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)


def build_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The detector's faust app: an agent on the deltas topic, the alert timer on the leader."""
    app = faust.App(
        settings.detector_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_rebalance_timeout=10.0,
        datadir=os.path.join(tempfile.gettempdir(), f"infraprism-detector-{settings.detector_group}"),
    )
    runtime = Runtime(settings)
    deltas = app.topic(settings.deltas_topic, value_serializer="raw", key_serializer="raw")
    anomalies = app.topic(settings.anomalies_topic, value_serializer="raw", key_serializer="raw")

    async def publish(key: bytes, value: bytes) -> None:
        pending = await anomalies.send(key=key, value=value)
        await pending  # the broker's acknowledgement, before the outbox cursor moves

    @app.agent(deltas)
    async def detect(stream: Any) -> None:
        await runtime.start(publish)
        assert runtime.detector is not None
        # When the detector lags (a replay, a burst), the deltas waiting for it are merged per
        # project and event hour, so a cell changed by many batches is read and judged once.
        async for events in stream.take_events(MERGE_MAX_DELTAS, within=MERGE_WITHIN_S):
            decoded: list[Delta] = []
            for event in events:
                where = f"{event.message.topic}[{event.message.partition}]@{event.message.offset}"
                try:
                    decoded.append(decode_checked(event.value))
                except BadDelta as exc:
                    log.error("undecodable delta at %s skipped: %s", where, exc)
            for delta in merge(decoded):
                await process_until_done(runtime.detector, delta, delta.project)

    @app.timer(settings.alert_poll_seconds, on_leader=True)
    async def deliver() -> None:
        await runtime.start(publish)
        assert runtime.notifier is not None
        try:
            await runtime.notifier.drain()
        except RedisError as exc:
            log.warning("alert delivery paused, Redis unavailable: %r", exc)  # the next tick retries

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        if runtime.detector is not None:
            runtime.detector.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: Any, **kwargs: Any) -> None:
        await runtime.stop()

    return app, runtime


def main(settings: Settings) -> None:
    """`infraprism detector`: run the faust worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    webhook_secret(settings)  # a refused webhook fails the start before anything is created
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            [settings.deltas_topic, settings.anomalies_topic],
            settings.topic_partitions,
        )
    )
    app, _ = build_app(settings)
    worker = Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()

"""Delivers anomaly changes from the Redis outbox to the anomalies topic and the webhook.

Every new version of a record is appended to its project's outbox stream in
the same atomic call that writes the record (infraprism/stores/anomaly_store.py), so
a change cannot be lost between Redis and the channels, and a restarted
detector carries on where it stopped. Each channel keeps, in Redis, a cursor
(the last outbox entry it delivered) and the last version it delivered per
anomaly; an entry whose version is not newer than that is skipped, so one
anomaly state is notified once.

The window that remains: a delivery that succeeded but whose cursor update
was lost to a crash in between is repeated after the restart. Kafka consumers
and webhook receivers de-duplicate on (id, version), which every message
carries (the webhook also in the X-InfraPrism-Delivery header, which its
signature covers).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
import redis.asyncio as aioredis

from infraprism.core.anomalies import AnomalyRecord, record_time
from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-InfraPrism-Signature"  # "t=<unix seconds>,v1=<hex HMAC-SHA256>", see sign()
DELIVERY_HEADER = "X-InfraPrism-Delivery"  # "<anomaly id>:<version>", for de-duplication
READ_COUNT = 200


class RetryLater(Exception):  # noqa: N818 - a signal, not an error
    """The channel could not deliver now; try the same entry again after a backoff."""


def alert_body(record: AnomalyRecord) -> bytes:
    """The JSON of one anomaly state: the API's fields plus project, version and updated_at."""
    body = record.public()
    body["project"] = record.project
    body["version"] = record.version
    body["updated_at"] = record_time(record.updated_ms or record.detected_ms)
    return orjson.dumps(body)


def sign(secret: bytes, delivery_id: str, body: bytes, timestamp_s: int) -> str:
    """The value of SIGNATURE_HEADER: "t=<timestamp_s>,v1=<hex HMAC-SHA256>", in Stripe's style.

    The MAC covers f"{timestamp_s}.{delivery_id}." followed by the exact body bytes, so a
    receiver that checks it (docs/anomalies.md, "Verifying a delivery") knows the body, which
    delivery it is (DELIVERY_HEADER's "<anomaly id>:<version>") and when it was signed (unix
    seconds): a captured delivery cannot be replayed after the receiver's window (five
    minutes in the docs), nor passed off as another delivery.
    The material splits one way only: the timestamp is digits, and anomaly ids
    (`anomaly_<hex>`) hold no ".".
    """
    signed = f"{timestamp_s}.{delivery_id}.".encode() + body
    return f"t={timestamp_s},v1={hmac.new(secret, signed, hashlib.sha256).hexdigest()}"


class KafkaChannel:
    """Publishes each state to the anomalies topic, keyed by anomaly id."""

    name = "kafka"

    def __init__(self, send: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        self._send = send  # (key, value) -> acknowledged by the broker

    async def deliver(self, record: AnomalyRecord) -> None:
        try:
            await self._send(record.id.encode(), alert_body(record))
        except Exception as exc:  # noqa: BLE001 - any producer failure means: try again later
            log.warning("anomaly %s v%d: publish failed: %r", record.id, record.version, exc)
            raise RetryLater from exc


class WebhookChannel:
    """POSTs each state to the configured URL, signed when a secret is set."""

    name = "webhook"

    def __init__(self, url: str, secret: bytes | None, *, timeout_s: float = 10.0) -> None:
        self._url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, record: AnomalyRecord) -> None:
        body = alert_body(record)
        delivery_id = f"{record.id}:{record.version}"
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id}
        if self._secret is not None:
            # Signed anew at each attempt: a retry after a long outage is as fresh as a first try.
            headers[SIGNATURE_HEADER] = sign(self._secret, delivery_id, body, int(time.time()))
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("anomaly %s v%d: webhook unreachable: %r", record.id, record.version, exc)
            raise RetryLater from exc
        if response.is_success:
            return
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            log.warning(
                "anomaly %s v%d: webhook answered %d",
                record.id,
                record.version,
                response.status_code,
            )
            raise RetryLater
        # Another 4xx will not get better by retrying: the receiver refuses this body.
        log.error(
            "anomaly %s v%d: webhook refused it with %d, not retried",
            record.id,
            record.version,
            response.status_code,
        )


class Channel(Protocol):
    """What Notifier needs of a channel (KafkaChannel, WebhookChannel)."""

    name: str

    async def deliver(self, record: AnomalyRecord) -> None:
        """Deliver one state, or raise RetryLater."""


@dataclass
class Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to `max_s`."""

    max_s: float
    attempts: int = 0
    not_before: float = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.not_before

    def failed(self) -> float:
        delay = min(self.max_s, 0.5 * 2**self.attempts) * (0.75 + random.random() / 2)  # noqa: S311
        self.attempts += 1
        self.not_before = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.attempts = 0
        self.not_before = 0.0


class Notifier:
    """Drains every project's outbox into its channels, in order, each channel at its own pace."""

    def __init__(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        channels: list[Channel],
        *,
        max_backoff_s: float = 60.0,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._channels = channels
        self._backoff = {channel.name: Backoff(max_backoff_s) for channel in channels}

    async def drain(self) -> int:
        """Deliver what is pending now; returns how many entries were delivered."""
        delivered = 0
        for project in sorted(as_text(p) for p in await self._redis.smembers(self._layout.projects())):
            delivered += await self._drain_project(project)
        return delivered

    async def _drain_project(self, project: str) -> int:
        outbox = self._layout.anomaly_outbox(project)
        cursor_key = self._layout.alert_cursors(project)
        cursors = {as_text(k): as_text(v) for k, v in (await self._redis.hgetall(cursor_key)).items()}
        delivered = 0
        for channel in self._channels:
            backoff = self._backoff[channel.name]
            if not backoff.ready():
                continue
            start = cursors.get(channel.name)
            entries: list[Any] = (
                await self._redis.xrange(outbox, min=f"({start}" if start else "-", count=READ_COUNT) or []
            )
            done_key = self._layout.alert_delivered(project, channel.name)
            for entry_id, fields in entries:
                entry = as_text(entry_id)
                record = AnomalyRecord.from_hash(fields)
                last = await self._redis.hget(done_key, record.id)
                if last is None or int(last) < record.version:
                    try:
                        await channel.deliver(record)
                    except RetryLater:
                        delay = backoff.failed()
                        log.info("%s channel: retrying project %s in %.1fs", channel.name, project, delay)
                        break
                    backoff.succeeded()
                    delivered += 1
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.hset(done_key, record.id, record.version)
                    pipe.hset(cursor_key, channel.name, entry)
                    await pipe.execute()
                cursors[channel.name] = entry
        await self._trim(outbox, cursors)
        return delivered

    async def _trim(self, outbox: str, cursors: dict[str, str]) -> None:
        """Drop entries every channel has delivered."""
        if not self._channels or any(channel.name not in cursors for channel in self._channels):
            return
        oldest = min((cursors[channel.name] for channel in self._channels), key=_entry_order)
        await self._redis.execute_command("XTRIM", outbox, "MINID", oldest)


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)

"""End to end: Kafka deltas -> the faust detector worker (`pipeline.detector.main`) -> Redis
records -> the anomalies topic and a webhook, against the real broker and redis-server.

The expected records come from the same stream run through the processing
function directly under another key prefix (tests/pipeline/test_detector_lifecycle.py
checks that function's lifecycle rules on their own).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaProducer

from infraprism.core.buckets import labels_for_hour
from infraprism.core.deltas import Delta
from infraprism.core.episodes import TOTAL
from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import free_port
from infraprism.pipeline.alerts import DELIVERY_HEADER, SIGNATURE_HEADER
from infraprism.pipeline.detection import Detector, thresholds_of
from infraprism.pipeline.store import RollupStore
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.pipeline.helpers import end_offsets, read_all, running_aggregator, wait_caught_up
from tests.pipeline.helpers import produce as produce_events
from tests.pipeline.test_detector_lifecycle import HOUR0, PROJECT, hour_batch
from tests.pipeline.test_webhook_signing import docs_verify

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = "from infraprism.pipeline.detector import main; from infraprism.settings import Settings; main(Settings())"
NORMAL = {"big": (200, 20.0), "mid": (80, 4.0), "small": (30, 0.3)}
SPIKE_START = HOUR0 + 8 * 24 + 5


def stream() -> list[tuple[int, dict[str, tuple[int, float]]]]:
    """(hour, cells): 8 quiet days, then "big" spikes 4x, 8x, 8x, then 6 quiet hours."""
    hours = [(hour, NORMAL) for hour in range(HOUR0, SPIKE_START)]
    hours += [(SPIKE_START, {**NORMAL, "big": (800, 80.0)})]
    hours += [(SPIKE_START + i, {**NORMAL, "big": (1600, 160.0)}) for i in (1, 2)]
    hours += [(hour, NORMAL) for hour in range(SPIKE_START + 3, SPIKE_START + 9)]
    return hours


async def write_rollups(redis: aioredis.Redis, prefix: str) -> list[Delta]:
    store = RollupStore(redis, KeyLayout(prefix), topic="t", group="g", dedupe_window_days=3650)
    deltas = []
    for hour, cells in stream():
        rollup, delta = hour_batch(hour, cells)
        await store.apply(rollup, [])
        deltas.append(delta)
    return deltas


async def reference(redis: aioredis.Redis, settings: Settings) -> tuple[list, list[tuple[str, int, str]]]:
    """Records and outbox states from processing the stream directly, under another prefix."""
    prefix = settings.key_prefix + "r"
    layout = KeyLayout(prefix)
    deltas = await write_rollups(redis, prefix)
    detector = Detector(redis, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000)
    for delta in deltas:
        await detector.process(delta)
    records = await anomaly_store.list_range(redis, layout, PROJECT, 0, 2**62)
    states = [
        (fields["id"], int(fields["version"]), fields["status"])
        for _, fields in await redis.xrange(layout.anomaly_outbox(PROJECT))
    ]
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.delete(key)
    return records, states


async def produce(settings: Settings, deltas: list[Delta]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for delta in deltas:
            # one partition for the project, like the aggregator's key = project
            await producer.send_and_wait(settings.deltas_topic, delta.encode(), key=delta.project.encode())
    finally:
        await producer.stop()


class DetectorProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
async def detector_env(settings: Settings, settings_env: dict[str, str]) -> dict[str, str]:
    await ensure_topics(
        settings.kafka_bootstrap, [settings.deltas_topic, settings.anomalies_topic], settings.topic_partitions
    )
    return {**settings_env, "INFRAPRISM_ALERT_POLL_SECONDS": "0.2", "INFRAPRISM_ALERT_RETRY_MAX_SECONDS": "1"}


async def wait_for(check, what: str, worker: DetectorProcess, timeout_s: float = 90.0) -> None:  # noqa: ANN001
    """Poll `check()` until true; fail with the worker's log on timeout (not a timing assertion)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                if worker.process is not None and worker.process.poll() is not None:
                    pytest.fail(f"detector exited while waiting for {what}:\n{worker.log()}")
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}:\n{worker.log()}")


async def delivered_all(redis: aioredis.Redis, layout: KeyLayout, channels: tuple[str, ...]) -> bool:
    entries = await redis.xrevrange(layout.anomaly_outbox(PROJECT), count=1)
    if not entries:
        return False
    last = entries[0][0]
    cursors = await redis.hgetall(layout.alert_cursors(PROJECT))
    return all(cursors.get(channel) == last for channel in channels)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 503 to its first `failures` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.accepted: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.attempts <= self.failures:
            return web.Response(status=503)
        self.accepted.append((dict(request.headers), body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(failures=3)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield hook, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def test_deltas_to_records_topic_and_webhook(
    redis_client: aioredis.Redis,
    settings: Settings,
    detector_env: dict[str, str],
    receiver: tuple[Receiver, str],
    tmp_path: Path,
) -> None:
    hook, url = receiver
    secret = "s3cret"
    expected_records, expected_states = await reference(redis_client, settings)
    assert {r.status for r in expected_records} == {"resolved"}
    assert len(expected_states) >= 2 * len(expected_records) >= 4  # opened, grew or resolved

    layout = KeyLayout(settings.key_prefix)
    await produce(settings, await write_rollups(redis_client, settings.key_prefix))
    env = {**detector_env, "INFRAPRISM_ALERT_WEBHOOK_URL": url, "INFRAPRISM_ALERT_WEBHOOK_SECRET": secret}
    worker = DetectorProcess(env, tmp_path / "detector.log")
    worker.start()
    try:
        await wait_for(
            lambda: delivered_all(redis_client, layout, ("kafka", "webhook")), "all alerts delivered", worker
        )
    finally:
        worker.stop()

    records = await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)
    assert records == expected_records

    messages = await read_topic(settings)
    assert sorted((m["id"], m["version"], m["status"]) for m in messages) == sorted(expected_states)
    by_id = {r.id: r for r in records}
    for message in messages:
        assert message["project"] == PROJECT
        assert message["entity_type"] == by_id[message["id"]].entity_type

    # the webhook failed 3 times, then got every state exactly once, signed
    assert hook.attempts > len(hook.accepted)
    delivered = []
    verify = docs_verify()  # the receiver docs/anomalies.md shows
    for headers, body in hook.accepted:
        assert verify(secret.encode(), headers, body), headers.get(SIGNATURE_HEADER)
        message = orjson.loads(body)
        assert headers[DELIVERY_HEADER] == f"{message['id']}:{message['version']}"
        delivered.append((message["id"], message["version"], message["status"]))
    assert sorted(delivered) == sorted(expected_states)


async def test_restart_loses_and_duplicates_nothing(
    redis_client: aioredis.Redis, settings: Settings, detector_env: dict[str, str], tmp_path: Path
) -> None:
    expected_records, expected_states = await reference(redis_client, settings)
    layout = KeyLayout(settings.key_prefix)
    deltas = await write_rollups(redis_client, settings.key_prefix)
    # cut in the middle of the spike: the episode is open when the worker dies
    cut = next(i for i, d in enumerate(deltas) if d.cells[0][2] == _label(SPIKE_START + 1)) + 1
    worker = DetectorProcess(detector_env, tmp_path / "detector.log")

    await produce(settings, deltas[:cut])
    worker.start()
    try:
        history = layout.detector_history(PROJECT, TOTAL)
        await wait_for(lambda: _has_hour(redis_client, history, SPIKE_START + 1), "the first half", worker)
        await wait_for(lambda: delivered_all(redis_client, layout, ("kafka",)), "first alerts", worker)
        open_records = await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)
        assert open_records
        assert {r.status for r in open_records} == {"active"}
    finally:
        worker.stop(signal.SIGKILL)

    await produce(settings, deltas[cut:])
    worker.start()
    try:
        await wait_for(lambda: _has_hour(redis_client, history, SPIKE_START + 8), "the second half", worker)
        await wait_for(lambda: delivered_all(redis_client, layout, ("kafka",)), "all alerts", worker)
    finally:
        worker.stop()

    records = await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)
    assert records == expected_records
    messages = await read_topic(settings)
    assert sorted((m["id"], m["version"], m["status"]) for m in messages) == sorted(expected_states)


def _label(hour: int) -> str:
    return labels_for_hour(hour)[0]


async def _has_hour(redis: aioredis.Redis, key: str, hour: int) -> bool:
    return bool(await redis.hexists(key, str(hour)))


async def read_topic(settings: Settings) -> list[dict]:
    """Every message on the anomalies topic, up to its end offsets (so duplicates would show)."""
    ends = await end_offsets(settings, settings.anomalies_topic)
    values = await read_all(settings, settings.anomalies_topic, expect=sum(ends.values()))
    return [orjson.loads(v) for v in values]


async def test_events_through_the_aggregator_and_the_detector(
    redis_client: aioredis.Redis, settings: Settings, detector_env: dict[str, str], tmp_path: Path
) -> None:
    """Raw events -> the real aggregator -> its deltas -> the faust detector: the spike is found."""
    start_ms = HOUR0 * 3_600_000
    events = []
    for hour in range(4 * 24 + 1):
        per_hour = 100 if hour == 4 * 24 else 20  # the last hour: 5x the events, $50 instead of $10
        for i in range(per_hour):
            events.append(
                {
                    "event_id": f"e-{hour}-{i}",
                    "timestamp": start_ms + hour * 3_600_000 + i * 30_000,
                    "project_id": PROJECT,
                    "entity_type": "customer",
                    "entity_id": "acme",
                    "model": "gpt-4o",
                    "provider": "openai",
                    "input_tokens": 100,
                    "output_tokens": 50,
                    "cost": 0.5,
                    "latency_ms": 400,
                }
            )
    await produce_events(settings, events)
    worker = DetectorProcess(detector_env, tmp_path / "detector.log")
    layout = KeyLayout(settings.key_prefix)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
        worker.start()
        try:

            async def two_anomalies() -> bool:
                return len(await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)) >= 2

            await wait_for(two_anomalies, "the spike's anomalies", worker)
            await wait_for(lambda: delivered_all(redis_client, layout, ("kafka",)), "alerts", worker)
        finally:
            worker.stop()
    records = await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)
    assert sorted((r.entity_type, r.entity_id, r.type, r.status) for r in records) == [
        ("customer", "acme", "cost_spike", "active"),
        ("project", PROJECT, "cost_spike", "active"),
    ]
    spike_hour_ms = start_ms + 4 * 24 * 3_600_000
    for record in records:
        assert spike_hour_ms <= record.detected_ms < spike_hour_ms + 3_600_000
        assert (record.expected_value, record.actual_value) == (10.0, 50.0)
        assert record.description == "Cost increased 400% compared to 4-day median hourly cost"
    messages = await read_topic(settings)
    assert sorted(m["id"] for m in messages) == sorted(r.id for r in records)

"""Exactly one alert per threshold while every worker (the aggregator, the budget watcher and the
detector, which delivers alerts) is killed with SIGKILL again and again and restarted, and then
while every event is replayed: the real CLI processes, the real broker and Redis."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from infraprism.core.budgets import Budget, BudgetPeriod
from infraprism.core.keys import KeyLayout
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, budgets
from infraprism.watchers.budgets import alert_id
from tests.pipeline.helpers import produce, read_all
from tests.pipeline.workers import stored_offsets_total
from tests.watchers.test_budget_watcher import event

THRESHOLDS = tuple(range(5, 101, 5))  # twenty
WAVES = 4
EVENTS_PER_WAVE = 25  # 100 events of $1.10: $110 against $100, so every threshold is crossed
WORKERS = ("aggregator", "budget-watcher", "detector")


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "infraprism.cli", command], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def start_all(env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    return [start(name, env, logs / f"{name}.log") for name in WORKERS]


async def test_every_threshold_once_through_kill_9_of_every_worker_and_a_replay(
    settings: Settings, settings_env: dict[str, str], redis_client: aioredis.Redis, project: str, tmp_path: Path
):
    layout = KeyLayout(settings.key_prefix)
    budget = Budget("small", "Small monthly", 100 * 1_000_000_000, BudgetPeriod.MONTH, thresholds=THRESHOLDS)
    await budgets.put(redis_client, layout, project, budget)
    topics = [settings.events_topic, settings.dlq_topic, settings.deltas_topic, settings.anomalies_topic]
    await ensure_topics(settings.kafka_bootstrap, topics, 4)
    rng = random.Random(13)
    expected_ids = {alert_id(project, budget, date(2025, 1, 1), t) for t in THRESHOLDS}
    index = layout.anomaly_index(project)
    sent: list[dict] = []
    workers = start_all(settings_env, tmp_path)
    try:
        for wave in range(WAVES):
            first = wave * EVENTS_PER_WAVE
            values = [
                event(project, n, f"2025-01-{1 + n % 28:02d}T{n % 24:02d}:00:00Z", 1.1)
                for n in range(first, first + EVENTS_PER_WAVE)
            ]
            await produce(settings, values)
            sent.extend(values)
            await asyncio.sleep(rng.uniform(0.2, 2.0))  # somewhere in applying, alerting, delivering or committing
            for process in workers:
                kill(process)
            workers = start_all(settings_env, tmp_path)
        async with asyncio.timeout(120):
            while await redis_client.zcard(index) < len(THRESHOLDS):
                assert all(p.poll() is None for p in workers), (tmp_path / "aggregator.log").read_text()
                await asyncio.sleep(0.2)
        # Every alert reaches the anomalies topic, at least once through the kills; a repeat
        # is the same delivery (same anomaly id and version, same body), which a consumer drops.
        delivered = await read_all(settings, settings.anomalies_topic, expect=len(THRESHOLDS), timeout_s=120)
        assert {orjson.loads(body)["id"] for body in delivered} == expected_ids
        by_delivery: dict[tuple[str, int], set[bytes]] = {}
        for body in delivered:
            record = orjson.loads(body)
            by_delivery.setdefault((record["id"], record["version"]), set()).add(body)
        assert all(len(bodies) == 1 for bodies in by_delivery.values())

        # A replay of every event, workers running: counted once already, so nothing new.
        await produce(settings, sent)
        async with asyncio.timeout(60):
            while await stored_offsets_total(redis_client, settings) < 2 * len(sent):
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # the watcher's turn at the last deltas
        assert all(p.poll() is None for p in workers)
        # And a rebuild, which recomputes every aggregate and publishes every change again.
        kill(workers[0])
        rebuilt = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "infraprism.cli", "rebuild"], env=settings_env, capture_output=True, timeout=120
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        workers[0] = start("aggregator", settings_env, tmp_path / "aggregator.log")
        await asyncio.sleep(3)
        assert all(p.poll() is None for p in workers)
    finally:
        for process in workers:
            kill(process)
    ids = set(await redis_client.zrange(index, 0, -1))
    assert ids == expected_ids
    records = [await anomaly_store.get(redis_client, layout, project, record_id) for record_id in ids]
    assert sorted(r.threshold for r in records if r is not None) == list(THRESHOLDS)
    assert {r.version for r in records if r is not None} == {1}  # raised once each, never re-raised

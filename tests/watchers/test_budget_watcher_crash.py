"""Exactly one alert per threshold while the aggregator and the budget watcher are killed
with SIGKILL again and again, and restarted: the real CLI processes, the real broker and Redis."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import redis.asyncio as aioredis

from infraprism.core.budgets import Budget, BudgetPeriod
from infraprism.core.keys import KeyLayout
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, budgets
from infraprism.watchers.budgets import alert_id
from tests.pipeline.helpers import produce
from tests.watchers.test_budget_watcher import event

THRESHOLDS = tuple(range(5, 101, 5))  # twenty
WAVES = 4
EVENTS_PER_WAVE = 25  # 100 events of $1.10: $110 against $100, so every threshold is crossed


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "infraprism.cli", command], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


async def test_every_threshold_once_through_kill_9_of_every_worker(
    settings: Settings, settings_env: dict[str, str], redis_client: aioredis.Redis, project: str, tmp_path: Path
):
    layout = KeyLayout(settings.key_prefix)
    budget = Budget("small", "Small monthly", 100 * 1_000_000_000, BudgetPeriod.MONTH, thresholds=THRESHOLDS)
    await budgets.put(redis_client, layout, project, budget)
    await ensure_topics(settings.kafka_bootstrap, [settings.events_topic, settings.dlq_topic, settings.deltas_topic], 4)
    rng = random.Random(13)
    workers = [start(name, settings_env, tmp_path / f"{name}.log") for name in ("aggregator", "budget-watcher")]
    try:
        for wave in range(WAVES):
            first = wave * EVENTS_PER_WAVE
            values = [
                event(project, n, f"2025-01-{1 + n % 28:02d}T{n % 24:02d}:00:00Z", 1.1)
                for n in range(first, first + EVENTS_PER_WAVE)
            ]
            await produce(settings, values)
            await asyncio.sleep(rng.uniform(0.2, 2.0))  # somewhere in applying, alerting or committing
            for process in workers:
                kill(process)
            workers = [start(name, settings_env, tmp_path / f"{name}.log") for name in ("aggregator", "budget-watcher")]
        index = layout.anomaly_index(project)
        async with asyncio.timeout(120):
            while await redis_client.zcard(index) < len(THRESHOLDS):
                assert all(p.poll() is None for p in workers), [(tmp_path / f).read_text() for f in ("aggregator.log",)]
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # a replayed delta after the last alert would show here
    finally:
        for process in workers:
            kill(process)
    ids = set(await redis_client.zrange(index, 0, -1))
    assert ids == {alert_id(project, budget, date(2025, 1, 1), t) for t in THRESHOLDS}
    records = [await anomaly_store.get(redis_client, layout, project, record_id) for record_id in ids]
    assert sorted(r.threshold for r in records if r is not None) == list(THRESHOLDS)
    outbox = await redis_client.xlen(layout.anomaly_outbox(project))
    assert outbox == len(THRESHOLDS)  # one snapshot each, for the detector to deliver once

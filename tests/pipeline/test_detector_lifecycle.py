"""Anomaly lifecycle through the detector's processing function over rollups in the real Redis.

Opens once per episode, grows in place, resolves after the recovery window,
stays dismissed, queues every change on the alert outbox; a restarted
detector (fresh process state, same Redis) carries on without duplicates.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import redis.asyncio as aioredis

from infraprism.core.cell import Cell
from infraprism.core.deltas import Delta, deltas_of_groups
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.pipeline.detection import Detector, thresholds_of
from infraprism.pipeline.detector_state import RedisHistories
from infraprism.pipeline.store import RollupStore
from infraprism.settings import Settings
from infraprism.stores import anomaly_store

MS_PER_HOUR = 3_600_000
NANO = 1_000_000_000
HOUR0 = 480_000  # 2024-10-04T00:00Z, a day start
PROJECT = "acme"


def hour_batch(hour: int, cells: dict[str, tuple]) -> tuple[BatchRollup, Delta]:
    """One hour of traffic: entity id -> (events, cost USD[, latency ms an event, default 500])."""
    rollup = BatchRollup()
    for entity_id, (events, cost_usd, *latency) in cells.items():
        latency_us = round((latency[0] if latency else 500) * 1000)
        key = (PROJECT, "customer", entity_id, "gpt-4o", "openai", (), hour)
        rollup.groups[key] = Cell((events, round(cost_usd * NANO), 0, 0, events * latency_us, events))
    (delta,) = deltas_of_groups(rollup.groups, {PROJECT: (hour + 1) * MS_PER_HOUR - 1})
    return rollup, delta


class Feed:
    def __init__(self, redis: aioredis.Redis, settings: Settings, *, max_cached: int | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.layout = KeyLayout(settings.key_prefix)
        self.store = RollupStore(redis, self.layout, topic="t", group="g", dedupe_window_days=3650)
        self.max_cached = max_cached
        self.detector = self.new_detector()

    def new_detector(self) -> Detector:
        histories = (
            None if self.max_cached is None else RedisHistories(self.redis, self.layout, max_cached=self.max_cached)
        )
        return Detector(
            self.redis,
            self.layout,
            thresholds_of(self.settings),
            recovery_ms=self.settings.detector_recovery_minutes * 60_000,
            histories=histories,
        )

    async def hours(self, start: int, end: int, cells: dict[str, tuple]) -> None:
        for hour in range(start, end):
            rollup, delta = hour_batch(hour, cells)
            await self.store.apply(rollup, [])
            await self.detector.process(delta)

    async def records(self) -> list[anomaly_store.AnomalyRecord]:
        return await anomaly_store.list_range(self.redis, self.layout, PROJECT, 0, 2**62)

    async def outbox(self) -> list[tuple[str, int, str]]:
        entries = await self.redis.xrange(self.layout.anomaly_outbox(PROJECT))
        return [(fields["id"], int(fields["version"]), fields["status"]) for _, fields in entries]


NORMAL = {"big": (200, 20.0), "small": (50, 0.5)}


async def test_one_anomaly_per_episode_grows_then_resolves(redis_client: aioredis.Redis, settings: Settings) -> None:
    feed = Feed(redis_client, settings)
    await feed.hours(HOUR0, HOUR0 + 8 * 24, NORMAL)
    assert await feed.records() == []

    spike_start = HOUR0 + 8 * 24 + 4
    await feed.hours(spike_start, spike_start + 1, {**NORMAL, "big": (600, 60.0)})  # 3x
    await feed.hours(spike_start + 1, spike_start + 3, {**NORMAL, "big": (1400, 140.0)})  # 7x
    records = await feed.records()
    cost = [r for r in records if r.entity_id == "big" and r.type == "cost_spike"]
    assert len(cost) == 1
    (anomaly,) = cost
    assert anomaly.status == "active"
    assert anomaly.detected_ms == (spike_start + 1) * MS_PER_HOUR - 1
    assert anomaly.detected_at.endswith("Z")
    assert anomaly.expected_value == 20.0
    assert anomaly.actual_value == 140.0  # grew in place
    assert anomaly.severity == "high"
    assert anomaly.version == 2
    assert anomaly.description == "Cost increased 600% compared to 7-day median hourly cost"
    # the volume (1400 vs 200 events) and the project's total spiked too; "small" did not
    kinds = sorted((r.entity_type, r.entity_id, r.type) for r in records)
    assert kinds == [
        ("customer", "big", "cost_spike"),
        ("customer", "big", "volume_spike"),
        ("project", PROJECT, "cost_spike"),
    ]

    # back to normal: stays active within the recovery window (3 h), then resolves
    await feed.hours(spike_start + 3, spike_start + 5, NORMAL)
    assert (await anomaly_store.get(redis_client, feed.layout, PROJECT, anomaly.id)).status == "active"
    await feed.hours(spike_start + 5, spike_start + 7, NORMAL)
    resolved = await anomaly_store.get(redis_client, feed.layout, PROJECT, anomaly.id)
    assert resolved.status == "resolved"
    assert resolved.version == 3

    # every state is on the outbox once, in order
    outbox = [entry for entry in await feed.outbox() if entry[0] == anomaly.id]
    assert outbox == [(anomaly.id, 1, "active"), (anomaly.id, 2, "active"), (anomaly.id, 3, "resolved")]

    # a later spike is a new episode, a new anomaly
    await feed.hours(spike_start + 30, spike_start + 31, {**NORMAL, "big": (800, 80.0)})
    cost = [r for r in await feed.records() if r.entity_id == "big" and r.type == "cost_spike"]
    assert len(cost) == 2
    assert len({r.id for r in cost}) == 2


async def test_dismissed_is_not_raised_again_in_its_episode(redis_client: aioredis.Redis, settings: Settings) -> None:
    feed = Feed(redis_client, settings)
    await feed.hours(HOUR0, HOUR0 + 8 * 24, NORMAL)
    spike_start = HOUR0 + 8 * 24 + 2
    await feed.hours(spike_start, spike_start + 1, {**NORMAL, "big": (600, 60.0)})
    (anomaly,) = [r for r in await feed.records() if r.entity_id == "big" and r.type == "cost_spike"]

    dismissed = await asyncio.to_thread(anomaly_store.dismiss_by_id, settings, anomaly.id)
    assert dismissed is not None
    assert dismissed.status == "dismissed"
    assert await asyncio.to_thread(anomaly_store.dismiss_by_id, settings, "anomaly_nope") is None

    # the spike goes on and grows: no new anomaly, the dismissed one is left as it is
    await feed.hours(spike_start + 1, spike_start + 4, {**NORMAL, "big": (2000, 200.0)})
    cost = [r for r in await feed.records() if r.entity_id == "big" and r.type == "cost_spike"]
    assert [(r.id, r.status, r.actual_value, r.version) for r in cost] == [(anomaly.id, "dismissed", 60.0, 2)]
    # the dismissal itself was queued for alerting
    assert (anomaly.id, 2, "dismissed") in await feed.outbox()

    # after the episode ends, the next spike is raised
    await feed.hours(spike_start + 4, spike_start + 10, NORMAL)
    await feed.hours(spike_start + 10, spike_start + 11, {**NORMAL, "big": (600, 60.0)})
    cost = [r for r in await feed.records() if r.entity_id == "big" and r.type == "cost_spike"]
    assert sorted(r.status for r in cost) == ["active", "dismissed"]


async def test_restart_and_replay_duplicate_nothing(redis_client: aioredis.Redis, settings: Settings) -> None:
    feed = Feed(redis_client, settings)
    await feed.hours(HOUR0, HOUR0 + 8 * 24, NORMAL)
    spike_start = HOUR0 + 8 * 24 + 2
    spike = {**NORMAL, "big": (900, 90.0)}
    await feed.hours(spike_start, spike_start + 2, spike)
    before = {r.id: r for r in await feed.records()}
    outbox_before = await feed.outbox()
    assert before

    # a new process (empty caches) re-reads the same deltas (at-least-once delivery)
    feed.detector = feed.new_detector()
    for hour in range(spike_start - 2, spike_start + 2):
        rollup, delta = hour_batch(hour, spike)
        await feed.detector.process(delta)
    assert {r.id: r for r in await feed.records()} == before
    assert await feed.outbox() == outbox_before

    # and carries the open episode on: resolution, not a second anomaly
    await feed.hours(spike_start + 2, spike_start + 7, NORMAL)
    after = await feed.records()
    assert sorted(r.id for r in after) == sorted(before)
    assert {r.status for r in after} == {"resolved"}


async def test_latency_spike(redis_client: aioredis.Redis, settings: Settings) -> None:
    feed = Feed(redis_client, settings)
    await feed.hours(HOUR0, HOUR0 + 8 * 24, NORMAL)
    spike_start = HOUR0 + 8 * 24 + 7
    await feed.hours(spike_start, spike_start + 2, {**NORMAL, "small": (50, 0.5, 2600.0)})
    (anomaly,) = await feed.records()
    assert (anomaly.entity_id, anomaly.type, anomaly.status) == ("small", "latency_spike", "active")
    assert (anomaly.expected_value, anomaly.actual_value) == (500.0, 2600.0)
    assert anomaly.severity == "high"
    assert anomaly.description == "Average latency increased 420% compared to 7-day median hourly average latency"


async def test_cli_dismiss(redis_client: aioredis.Redis, settings: Settings, settings_env: dict[str, str]) -> None:
    feed = Feed(redis_client, settings)
    await feed.hours(HOUR0, HOUR0 + 8 * 24, NORMAL)
    await feed.hours(HOUR0 + 8 * 24, HOUR0 + 8 * 24 + 1, {**NORMAL, "big": (600, 60.0)})
    anomaly = next(r for r in await feed.records() if r.entity_id == "big" and r.type == "cost_spike")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "infraprism.cli", "anomalies", "dismiss", anomaly.id],
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (printed["id"], printed["status"]) == (anomaly.id, "dismissed")
    assert (await anomaly_store.get(redis_client, feed.layout, PROJECT, anomaly.id)).status == "dismissed"
    missing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "infraprism.cli", "anomalies", "dismiss", "anomaly_unknown"],
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "anomaly_unknown" in missing.stderr


async def test_a_tiny_cache_gives_the_same_records(redis_client: aioredis.Redis, settings: Settings) -> None:
    """Histories evicted from memory are read back from Redis: the outcome does not change."""
    spike_start = HOUR0 + 8 * 24 + 4
    outcomes = []
    for cache_size in (1_000, 1):
        prefixed = settings.model_copy(update={"key_prefix": f"{settings.key_prefix}-{cache_size}"})
        feed = Feed(redis_client, prefixed, max_cached=cache_size)
        await feed.hours(HOUR0, spike_start, NORMAL)
        await feed.hours(spike_start, spike_start + 2, {**NORMAL, "big": (900, 90.0), "small": (50, 0.5, 2600.0)})
        await feed.hours(spike_start + 2, spike_start + 7, NORMAL)
        records = await feed.records()
        outcomes.append(sorted((r.id, r.status, r.version, r.actual_value) for r in records))
        async for key in redis_client.scan_iter(match=f"{settings.key_prefix}-{cache_size}:*"):
            await redis_client.delete(key)
    assert len(outcomes[0]) == 4
    assert outcomes[0] == outcomes[1]


async def test_a_detector_started_late_takes_the_history_from_the_rollups(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    feed = Feed(redis_client, settings)
    for hour in range(HOUR0, HOUR0 + 8 * 24):  # the aggregator ran for 8 days without a detector
        rollup, _ = hour_batch(hour, NORMAL)
        await feed.store.apply(rollup, [])
    spike = HOUR0 + 8 * 24 + 1
    await feed.hours(spike, spike + 1, {**NORMAL, "big": (600, 60.0)})
    cost = [r for r in await feed.records() if r.type == "cost_spike"]
    assert sorted((r.entity_type, r.entity_id) for r in cost) == [("customer", "big"), ("project", PROJECT)]
    big = next(r for r in cost if r.entity_id == "big")
    assert (big.expected_value, big.actual_value) == (20.0, 60.0)
    assert big.description == "Cost increased 200% compared to 7-day median hourly cost"

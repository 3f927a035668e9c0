"""The budget watcher: one alert per (budget, period, threshold), at the crossing's event time.

The first tests drive BudgetWatcher.check with deltas over events written through the real
write path into the real Redis; the last runs the whole way: events on the real broker, the
aggregator, its deltas, the watcher as a task, and the alert read back over the API, then a
second watcher replaying every delta from the start and raising nothing more.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import ConsumerRecord

from infraprism.api.app import create_app
from infraprism.api.repository import load_scripts
from infraprism.core.buckets import labels_for_ms
from infraprism.core.budgets import Budget, BudgetPeriod, BudgetScope
from infraprism.core.deltas import Delta
from infraprism.core.events import validate_event
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import Retention
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys, budgets
from infraprism.watchers.budgets import BudgetWatcher, alert_id, check_until_done, decode, run
from tests.api.helpers import load_events
from tests.pipeline.helpers import produce, read_all, running_aggregator, wait_caught_up

USD = 1_000_000_000
ACME_START = date(2025, 1, 1)
ACME = Budget(
    budget_id="acme-monthly",
    name="Acme monthly",
    amount_nano=500 * USD,
    period=BudgetPeriod.MONTH,
    scope=BudgetScope(entity_type="customer", entity_id="acme"),
    thresholds=(50, 80, 100),
)


def event(project: str, n: int, when: str, usd: float, entity_id: str = "acme") -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "timestamp": when,
        "project_id": project,
        "entity_type": "customer",
        "entity_id": entity_id,
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 10,
        "cost": usd,
    }


def delta_of(project: str, events: list[dict[str, Any]]) -> Delta:
    """What the aggregator writes for a batch of these events: their entity hours."""
    validated = [validate_event(e) for e in events]
    cells = sorted({(e.entity_type, e.entity_id, labels_for_ms(e.ts_ms)[0]) for e in validated})
    return Delta(project, max(e.ts_ms for e in validated), tuple(cells))


@pytest.fixture
async def watcher(redis_client: aioredis.Redis, settings: Settings) -> BudgetWatcher:
    await load_scripts(redis_client)
    return BudgetWatcher(redis_client, KeyLayout(settings.key_prefix))


async def test_each_threshold_is_raised_once_at_the_hour_it_was_crossed(
    watcher: BudgetWatcher, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    first = [
        event(project, 1, "2025-01-03T09:15:00Z", 200.0),
        event(project, 2, "2025-01-05T14:40:00Z", 100.0),  # 300 of 500: 50% crossed here
        event(project, 3, "2025-01-05T15:00:00Z", 7.0, entity_id="globex"),  # not in the scope
    ]
    await load_events(redis_client, settings, first)
    created = await watcher.check(delta_of(project, first))
    assert [(r.threshold, r.type, r.detected_at) for r in created] == [(50, "budget_threshold", "2025-01-05T14:00:00Z")]
    (alert,) = created
    assert alert.id == alert_id(project, ACME, ACME_START, 50)
    assert (alert.entity_type, alert.entity_id, alert.budget_id) == ("budget", "acme-monthly", "acme-monthly")
    assert alert.expected_value == 500.0
    assert alert.actual_value == 300.0
    assert alert.description == "Acme monthly reached 50% of $500.00 ($300.00 spent, 2025-01-01 to 2025-01-31)"
    # The same delta again, as a replay would bring it: nothing new.
    assert await watcher.check(delta_of(project, first)) == []

    second = [event(project, 4, "2025-01-20T08:05:00Z", 250.0)]  # 550: 80% and 100% at once
    await load_events(redis_client, settings, second)
    created = await watcher.check(delta_of(project, second))
    assert [(r.threshold, r.type, r.severity) for r in created] == [
        (80, "budget_threshold", "medium"),
        (100, "budget_exceeded", "high"),
    ]
    assert {r.detected_at for r in created} == {"2025-01-20T08:00:00Z"}
    stored = await anomaly_store.get(redis_client, layout, project, created[1].id)
    assert stored is not None
    assert stored.public()["threshold"] == 100


async def test_a_late_event_raises_a_past_periods_alert_at_its_own_time(
    watcher: BudgetWatcher, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    december = [event(project, 1, "2024-12-10T10:00:00Z", 240.0)]
    january = [event(project, 2, "2025-01-10T10:00:00Z", 10.0)]
    await load_events(redis_client, settings, december + january)
    assert await watcher.check(delta_of(project, december + january)) == []
    late = [event(project, 3, "2024-12-30T23:30:00Z", 20.0)]  # arrives in January, for December
    await load_events(redis_client, settings, late)
    (alert,) = await watcher.check(delta_of(project, late))
    assert alert.threshold == 50
    assert alert.detected_at == "2024-12-30T23:00:00Z"
    assert "2024-12-01 to 2024-12-31" in alert.description


async def test_replacing_a_budget_keeps_what_its_period_crossed(
    watcher: BudgetWatcher, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    spent = [event(project, 1, "2025-01-03T09:15:00Z", 300.0)]
    await load_events(redis_client, settings, spent)
    assert [r.threshold for r in await watcher.check(delta_of(project, spent))] == [50]
    renamed = Budget(**{**{f: getattr(ACME, f) for f in ACME.__slots__}, "name": "Acme, renamed"})
    await budgets.put(redis_client, layout, project, renamed)
    assert await watcher.check(delta_of(project, spent)) == []


async def test_budgets_of_other_entities_are_not_read(
    watcher: BudgetWatcher, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    globex = [event(project, 1, "2025-01-03T09:15:00Z", 900.0, entity_id="globex")]
    await load_events(redis_client, settings, globex)
    assert await watcher.check(delta_of(project, globex)) == []


async def test_end_to_end_through_the_broker_and_a_replay(
    settings: Settings, redis_client: aioredis.Redis, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    _, key = apikeys.create_key(settings, project)
    stop = asyncio.Event()
    watching = asyncio.create_task(run(settings, stop))
    try:
        async with running_aggregator(settings):
            # $90 a day from January 1: 50% on the 3rd, 80% on the 5th, 100% on the 6th.
            await produce(settings, [event(project, n, f"2025-01-0{n}T10:00:00Z", 90.0) for n in range(1, 7)])
            await wait_caught_up(redis_client, settings)
            async with asyncio.timeout(60):
                while await redis_client.zcard(layout.anomaly_index(project)) < 3:
                    await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(watching, 30)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            january = {"start_date": "2025-01-01", "end_date": "2025-01-31"}
            alerts = (await client.get("/v1/analytics/anomalies", params=january)).json()["data"]
    assert sorted((a["type"], a["threshold"], a["detected_at"]) for a in alerts) == [
        ("budget_exceeded", 100, "2025-01-06T10:00:00Z"),
        ("budget_threshold", 50, "2025-01-03T10:00:00Z"),
        ("budget_threshold", 80, "2025-01-05T10:00:00Z"),
    ]
    # Every delta the aggregator wrote, read again from the start, as a restarted or second
    # watcher would: nothing more is raised.
    replayed = BudgetWatcher(redis_client, layout)
    deltas = await read_all(settings, settings.deltas_topic, expect=1)
    for raw in deltas:
        assert await replayed.check(Delta.decode(raw)) == []
    assert await redis_client.zcard(layout.anomaly_index(project)) == 3


async def test_the_forecast_alert_fires_once_after_three_days_when_the_month_will_overrun(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    await load_scripts(redis_client)
    layout = KeyLayout(settings.key_prefix)
    roomy = Budget(**{**{f: getattr(ACME, f) for f in ACME.__slots__}, "thresholds": (1000,)})
    await budgets.put(redis_client, layout, project, roomy)
    # $40 a day from January 1: $1,240 by the month's end, against $500.
    spend = [event(project, n, f"2025-01-{n:02d}T10:00:00Z", 40.0) for n in range(1, 10)]
    await load_events(redis_client, settings, spend)
    noon = {day: datetime(2025, 1, day, 12, tzinfo=UTC).timestamp() for day in (3, 10)}
    early = BudgetWatcher(redis_client, layout, clock=lambda: noon[3])
    assert await early.check(delta_of(project, spend[:2])) == []  # two complete days: too early to say
    watcher = BudgetWatcher(redis_client, layout, clock=lambda: noon[10])
    (alert,) = await watcher.check(delta_of(project, spend))
    assert alert.type == "budget_forecast"
    assert alert.id == alert_id(project, roomy, ACME_START, "forecast")
    assert alert.actual_value > 500
    assert "is forecast to spend" in alert.description
    again = BudgetWatcher(redis_client, layout, clock=lambda: noon[10])  # a restarted watcher
    assert await again.check(delta_of(project, spend)) == []


async def test_a_period_whose_hours_have_expired_is_still_alerted_dated_by_its_batch(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """Hours kept a week, days for good: a month's crossing cannot be dated to its hour, and the
    watcher neither dies nor stays silent: it dates the alert by the batch that crossed it."""
    await load_scripts(redis_client)
    layout = KeyLayout(settings.key_prefix)
    await budgets.put(redis_client, layout, project, ACME)
    spent = [event(project, 1, "2025-01-03T09:15:00Z", 300.0)]
    await load_events(redis_client, settings, spent)
    watcher = BudgetWatcher(redis_client, layout, Retention(hour_days=7))
    (alert,) = await watcher.check(delta_of(project, spent))
    assert alert.threshold == 50
    assert alert.detected_at == "2025-01-03T09:15:00Z"  # the batch's newest event


async def test_a_refused_redis_command_skips_the_delta_and_a_bad_delta_is_dropped(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await redis_client.set(layout.budgets(project), "not a hash")  # WRONGTYPE for the watcher
    watcher = BudgetWatcher(redis_client, layout)
    delta = Delta(project, 0, (("customer", "acme", "2025010309"),))
    await check_until_done(watcher, delta, asyncio.Event())  # logged, not raised
    broken = b'{"project": "p", "watermark_ms": 1, "cells": [["a", "b", "2025x"]]}'  # not an hour label
    bad = ConsumerRecord("deltas", 0, 7, 0, 0, None, broken, None, 0, 0, [])
    assert decode(bad) is None
    good = ConsumerRecord("deltas", 0, 8, 0, 0, None, delta.encode(), None, 0, 0, [])
    assert decode(good) == delta

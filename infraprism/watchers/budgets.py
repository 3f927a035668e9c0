"""The budget watcher: raises an alert the first time a budget period's spend reaches each
threshold, as the events arrive (docs/budgets.md, "Alerts").

It reads the aggregator's change feed (the deltas topic, its own consumer group) and, for a
project whose rollups changed, re-reads the spend of each budget period the change touched,
with the API's own read model (api/planner.py, api/sums.py): an alert and the budget's status
agree to the nano-dollar. It sits beside the CLI in the layers for that reason: it needs the
pipeline's feed and the API's reads.

Exactly once, through restarts, replays and several watchers: an alert's id is a hash of
(project, budget, period start, threshold), and the anomaly store writes a record only if its
id was never written (stores/anomaly_store.create, one atomic call with its outbox entry), so
the detector's alert delivery sends it on the anomalies topic and the webhook once.

An alert's `detected_at` is the start of the hour, in event time, in which the period's
cumulative spend first reached the threshold: found from the period's hourly series, so it is
the same whichever batch or replay saw the crossing, and a late event that pushes a past
period over a threshold raises the alert at its own time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import date

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from infraprism.api.budgets import BudgetService, filters_of
from infraprism.api.planner import Grouping, Interval, plan_costs, plan_timeseries
from infraprism.api.repository import Repository, load_scripts
from infraprism.api.sums import by_period, grand_total, read_sums
from infraprism.core import zones
from infraprism.core.anomalies import AnomalyRecord, AnomalyStatus, AnomalyType, Severity, record_time
from infraprism.core.budgets import Budget, crossed, period_of
from infraprism.core.cell import COST, Cell
from infraprism.core.deltas import Delta, hour_of_label
from infraprism.core.keys import KeyLayout
from infraprism.core.money import nano_to_usd, usd_to_nano
from infraprism.core.rollup import Retention
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, budgets
from infraprism.stores.projects import reporting_zone

log = logging.getLogger(__name__)

MS_PER_HOUR = 3_600_000
# Deltas taken from the feed at once: merged per project, so a busy project's periods are
# read once per poll however many batches the aggregator applied in between.
POLL_MAX_RECORDS = 500
POLL_TIMEOUT_MS = 100
# How soon the group hands a killed watcher's partitions to another (aiokafka's default is 10 s).
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000
BUDGET_ENTITY_TYPE = "budget"  # an alert is filed under the budget, not under an entity


# Complete days of a period before its forecast may raise an alert: fewer say too little.
FORECAST_MIN_DAYS = 3
# A period's forecast is read again at most this often (it reads four weeks of daily spend).
FORECAST_EVERY_S = 30.0
FORECAST = "forecast"


def alert_id(project: str, budget_id: str, period_start: date, threshold: int | str) -> str:
    """The one id an alert of (project, budget, period, threshold or FORECAST) can have: no
    '.' in it, so the webhook's signed material (pipeline/alerts.py) splits cleanly."""
    digest = hashlib.sha256(f"{project}\x1f{budget_id}\x1f{period_start}\x1f{threshold}".encode()).hexdigest()
    return f"budget_{digest[:24]}"


def _severity(threshold: int) -> Severity:
    if threshold >= 200:
        return Severity.CRITICAL
    if threshold >= 100:
        return Severity.HIGH
    if threshold >= 80:
        return Severity.MEDIUM
    return Severity.LOW


def touched_days(delta: Delta, tz: str) -> set[date]:
    """The local days the delta's changed hours fall on (an hour can span two in a zone whose
    days start inside UTC hours)."""
    zone = zones.zone(tz)
    out: set[date] = set()
    for _, _, label in delta.cells:
        start_ms = hour_of_label(label) * MS_PER_HOUR
        out.add(zones.local_date(zone, start_ms))
        out.add(zones.local_date(zone, start_ms + MS_PER_HOUR - 1))
    return out


def may_touch(budget: Budget, delta: Delta) -> bool:
    """Whether the delta's cells can have changed the budget's spend (its entity filters)."""
    scope = budget.scope
    if scope.entity_type is None and scope.entity_id is None:
        return True
    return any(
        (scope.entity_type is None or etype == scope.entity_type)
        and (scope.entity_id is None or eid == scope.entity_id)
        for etype, eid, _ in delta.cells
    )


class BudgetWatcher:
    """One project's change in, the new alerts out."""

    def __init__(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.retention = retention or Retention()
        self.clock = clock
        # (project, budget, period start) -> when its forecast was last read (clock seconds).
        self._forecast_read: dict[tuple[str, str, date], float] = {}

    async def check(self, delta: Delta) -> list[AnomalyRecord]:
        """Raise the alerts the delta's changes call for; returns the ones it created."""
        project = delta.project
        found = await budgets.list_all(self.redis, self.layout, project)
        if not found:
            return []
        tz = await reporting_zone(self.redis, self.layout, project)
        days = touched_days(delta, tz)
        repository = Repository(self.redis, self.layout, project, retention=self.retention)
        created = []
        for budget in found:
            if not may_touch(budget, delta):
                continue
            for start, end in sorted({period_of(day, budget.period) for day in days}):
                created.extend(await self._check_period(repository, budget, start, end, tz, delta.watermark_ms))
                forecast = await self._check_forecast(repository, budget, start, end, tz, delta.watermark_ms)
                created.extend([forecast] if forecast is not None else [])
        return created

    async def _check_forecast(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, watermark_ms: int
    ) -> AnomalyRecord | None:
        """The period's forecast alert, the first time its forecast passes 100% of the amount
        once FORECAST_MIN_DAYS of the period are complete. Only the period holding today has a
        forecast to watch; it is read at most every FORECAST_EVERY_S."""
        project = repository.project
        now_s = self.clock()
        today = zones.local_date(zones.zone(tz), int(now_s * 1000))
        if not start <= today <= end or (today - start).days < FORECAST_MIN_DAYS:
            return None
        key = (project, budget.budget_id, start)
        if now_s - self._forecast_read.get(key, float("-inf")) < FORECAST_EVERY_S:
            return None
        record_id = alert_id(project, budget.budget_id, start, FORECAST)
        if await self.redis.exists(self.layout.anomaly(project, record_id)):
            return None
        self._forecast_read[key] = now_s
        status = await BudgetService(repository).status(budget, today, tz, int(now_s * 1000))
        forecast_nano = usd_to_nano(status["forecast"])
        if forecast_nano <= budget.amount_nano:
            return None
        record = AnomalyRecord(
            id=record_id,
            project=project,
            detected_at=record_time(watermark_ms),
            detected_ms=watermark_ms,
            entity_type=BUDGET_ENTITY_TYPE,
            entity_id=budget.budget_id,
            type=AnomalyType.BUDGET_FORECAST.value,
            severity=Severity.MEDIUM.value,
            description=(
                f"{budget.name} is forecast to spend ${status['forecast']:,.2f} of ${budget.amount_nano / 1e9:,.2f} "
                f"by {end} ({status['forecast_percent']}%; ${status['spent']:,.2f} spent so far)"
            ),
            expected_value=nano_to_usd(budget.amount_nano),
            actual_value=status["forecast"],
            status=AnomalyStatus.ACTIVE.value,
            updated_ms=watermark_ms,
            budget_id=budget.budget_id,
            threshold=100,
        )
        return record if await anomaly_store.create(self.redis, self.layout, record) else None

    async def _check_period(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, watermark_ms: int
    ) -> list[AnomalyRecord]:
        project = repository.project
        (sums,) = await read_sums(repository, [plan_costs(start, end, filters_of(budget), Grouping(), tz)])
        spent = grand_total(sums)[COST]
        reached = crossed(budget.thresholds, spent, budget.amount_nano)
        if not reached:
            return []
        ids = {t: alert_id(project, budget.budget_id, start, t) for t in reached}
        async with self.redis.pipeline(transaction=False) as pipe:
            for record_id in ids.values():
                pipe.exists(self.layout.anomaly(project, record_id))
            present = dict(zip(ids, await pipe.execute(), strict=True))
        new = [t for t in reached if not present[t]]
        if not new:
            return []
        crossing_ms = await self._crossing_hours(repository, budget, start, end, tz, new)
        created = []
        for threshold in new:
            detected_ms = crossing_ms.get(threshold, watermark_ms)
            kind = AnomalyType.BUDGET_EXCEEDED if threshold >= 100 else AnomalyType.BUDGET_THRESHOLD
            record = AnomalyRecord(
                id=ids[threshold],
                project=project,
                detected_at=record_time(detected_ms),
                detected_ms=detected_ms,
                entity_type=BUDGET_ENTITY_TYPE,
                entity_id=budget.budget_id,
                type=kind.value,
                severity=_severity(threshold).value,
                description=(
                    f"{budget.name} reached {threshold}% of ${budget.amount_nano / 1e9:,.2f} "
                    f"(${spent / 1e9:,.2f} spent, {start} to {end})"
                ),
                expected_value=nano_to_usd(budget.amount_nano),
                actual_value=nano_to_usd(spent),
                status=AnomalyStatus.ACTIVE.value,
                updated_ms=detected_ms,
                budget_id=budget.budget_id,
                threshold=threshold,
            )
            if await anomaly_store.create(self.redis, self.layout, record):
                log.info(
                    "budget threshold reached",
                    extra={"project": project, "budget": budget.budget_id, "threshold": threshold},
                )
                created.append(record)
        return created

    async def _crossing_hours(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, thresholds: Iterable[int]
    ) -> dict[int, int]:
        """Each threshold's crossing: the start (epoch ms) of the local hour in which the
        period's cumulative spend first reached it."""
        plan = plan_timeseries(start, end, filters_of(budget), Interval.HOUR, tz)
        (sums,) = await read_sums(repository, [plan])
        hourly = by_period(sums)
        hours = zones.local_hours(zones.zone(tz), *zones.day_range_ms(zones.zone(tz), start, end))
        pending = sorted(thresholds)
        out: dict[int, int] = {}
        cumulative = 0
        zero = Cell.zero()
        for label, hour in zip(plan.periods, hours, strict=True):
            cumulative += hourly.get(label, zero)[COST]
            while pending and cumulative * 100 >= pending[0] * budget.amount_nano:
                out[pending.pop(0)] = hour.start_ms
            if not pending:
                break
        return out


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Watch the deltas topic until `stop` is set (or forever): at-least-once, each alert once."""
    stop = stop or asyncio.Event()
    layout = KeyLayout(settings.key_prefix)
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True, protocol=2)
    await load_scripts(redis)
    retention = Retention(settings.retention_hour_days, settings.retention_day_days, settings.retention_month_days)
    watcher = BudgetWatcher(redis, layout, retention)
    consumer = AIOKafkaConsumer(
        settings.deltas_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.budget_watcher_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    await consumer.start()
    log.info("budget watcher started", extra={"group": settings.budget_watcher_group})
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_MAX_RECORDS)
            merged: dict[str, Delta] = {}
            for messages in batches.values():
                for message in messages:
                    try:
                        delta = Delta.decode(message.value)
                    except (ValueError, KeyError, TypeError, IndexError) as exc:
                        log.error("undecodable delta skipped: %r", exc)
                        continue
                    previous = merged.get(delta.project)
                    merged[delta.project] = (
                        delta
                        if previous is None
                        else Delta(
                            delta.project,
                            max(previous.watermark_ms, delta.watermark_ms),
                            tuple(sorted(set(previous.cells) | set(delta.cells))),
                        )
                    )
            for delta in merged.values():
                await watcher.check(delta)
            if batches:
                await consumer.commit()  # only once every alert the deltas call for is written
    finally:
        await consumer.stop()
        await redis.aclose()


def main(settings: Settings) -> None:
    asyncio.run(run(settings))


__all__ = ["BudgetWatcher", "alert_id", "main", "run"]

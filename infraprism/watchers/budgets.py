"""The budget watcher: raises an alert the first time a budget period's spend reaches each
threshold, as the events arrive (docs/budgets.md, "Alerts").

It reads the aggregator's change feed (the deltas topic, its own consumer group) and, for a
project whose rollups changed, re-reads the spend of each budget period the change touched,
with the API's own read model (api/planner.py, api/sums.py): an alert and the budget's status
agree to the nano-dollar. It sits beside the CLI in the layers for that reason: a worker on
the aggregator's feed (Kafka, core/deltas.py) that reads with the API's code.

It never stops on data: a delta that is not one is logged and dropped, a period whose spend
the read model will not answer exactly (expired buckets, a scan over its bound) is logged and
left, a Redis that cannot be reached is waited for, and offsets a rebalance took are left to
the partitions' next owner, which raises nothing twice.

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
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infraprism.api.budgets import BudgetService, filters_of
from infraprism.api.errors import ApiError
from infraprism.api.planner import Grouping, Interval, local_periods, plan_costs, plan_timeseries
from infraprism.api.repository import Repository, load_scripts
from infraprism.api.sums import by_period, grand_total, read_sums
from infraprism.core import zones
from infraprism.core.anomalies import AnomalyRecord, AnomalyStatus, AnomalyType, Severity, record_time
from infraprism.core.buckets import days as days_between
from infraprism.core.budgets import Budget, crossed, period_of
from infraprism.core.cell import COST, Cell
from infraprism.core.deltas import BadDelta, Delta, decode_checked, hour_of_label
from infraprism.core.keys import KeyLayout
from infraprism.core.money import nano_to_usd
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
# Redis unreachable: wait this long before checking a delta again, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
HEARTBEAT_INTERVAL_MS = 2000
BUDGET_ENTITY_TYPE = "budget"  # an alert is filed under the budget, not under an entity


# Complete days of a period before its forecast may raise an alert: fewer say too little.
FORECAST_MIN_DAYS = 3
# A period's forecast is read again at most this often (it reads four weeks of daily spend).
FORECAST_EVERY_S = 30.0
FORECAST = "forecast"


def alert_id(project: str, budget: Budget, period_start: date, threshold: int | str) -> str:
    """The one id an alert of (project, budget, its period, threshold or FORECAST) can have:
    no '.' in it, so the webhook's signed material (pipeline/alerts.py) splits cleanly. The
    period's kind is part of it: a budget changed from months to days has new periods."""
    material = f"{project}\x1f{budget.budget_id}\x1f{budget.period.value}\x1f{period_start}\x1f{threshold}"
    return f"budget_{hashlib.sha256(material.encode()).hexdigest()[:24]}"


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
        # The periods whose every threshold is raised, per version of their budget: not read again.
        self._done: set[tuple[str, str, str, date]] = set()

    async def check(self, delta: Delta) -> list[AnomalyRecord]:
        """Raise the alerts the delta's changes call for; returns the ones it created."""
        project = delta.project
        found = await budgets.list_all(self.redis, self.layout, project)
        if not found:
            return []
        tz = await reporting_zone(self.redis, self.layout, project)
        days = touched_days(delta, tz)
        repository = Repository(self.redis, self.layout, project, retention=self.retention)
        periods = [
            (budget, start, end)
            for budget in found
            if may_touch(budget, delta)
            for start, end in sorted({period_of(day, budget.period) for day in days})
        ]
        open_periods = [p for p in periods if (project, p[0].budget_id, p[0].updated_at, p[1]) not in self._done]
        spends = await self._spends(repository, open_periods, tz)
        created = []
        for (budget, start, end), spent in zip(open_periods, spends, strict=True):
            if spent is not None:
                created.extend(await self._raise_thresholds(repository, budget, start, end, tz, spent, delta))
        for budget, start, end in periods:
            forecast = await self._check_forecast(repository, budget, start, end, tz, delta.watermark_ms)
            created.extend([forecast] if forecast is not None else [])
        return created

    async def _spends(
        self, repository: Repository, periods: list[tuple[Budget, date, date]], tz: str
    ) -> list[int | None]:
        """Each period's spend, all read in one MULTI; None for a period the read model refuses
        to answer exactly (expired buckets, a scan over its bound), which is logged and left."""
        plans = [plan_costs(start, end, filters_of(budget), Grouping(), tz) for budget, start, end in periods]
        try:
            return [grand_total(sums)[COST] for sums in await read_sums(repository, plans)]
        except ApiError:
            pass  # one of them: read them one by one, to judge the others
        out: list[int | None] = []
        for (budget, start, _end), plan in zip(periods, plans, strict=True):
            try:
                (sums,) = await read_sums(repository, [plan])
                out.append(grand_total(sums)[COST])
            except ApiError as exc:
                log.warning(
                    "budget period not judged: its spend cannot be read exactly",
                    extra={
                        "project": repository.project,
                        "budget": budget.budget_id,
                        "period": str(start),
                        "why": str(exc),
                    },
                )
                out.append(None)
        return out

    async def _raise_thresholds(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, spent: int, delta: Delta
    ) -> list[AnomalyRecord]:
        project = repository.project
        reached = crossed(budget.thresholds, spent, budget.amount_nano)
        if not reached:
            return []
        ids = {t: alert_id(project, budget, start, t) for t in reached}
        async with self.redis.pipeline(transaction=False) as pipe:
            for record_id in ids.values():
                pipe.exists(self.layout.anomaly(project, record_id))
            present = dict(zip(ids, await pipe.execute(), strict=True))
        new = [t for t in reached if not present[t]]
        if len(reached) == len(budget.thresholds) and not new:
            self._done.add((project, budget.budget_id, budget.updated_at, start))
        if not new:
            return []
        crossings = await self._crossings(repository, budget, start, end, tz, new)
        created = []
        for threshold in new:
            # Without its hour (the hourly cells have expired), the crossing is dated by the batch.
            detected_ms, spent_then = crossings.get(threshold, (delta.watermark_ms, spent))
            kind = AnomalyType.BUDGET_EXCEEDED if threshold >= 100 else AnomalyType.BUDGET_THRESHOLD
            description = (
                f"{budget.name} reached {threshold}% of ${budget.amount_nano / 1e9:,.2f} "
                f"(${spent_then / 1e9:,.2f} spent, {start} to {end})"
            )
            record = _alert(project, budget, ids[threshold], kind, detected_ms, _severity(threshold), description)
            record.actual_value = nano_to_usd(spent_then)
            record.threshold = threshold
            if await anomaly_store.create(self.redis, self.layout, record):
                log.info(
                    "budget threshold reached",
                    extra={"project": project, "budget": budget.budget_id, "threshold": threshold},
                )
                created.append(record)
        return created

    async def _crossings(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, thresholds: Iterable[int]
    ) -> dict[int, tuple[int, int]]:
        """Each threshold's crossing: the start (epoch ms) of the local hour in which the
        period's cumulative spend first reached it, and that cumulative spend. Empty when the
        period's hours cannot be read exactly (they are kept for less long than its days).

        The period's daily spend says on which day each threshold was crossed; only those
        days are read by the hour (a month by the hour is 744 reads, and a crossing is
        looked for whenever one is new)."""
        filters = filters_of(budget)
        pending = sorted(thresholds)
        days_plan = plan_timeseries(start, end, filters, Interval.DAY, tz)
        try:
            (day_sums,) = await read_sums(repository, [days_plan])
        except ApiError:
            return {}
        daily = by_period(day_sums)
        zero = Cell.zero()
        crossing_days: dict[date, tuple[int, list[int]]] = {}  # day -> (spend before it, its thresholds)
        cumulative = 0
        for label, day in zip(days_plan.periods, days_between(start, end), strict=True):
            before = cumulative
            cumulative += daily.get(label, zero)[COST]
            reached = []
            while pending and cumulative * 100 >= pending[0] * budget.amount_nano:
                reached.append(pending.pop(0))
            if reached:
                crossing_days[day] = (before, reached)
            if not pending:
                break
        out: dict[int, tuple[int, int]] = {}
        for day, (before, reached) in crossing_days.items():
            plan = plan_timeseries(day, day, filters, Interval.HOUR, tz)
            try:
                (sums,) = await read_sums(repository, [plan])
            except ApiError:
                return {}
            hourly = by_period(sums)
            cumulative = before
            for label, hour in zip(plan.periods, local_periods(day, day, Interval.HOUR, tz), strict=True):
                cumulative += hourly.get(label, zero)[COST]
                while reached and cumulative * 100 >= reached[0] * budget.amount_nano:
                    out[reached.pop(0)] = (hour.start_ms, cumulative)
                if not reached:
                    break
        return out

    async def _check_forecast(
        self, repository: Repository, budget: Budget, start: date, end: date, tz: str, watermark_ms: int
    ) -> AnomalyRecord | None:
        """The period's forecast alert, the first time its forecast passes 100% of the amount
        once FORECAST_MIN_DAYS of the period are complete (so never for a day's budget). Only
        the period holding today has a forecast to watch; it is read at most every
        FORECAST_EVERY_S."""
        project = repository.project
        now_s = self.clock()
        today = zones.local_date(zones.zone(tz), int(now_s * 1000))
        if not start <= today <= end or (today - start).days < FORECAST_MIN_DAYS:
            return None
        key = (project, budget.budget_id, start)
        if now_s - self._forecast_read.get(key, float("-inf")) < FORECAST_EVERY_S:
            return None
        record_id = alert_id(project, budget, start, FORECAST)
        if await self.redis.exists(self.layout.anomaly(project, record_id)):
            return None
        # Forget the periods that have ended: the map holds one entry per live period.
        self._forecast_read = {k: v for k, v in self._forecast_read.items() if k[2] >= start or k[:2] != key[:2]}
        self._forecast_read[key] = now_s
        try:
            measured = await BudgetService(repository).measure(budget, today, tz, int(now_s * 1000))
        except ApiError:
            return None
        if measured.forecast_nano <= budget.amount_nano:
            return None
        forecast_usd = nano_to_usd(measured.forecast_nano)
        description = (
            f"{budget.name} is forecast to spend ${forecast_usd:,.2f} of ${budget.amount_nano / 1e9:,.2f} "
            f"by {end} (${measured.spent_nano / 1e9:,.2f} spent so far)"
        )
        record = _alert(
            project, budget, record_id, AnomalyType.BUDGET_FORECAST, watermark_ms, Severity.MEDIUM, description
        )
        record.actual_value = forecast_usd
        record.threshold = 100
        return record if await anomaly_store.create(self.redis, self.layout, record) else None


def _alert(
    project: str,
    budget: Budget,
    record_id: str,
    kind: AnomalyType,
    detected_ms: int,
    severity: Severity,
    description: str,
) -> AnomalyRecord:
    """A budget alert's record; its caller sets actual_value and threshold."""
    return AnomalyRecord(
        id=record_id,
        project=project,
        detected_at=record_time(detected_ms),
        detected_ms=detected_ms,
        entity_type=BUDGET_ENTITY_TYPE,
        entity_id=budget.budget_id,
        type=kind.value,
        severity=severity.value,
        description=description,
        expected_value=nano_to_usd(budget.amount_nano),
        actual_value=0.0,
        status=AnomalyStatus.ACTIVE.value,
        updated_ms=detected_ms,
        budget_id=budget.budget_id,
        threshold=0,
    )


def decode(message: ConsumerRecord) -> Delta | None:
    """A message of the feed, or None (logged with where it was) for one that is not a delta."""
    try:
        return decode_checked(message.value)
    except BadDelta as exc:
        log.error("undecodable delta at %s[%s]@%s skipped: %s", message.topic, message.partition, message.offset, exc)
        return None


def merge_by_project(deltas: Iterable[Delta]) -> list[Delta]:
    """One delta per project: the union of the cells and the newest watermark. Unlike the
    detector (core.deltas.merge), hours need not stay apart here: a budget reads whole
    periods, and the watermark only dates an alert whose hour cannot be read."""
    merged: dict[str, Delta] = {}
    for delta in deltas:
        previous = merged.get(delta.project)
        if previous is not None:
            cells = tuple(sorted(set(previous.cells) | set(delta.cells)))
            delta = Delta(delta.project, max(previous.watermark_ms, delta.watermark_ms), cells)
        merged[delta.project] = delta
    return list(merged.values())


async def check_until_done(watcher: BudgetWatcher, delta: Delta, stop: asyncio.Event) -> None:
    """Check a delta, waiting out Redis being unreachable (with backoff) rather than dying:
    the alerts it calls for must be written before its offset is committed."""
    backoff_s = RETRY_FIRST_S
    while True:
        try:
            await watcher.check(delta)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if stop.is_set():
                raise
            log.warning("redis unavailable, retrying a delta", extra={"project": delta.project, "error": repr(exc)})
            await asyncio.sleep(backoff_s)
            backoff_s = min(RETRY_MAX_S, backoff_s * 2)
        except RedisError as exc:  # a command Redis refused (a key of the wrong type): skip, and say so
            log.error("delta of %s not checked: %r", delta.project, exc)
            return


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
            decoded = [decode(message) for messages in batches.values() for message in messages]
            for delta in merge_by_project(d for d in decoded if d is not None):
                await check_until_done(watcher, delta, stop)
            if batches:
                try:
                    await consumer.commit()  # only once every alert the deltas call for is written
                except KafkaError as exc:
                    # A rebalance took the partitions: their next owner reads these deltas
                    # again, and raises nothing twice.
                    log.warning("offsets not committed: %r", exc)
    finally:
        await consumer.stop()
        await redis.aclose()


def main(settings: Settings) -> None:
    asyncio.run(run(settings))


__all__ = ["BudgetWatcher", "alert_id", "check_until_done", "decode", "main", "merge_by_project", "run"]

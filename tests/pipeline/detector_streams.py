"""Synthetic cost streams with injected spikes, and the scoring of a detector run against them.

Shared by tests/pipeline/test_detector_quality.py and bench/detection_quality.py.

Traffic is generated per quarter hour and entity as rollup groups (what the
aggregator's BatchRollup holds after folding events): a Poisson number of
events with a mild daily rhythm (+-15%), a noisy cost per event and a noisy
latency. Two populations of very different volumes:

- dense entities: 30 to 3,000 events an hour, $0.0005 to $0.20 an event;
- sparse entities: 0.2 to 8 events an hour, some only in office hours.

Spikes multiply an entity's event rate (so its cost and volume) by 3, 4, 6
or 10 for 2 to 8 hours, starting on a quarter-hour boundary after the first
8 days (the baseline window is full). A spike is *eligible* for recall when
it is at least 3x and its extra cost per hour is at least the minimum impact.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from infraprism.core.anomalies import AnomalyRecord
from infraprism.core.cell import Cell
from infraprism.core.deltas import Delta, deltas_of_groups
from infraprism.core.rollup import BatchRollup

MS_PER_HOUR = 3_600_000
QUARTER_MS = MS_PER_HOUR // 4
NANO = 1_000_000_000
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class EntitySpec:
    entity_id: str
    rate_per_hour: float
    cost_per_event_usd: float
    latency_ms: float
    office_hours_only: bool = False

    @property
    def dense(self) -> bool:
        return self.rate_per_hour >= 30


@dataclass(frozen=True, slots=True)
class Spike:
    entity_id: str
    start_ms: int
    end_ms: int
    factor: float
    extra_cost_per_hour_usd: float
    dense: bool

    def eligible(self, min_impact_usd: float) -> bool:
        return self.factor >= 3 and self.extra_cost_per_hour_usd >= min_impact_usd


@dataclass
class Scenario:
    project: str
    days: int
    entities: list[EntitySpec]
    spikes: list[Spike]
    seed: int
    entity_type: str = "customer"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed + 1)

    @property
    def end_ms(self) -> int:
        return START_MS + self.days * 24 * MS_PER_HOUR

    def rhythm(self, ts_ms: int) -> float:
        hour_of_day = (ts_ms // MS_PER_HOUR) % 24
        return 1.0 + 0.15 * math.sin(2 * math.pi * (hour_of_day - 6) / 24)

    def factor(self, entity: EntitySpec, ts_ms: int) -> float:
        for spike in self.spikes:
            if spike.entity_id == entity.entity_id and spike.start_ms <= ts_ms < spike.end_ms:
                return spike.factor
        return 1.0

    def quarter(self, ts_ms: int) -> tuple[BatchRollup, Delta | None]:
        """The rollup of the quarter hour starting at ts_ms, and the delta the aggregator would send."""
        rng = self._rng
        rollup = BatchRollup()
        hour_index = ts_ms // MS_PER_HOUR
        hour_of_day = hour_index % 24
        for entity in self.entities:
            if entity.office_hours_only and not 8 <= hour_of_day < 18:
                continue
            lam = entity.rate_per_hour / 4 * self.rhythm(ts_ms) * self.factor(entity, ts_ms)
            events = _poisson(rng, lam)
            if events == 0:
                continue
            cost_usd = entity.cost_per_event_usd * events * max(0.0, rng.gauss(1.0, 0.5 / math.sqrt(events)))
            latency_us = entity.latency_ms * 1000 * events * max(0.0, rng.gauss(1.0, 0.3 / math.sqrt(events)))
            key = (self.project, self.entity_type, entity.entity_id, "gpt-4o", "openai", (), hour_index)
            rollup.groups[key] = Cell(
                (events, int(cost_usd * NANO), events * 300, events * 200, int(latency_us), events)
            )
            rollup.events += events
        if not rollup.groups:
            return rollup, None
        (delta,) = deltas_of_groups(rollup.groups, {self.project: ts_ms + QUARTER_MS - 1})
        return rollup, delta


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def make_scenario(project: str, *, dense: int, sparse: int, days: int, seed: int) -> Scenario:
    """Entities and their spikes: each dense entity gets 1-2 spikes, every third sparse one gets 1."""
    rng = random.Random(seed)
    entities: list[EntitySpec] = []
    for i in range(dense):
        entities.append(
            EntitySpec(
                f"dense-{i:03d}",
                rate_per_hour=math.exp(rng.uniform(math.log(30), math.log(3000))),
                cost_per_event_usd=math.exp(rng.uniform(math.log(0.0005), math.log(0.2))),
                latency_ms=rng.uniform(300, 3000),
            )
        )
    for i in range(sparse):
        entities.append(
            EntitySpec(
                f"sparse-{i:03d}",
                rate_per_hour=math.exp(rng.uniform(math.log(0.2), math.log(8))),
                cost_per_event_usd=math.exp(rng.uniform(math.log(0.01), math.log(2.0))),
                latency_ms=rng.uniform(300, 3000),
                office_hours_only=i % 2 == 0,
            )
        )
    spikes: list[Spike] = []
    first_quarter = 8 * 96
    last_quarter = days * 96 - 9 * 4
    for entity in entities:
        count = rng.choice((1, 2)) if entity.dense else int(entity.entity_id.endswith(("0", "3", "6")))
        starts: list[int] = []
        for _ in range(count):
            q = rng.randrange(first_quarter, last_quarter)
            if any(abs(q - s) < 9 * 96 for s in starts):
                continue  # keep spikes of one entity more than a baseline window apart
            starts.append(q)
            start_ms = START_MS + q * QUARTER_MS
            duration_h = rng.randint(2, 8)
            factor = rng.choice((3.0, 4.0, 6.0, 10.0))
            rhythm = 1.0 + 0.15 * math.sin(2 * math.pi * ((start_ms // MS_PER_HOUR) % 24 - 6) / 24)
            extra = (factor - 1) * entity.rate_per_hour * rhythm * entity.cost_per_event_usd
            spikes.append(
                Spike(entity.entity_id, start_ms, start_ms + duration_h * MS_PER_HOUR, factor, extra, entity.dense)
            )
    return Scenario(project, days, entities, spikes, seed)


@dataclass
class Score:
    eligible: int
    detected: int
    within_one_bucket: int
    delays_min: list[float]
    false_anomalies: int
    entity_days: int
    sparse_eligible: int
    sparse_detected: int
    anomalies: int
    false_examples: list[str]

    @property
    def recall(self) -> float:
        return self.detected / self.eligible if self.eligible else 1.0

    @property
    def false_per_1000_entity_days(self) -> float:
        return 1000 * self.false_anomalies / self.entity_days

    def lines(self) -> list[str]:
        delays = sorted(self.delays_min)
        median = delays[len(delays) // 2] if delays else float("nan")
        worst = delays[-1] if delays else float("nan")
        return [
            f"anomalies recorded:                {self.anomalies}",
            f"eligible spikes (dense, >=3x, impact >= min): {self.eligible}",
            f"recall:                            {self.recall:.1%} ({self.detected}/{self.eligible})",
            f"detected within one hour bucket:   {self.within_one_bucket}/{self.detected}",
            f"detection delay (event time):      median {median:.0f} min, max {worst:.0f} min",
            f"false anomalies:                   {self.false_anomalies} in {self.entity_days} entity-days"
            f" = {self.false_per_1000_entity_days:.2f} per 1,000 entity-days",
            f"sparse-entity spikes (< 10 ev/h, not in recall): {self.sparse_detected}/{self.sparse_eligible}",
        ]


def score(scenario: Scenario, records: list[AnomalyRecord], *, min_impact_usd: float, min_history_days: int) -> Score:
    """Match anomaly records to injected spikes (by entity and time)."""
    slack_ms = MS_PER_HOUR  # a detection in the last delta of a spike's quarter is still the spike
    by_entity: dict[str, list[Spike]] = {}
    for spike in scenario.spikes:
        by_entity.setdefault(spike.entity_id, []).append(spike)

    def matches(record: AnomalyRecord, spike: Spike) -> bool:
        return spike.start_ms <= record.detected_ms <= spike.end_ms + slack_ms

    false: list[AnomalyRecord] = []
    for record in records:
        if record.entity_type == "project":
            candidates = scenario.spikes
        else:
            candidates = by_entity.get(record.entity_id, [])
        if not any(matches(record, spike) for spike in candidates):
            false.append(record)

    eligible = detected = within = sparse_eligible = sparse_detected = 0
    delays: list[float] = []
    for spike in scenario.spikes:
        if not spike.eligible(min_impact_usd):
            continue
        hits = [r for r in records if r.entity_id == spike.entity_id and r.type == "cost_spike" and matches(r, spike)]
        first = min((r.detected_ms for r in hits), default=None)
        if not spike.dense:
            sparse_eligible += 1
            sparse_detected += first is not None
            continue
        eligible += 1
        if first is None:
            continue
        detected += 1
        delays.append((first - spike.start_ms) / 60_000)
        within += first // MS_PER_HOUR - spike.start_ms // MS_PER_HOUR <= 1
    judged_days = scenario.days - min_history_days
    entity_days = (len(scenario.entities) + 1) * judged_days  # +1: the project as a whole
    return Score(
        eligible,
        detected,
        within,
        delays,
        len(false),
        entity_days,
        sparse_eligible,
        sparse_detected,
        len(records),
        [f"{r.entity_type}/{r.entity_id} {r.type} {r.detected_at} {r.description}" for r in false[:10]],
    )


@dataclass
class DriveStats:
    deltas: int = 0
    cells: int = 0
    detector_seconds: float = 0.0  # time in Detector.process only (not in writing the rollups)


async def drive(scenario: Scenario, store, detector) -> DriveStats:  # noqa: ANN001 - RollupStore, Detector
    """Apply each quarter hour to Redis, then hand its delta to the detector."""
    stats = DriveStats()
    for quarter in range(scenario.days * 96):
        rollup, delta = scenario.quarter(START_MS + quarter * QUARTER_MS)
        if delta is None:
            continue
        await store.apply(rollup, [])
        started = time.perf_counter()
        await detector.process(delta)
        stats.detector_seconds += time.perf_counter() - started
        stats.deltas += 1
        stats.cells += len(delta.cells)
    return stats

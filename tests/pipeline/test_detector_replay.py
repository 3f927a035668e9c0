"""A bulk replay through the real aggregator: the detector must judge history, not its batching.

Weeks of demo traffic (infraprism.dev.demo, entity-keyed like `infraprism dev --demo`)
are produced to the events topic at once; the real aggregator applies them in
large batches (a batch can hold weeks of one partition) and publishes its
deltas; the detector then works through the deltas topic as its faust agent
does (chunks of MERGE_MAX_DELTAS, merged per project and event hour). Only the
two planted spikes may be reported: globex's cost over the last day and a
half, and user-017's volume ten days before the end.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis

from infraprism.core.deltas import Delta, merge
from infraprism.core.episodes import PROJECT_ENTITY_TYPE
from infraprism.core.keys import KeyLayout
from infraprism.dev.demo import SPIKE_CUSTOMER, SPIKE_USER, generate
from infraprism.pipeline.detection import Detector, thresholds_of
from infraprism.pipeline.detector import MERGE_MAX_DELTAS
from infraprism.pipeline.store import RollupStore
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.pipeline.detector_streams import MS_PER_HOUR, QUARTER_MS, START_MS, EntitySpec, Scenario, Spike
from tests.pipeline.helpers import end_offsets, produce, read_all, running_aggregator, wait_caught_up
from tests.pipeline.test_detector_lifecycle import HOUR0, hour_batch
from tests.pipeline.test_detector_lifecycle import PROJECT as LIFECYCLE_PROJECT

END = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
PROJECT = "default"


def demo_events() -> list[dict]:
    """The demo dataset as dicts (so `produce` keys each by its entity_id), malformed lines left out."""
    events = []
    for line in generate(days=35, seed=7, end=END):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("entity_id"), str):
            events.append(event)
    return events


async def test_bulk_replay_reports_only_the_planted_spikes(redis_client: aioredis.Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"batch_max_events": 20_000})
    await produce(settings, demo_events())
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings, timeout_s=300)
    delta_count = sum((await end_offsets(settings, settings.deltas_topic)).values())
    raw = await read_all(settings, settings.deltas_topic, expect=delta_count, timeout_s=120)
    deltas = [Delta.decode(value) for value in raw]
    # The deltas are produced as a burst, so a detector started with the replay lags: each
    # chunk it takes is merged per project and event hour, as the faust agent does.
    assert max(len(delta.cells) for delta in deltas) > 1000, "the replay is not in bulk"

    layout = KeyLayout(settings.key_prefix)
    detector = Detector(
        redis_client, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000
    )
    for start in range(0, len(deltas), MERGE_MAX_DELTAS):
        for delta in merge(deltas[start : start + MERGE_MAX_DELTAS]):
            await detector.process(delta)

    records = await anomaly_store.list_range(redis_client, layout, PROJECT, 0, 2**62)
    found = {(r.entity_type, r.entity_id, r.type) for r in records}
    unexpected = sorted(
        (r.entity_type, r.entity_id, r.type, r.detected_at, r.description)
        for r in records
        if r.entity_id not in (SPIKE_CUSTOMER, SPIKE_USER)
        # the customer's spike is large enough to move the project's total cost
        and not (r.entity_type == PROJECT_ENTITY_TYPE and r.type == "cost_spike")
    )
    assert unexpected == []
    assert ("customer", SPIKE_CUSTOMER, "cost_spike") in found
    user_spikes = [r for r in records if r.entity_id == SPIKE_USER and r.type == "volume_spike"]
    assert [r.detected_at[:10] for r in user_spikes] == ["2026-11-14"]


DAYS = 35
SPIKE_DAY = DAYS - 11  # ten full days before the last one
LAST_HOUR = START_MS // MS_PER_HOUR + (DAYS - 1) * 24 + 22  # the newest hour: 22:00 of the last day


def steady_scenario() -> Scenario:
    """Steady customers (judged on the day so far or the hour), one planted 10x volume spike."""
    entities = [EntitySpec(f"steady-{i:02d}", 6.0, 0.05, 800.0) for i in range(12)]
    entities += [EntitySpec(f"busy-{i:02d}", 120.0, 0.002, 900.0) for i in range(4)]
    entities.append(EntitySpec("spiky", 6.0, 0.05, 800.0))
    spikes = []
    for day in (SPIKE_DAY, SPIKE_DAY + 8):
        start_ms = START_MS + (day * 24 + 10) * MS_PER_HOUR
        spikes.append(Spike("spiky", start_ms, start_ms + 8 * MS_PER_HOUR, 10.0, 9 * 6.0 * 0.05, False))
    return Scenario("bulk", DAYS, entities, spikes, seed=11)


async def test_weeks_in_one_delta_are_judged_against_their_own_weeks(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    """Deterministic form of the replay above: one delta per "partition" naming five weeks of cells.

    The rollups hold the whole history (as after a bulk batch), and each
    partition's delta names every hour of its entities from the first day to
    22:00 of the last one. The hours of the first weeks must be judged against
    the days before them, not against what is left once the delta's newest hour
    has expired them (the spike ten days ago then vanished, and a day whose
    baseline had only a two-hour remnant of a day looked like a spike). The
    recovery window is event time within the delta too: two spikes a week
    apart are two episodes.
    """
    scenario = steady_scenario()
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=3650)
    cells: set[tuple[str, str, str]] = set()
    for quarter in range((LAST_HOUR + 1 - START_MS // MS_PER_HOUR) * 4):
        rollup, delta = scenario.quarter(START_MS + quarter * QUARTER_MS)
        if delta is not None:
            await store.apply(rollup, [])
            cells.update(delta.cells)
    watermark_ms = (LAST_HOUR + 1) * MS_PER_HOUR - 1
    partitions = (
        tuple(sorted(c for c in cells if hash_partition(c[1]) == 0)),
        tuple(sorted(c for c in cells if hash_partition(c[1]) == 1)),
    )
    assert all(partitions)
    detector = Detector(
        redis_client, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000
    )
    for part in partitions:
        await detector.process(Delta("bulk", watermark_ms, part))

    records = await anomaly_store.list_range(redis_client, layout, "bulk", 0, 2**62)
    assert sorted((r.entity_id, r.detected_at) for r in records if r.entity_id != "spiky") == []
    # Two spikes eight days apart in one delta are two episodes, the first resolved before the second.
    spikes = sorted(
        (r.detected_at[:10], r.status) for r in records if r.entity_id == "spiky" and r.type == "volume_spike"
    )
    days = [datetime.fromtimestamp(spike.start_ms / 1000, UTC).date().isoformat() for spike in scenario.spikes]
    assert spikes == [(days[0], "resolved"), (days[1], "resolved")]


def hash_partition(entity_id: str) -> int:
    """Two stable "partitions" of the entities (the split only has to be fixed, not Kafka's)."""
    return sum(entity_id.encode()) % 2


async def test_a_lagging_partitions_hours_are_judged_against_their_own_week(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    """The project total while a replay's partitions are applied out of step.

    The leading partition's batch ("lead", 20 days in one delta) moves the
    total's history to the last day; the lagging partition ("lag") then comes
    hour by hour from the first day, and spikes 8x on day 10. The total's
    hours of day 10 had expired from its history: they and their week must be
    read back from the rollups, or the project-wide spike is judged against
    nothing and missed.
    """
    normal = {"lead": (200, 20.0), "lag": (200, 20.0)}
    spike_hour = HOUR0 + 10 * 24 + 12
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=3650)
    lead_cells: list[tuple[str, str, str]] = []
    lag_deltas: list[Delta] = []
    for hour in range(HOUR0, HOUR0 + 20 * 24):
        cells = {**normal, "lag": (1600, 160.0)} if hour == spike_hour else normal
        rollup, delta = hour_batch(hour, cells)
        await store.apply(rollup, [])
        lead_cells += [cell for cell in delta.cells if cell[1] == "lead"]
        lag_deltas.append(Delta(delta.project, delta.watermark_ms, tuple(c for c in delta.cells if c[1] == "lag")))
    detector = Detector(
        redis_client, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000
    )
    await detector.process(Delta(LIFECYCLE_PROJECT, lag_deltas[-1].watermark_ms, tuple(lead_cells)))
    for delta in lag_deltas:
        await detector.process(delta)

    records = await anomaly_store.list_range(redis_client, layout, LIFECYCLE_PROJECT, 0, 2**62)
    found = sorted((r.entity_type, r.entity_id, r.type, r.detected_ms // MS_PER_HOUR) for r in records)
    assert found == [
        ("customer", "lag", "cost_spike", spike_hour),
        ("customer", "lag", "volume_spike", spike_hour),
        (PROJECT_ENTITY_TYPE, LIFECYCLE_PROJECT, "cost_spike", spike_hour),
    ]

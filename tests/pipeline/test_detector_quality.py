"""Detection quality on a synthetic month: recall, false alarms, detection delay.

90 entities of very different volumes (30 to 3,000 events an hour for the dense
ones, 0.2 to 8 for the sparse ones, some active in office hours only) over 30
days, with spikes of 3x to 10x injected for 2 to 8 hours (see
tests/pipeline/detector_streams.py). Every quarter hour is written to the real
Redis as rollups and its delta handed to the detector's processing function
(the Kafka/faust path is covered by test_detector_faust.py). The figures in
docs/anomalies.md come from bench/detection_quality.py, which runs the same code.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.pipeline.detection import Detector, thresholds_of
from infraprism.pipeline.store import RollupStore
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.pipeline.detector_streams import drive, make_scenario, score


async def test_recall_false_alarms_and_delay(redis_client: aioredis.Redis, settings: Settings) -> None:
    layout = KeyLayout(settings.key_prefix)
    scenario = make_scenario("synthetic", dense=60, sparse=30, days=30, seed=3)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=3650)
    detector = Detector(
        redis_client, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000
    )
    await drive(scenario, store, detector)

    records = await anomaly_store.list_range(redis_client, layout, scenario.project, 0, 2**62)
    result = score(
        scenario,
        records,
        min_impact_usd=settings.detector_min_impact_usd,
        min_history_days=settings.detector_min_history_days,
    )
    report = "\n".join(result.lines() + result.false_examples)
    assert result.eligible >= 30, report
    assert result.recall >= 0.95, report
    assert result.false_per_1000_entity_days <= 1.0, report
    assert result.within_one_bucket == result.detected, report
    # spikes below the minimum impact raise no cost anomaly
    small = [s for s in scenario.spikes if s.dense and s.extra_cost_per_hour_usd < settings.detector_min_impact_usd / 2]
    assert small, "the scenario should have spikes below the minimum impact"
    for spike in small:
        assert not [
            r
            for r in records
            if r.entity_id == spike.entity_id
            and r.type == "cost_spike"
            and spike.start_ms <= r.detected_ms <= spike.end_ms
        ], report

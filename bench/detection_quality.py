"""Detection quality of the anomaly detector on synthetic streams with injected spikes.

    .venv/bin/python bench/detection_quality.py                 # 100 dense + 50 sparse entities, 35 days, seeds 1-3
    .venv/bin/python bench/detection_quality.py --seeds 7 --days 60

For each seed it starts a throwaway redis-server, writes every quarter hour of
traffic as rollups (what the aggregator would write), hands the matching
delta to the detector's processing function (the code the faust agent runs),
and scores the anomaly records against the injected spikes
(tests/pipeline/detector_streams.py): recall on spikes >= 3x whose extra cost
per hour is at least the minimum impact, false anomalies per 1,000
entity-days (the project counts as one more entity), and the detection delay
in event time from the spike's start. Thresholds are the Settings defaults
unless INFRAPRISM_DETECTOR_* variables say otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infraprism.core.keys import KeyLayout  # noqa: E402
from infraprism.dev.local_services import start_redis  # noqa: E402
from infraprism.pipeline.detection import Detector, thresholds_of  # noqa: E402
from infraprism.pipeline.store import RollupStore  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import anomaly_store  # noqa: E402
from tests.pipeline.detector_streams import DriveStats, Score, drive, make_scenario, score  # noqa: E402


async def run_seed(args: argparse.Namespace, seed: int, settings: Settings) -> tuple[Score, float, DriveStats]:
    service = start_redis()
    redis = aioredis.Redis.from_url(service.address)
    try:
        layout = KeyLayout("bench")
        scenario = make_scenario("bench", dense=args.dense, sparse=args.sparse, days=args.days, seed=seed)
        store = RollupStore(redis, layout, topic="t", group="g", dedupe_window_days=3650)
        detector = Detector(
            redis, layout, thresholds_of(settings), recovery_ms=settings.detector_recovery_minutes * 60_000
        )
        started = time.perf_counter()
        driven = await drive(scenario, store, detector)
        elapsed = time.perf_counter() - started
        records = await anomaly_store.list_range(redis, layout, scenario.project, 0, 2**62)
        result = score(
            scenario,
            records,
            min_impact_usd=settings.detector_min_impact_usd,
            min_history_days=settings.detector_min_history_days,
        )
        return result, elapsed, driven
    finally:
        await redis.aclose()
        service.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", type=int, default=100, help="entities with 30-3,000 events an hour")
    parser.add_argument("--sparse", type=int, default=50, help="entities with 0.2-8 events an hour")
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    settings = Settings()
    print(
        f"thresholds: +{settings.detector_min_relative_change:.0%} over the median, z {settings.detector_robust_z},"
        f" impact ${settings.detector_min_impact_usd}, baseline {settings.detector_baseline_days} days,"
        f" min history {settings.detector_min_history_days} days, recovery {settings.detector_recovery_minutes} min"
    )
    totals = {"eligible": 0, "detected": 0, "within": 0, "false": 0, "entity_days": 0}
    delays: list[float] = []
    for seed in args.seeds:
        result, elapsed, driven = await run_seed(args, seed, settings)
        print(f"\nseed {seed}: {args.dense} dense + {args.sparse} sparse entities, {args.days} days")
        print(
            f"  {driven.deltas} deltas ({driven.cells} entity-hour cells) in {elapsed:.1f}s; the detector's share"
            f" {driven.detector_seconds:.1f}s = {driven.cells / driven.detector_seconds:,.0f} cells/s"
        )
        for line in result.lines():
            print("  " + line)
        for example in result.false_examples:
            print("  false: " + example)
        totals["eligible"] += result.eligible
        totals["detected"] += result.detected
        totals["within"] += result.within_one_bucket
        totals["false"] += result.false_anomalies
        totals["entity_days"] += result.entity_days
        delays += result.delays_min
    delays.sort()
    print("\nall seeds:")
    print(f"  recall {totals['detected'] / max(1, totals['eligible']):.1%} ({totals['detected']}/{totals['eligible']})")
    print(f"  detected within one hour bucket of the start: {totals['within']}/{totals['detected']}")
    if delays:
        print(
            f"  delay: median {delays[len(delays) // 2]:.0f} min, p95 {delays[int(0.95 * (len(delays) - 1))]:.0f} min,"
            f" max {delays[-1]:.0f} min"
        )
    print(
        f"  false anomalies: {totals['false']} in {totals['entity_days']} entity-days"
        f" = {1000 * totals['false'] / totals['entity_days']:.2f} per 1,000 entity-days"
    )


if __name__ == "__main__":
    asyncio.run(main())

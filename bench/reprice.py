"""Re-pricing a range against the alternative, a rebuild of everything, on the same topic in one run.

    .venv/bin/python bench/reprice.py [--events 200000] [--seed 7]

Fills a topic with bench/workload.py's production-like mix in backfill order
(45 days, random order, a third of events without `cost`, three entity types,
two projects, every timestamp encoding, 2% producer retries), aggregates it
with the catalog's prices, then sets two overrides in project `default`: own
rates for its most used unpriced model from day 20 on, and a 20% discount on
another over the whole span. Then, on its own Tansu broker and redis-server:

1. `infraprism reprice --project default` over the whole span, timed: records
   read per second, events re-priced, and the rollups it changed;
2. the baseline: `infraprism rebuild` (which prices every event of every
   project again), timed on the same topic.

It checks that both leave exactly the same aggregates (every rollup cell,
leaderboard score and session; the bookkeeping apart) and exits 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402
from ingest import fill_topic  # noqa: E402

from infraprism.core.keys import KeyLayout  # noqa: E402
from infraprism.core.price_book import PriceOverride  # noqa: E402
from infraprism.dev.local_services import start_broker, start_redis  # noqa: E402
from infraprism.pipeline.aggregator import Aggregator  # noqa: E402
from infraprism.pipeline.rebuild import rebuild  # noqa: E402
from infraprism.pipeline.reprice import reprice  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import prices  # noqa: E402

FIRST_DAY = date(2025, 1, 15)  # workload.DEFAULT_START_MS


def aggregates(client: redis.Redis, layout: KeyLayout) -> dict[str, object]:
    """Every rollup hash, leaderboard and session record (not versions, marks or dedupe sets)."""
    state: dict[str, object] = {}
    for pattern in (f"{layout.root}:*:r:*", f"{layout.root}:*:lb:*", f"{layout.root}:*:s:*"):
        for key in client.scan_iter(match=pattern, count=5000):
            kind = client.type(key)
            if kind == b"hash":
                # A re-price that moves every event of a member to another price source leaves
                # that member's cell at zero; a rebuild never writes it. Both mean "none".
                state[key.decode()] = {f: v for f, v in client.hgetall(key).items() if v != b"0 0 0 0 0 0"}
            elif kind == b"zset":
                state[key.decode()] = client.zrange(key, 0, -1, withscores=True)
    return state


def unpriced_models(messages: list[workload.Message]) -> list[str]:
    counts: Counter[str] = Counter()
    for message in messages:
        event = orjson.loads(message.value)
        if "cost" not in event and event.get("project_id", "default") == "default":
            counts[event["model"]] += 1
    return [model for model, _ in counts.most_common()]


async def run(settings: Settings, messages: list[workload.Message]) -> int:
    layout = KeyLayout(settings.key_prefix)
    await fill_topic(settings.kafka_bootstrap, settings.events_topic, messages)
    await Aggregator(settings, stop_at_end=True).run(asyncio.Event())
    async_client = prices_client(settings)
    models = unpriced_models(messages)
    day_20_ms = workload.DEFAULT_START_MS + 20 * workload.DAY_MS
    own = PriceOverride(
        models[0],
        None,
        (FIRST_DAY + timedelta(days=20)).isoformat(),
        day_20_ms,
        input_per_mtok=Decimal("0.2"),
        output_per_mtok=Decimal("0.8"),
        cache_read_per_mtok=Decimal("0.05"),
    )
    discount = PriceOverride(models[1], None, None, 0, discount_percent=Decimal(20))
    for override in (own, discount):
        await prices.set_override(async_client, layout, "default", override)
    await async_client.aclose()

    last_day = FIRST_DAY + timedelta(days=workload.BACKFILL_DAYS + 1)
    started = time.perf_counter()
    result = await reprice(settings, "default", FIRST_DAY, last_day)
    reprice_s = time.perf_counter() - started
    client = redis.Redis.from_url(settings.redis_dsn())
    after_reprice = aggregates(client, layout)

    started = time.perf_counter()
    await rebuild(settings)
    rebuild_s = time.perf_counter() - started
    after_rebuild = aggregates(client, layout)

    same = after_reprice == after_rebuild
    differing = sorted(
        key for key in set(after_reprice) | set(after_rebuild) if after_reprice.get(key) != after_rebuild.get(key)
    )
    print(
        f"reprice: {result.events_read:,} records read in {reprice_s:.2f} s "
        f"({result.events_read / reprice_s:,.0f} records/s), {result.events_repriced:,} events re-priced "
        f"({result.cost_change_nano / 1e9:+,.2f} USD) in {result.chunks_applied} chunks; "
        f"rebuild: {rebuild_s:.2f} s; reprice is {rebuild_s / reprice_s:.2f}x the rebuild's speed; "
        f"same aggregates: {same}"
    )
    print()
    print("| records | events re-priced | reprice s | records/s | rebuild s (baseline) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {result.events_read:,} | {result.events_repriced:,} | {reprice_s:.2f} | "
        f"{result.events_read / reprice_s:,.0f} | {rebuild_s:.2f} | {rebuild_s / reprice_s:.2f}x |"
    )
    if not same:
        print(f"MISMATCH in {len(differing)} keys, e.g. {differing[:5]}", file=sys.stderr)
        return 1
    return 0


def prices_client(settings: Settings):  # noqa: ANN201
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(settings.redis_dsn())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="distinct events (retries come on top)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    messages = workload.backfill(workload.calls(args.events, seed=args.seed))
    broker, store = start_broker(), start_redis()
    try:
        settings = Settings(
            kafka_bootstrap=broker.address,
            redis_url=store.address,
            events_topic="reprice-bench",
            key_prefix="reprice",
            aggregator_group="reprice-bench",
        )
        return asyncio.run(run(settings, messages))
    finally:
        broker.stop()
        store.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Budget alert latency at a steady event rate: from the crossing event being applied to its alert.

    .venv/bin/python bench/budget_alerts.py [--rate 5000] [--seconds 20] [--budgets 10] [--scope customer]

What it does:
1. starts its own Tansu broker and redis-server on free ports, and `infraprism aggregator`
   and `infraprism budget-watcher` as processes (the CLI, as deployed);
2. sets `--budgets` monthly budgets, each with twenty thresholds (5% to 100%) of an amount
   its scope reaches about two thirds into the run. `--scope customer`: one per customer;
   `--scope model` / `--scope tag`: one per model / per `feature` tag value, scopes that
   name no entity, so every change of any customer may move them (the watcher's worst case);
3. produces `--rate` events a second, timestamped now, over 200 customers of which the
   budgeted ones carry 40% of the traffic, for `--seconds`;
4. polls Redis every 10 ms: each budget's spend, read with the API's read model (when the
   aggregator has applied the event that crossed a threshold: the baseline), and the alerts
   (when the watcher raised it).

Reports p50/p99/max of applied -> alert (the watcher's own latency) and of produced -> applied
(the aggregator's, measured in the same run), over every threshold crossed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infraprism.api.budgets import filters_of  # noqa: E402
from infraprism.api.planner import Grouping, plan_costs  # noqa: E402
from infraprism.api.repository import Repository, load_scripts  # noqa: E402
from infraprism.api.sums import grand_total, read_sums  # noqa: E402
from infraprism.core.budgets import Budget, BudgetPeriod, BudgetScope, period_of  # noqa: E402
from infraprism.core.cell import COST  # noqa: E402
from infraprism.core.keys import KeyLayout  # noqa: E402
from infraprism.dev.local_services import start_broker, start_redis  # noqa: E402
from infraprism.pipeline.topics import ensure_topics  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import budgets  # noqa: E402
from infraprism.watchers.budgets import alert_id  # noqa: E402

PROJECT = "bench"
CUSTOMERS = 200
THRESHOLDS = tuple(range(5, 101, 5))
EVENT_USD = 0.01


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_worker(command: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{command}.log", "ab")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "infraprism.cli", command], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )


async def run(args: argparse.Namespace) -> None:
    broker, redis_service = start_broker(), start_redis()
    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=broker.address,
        redis_url=redis_service.address,
        key_prefix=f"bench{unique}",
        events_topic=f"events-{unique}",
        dlq_topic=f"events-{unique}.dlq",
        deltas_topic=f"deltas-{unique}",
        aggregator_group=f"agg-{unique}",
        budget_watcher_group=f"bud-{unique}",
    )
    env = {
        **os.environ,
        **{f"INFRAPRISM_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None},
    }
    env["INFRAPRISM_REDIS_URL"] = settings.redis_dsn()
    log_dir = Path(tempfile.mkdtemp(prefix="infraprism-budget-bench-"))
    workers: list[subprocess.Popen[bytes]] = []
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True, protocol=2)
    try:
        await ensure_topics(broker.address, [settings.events_topic, settings.dlq_topic, settings.deltas_topic], 4)
        await load_scripts(redis)
        layout = KeyLayout(settings.key_prefix)
        total_events = args.rate * args.seconds
        # The budgeted customers share 40% of the traffic; each reaches its amount two thirds in.
        per_budget_usd = total_events * 0.4 / args.budgets * EVENT_USD * 2 / 3
        plan = []
        for n in range(args.budgets):
            scope = {
                "customer": BudgetScope(entity_type="customer", entity_id=f"c{n}"),
                "model": BudgetScope(model=f"model-{n}"),
                "tag": BudgetScope(tags=(("feature", f"f{n}"),)),
            }[args.scope]
            plan.append(
                Budget(f"b{n}", f"customer {n}", round(per_budget_usd * 1e9), BudgetPeriod.MONTH, scope, THRESHOLDS)
            )
        for budget in plan:
            await budgets.put(redis, layout, PROJECT, budget)
        workers = [start_worker(name, env, log_dir) for name in ("aggregator", "budget-watcher")]
        await asyncio.sleep(5)  # both joined their groups
        today = datetime.now(UTC).date()
        start_day, end_day = period_of(today, BudgetPeriod.MONTH)
        repository = Repository(redis, layout, PROJECT)
        plans = [plan_costs(start_day, end_day, filters_of(b), Grouping(), "UTC") for b in plan]
        ids = {(b.budget_id, t): alert_id(PROJECT, b, start_day, t) for b in plan for t in THRESHOLDS}
        applied_at: dict[tuple[str, int], float] = {}
        alerted_at: dict[tuple[str, int], float] = {}
        produced_at: dict[tuple[str, int], float] = {}
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                now = time.perf_counter()
                sums = await read_sums(repository, plans)
                for budget, of_plan in zip(plan, sums, strict=True):
                    spent = grand_total(of_plan)[COST]
                    for t in THRESHOLDS:
                        if spent * 100 >= t * budget.amount_nano:
                            applied_at.setdefault((budget.budget_id, t), now)
                async with redis.pipeline(transaction=False) as pipe:
                    for key in ids.values():
                        pipe.exists(layout.anomaly(PROJECT, key))
                    present = await pipe.execute()
                for key, found in zip(ids, present, strict=True):
                    if found:
                        alerted_at.setdefault(key, now)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        producer = AIOKafkaProducer(bootstrap_servers=broker.address, linger_ms=5)
        await producer.start()
        rng = random.Random(7)
        spent_of: dict[str, int] = {b.budget_id: 0 for b in plan}
        amount_of = {b.budget_id: b.amount_nano for b in plan}
        started = time.perf_counter()
        sent = 0
        try:
            while sent < total_events:
                due = int((time.perf_counter() - started) * args.rate)
                while sent < min(due, total_events):
                    budgeted = rng.random() < 0.4
                    slot = rng.randrange(args.budgets) if budgeted else None
                    if args.scope == "customer":
                        customer = slot if slot is not None else rng.randrange(args.budgets, CUSTOMERS)
                    else:  # any customer: the scope is the model or the tag
                        customer = rng.randrange(CUSTOMERS)
                    ts_ms = time.time_ns() // 1_000_000
                    value = {
                        "event_id": f"e{sent}",
                        "timestamp": ts_ms,
                        "project_id": PROJECT,
                        "entity_type": "customer",
                        "entity_id": f"c{customer}",
                        "model": f"model-{slot}" if args.scope == "model" and slot is not None else "gpt-4o",
                        "input_tokens": 10,
                        "output_tokens": 10,
                        "cost": EVENT_USD,
                        "tags": {"feature": f"f{slot}" if args.scope == "tag" and slot is not None else "other"},
                    }
                    await producer.send(settings.events_topic, orjson.dumps(value), key=value["entity_id"].encode())
                    if slot is not None:
                        budget_id = f"b{slot}"
                        before = spent_of[budget_id]
                        spent_of[budget_id] += round(EVENT_USD * 1e9)
                        for t in THRESHOLDS:
                            if before * 100 < t * amount_of[budget_id] <= spent_of[budget_id] * 100:
                                produced_at[(budget_id, t)] = time.perf_counter()
                    sent += 1
                await asyncio.sleep(0.002)
            await producer.flush()
        finally:
            await producer.stop()
        elapsed = time.perf_counter() - started
        deadline = time.perf_counter() + 30
        while len(alerted_at) < len(produced_at) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await poller
        crossed = [k for k in produced_at if k in applied_at and k in alerted_at]
        watcher_ms = [(alerted_at[k] - applied_at[k]) * 1000 for k in crossed]
        aggregator_ms = [(applied_at[k] - produced_at[k]) * 1000 for k in crossed]
        print(f"produced {sent:,} events in {elapsed:.1f} s ({sent / elapsed:,.0f}/s); {len(produced_at)} crossings")
        print(f"alerts raised {len(alerted_at)} of {len(produced_at)}; duplicates impossible (one id each)")
        for name, values in (
            ("applied -> alert (watcher)", watcher_ms),
            ("produced -> applied (aggregator)", aggregator_ms),
        ):
            if values:
                print(
                    f"{name:34} p50 {statistics.median(values):7.1f} ms  p99 {pct(values, 0.99):7.1f} ms  "
                    f"max {max(values):7.1f} ms"
                )
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
        await redis.aclose()
        redis_service.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000, help="events per second (default 5,000)")
    parser.add_argument("--seconds", type=int, default=20, help="how long to produce (default 20)")
    parser.add_argument("--budgets", type=int, default=10, help="budgets (default 10)")
    parser.add_argument(
        "--scope", choices=("customer", "model", "tag"), default="customer", help="what each budget is of"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Rate-limit isolation: one key flooding the API, another key and /healthz measured.

    .venv/bin/python bench/rate_limit.py [--events 50000] [--requests 400] [--concurrency 32]

What it does:
1. starts its own redis-server on a free port and loads a year of synthetic events
   (bench/query.py's generator) for 10,000 entities;
2. starts `infraprism.api.server.main` (uvicorn, one worker) in a subprocess, with the
   rate limit on (the defaults: 20 requests/s per key, 100 saved up);
3. measures, one request after another on a keep-alive connection, the p50 and p99 of
   a dashboard key's `/costs` query (31 days by entity of one customer type), 15 a
   second (within its own limit), and of `/healthz`: first with nothing else running
   (the baseline, in the same run), then while a flooder process hammers `/costs` with another key over `--concurrency`
   keep-alive connections as fast as the machine lets it;
4. restarts the API with the limit off (INFRAPRISM_API_RATE_LIMIT_PER_SECOND=0) and
   measures the same two runs: what the limit buys.

Reports each p99 as a ratio to its idle baseline of the same API. The flooder is a
separate process, so it competes for the machine's two cores as a real client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from query import Conn, load, pct, synthetic_events, wait_ready  # noqa: E402

from infraprism.dev.local_services import free_port, start_redis  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import apikeys  # noqa: E402

PROJECT = "bench"


def start_api(settings: Settings, port: int, rate: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INFRAPRISM_REDIS_URL": settings.redis_dsn(),
        "INFRAPRISM_KEY_PREFIX": settings.key_prefix,
        "INFRAPRISM_API_RATE_LIMIT_PER_SECOND": str(rate),
    }
    code = (
        "from infraprism.api.server import main; from infraprism.settings import Settings; "
        f"main(Settings(), '127.0.0.1', {port}, 1)"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(ROOT))  # noqa: S603


async def flood(port: int, key: str, target: str, seconds: float, concurrency: int) -> dict[str, int]:
    """Requests as fast as `concurrency` connections take them; counts by status."""
    conns = [await Conn("127.0.0.1", port, {"Authorization": f"Bearer {key}"}).open() for _ in range(concurrency)]
    counts: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(conn: Conn) -> None:
        while time.perf_counter() < stop:
            status, _ = await conn.get(target)
            counts[str(status)] = counts.get(str(status), 0) + 1

    await asyncio.gather(*(worker(conn) for conn in conns))
    for conn in conns:
        await conn.close()
    return counts


# The dashboard key's pace: within its own rate limit (20 a second), as a dashboard is.
DASHBOARD_PAUSE_S = 1 / 15
HEALTH_PAUSE_S = 0.005


async def latencies(port: int, headers: dict[str, str], target: str, n: int, pause_s: float) -> list[float]:
    conn = await Conn("127.0.0.1", port, headers).open()
    try:
        for _ in range(5):  # warm-up: the answer cached, the connection's buffers grown
            await conn.get(target)
            await asyncio.sleep(pause_s)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _ = await conn.get(target)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"{target} -> {status}")
            await asyncio.sleep(pause_s)
        return times
    finally:
        await conn.close()


async def measure(port: int, key: str, target: str, n: int) -> Percentiles:
    costs = await latencies(port, {"Authorization": f"Bearer {key}"}, target, n, DASHBOARD_PAUSE_S)
    health = await latencies(port, {}, "/healthz", n, HEALTH_PAUSE_S)
    return {"costs": (pct(costs, 0.5), pct(costs, 0.99)), "healthz": (pct(health, 0.5), pct(health, 0.99))}


Percentiles = dict[str, tuple[float, float]]  # what -> (p50, p99) in ms


@dataclass(frozen=True)
class Run:
    idle: Percentiles
    flood: Percentiles
    flooder_statuses: dict[str, int]
    flood_seconds: float


async def one_api(args: argparse.Namespace, settings: Settings, rate: float, keys: tuple[str, str], target: str) -> Run:
    port = free_port()
    api = start_api(settings, port, rate)
    try:
        await wait_ready(port)
        victim, flooder = keys
        idle = await measure(port, victim, target, args.requests)
        seconds = 5 + args.requests * (DASHBOARD_PAUSE_S + HEALTH_PAUSE_S + 0.01)
        flooding = subprocess.Popen(  # noqa: S603 - this script
            [
                sys.executable,
                __file__,
                "--flood",
                json.dumps([port, flooder, target, seconds, args.concurrency]),
            ],
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # under way, past its burst
        under_flood = await measure(port, victim, target, args.requests)
        out, _ = flooding.communicate(timeout=seconds + 60)
        return Run(idle, under_flood, json.loads(out), seconds)
    finally:
        api.terminate()
        api.wait(timeout=30)


def report(name: str, run: Run) -> None:
    total = sum(run.flooder_statuses.values())
    print(f"\n{name}: flooder sent {total / run.flood_seconds:,.0f} req/s, by status {run.flooder_statuses}")
    print(f"{'':10} {'idle p50':>9} {'idle p99':>9} {'flood p50':>10} {'flood p99':>10} {'p99 ratio':>10}")
    for what in ("costs", "healthz"):
        (i50, i99), (f50, f99) = run.idle[what], run.flood[what]
        print(f"{what:10} {i50:9.2f} {i99:9.2f} {f50:10.2f} {f99:10.2f} {f99 / i99:9.2f}x")


async def run(args: argparse.Namespace) -> None:
    service = start_redis()
    try:
        settings = Settings(redis_url=service.address, key_prefix="bench")
        last = datetime.now(UTC).date() - timedelta(days=1)
        await load(settings, synthetic_events(args.events, last), 20_000)
        keys = (
            apikeys.create_key(settings, PROJECT, "dashboard")[1],
            apikeys.create_key(settings, PROJECT, "flood")[1],
        )
        query = {
            "start_date": (last - timedelta(days=30)).isoformat(),
            "end_date": last.isoformat(),
            "entity_type": "customer",
            "group_by": "entity",
        }
        target = f"/v1/analytics/costs?{urlencode(query)}"
        limited = await one_api(args, settings, Settings().api_rate_limit_per_second, keys, target)
        report(f"rate limit on ({Settings().api_rate_limit_per_second:g}/s per key)", limited)
        unlimited = await one_api(args, settings, 0, keys, target)
        report("rate limit off", unlimited)
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--flood", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        port, key, target, seconds, concurrency = json.loads(args.flood)
        print(json.dumps(asyncio.run(flood(port, key, target, seconds, concurrency))))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

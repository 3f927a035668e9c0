"""Query API benchmark: a year of synthetic data for 10,000 entities, the seven queries of issue 4.

    .venv/bin/python bench/query.py [--events 300000] [--requests 300] [--seconds 5] [--workers 1] [--tz ZONE]

What it does:
1. starts its own redis-server (infraprism.dev.local_services.start_redis) on a free port;
2. loads a year of events (every one of 10,000 entities present, ending yesterday UTC)
   straight through BatchRollup + RollupStore.apply, in batches;
3. starts the API (infraprism.api.server.main: uvicorn, `--workers` processes) in a subprocess on a free port;
4. for each query, four times. "cold": the rebuild generation is bumped before every
   request (and every millisecond under concurrency), which invalidates every cached
   answer, every parsed bucket and every shaped row, so every request plans, reads all
   its rollups and shapes its answer: the worst case. "live": a real batch of 100 events timestamped
   now is applied every 50 ms (2,000 events/s, as the aggregator would); the ranges
   end yesterday, so their answers stay cached (they are validated by the versions
   of their days). "live, to today": the same queries over ranges ending today,
   under the same ingest: every batch changes their answers, which are recomputed
   from the parsed buckets that did not change plus today's. "warm": the same read
   over unchanged data. Each: p50/p99 of requests sent one after another on one
   keep-alive connection, then requests/s with 16 concurrent keep-alive clients;
5. baselines measured in the same run: GET /healthz (HTTP through uvicorn + FastAPI
   + one Redis PING, no auth) and a raw Redis PING round trip from this process.

The load client is a minimal asyncio HTTP/1.1 client so the client's own CPU
(this machine has 2 cores, shared with the server and Redis) stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infraprism.core.events import CostEvent  # noqa: E402
from infraprism.core.keys import KeyLayout  # noqa: E402
from infraprism.core.rollup import BatchRollup  # noqa: E402
from infraprism.dev.local_services import free_port, start_redis  # noqa: E402
from infraprism.pipeline.store import Applied, RollupStore  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import apikeys  # noqa: E402

PROJECT = "bench"
ENTITIES = 10_000
MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-3-5-sonnet", "anthropic"),
    ("claude-3-haiku", "anthropic"),
    ("gemini-1.5-pro", "google"),
    ("llama-3-70b", "meta"),
]
FEATURES = ["chat", "search", "summarize", "agent"]
ENVS = ["production", "staging"]
CONCURRENCY = 16


def entity(i: int) -> tuple[str, str]:
    if i < 7000:
        return "customer", f"cust-{i:05d}"
    if i < 9000:
        return "team", f"team-{i:05d}"
    return "feature", f"feat-{i:05d}"


def bench_event(
    event_id: str,
    ts_ms: int,
    entity_index: int,
    model_index: int,
    *,
    input_tokens: int,
    output_tokens: int,
    cost_nano: int,
    latency_us: int,
    tags: tuple[tuple[str, str], ...],
) -> CostEvent:
    """An event of the bench project, its entity and model given by index."""
    entity_type, entity_id = entity(entity_index)
    model, provider = MODELS[model_index]
    return CostEvent(
        event_id=event_id,
        ts_ms=ts_ms,
        project_id=PROJECT,
        entity_type=entity_type,
        entity_id=entity_id,
        model=model,
        provider=provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_nano=cost_nano,
        latency_us=latency_us,
        session_id=None,
        tags=tags,
    )


def synthetic_events(count: int, last_day: date, seed: int = 7) -> list[CostEvent]:
    """`count` events over the 365 days ending `last_day`; entity j % 10,000 so all are present."""
    rng = random.Random(seed)
    first_ms = int(datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC).timestamp() * 1000)
    first_ms -= 364 * 86_400_000
    span_ms = 365 * 86_400_000
    tag_sets = [tuple(sorted({"env": env, "feature": feature}.items())) for feature in FEATURES for env in ENVS]
    events = []
    for j in range(count):
        # The random draws in this order, as the data has always been generated.
        model_index = rng.randrange(len(MODELS))
        input_tokens = rng.randrange(50, 5000)
        output_tokens = rng.randrange(10, 2000)
        events.append(
            bench_event(
                f"b{j}",
                first_ms + rng.randrange(span_ms),
                j % ENTITIES,
                model_index,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_nano=rng.randrange(10_000, 50_000_000),
                latency_us=rng.randrange(100_000, 5_000_000),
                tags=tag_sets[rng.randrange(len(tag_sets))],
            )
        )
    return events


async def load(settings: Settings, events: list[CostEvent], batch: int) -> float:
    # A batch's script call can take seconds on a busy 2-core machine: no read timeout.
    client = aioredis.Redis.from_url(settings.redis_dsn(), socket_timeout=None)
    store = RollupStore(client, KeyLayout(settings.key_prefix), topic="bench", group="bench", dedupe_window_days=3650)
    started = time.perf_counter()
    try:
        for begin in range(0, len(events), batch):
            rollup = BatchRollup()
            for event in events[begin : begin + batch]:
                rollup.add(event)
            await store.apply(rollup, [])
            done = min(begin + batch, len(events))
            print(f"  loaded {done:>8,} / {len(events):,} events", end="\r", flush=True)
    finally:
        await client.aclose()
    print()
    return time.perf_counter() - started


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------


class Conn:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        return self

    async def get(self, target: str) -> tuple[int, int]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, len(body)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def sequential(
    host: str,
    port: int,
    headers: dict[str, str],
    target: str,
    n: int,
    before: Callable[[], Awaitable[object]] | None = None,
) -> tuple[list[float], int]:
    """Latencies (ms) of n requests one after another; `before` runs ahead of each, untimed."""
    conn = await Conn(host, port, headers).open()
    try:
        size = 0
        for _ in range(max(5, n // 20)):  # warm-up
            status, size = await conn.get(target)
            if status != 200:
                raise RuntimeError(f"{target} -> {status}")
        times = []
        for _ in range(n):
            if before is not None:
                await before()
            t0 = time.perf_counter()
            status, _ = await conn.get(target)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"{target} -> {status}")
        return times, size
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def invalidating(bump: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Invalidate every cached answer every millisecond: the worst case, no cache hit at all."""
    running = True

    async def bumper() -> None:
        while running:
            await bump()
            await asyncio.sleep(0.001)

    task = asyncio.create_task(bumper())
    try:
        yield
    finally:
        running = False
        await task


LIVE_BATCH_EVENTS = 100
LIVE_BATCH_EVERY_S = 0.05


@contextlib.asynccontextmanager
async def real_ingest(settings: Settings) -> AsyncIterator[None]:
    """Apply a real batch of events timestamped now every 50 ms (2,000 events/s), through
    BatchRollup + RollupStore as the aggregator does: today's buckets change, older ones do not."""
    client = aioredis.Redis.from_url(settings.redis_dsn(), socket_timeout=None)
    store = RollupStore(client, KeyLayout(settings.key_prefix), topic="live", group="live", dedupe_window_days=7)
    rng = random.Random(11)
    running = True
    sequence = 0
    run_id = uuid.uuid4().hex[:12]  # event ids must be new in every run, or dedupe drops the batches

    async def writer() -> None:
        nonlocal sequence
        while running:
            now_ms = int(time.time() * 1000)
            rollup = BatchRollup()
            for _ in range(LIVE_BATCH_EVENTS):
                sequence += 1
                rollup.add(
                    bench_event(
                        f"live-{run_id}-{sequence}",
                        now_ms,
                        rng.randrange(ENTITIES),
                        rng.randrange(len(MODELS)),
                        input_tokens=500,
                        output_tokens=100,
                        cost_nano=rng.randrange(10_000, 50_000_000),
                        latency_us=800_000,
                        tags=(("env", "production"), ("feature", "chat")),
                    )
                )
            result = await store.apply(rollup, [])
            if not isinstance(result, Applied):
                raise RuntimeError(f"live batch refused: {result}")
            await asyncio.sleep(LIVE_BATCH_EVERY_S)

    task = asyncio.create_task(writer())
    try:
        yield
    finally:
        running = False
        await task
        await client.aclose()


async def concurrent(host: str, port: int, headers: dict[str, str], targets: list[str], seconds: float) -> float:
    conns = [await Conn(host, port, headers).open() for _ in range(CONCURRENCY)]
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(index: int, conn: Conn) -> None:
        nonlocal done
        k = index
        while time.perf_counter() < stop:
            status, _ = await conn.get(targets[k % len(targets)])
            if status != 200:
                raise RuntimeError(f"{targets[k % len(targets)]} -> {status}")
            k += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return done / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def queries(last: date) -> list[tuple[str, str, dict[str, str | int]]]:
    d = timedelta
    year_start = last - d(days=364)
    # The most recent whole calendar month of 31 days inside the data.
    month_end = last.replace(day=1) - d(days=1)
    while month_end.day != 31:
        month_end = month_end.replace(day=1) - d(days=1)
    month_start = month_end.replace(day=1)
    iso = date.isoformat
    return [
        (
            "31-day costs by entity (calendar month, entity_type=customer)",
            "/v1/analytics/costs",
            {
                "start_date": iso(month_start),
                "end_date": iso(month_end),
                "entity_type": "customer",
                "group_by": "entity",
            },
        ),
        (
            "31-day costs by entity (last 31 days, all types)",
            "/v1/analytics/costs",
            {"start_date": iso(last - d(days=30)), "end_date": iso(last), "group_by": "entity"},
        ),
        ("365-day totals", "/v1/analytics/costs", {"start_date": iso(year_start), "end_date": iso(last)}),
        (
            "365-day costs by month, tag filter",
            "/v1/analytics/costs",
            {"start_date": iso(year_start), "end_date": iso(last), "group_by": "month", "tags": "feature:chat"},
        ),
        (
            "7-day hourly time series",
            "/v1/analytics/costs/timeseries",
            {"start_date": iso(last - d(days=6)), "end_date": iso(last), "interval": "hour"},
        ),
        ("90-day models", "/v1/analytics/models", {"start_date": iso(last - d(days=89)), "end_date": iso(last)}),
        (
            "365-day top 100",
            "/v1/analytics/entities/top",
            {"start_date": iso(year_start), "end_date": iso(last), "limit": 100},
        ),
        (
            "compare two 30-day periods",
            "/v1/analytics/compare",
            {
                "period1_start": iso(last - d(days=29)),
                "period1_end": iso(last),
                "period2_start": iso(last - d(days=59)),
                "period2_end": iso(last - d(days=30)),
            },
        ),
    ]


def start_api(settings: Settings, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["INFRAPRISM_REDIS_URL"] = settings.redis_dsn()
    env["INFRAPRISM_KEY_PREFIX"] = settings.key_prefix
    # It measures how fast queries are answered, not the rate limit of one key (bench/rate_limit.py):
    # a limit no run reaches, so that every request still pays for its token bucket.
    env["INFRAPRISM_API_RATE_LIMIT_PER_SECOND"] = "1000000"
    env["INFRAPRISM_API_RATE_LIMIT_BURST"] = "10000000"
    code = (
        "from infraprism.api.server import main; from infraprism.settings import Settings; "
        f"main(Settings(), '127.0.0.1', {port}, {workers})"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(ROOT))  # noqa: S603


async def wait_ready(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await Conn("127.0.0.1", port, {}).open()
            status, _ = await conn.get("/healthz")
            await conn.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("API did not become ready")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> None:
    service = start_redis()
    api: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(redis_url=service.address, key_prefix="bench")
        last = datetime.now(UTC).date() - timedelta(days=1)
        t0 = time.perf_counter()
        events = synthetic_events(args.events, last)
        print(f"generated {len(events):,} events for {ENTITIES:,} entities in {time.perf_counter() - t0:.1f}s")
        load_s = await load(settings, events, args.batch)
        del events
        info = redis.Redis.from_url(settings.redis_dsn())
        print(
            f"loaded in {load_s:.1f}s; redis keys {info.dbsize():,}, memory {info.info('memory')['used_memory_human']}"
        )
        _, key = apikeys.create_key(settings, PROJECT, "bench")

        port = free_port()
        api = start_api(settings, port, args.workers)
        await wait_ready(port)
        headers = {"Authorization": f"Bearer {key}"}

        # Baselines.
        ping_ms = []
        for _ in range(args.requests):
            t = time.perf_counter()
            info.ping()
            ping_ms.append((time.perf_counter() - t) * 1000)
        health, _ = await sequential("127.0.0.1", port, {}, "/healthz", args.requests)
        health_rps = await concurrent("127.0.0.1", port, {}, ["/healthz"], args.seconds)
        health_p50 = statistics.median(health)
        print()
        print(
            f"baseline redis PING round trip: p50 {statistics.median(ping_ms):.3f} ms, p99 {pct(ping_ms, 0.99):.3f} ms"
        )
        print(
            f"baseline GET /healthz (uvicorn+FastAPI+PING): p50 {health_p50:.2f} ms, "
            f"p99 {pct(health, 0.99):.2f} ms, {health_rps:.0f} req/s x{CONCURRENCY}"
        )
        print()
        # "cold": the data version is bumped before every request (and every millisecond
        # under concurrency), so the response cache never hits: the planner and the
        # rollup reads run each time, as under live ingest. "warm": the same read again
        # over unchanged data, answered from the version-checked cache.
        versions = aioredis.Redis.from_url(settings.redis_dsn())
        generation_key = KeyLayout(settings.key_prefix).generation()

        async def bump() -> object:
            return await versions.incr(generation_key)

        # Every query twice: over the year ending yesterday (the loaded data), and the same
        # query ending today, whose answer the live batches change.
        zone = {"tz": args.tz} if args.tz else {}
        yesterday = [(name, f"{path}?{urlencode({**params, **zone})}") for name, path, params in queries(last)]
        today = [f"{path}?{urlencode({**params, **zone})}" for _, path, params in queries(last + timedelta(days=1))]
        latency_rows, rate_rows = [], []
        for (name, target), target_today in zip(yesterday, today, strict=True):
            cold, size = await sequential("127.0.0.1", port, headers, target, args.requests, before=bump)
            async with invalidating(bump):
                cold_rps = await concurrent("127.0.0.1", port, headers, [target], args.seconds)
            async with real_ingest(settings):
                live, _ = await sequential("127.0.0.1", port, headers, target, args.requests)
                live_rps = await concurrent("127.0.0.1", port, headers, [target], args.seconds)
                live_today, _ = await sequential("127.0.0.1", port, headers, target_today, args.requests)
                live_today_rps = await concurrent("127.0.0.1", port, headers, [target_today], args.seconds)
            warm, _ = await sequential("127.0.0.1", port, headers, target, args.requests)
            warm_rps = await concurrent("127.0.0.1", port, headers, [target], args.seconds)
            latencies = " | ".join(
                f"{statistics.median(times):.2f} | {pct(times, 0.99):.2f}" for times in (cold, live, live_today, warm)
            )
            latency_rows.append(f"| {name} | {latencies} | {statistics.median(cold) / health_p50:.1f}x | {size:,} |")
            rate_rows.append(f"| {name} | {cold_rps:.0f} | {live_rps:.0f} | {live_today_rps:.0f} | {warm_rps:.0f} |")
            print(latency_rows[-1], flush=True)
        # The seven (the calendar-month variant of the first), round-robin; and the
        # six that do not return every entity.
        mixes = (
            ("the 7 queries of issue 4", [i for i in range(len(yesterday)) if i != 1]),
            ("the 6 other than costs by entity", list(range(2, len(yesterday)))),
        )
        for label, indexes in mixes:
            mix = [yesterday[i][1] for i in indexes]
            mix_today = [today[i] for i in indexes]
            async with invalidating(bump):
                cold_mix = await concurrent("127.0.0.1", port, headers, mix, args.seconds)
            async with real_ingest(settings):
                live_mix = await concurrent("127.0.0.1", port, headers, mix, args.seconds)
                live_today_mix = await concurrent("127.0.0.1", port, headers, mix_today, args.seconds)
            warm_mix = await concurrent("127.0.0.1", port, headers, mix, args.seconds)
            rate_rows.append(
                f"| {label}, round-robin | {cold_mix:.0f} | {live_mix:.0f} | {live_today_mix:.0f} | {warm_mix:.0f} |"
            )
        print()
        print(
            "| query | cold p50 ms | cold p99 ms | live p50 ms | live p99 ms | live, to today p50 ms "
            "| live, to today p99 ms | warm p50 ms | warm p99 ms | cold p50 / healthz p50 | response bytes |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(latency_rows))
        print()
        print(f"| requests/s, {CONCURRENCY} clients | cold | live | live, to today | warm |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(rate_rows))
        await versions.aclose()
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000, help="events to load (default 300,000)")
    parser.add_argument("--batch", type=int, default=20_000, help="events per RollupStore.apply")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per query")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of concurrent load per query")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the API (default 1)")
    parser.add_argument(
        "--tz",
        default=None,
        help="answer every query in this zone (e.g. Asia/Kolkata: local days 18:30 to 18:30 UTC); default UTC",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

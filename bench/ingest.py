"""Ingest benchmark: the aggregator against two baselines on the same pre-filled topic.

    .venv/bin/python bench/ingest.py [--events 300000] [--freshness-seconds 20]

1. raw aiokafka consume + JSON decode (the ceiling for any Python consumer);
2. a plain faust-streaming agent that only decodes (the card's framework);
3. the aggregator with every guarantee on (validation, dedupe, fenced atomic
   apply, sessions, leaderboards), as its own process like in production.

Then a freshness run: the aggregator at a steady produce rate, p99 from produce
to visible in Redis (the worker's own histogram). Then memory: bytes per
rollup cell and per million events. Starts its own Tansu broker and
redis-server unless INFRAPRISM_KAFKA_BOOTSTRAP / INFRAPRISM_REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402

from infraprism.core.keys import KeyLayout  # noqa: E402
from infraprism.localstack import free_port, start_broker, start_redis  # noqa: E402
from pipeline.topics import ensure_topics  # noqa: E402

PARTITIONS = 4


async def fill_topic(bootstrap: str, topic: str, values: list[bytes]) -> None:
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_decode(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, first = 0, 0.0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if batch and not first:
                first = time.perf_counter()
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return time.perf_counter() - first
    finally:
        await consumer.stop()


def faust_decode(bootstrap: str, topic: str, count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        env = dict(os.environ, BENCH_TOPIC=topic, BENCH_COUNT=str(count), BENCH_RESULT=str(result),
                   BENCH_APP_ID=f"bench-faust-{uuid.uuid4().hex[:8]}", BENCH_BOOTSTRAP=bootstrap,
                   BENCH_PARTITIONS=str(PARTITIONS))
        subprocess.run(  # noqa: S603
            [sys.executable, str(Path(__file__).parent / "faust_decode.py"), "--datadir", tmp,
             "worker", "-l", "error", "--without-web"],
            env=env, cwd=tmp, timeout=600, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return float(result.read_text())


def aggregator_env(bootstrap: str, redis_url: str, topic: str, prefix: str, metrics_port: int) -> dict[str, str]:
    return dict(
        os.environ,
        INFRAPRISM_KAFKA_BOOTSTRAP=bootstrap,
        INFRAPRISM_REDIS_URL=redis_url,
        INFRAPRISM_EVENTS_TOPIC=topic,
        INFRAPRISM_DLQ_TOPIC=f"{topic}.dlq",
        INFRAPRISM_DELTAS_TOPIC=f"{topic}.deltas",
        INFRAPRISM_AGGREGATOR_GROUP=f"agg-{topic}",
        INFRAPRISM_KEY_PREFIX=prefix,
        INFRAPRISM_TOPIC_PARTITIONS=str(PARTITIONS),
        INFRAPRISM_METRICS_PORT=str(metrics_port),
    )


def start_aggregator(env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "from pipeline.aggregator import main; from infraprism.settings import Settings; main(Settings())"
    return subprocess.Popen([sys.executable, "-c", code], env=env,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def applied(client: redis.Redis, offsets_key: str) -> int:
    return sum(int(v) for v in client.hgetall(offsets_key).values())


def run_aggregator(bootstrap: str, redis_url: str, topic: str, prefix: str, count: int) -> float:
    """Events/s from the first applied batch to the last (startup excluded, like the baselines)."""
    client = redis.Redis.from_url(redis_url)
    offsets_key = KeyLayout(prefix).offsets(topic, f"agg-{topic}")
    worker = start_aggregator(aggregator_env(bootstrap, redis_url, topic, prefix, free_port()))
    try:
        while (first_count := applied(client, offsets_key)) == 0:
            time.sleep(0.005)
        first = time.perf_counter()
        while (done := applied(client, offsets_key)) < count:
            if worker.poll() is not None:
                raise RuntimeError("aggregator exited early")
            time.sleep(0.005)
        return (done - first_count) / (time.perf_counter() - first)
    finally:
        worker.terminate()
        worker.wait(30)


def histogram(metrics_text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a Prometheus histogram."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    return buckets


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """The bucket bound holding quantile q of the observations made between two scrapes."""
    counts = [(bound, n - m) for (bound, n), (_, m) in zip(after, before, strict=True)]
    total = counts[-1][1]
    for bound, cumulative in counts:
        if cumulative >= q * total:
            return bound
    return float("inf")


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310


def applied_total(metrics_text: str) -> int:
    return int(float(next(line.rsplit(" ", 1)[1] for line in metrics_text.splitlines()
                          if line.startswith("infraprism_events_applied_total"))))


async def steady_produce(bootstrap: str, topic: str, rate: int, seconds: int, seed: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        values = list(workload.events(rate * seconds, seed=seed, start_ms=int(time.time() * 1000) - 3_600_000,
                                      span_ms=3_600_000))
        tick = 0.05
        per_tick = int(rate * tick)
        start = time.perf_counter()
        for n in range(0, len(values), per_tick):
            for value in values[n:n + per_tick]:
                await producer.send(topic, value)
            delay = start + (n // per_tick + 1) * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()


def freshness(bootstrap: str, redis_url: str, rate: int, seconds: int) -> tuple[float, float, int]:
    """p50 and p99 (histogram bounds) of produce-to-visible at a steady rate, after a warm-up."""
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [topic], PARTITIONS))
    port = free_port()
    worker = start_aggregator(aggregator_env(bootstrap, redis_url, topic, f"b{topic}", port))
    try:
        deadline = time.time() + 60
        # Warm up until the worker owns its partitions and applies what arrives.
        for warm_up in itertools.count():
            asyncio.run(steady_produce(bootstrap, topic, 200, 1, seed=1000 + warm_up))
            time.sleep(0.5)
            try:
                if applied_total(scrape(port)) > 0:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the aggregator applied nothing during the warm-up")
        time.sleep(1)
        before = scrape(port)
        asyncio.run(steady_produce(bootstrap, topic, rate, seconds, seed=11))
        time.sleep(2)
        after = scrape(port)
        name = "infraprism_freshness_seconds"
        b, a = histogram(before, name), histogram(after, name)
        return quantile(b, a, 0.5), quantile(b, a, 0.99), applied_total(after) - applied_total(before)
    finally:
        worker.terminate()
        worker.wait(30)


def memory(redis_url: str, prefix: str, count: int) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    root = KeyLayout(prefix).root
    totals = {"rollup_bytes": 0, "cells": 0, "dedupe_bytes": 0, "other_bytes": 0}
    for key in client.scan_iter(match=f"{root}:*", count=2000):
        size = client.memory_usage(key, samples=0) or 0
        name = key.decode()
        if ":r:" in name:
            totals["rollup_bytes"] += size
            totals["cells"] += len({field[1:] for field in client.hkeys(key)})
        elif ":dd:" in name:
            totals["dedupe_bytes"] += size
        else:
            totals["other_bytes"] += size
    all_bytes = totals["rollup_bytes"] + totals["dedupe_bytes"] + totals["other_bytes"]
    return {
        "cells": totals["cells"],
        "bytes_per_cell": totals["rollup_bytes"] / max(1, totals["cells"]),
        "rollup_mb_per_million_events": totals["rollup_bytes"] / count,
        "dedupe_mb_per_million_events": totals["dedupe_bytes"] / count,
        "all_mb_per_million_events": all_bytes / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--freshness-seconds", type=int, default=20)
    parser.add_argument("--freshness-rate", type=int, default=5000)
    args = parser.parse_args()

    services = []
    bootstrap = os.environ.get("INFRAPRISM_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("INFRAPRISM_REDIS_URL")
    if not bootstrap:
        services.append(start_broker())
        bootstrap = services[-1].address
    if not redis_url:
        services.append(start_redis())
        redis_url = services[-1].address
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        print(f"generating and producing {args.events:,} events to {topic} ...", flush=True)
        values = list(workload.events(args.events))
        asyncio.run(fill_topic(bootstrap, topic, values))

        raw_s = asyncio.run(raw_decode(bootstrap, topic, args.events))
        raw_rate = args.events / raw_s
        print(f"raw aiokafka consume+decode : {raw_rate:10,.0f} events/s", flush=True)
        faust_rate = args.events / faust_decode(bootstrap, topic, args.events)
        print(f"faust agent decode only     : {faust_rate:10,.0f} events/s", flush=True)
        prefix = f"b{topic}"
        agg_rate = run_aggregator(bootstrap, redis_url, topic, prefix, args.events)
        print(f"aggregator (all guarantees) : {agg_rate:10,.0f} events/s", flush=True)
        print(f"ratio aggregator / faust agent : {agg_rate / faust_rate:.2f}x")
        print(f"ratio aggregator / raw decode  : {agg_rate / raw_rate:.2f}x")

        mem = memory(redis_url, prefix, args.events)
        print(f"rollup cells: {mem['cells']:,}  bytes/cell: {mem['bytes_per_cell']:.0f}")
        print(f"MB per million events: rollups {mem['rollup_mb_per_million_events']:.1f}, "
              f"dedupe {mem['dedupe_mb_per_million_events']:.1f}, all {mem['all_mb_per_million_events']:.1f}")

        p50, p99, count = freshness(bootstrap, redis_url, args.freshness_rate, args.freshness_seconds)
        print(f"freshness at {args.freshness_rate}/s for {args.freshness_seconds}s ({count:,} events): "
              f"p50 <= {p50}s, p99 <= {p99}s (histogram bucket bounds)")
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()

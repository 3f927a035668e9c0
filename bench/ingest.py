"""Ingest benchmark: the aggregator against two baselines on the same pre-filled topic, in two orders.

    .venv/bin/python bench/ingest.py [--events 300000] [--orders live,backfill] [--freshness-seconds 20]

The events are bench/workload.py's production-like mix (events without
`cost`, cache tokens, three entity types, two projects, three timestamp
encodings, sessions, 2% producer retries), sent in each order:

- live: near time order over one day, 1% of the events up to a day late;
- backfill: the same events with timestamps over 45 days, in random order.

For each order, on a fresh topic filled once:
1. raw aiokafka consume + JSON decode (the ceiling for any Python consumer);
2. a plain faust-streaming agent that only decodes (bench/faust_decode.py);
3. the aggregator with every guarantee on (validation, pricing, dedupe,
   fenced atomic apply, sessions, leaderboards), as its own process like in
   production, on a fresh redis-server: its events/s, the Redis CPU and
   memory it used per event (`INFO cpu`, `used_memory`), then a check that
   the project totals in Redis are exactly the workload's (distinct events,
   input tokens, cost priced with `parse_event`).

Then a freshness run: the aggregator at a steady 5,000 events/s of the live
mix, p50/p99 from produce to visible in Redis (the worker's own histogram),
checked the same way. "Events" are messages read from the topic, retries
included. Starts its own Tansu broker and redis-servers unless
INFRAPRISM_KAFKA_BOOTSTRAP / INFRAPRISM_REDIS_URL are set (then a fresh key
prefix per run keeps the figures apart). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infraprism.core.cell import COST, EVENTS, INPUT, Cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402
from workload import Message  # noqa: E402

from infraprism.core.buckets import Granularity  # noqa: E402
from infraprism.core.events import InvalidEvent, parse_event  # noqa: E402
from infraprism.core.keys import Dimension, KeyLayout  # noqa: E402
from infraprism.dev.local_services import free_port, start_broker, start_redis  # noqa: E402
from infraprism.pipeline.topics import ensure_topics  # noqa: E402

PARTITIONS = 4
STALL_SECONDS = 120  # no applied offset moved for this long: the aggregator is stuck
# Logged by aiokafka when the worker gets its partitions: where its measured time starts.
ASSIGNED_LINE = "Setting newly assigned partitions"
STARTED = time.monotonic()


def say(text: str) -> None:
    """A progress line, with the seconds since the bench started."""
    print(f"{time.monotonic() - STARTED:6.1f}s {text}", flush=True)


class CheckFailed(RuntimeError):
    """Redis does not hold the workload's totals, or the aggregator died."""


# --- the workload's expected totals ------------------------------------------------------------


def _totals_of(values: list[bytes]) -> dict[str, list[int]]:
    """project -> [events, cost nano, input tokens] of distinct payloads, priced like the aggregator."""
    totals: dict[str, list[int]] = {}
    for value in values:
        try:
            event = parse_event(value)
        except InvalidEvent as exc:
            raise CheckFailed(f"the workload produced an invalid event ({exc}): {value[:200]!r}") from None
        total = totals.setdefault(event.project_id, [0, 0, 0])
        total[0] += 1
        total[1] += event.cost_nano
        total[2] += event.input_tokens
    return totals


def expected_totals(messages: list[Message]) -> dict[str, list[int]]:
    """Per project: distinct events (a retry has the same bytes), their cost and input tokens."""
    distinct = list(dict.fromkeys(message.value for message in messages))
    chunks = [distinct[i : i + 5000] for i in range(0, len(distinct), 5000)]
    totals: dict[str, list[int]] = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for part in pool.map(_totals_of, chunks):
            for project, (events, cost, tokens) in part.items():
                total = totals.setdefault(project, [0, 0, 0])
                total[0] += events
                total[1] += cost
                total[2] += tokens
    ids = {orjson.loads(value)["event_id"] for value in distinct}
    if len(ids) != len(distinct):
        raise CheckFailed("the workload sent one event_id with two different payloads")
    return totals


def stored_totals(client: redis.Redis, prefix: str) -> dict[str, list[int]]:
    """Per project: [events, cost nano, input tokens] summed over the monthly project-total cells."""
    layout = KeyLayout(prefix)
    totals = {}
    for project in sorted(p.decode() for p in client.smembers(layout.projects())):
        total = [0, 0, 0]
        pattern = layout.rollup(project, Dimension.TOTAL, Granularity.MONTH, "*")
        for key in client.scan_iter(match=pattern, count=1000):
            cell = client.hget(key, "")
            if cell is not None:
                counters = Cell.unpack(cell)
                total = [total[0] + counters[EVENTS], total[1] + counters[COST], total[2] + counters[INPUT]]
        totals[project] = total
    return totals


def check(client: redis.Redis, prefix: str, expected: dict[str, list[int]]) -> str:
    """One line when Redis holds exactly the expected totals; CheckFailed otherwise."""
    stored = stored_totals(client, prefix)
    if stored != expected:
        lines = [
            f"  {project}: expected events/cost nano/input tokens {expected.get(project)}, "
            f"Redis has {stored.get(project)}"
            for project in sorted(set(stored) | set(expected))
        ]
        raise CheckFailed("Redis totals differ from the workload's:\n" + "\n".join(lines))
    return "; ".join(
        f"{project} {events:,} events, ${cost / 1e9:,.6f}, {tokens:,} input tokens"
        for project, (events, cost, tokens) in sorted(expected.items())
    )


# --- the baselines ------------------------------------------------------------------------------


async def fill_topic(bootstrap: str, topic: str, messages: list[Message]) -> None:
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_decode(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )
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
        env = dict(
            os.environ,
            BENCH_TOPIC=topic,
            BENCH_COUNT=str(count),
            BENCH_RESULT=str(result),
            BENCH_APP_ID=f"bench-faust-{uuid.uuid4().hex[:8]}",
            BENCH_BOOTSTRAP=bootstrap,
            BENCH_PARTITIONS=str(PARTITIONS),
        )
        subprocess.run(  # noqa: S603
            [
                sys.executable,
                str(Path(__file__).parent / "faust_decode.py"),
                "--datadir",
                tmp,
                "worker",
                "-l",
                "error",
                "--without-web",
            ],
            env=env,
            cwd=tmp,
            timeout=600,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return float(result.read_text())


# --- the aggregator -----------------------------------------------------------------------------


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


class Aggregator:
    """The aggregator in its own process, its log kept for the report if it dies."""

    def __init__(self, bootstrap: str, redis_url: str, topic: str, prefix: str) -> None:
        self.topic, self.prefix = topic, prefix
        self.metrics_port = free_port()
        self.offsets_key = KeyLayout(prefix).offsets(topic, f"agg-{topic}")
        self.halted_key = KeyLayout(prefix).halted_partitions(topic, f"agg-{topic}")
        self._log = tempfile.NamedTemporaryFile(prefix=f"aggregator-{topic}-", suffix=".log", delete=False)
        code = (
            "from infraprism.pipeline.aggregator import main; from infraprism.settings import Settings; "
            "main(Settings())"
        )
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", code],
            env=aggregator_env(bootstrap, redis_url, topic, prefix, self.metrics_port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assigned_at(self) -> float | None:
        """Wall-clock time of the first partition assignment in the worker's log (aiokafka's INFO line)."""
        self._log.flush()
        for line in Path(self._log.name).read_text(errors="replace").splitlines():
            if ASSIGNED_LINE in line:
                with contextlib.suppress(ValueError):
                    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def fail(self, what: str) -> CheckFailed:
        return CheckFailed(f"{what} (log {self._log.name}):\n{self.log_tail()}")

    def wait_applied(self, client: redis.Redis, count: int) -> tuple[int, float]:
        """Poll the Redis offsets until `count` messages are applied: (first applied count, its time)."""
        first: tuple[int, float] | None = None
        done, moved = -1, time.monotonic()
        while done < count:
            if self.process.poll() is not None:
                raise self.fail(
                    f"the aggregator exited with code {self.process.returncode} "
                    f"after applying {max(done, 0):,} of {count:,} messages"
                )
            halted = client.hgetall(self.halted_key)
            if halted:
                raise self.fail(f"the aggregator halted partitions at {max(done, 0):,} of {count:,}: {halted}")
            now = applied(client, self.offsets_key)
            if now != done:
                done, moved = now, time.monotonic()
                if first is None and done > 0:
                    first = (done, time.perf_counter())
            elif time.monotonic() - moved > STALL_SECONDS:
                raise self.fail(f"the aggregator applied nothing for {STALL_SECONDS}s at {done:,} of {count:,}")
            time.sleep(0.01)
        assert first is not None
        return first

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def check(self, client: redis.Redis, expected: dict[str, list[int]]) -> str:
        """`check` of what this worker left in Redis; its log is kept (and quoted) only if it fails."""
        try:
            result = check(client, self.prefix, expected)
        except CheckFailed as exc:
            raise self.fail(str(exc)) from None
        Path(self._log.name).unlink(missing_ok=True)
        return result


def applied(client: redis.Redis, offsets_key: str) -> int:
    return sum(int(v) for v in client.hgetall(offsets_key).values())


def redis_cpu_s(client: redis.Redis) -> tuple[float, float | None]:
    """(user + sys CPU seconds of redis-server, of its main thread when INFO reports it)."""
    info = client.info("cpu")
    total = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    if "used_cpu_user_main_thread" in info:
        return total, float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return total, None


@dataclass
class AggregatorRun:
    events_per_s: float
    redis_cpu_us: float  # per message
    redis_main_cpu_us: float | None
    bytes_per_event: float  # used_memory delta per message
    check: str
    counters: dict[str, float]


def run_aggregator(
    bootstrap: str, redis_url: str, topic: str, prefix: str, messages: list[Message], expected: dict[str, list[int]]
) -> AggregatorRun:
    """Events/s from the partition assignment to the last applied message (process start and group join excluded).

    The baselines are timed from their first fetched message; the worker's first fetch follows its
    assignment within milliseconds. Without the log line, from the first applied batch instead.
    """
    count = len(messages)
    client = redis.Redis.from_url(redis_url)
    cpu_before, memory_before = redis_cpu_s(client), int(client.info("memory")["used_memory"])
    worker = Aggregator(bootstrap, redis_url, topic, prefix)
    try:
        first_count, first = worker.wait_applied(client, count)
        done_wall, done = time.time(), time.perf_counter()
        assigned = worker.assigned_at()
        if assigned is not None and assigned < done_wall:
            rate = count / (done_wall - assigned)
        else:
            rate = (count - first_count) / (done - first)
        counters = metric_counters(scrape(worker.metrics_port))
    finally:
        worker.stop()
    cpu_after, memory_after = redis_cpu_s(client), int(client.info("memory")["used_memory"])
    main_us = None
    if cpu_before[1] is not None and cpu_after[1] is not None:
        main_us = (cpu_after[1] - cpu_before[1]) / count * 1e6
    return AggregatorRun(
        events_per_s=rate,
        redis_cpu_us=(cpu_after[0] - cpu_before[0]) / count * 1e6,
        redis_main_cpu_us=main_us,
        bytes_per_event=(memory_after - memory_before) / count,
        check=worker.check(client, expected),
        counters=counters,
    )


# --- the aggregator's own metrics -----------------------------------------------------------------


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310


def metric_counters(metrics_text: str) -> dict[str, float]:
    """Sums of the unlabelled and labelled samples of each metric line name (counters, _count)."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


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


def applied_total(metrics_text: str) -> int:
    return int(metric_counters(metrics_text).get("infraprism_events_applied_total", 0))


# --- freshness ----------------------------------------------------------------------------------


def live_messages(count: int, seconds: float, seed: int) -> list[Message]:
    """About `count` messages of the live mix, stamped as if sent over the next `seconds`."""
    calls = workload.calls(round(count / (1 + workload.RETRY_SHARE)), seed=seed)
    return workload.live(calls, start_ms=int(time.time() * 1000), span_ms=int(seconds * 1000), seed=seed)


async def steady_produce(bootstrap: str, topic: str, messages: list[Message], rate: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        tick = 0.05
        per_tick = max(1, int(rate * tick))
        start = time.perf_counter()
        for n in range(0, len(messages), per_tick):
            for key, value in messages[n : n + per_tick]:
                await producer.send(topic, value, key=key)
            delay = start + (n // per_tick + 1) * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Freshness:
    p50_s: float
    p99_s: float
    events: int
    check: str


def freshness(bootstrap: str, redis_url: str, rate: int, seconds: int) -> Freshness:
    """p50 and p99 (histogram bounds) of produce-to-visible at a steady rate, after a warm-up."""
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    prefix = f"b{topic}"
    asyncio.run(ensure_topics(bootstrap, [topic], PARTITIONS))
    client = redis.Redis.from_url(redis_url)
    worker = Aggregator(bootstrap, redis_url, topic, prefix)
    produced: list[Message] = []
    say(f"[freshness] warming up an aggregator on {topic} ...")
    try:
        deadline = time.time() + 60
        # Warm up until the worker owns its partitions and applies what arrives.
        for warm_up in itertools.count():
            produced += (batch := live_messages(200, 1, seed=1000 + warm_up))
            asyncio.run(steady_produce(bootstrap, topic, batch, 200))
            time.sleep(0.5)
            if worker.process.poll() is not None:
                raise worker.fail("the aggregator exited during the warm-up")
            with contextlib.suppress(OSError):
                if applied_total(scrape(worker.metrics_port)) > 0:
                    break
            if time.time() > deadline:
                raise worker.fail("the aggregator applied nothing during the warm-up")
        time.sleep(1)
        steady = live_messages(rate * seconds, seconds, seed=11)
        before = scrape(worker.metrics_port)
        say(f"[freshness] producing {len(steady):,} messages at {rate:,}/s ...")
        asyncio.run(steady_produce(bootstrap, topic, steady, rate))
        produced += steady
        worker.wait_applied(client, len(produced))
        time.sleep(0.5)
        after = scrape(worker.metrics_port)
    finally:
        worker.stop()
    name = "infraprism_freshness_seconds"
    b, a = histogram(before, name), histogram(after, name)
    return Freshness(
        quantile(b, a, 0.5),
        quantile(b, a, 0.99),
        applied_total(after) - applied_total(before),
        worker.check(client, expected_totals(produced)),
    )


# --- memory -------------------------------------------------------------------------------------


def memory(redis_url: str, prefix: str, count: int) -> dict[str, float]:
    """MEMORY USAGE over every key of the prefix: bytes per rollup cell, MB per million messages."""
    client = redis.Redis.from_url(redis_url)
    root = KeyLayout(prefix).root
    totals = {"rollup_bytes": 0, "cells": 0, "dedupe_bytes": 0, "other_bytes": 0}
    keys = list(client.scan_iter(match=f"{root}:*", count=2000))
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
            if b":r:" in key:
                pipe.hlen(key)
        replies = iter(pipe.execute())
        for key in chunk:
            size = next(replies) or 0
            if b":r:" in key:
                totals["rollup_bytes"] += size
                totals["cells"] += next(replies)
            elif b":dd:" in key:
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


# --- one run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_redis(external_url: str | None) -> Iterator[str]:
    """A redis-server of its own for one measurement, unless INFRAPRISM_REDIS_URL names one."""
    if external_url:
        yield external_url
        return
    service = start_redis()
    try:
        yield service.address
    finally:
        service.stop()


@dataclass
class OrderResult:
    order: str
    raw: float
    faust: float
    aggregator: AggregatorRun | None
    failure: str | None = None


def measure_order(order: str, calls: list[workload.Call], bootstrap: str, external_redis: str | None) -> OrderResult:
    messages = workload.ORDERS[order](calls)
    count = len(messages)
    expected = expected_totals(messages)
    topic = f"bench-{order}-{uuid.uuid4().hex[:8]}"
    say(f"[{order}] producing {count:,} messages to {topic} ...")
    asyncio.run(fill_topic(bootstrap, topic, messages))

    raw = count / asyncio.run(raw_decode(bootstrap, topic, count))
    say(f"[{order}] raw aiokafka consume+decode : {raw:10,.0f} events/s")
    faust = count / faust_decode(bootstrap, topic, count)
    say(f"[{order}] faust agent decode only     : {faust:10,.0f} events/s")
    prefix = f"b{topic}"
    with fresh_redis(external_redis) as redis_url:
        try:
            run = run_aggregator(bootstrap, redis_url, topic, prefix, messages, expected)
        except CheckFailed as exc:
            say(f"[{order}] CHECK FAILED: {exc}")
            return OrderResult(order, raw, faust, None, str(exc).splitlines()[0])
        c = run.counters
        say(
            f"[{order}] aggregator (all guarantees) : {run.events_per_s:10,.0f} events/s "
            f"({run.events_per_s / faust:.2f}x faust, {run.events_per_s / raw:.2f}x raw)"
        )
        say(f"[{order}] check: {run.check}: exact")
        refused = c.get("infraprism_apply_seconds_count", 0) - c.get("infraprism_batch_size_events_count", 0)
        say(
            f"[{order}] aggregator counters: {c.get('infraprism_events_applied_total', 0):,.0f} applied, "
            f"{c.get('infraprism_events_duplicate_total', 0):,.0f} duplicates skipped, "
            f"{c.get('infraprism_events_dead_lettered_total', 0):,.0f} dead-lettered, "
            f"{c.get('infraprism_batch_size_events_count', 0):,.0f} batches applied, "
            f"{refused:,.0f} apply calls refused (duplicates or fence)"
        )
        mem = memory(redis_url, prefix, count)
        say(
            f"[{order}] rollup cells: {mem['cells']:,}  bytes/cell: {mem['bytes_per_cell']:.0f}; "
            f"MB per million events: rollups {mem['rollup_mb_per_million_events']:.1f}, "
            f"dedupe {mem['dedupe_mb_per_million_events']:.1f}, all {mem['all_mb_per_million_events']:.1f}"
        )
    return OrderResult(order, raw, faust, run)


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{head} + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else head


def table(results: list[OrderResult]) -> str:
    rows = [
        "| order | raw events/s | faust events/s | aggregator events/s | aggregator / faust | aggregator / raw "
        "| Redis CPU µs/event | Redis main thread µs/event | Redis bytes/event |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.aggregator is None:
            rows.append(f"| {r.order} | {r.raw:,.0f} | {r.faust:,.0f} | **CHECK FAILED**: {r.failure} | | | | | |")
            continue
        a = r.aggregator
        main = "n/a" if a.redis_main_cpu_us is None else f"{a.redis_main_cpu_us:.1f}"
        rows.append(
            f"| {r.order} | {r.raw:,.0f} | {r.faust:,.0f} | {a.events_per_s:,.0f} "
            f"| {a.events_per_s / r.faust:.2f}x | {a.events_per_s / r.raw:.2f}x "
            f"| {a.redis_cpu_us:.1f} | {main} | {a.bytes_per_event:,.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000, help="distinct events (retries come on top)")
    parser.add_argument("--orders", default="live,backfill", help="comma-separated: live, backfill")
    parser.add_argument(
        "--freshness-seconds",
        type=int,
        default=None,
        help="0 skips the freshness run; default 20, or 5 when --events < 100,000",
    )
    parser.add_argument("--freshness-rate", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    orders = [order.strip() for order in args.orders.split(",") if order.strip()]
    if unknown := [order for order in orders if order not in workload.ORDERS]:
        parser.error(f"unknown order(s) {unknown}; choose from {sorted(workload.ORDERS)}")
    freshness_seconds = args.freshness_seconds
    if freshness_seconds is None:
        freshness_seconds = 20 if args.events >= 100_000 else 5

    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    services = []
    bootstrap = os.environ.get("INFRAPRISM_KAFKA_BOOTSTRAP")
    external_redis = os.environ.get("INFRAPRISM_REDIS_URL")
    if not bootstrap:
        services.append(start_broker())
        bootstrap = services[-1].address
    results: list[OrderResult] = []
    fresh: Freshness | str | None = None
    try:
        calls = workload.calls(args.events, seed=args.seed)
        say(f"workload: {workload.describe(calls)}")
        for order in orders:
            results.append(measure_order(order, calls, bootstrap, external_redis))
        if freshness_seconds:
            with fresh_redis(external_redis) as redis_url:
                try:
                    fresh = freshness(bootstrap, redis_url, args.freshness_rate, freshness_seconds)
                    say(f"[freshness] check: {fresh.check}: exact")
                except CheckFailed as exc:
                    say(f"[freshness] CHECK FAILED: {exc}")
                    fresh = str(exc).splitlines()[0]
    finally:
        for service in reversed(services):
            service.stop()
    load_after = os.getloadavg()

    print()
    print(
        f"`{' '.join(['.venv/bin/python', 'bench/ingest.py', *sys.argv[1:]])}` at {commit()}, {started}; "
        f"{args.events:,} events of the production-like mix plus "
        f"{round(args.events * workload.RETRY_SHARE):,} retries; events/s and per-event figures count "
        f"messages read, retries included"
    )
    print()
    print(table(results))
    print()
    if isinstance(fresh, Freshness):
        print(
            f"Freshness at a steady {args.freshness_rate:,} events/s of the live mix for {freshness_seconds} s "
            f"({fresh.events:,} events counted): p50 <= {fresh.p50_s} s, p99 <= {fresh.p99_s} s "
            "(histogram bucket bounds)."
        )
    elif isinstance(fresh, str):
        print(f"Freshness: **CHECK FAILED**: {fresh}")
    print(
        f"Load average before the run {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} cores)."
    )
    if isinstance(fresh, str) or any(r.aggregator is None for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()

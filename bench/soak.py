"""Soak: the whole write path at a steady rate for minutes, under kill -9 and a broker pause.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 5000] [--qps 50]

Starts its own Tansu broker, redis-server, one aggregator process and the API
(`infraprism api`, one worker) with a key per project. Then, for `--minutes`:

- produces bench/workload.py's live mix (events without `cost`, three entity
  types, two projects, every timestamp encoding, sessions, 2% exact producer
  retries) at a steady `--rate`, plus one malformed message every 10 s so the
  dead-letter path runs. The producer keeps every payload until the broker
  acknowledges it and sends it again when a send fails (a resent copy may land
  twice; the aggregator dedupes by event_id);
- queries the API at `--qps` in total, open loop, from a process of its own:
  /costs by entity and by model, hourly and daily series, /entities/top,
  /models, /compare, over days covering the events; every status and latency
  is kept;
- kill -9s the aggregator every minute (every 30 s when `--minutes` < 4) and
  restarts it at once; once, between the two kills nearest the middle, stops
  the broker for 20 s (SIGSTOP, then SIGCONT);
- samples Redis `used_memory` and the dedupe sets' memory every 10 s. The
  aggregator runs with a dedupe window of `--dedupe-window-days` (about 2
  minutes by default), so the window fills and old slot sets expire in the soak.

Afterwards it waits until the offsets stored in Redis reach the log end, reads
the topic and the DLQ back, and checks per project, exactly, the events, input
and output tokens and nano-dollars of the distinct events produced (priced by
`parse_event`, deduped by (project_id, event_id)) against the daily TOTAL
rollups in Redis and against `/v1/analytics/costs`. It prints a markdown
summary for docs/benchmarks.md, and exits 1 when a check fails, an answer was
5xx, a message was lost, or the aggregator exited without being killed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from infraprism.core.cell import COST, EVENTS, INPUT, OUTPUT, Cell

# The soak runs a copy of the working tree's code (`run_from_snapshot`): REPO_ROOT is that copy,
# SOURCE_ROOT the checkout it was taken from (for git, and to notice edits made meanwhile).
SNAPSHOT_ENV = "SOAK_CODE_SNAPSHOT"
SOURCE_ENV = "SOAK_CODE_SOURCE"
PRODUCT_DIRS = ("infraprism", "pipeline", "api", "bench")
REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = Path(os.environ.get(SOURCE_ENV, str(REPO_ROOT)))
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT))

import workload  # noqa: E402
from ingest import metric_counters  # noqa: E402

from infraprism.core.buckets import Granularity, day_label  # noqa: E402
from infraprism.core.events import InvalidEvent, parse_event  # noqa: E402
from infraprism.core.keys import SEP, Dimension, KeyLayout  # noqa: E402
from infraprism.dev.local_services import Service, free_port, start_broker, start_redis  # noqa: E402
from infraprism.pipeline.topics import ensure_topics  # noqa: E402
from infraprism.settings import Settings  # noqa: E402
from infraprism.stores import apikeys  # noqa: E402

PARTITIONS = 4
PREFIX = "soak"
CHUNK_SECONDS = 60  # traffic is drawn a minute at a time, in parallel, before the soak starts
MALFORMED_EVERY_S = 10
SAMPLE_EVERY_S = 10
OFFSETS_POLL_S = 0.25
METRICS_SCRAPE_S = 2.0
PRODUCER_TICK_S = 0.02
# Below the 20 s broker stop, so sends during it fail and take the resend path.
PRODUCER_REQUEST_TIMEOUT_MS = 10_000
CATCH_UP_STALL_S = 180  # the stored offsets did not move for this long: the aggregator is stuck
LOG_TAIL_LINES = 40
SLOWLOG_OVER_US = 10_000
SLOWLOG_MAX_LEN = 100_000

STARTED = time.monotonic()


def run_from_snapshot() -> None:
    """Re-execute this script from a copy of the product's code, unless this is that copy.

    Other people edit the working tree while a soak runs; every process of one
    soak (the reference pricing, each aggregator run, the API) must run the same
    code, or a difference may only be two versions disagreeing.
    """
    if os.environ.get(SNAPSHOT_ENV):
        return
    snapshot = Path(tempfile.mkdtemp(prefix="infraprism-soak-code-"))
    for name in PRODUCT_DIRS:
        shutil.copytree(REPO_ROOT / name, snapshot / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.environ[SNAPSHOT_ENV] = str(snapshot)
    os.environ[SOURCE_ENV] = str(REPO_ROOT)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, str(snapshot / "bench" / "soak.py"), *sys.argv[1:]])  # noqa: S606


def code_fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every product source file under `root`."""
    out = {}
    for name in PRODUCT_DIRS[:3]:
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".lua"):
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def say(text: str) -> None:
    """A progress line, with the seconds since the bench started."""
    print(f"{time.monotonic() - STARTED:7.1f}s {text}", flush=True)


class SoakFailed(RuntimeError):
    """The soak could not run to its checks (a service died, the aggregator got stuck)."""


class Message(NamedTuple):
    key: bytes
    value: bytes


# --- the traffic --------------------------------------------------------------------------------


def live_mix(count: int, start_ms: int, span_ms: int, seed: int) -> list[Message]:
    """bench/workload.py's live order: near time order, 1% late by up to a day, 2% retries."""
    return [
        Message(m[0], m[1])
        for m in workload.live(workload.calls(count, seed=seed), start_ms=start_ms, span_ms=span_ms, seed=seed)
    ]


def retry_share() -> float:
    return float(workload.RETRY_SHARE)


@dataclass
class Reference:
    """What the distinct events of some messages add up to, priced and validated like the aggregator."""

    totals: dict[str, list[int]] = field(default_factory=dict)  # project -> [events, input, output, cost nano]
    # (project, model, provider) -> [events, cost nano, of which events without `cost`]: where a total
    # differs, which model it is
    by_model: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    first_ts_ms: int = 2**63
    last_ts_ms: int = -(2**63)
    event_keys: list[tuple[str, str]] = field(default_factory=list)  # (project_id, event_id) of each

    def merge(self, other: Reference) -> None:
        for project, counters in other.totals.items():
            total = self.totals.setdefault(project, [0, 0, 0, 0])
            for i, value in enumerate(counters):
                total[i] += value
        for model, counters in other.by_model.items():
            total = self.by_model.setdefault(model, [0, 0, 0])
            for i, value in enumerate(counters):
                total[i] += value
        self.first_ts_ms = min(self.first_ts_ms, other.first_ts_ms)
        self.last_ts_ms = max(self.last_ts_ms, other.last_ts_ms)
        self.event_keys.extend(other.event_keys)


def reference_of(messages: list[Message]) -> Reference:
    """Per project, the distinct events' totals: parse_event prices an event without `cost`."""
    reference = Reference()
    seen: dict[tuple[str, str], bytes] = {}
    for message in messages:
        try:
            event = parse_event(message.value)
        except InvalidEvent as exc:
            raise SoakFailed(f"the traffic holds an invalid event ({exc}): {message.value[:200]!r}") from None
        identity = (event.project_id, event.event_id)
        if (earlier := seen.get(identity)) is not None:
            if earlier != message.value:
                raise SoakFailed(f"the traffic sends {identity} with two different payloads")
            continue
        seen[identity] = message.value
        total = reference.totals.setdefault(event.project_id, [0, 0, 0, 0])
        total[0] += 1
        total[1] += event.input_tokens
        total[2] += event.output_tokens
        total[3] += event.cost_nano
        model = reference.by_model.setdefault((event.project_id, event.model, event.provider), [0, 0, 0])
        model[0] += 1
        model[1] += event.cost_nano
        model[2] += b'"cost"' not in message.value
        reference.first_ts_ms = min(reference.first_ts_ms, event.ts_ms)
        reference.last_ts_ms = max(reference.last_ts_ms, event.ts_ms)
    reference.event_keys = list(seen)
    return reference


def traffic_chunk(count: int, start_ms: int, span_ms: int, seed: int) -> tuple[list[Message], Reference, str]:
    """One chunk of live traffic (runs in a pool process): its messages, their reference, the generator."""
    messages = live_mix(count, start_ms, span_ms, seed)
    return messages, reference_of(messages), "bench/workload.py live()"


def _bad_event(n: int, **changes: Any) -> bytes:
    event: dict[str, Any] = {
        "event_id": f"soak-bad-{n}",
        "timestamp": int(time.time() * 1000),
        "entity_type": "customer",
        "entity_id": f"bad-{n}",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 10,
        "cost": 0.001,
    }
    for name, value in changes.items():
        if value is None:
            event.pop(name)
        else:
            event[name] = value
    return orjson.dumps(event)


MALFORMED_KINDS: list[Callable[[int], bytes]] = [
    lambda n: b'{"event_id": "soak-bad-%d", "timestamp": 17' % n,  # cut JSON
    lambda n: b'\xff\xfe{"event_id": "soak-bad-%d"}' % n,  # not UTF-8
    lambda n: _bad_event(n, model=None),
    lambda n: _bad_event(n, input_tokens=10**12 + 1),
    lambda n: _bad_event(n, cost=1_000_000.5),
    lambda n: _bad_event(n, latency_ms=86_400_001),
    lambda n: _bad_event(n, model="soak-no-such-model", cost=None),
    lambda n: _bad_event(n, timestamp="yesterday"),
]


def malformed_messages(count: int) -> list[Message]:
    """`count` distinct messages the contract refuses, of every kind in turn."""
    out = []
    for n in range(count):
        value = MALFORMED_KINDS[n % len(MALFORMED_KINDS)](n)
        try:
            parse_event(value)
        except InvalidEvent:
            out.append(Message(f"bad-{n}".encode(), value))
            continue
        raise SoakFailed(f"parse_event accepted a message the contract refuses: {value!r}")
    return out


@dataclass
class Traffic:
    messages: list[Message]  # in send order
    reference: Reference
    malformed: set[bytes]
    generator: str
    retries: int  # messages that repeat an earlier one byte for byte
    drawn_in_s: float = 0.0  # the events' timestamps trail their sends by this, on top of the mix's lateness


def make_traffic(rate: int, seconds: int, start_ms: int, seed: int) -> Traffic:
    """`rate * seconds` messages in live order, drawn a chunk at a time on every core."""
    chunks = [(c, min(CHUNK_SECONDS, seconds - c)) for c in range(0, seconds, CHUNK_SECONDS)]
    counts = [round(rate * span_s / (1 + retry_share())) for _, span_s in chunks]
    starts = [start_ms + c * 1000 for c, _ in chunks]
    spans = [span_s * 1000 for _, span_s in chunks]
    seeds = [seed * 1000 + i for i in range(len(chunks))]
    messages: list[Message] = []
    reference = Reference()
    generators = set()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for chunk_messages, chunk_reference, generator in pool.map(traffic_chunk, counts, starts, spans, seeds):
            messages.extend(chunk_messages)
            reference.merge(chunk_reference)
            generators.add(generator)
    if len(set(reference.event_keys)) != len(reference.event_keys):
        raise SoakFailed("two chunks of traffic share a (project_id, event_id)")
    retries = len(messages) - len(reference.event_keys)
    bad = malformed_messages(max(1, seconds // MALFORMED_EVERY_S))
    step = len(messages) // (len(bad) + 1)
    for n, message in reversed(list(enumerate(bad, start=1))):
        messages.insert(n * step, message)
    return Traffic(messages, reference, {m.value for m in bad}, " and ".join(sorted(generators)), retries)


# --- the producer -------------------------------------------------------------------------------


class SteadyProducer:
    """Sends message i at start + i / rate; a send that fails is sent again until the broker acks it."""

    def __init__(self, bootstrap: str, topic: str, messages: list[Message], rate: int) -> None:
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.acked = bytearray(len(messages))
        self.acked_count = 0
        self.resend: deque[int] = deque()
        self.in_flight = 0
        self.failed_sends = 0  # sends that raised or whose future failed; each was sent again
        self.max_behind_s = 0.0  # how far behind its schedule the producer fell (the broker stop)
        self.finished_at = 0.0

    def _settled(self, index: int, future: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            self.failed_sends += 1
            self.resend.append(index)
            return
        if not self.acked[index]:
            self.acked[index] = 1
            self.acked_count += 1

    async def _send(self, producer: AIOKafkaProducer, index: int) -> bool:
        key, value = self.messages[index]
        try:
            future = await producer.send(self.topic, value, key=key)
        except KafkaError:
            self.failed_sends += 1
            self.resend.appendleft(index)
            return False
        self.in_flight += 1
        future.add_done_callback(lambda settled, index=index: self._settled(index, settled))
        return True

    async def run(self, start: float) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS
        )
        await producer.start()
        try:
            next_index = 0
            while next_index < len(self.messages) or self.resend or self.in_flight:
                due = min(len(self.messages), int((time.monotonic() - start) * self.rate) + 1)
                if next_index < due:
                    self.max_behind_s = max(self.max_behind_s, (due - next_index) / self.rate)
                healthy = True
                while healthy and self.resend:
                    healthy = await self._send(producer, self.resend.popleft())
                while healthy and next_index < due:
                    healthy = await self._send(producer, next_index)
                    next_index += 1  # a failed one waits in self.resend
                await asyncio.sleep(PRODUCER_TICK_S if healthy else 0.5)
            self.finished_at = time.monotonic()
        finally:
            await producer.stop()


# --- the API clients (a process of their own, so their timing is not the producer's) ------------


def query_mix(first_day: date, last_day: date) -> list[tuple[str, str, dict[str, str]]]:
    days = {"start_date": first_day.isoformat(), "end_date": last_day.isoformat()}
    yesterday = (last_day - timedelta(days=1)).isoformat()
    compare = {
        "period1_start": last_day.isoformat(),
        "period1_end": last_day.isoformat(),
        "period2_start": first_day.isoformat(),
        "period2_end": yesterday,
    }
    return [
        ("costs by entity", "/v1/analytics/costs", days | {"group_by": "entity"}),
        ("costs by model", "/v1/analytics/costs", days | {"group_by": "model"}),
        ("hourly series", "/v1/analytics/costs/timeseries", days | {"interval": "hour"}),
        ("daily series, customers", "/v1/analytics/costs/timeseries", days | {"entity_type": "customer"}),
        ("top 10 entities", "/v1/analytics/entities/top", days | {"limit": "10"}),
        ("models", "/v1/analytics/models", days),
        ("compare", "/v1/analytics/compare", compare),
    ]


Answer = tuple[str, int, float, float]  # (query, status or 0 for no answer, latency ms, sent at s into the soak)


async def _query_load(
    base_url: str, keys: dict[str, str], first_day: date, last_day: date, qps: float, seconds: float, soak_start: float
) -> tuple[list[Answer], Counter[str]]:
    mix = query_mix(first_day, last_day)
    answers: list[Answer] = []
    failures: Counter[str] = Counter()
    projects = sorted(keys)
    # uvicorn closes a keep-alive connection idle for 5 s; a client keeping it as long races that
    # close and may send on a closing socket (RemoteProtocolError, no answer). Expire sooner.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:

        async def one(name: str, path: str, params: dict[str, str], key: str) -> None:
            sent_s = time.monotonic() - soak_start  # CLOCK_MONOTONIC: the same clock in every process
            started = time.perf_counter()
            try:
                response = await client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError as exc:
                answers.append((name, 0, (time.perf_counter() - started) * 1000, sent_s))
                failures[f"no answer ({type(exc).__name__}: {exc}) to {name}, sent at t = {sent_s:.0f} s"] += 1
                return
            answers.append((name, response.status_code, (time.perf_counter() - started) * 1000, sent_s))
            if response.status_code >= 400:
                failures[f"{response.status_code} {name}: {response.text[:200]}"] += 1

        tasks = set()
        start = time.monotonic()
        for n in itertools.count():
            due = start + n / qps
            if due - start >= seconds:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            name, path, params = mix[n % len(mix)]
            key = keys[projects[(n // len(mix)) % len(projects)]]
            task = asyncio.create_task(one(name, path, params, key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return answers, failures


def run_query_load(
    base_url: str, keys: dict[str, str], first_day: date, last_day: date, qps: float, seconds: float, soak_start: float
) -> tuple[list[Answer], Counter[str]]:
    """Open loop: request n goes out at start + n / qps whatever the earlier ones are doing."""
    return asyncio.run(_query_load(base_url, keys, first_day, last_day, qps, seconds, soak_start))


# --- the aggregator runs ------------------------------------------------------------------------


@dataclass
class AggregatorRun:
    """One aggregator process, in its own process group, its stdout and stderr in a file of its own."""

    number: int
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes]
    started_at: float
    killed_at: float | None = None
    counters: dict[str, float] = field(default_factory=dict)  # its last metrics scrape
    outlived_by: int = 0  # processes of its group still alive 5 s after its kill -9 (the decoder)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def error_lines(self) -> list[str]:
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if " ERROR " in line or "Traceback" in line or " CRITICAL " in line
        ]

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie still counts for killpg(0): ours is reaped by wait(), so whatever answers is another member.
        return True


class Aggregators:
    """Starts the aggregator, kill -9s and restarts it, and notices when it exits by itself."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.runs: list[AggregatorRun] = []
        self.exits: list[tuple[int, int, str]] = []  # (run, exit code, log tail) of exits we did not cause

    @property
    def current(self) -> AggregatorRun:
        return self.runs[-1]

    def start(self) -> AggregatorRun:
        number = len(self.runs) + 1
        log_path = self.log_dir / f"aggregator-{number}.log"
        metrics_port = free_port()
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "infraprism.cli", "aggregator", "--metrics-port", str(metrics_port)],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        run = AggregatorRun(number, log_path, metrics_port, process, time.monotonic())
        self.runs.append(run)
        return run

    async def kill_and_restart(self, applied_now: Callable[[], Awaitable[int]]) -> tuple[float, int]:
        """kill -9 (no flush, no commit, no leaving the group), then a new process at once.

        Returns when it was killed and the messages applied then: read once it is dead (a batch
        whose script Redis had received still lands), so any later move is the new run's.
        """
        run = self.current
        await self.scrape(run)
        killed_at = time.monotonic()
        if run.process.poll() is None:
            os.kill(run.process.pid, signal.SIGKILL)
        run.process.wait()
        run.killed_at = killed_at
        applied = await applied_now()
        self.start()
        asyncio.get_running_loop().call_later(5, self._count_survivors, run)
        return killed_at, applied

    def _count_survivors(self, run: AggregatorRun) -> None:
        run.outlived_by = int(run.group_alive())

    async def scrape(self, run: AggregatorRun) -> None:
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{run.metrics_port}/metrics", timeout=1.0)
            run.counters = metric_counters(response.text)

    async def watch(self, stop: asyncio.Event) -> None:
        """Scrape the current run's metrics; restart a run that exited by itself, and record it."""
        while not stop.is_set():
            run = self.current
            if run.process.poll() is not None and run.killed_at is None:
                self.exits.append((run.number, run.process.returncode, run.log_tail()))
                say(f"aggregator run {run.number} EXITED by itself with code {run.process.returncode}; restarting")
                run.killed_at = time.monotonic()
                self.start()
            else:
                await self.scrape(run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), METRICS_SCRAPE_S)

    def stop(self) -> int | None:
        """SIGTERM the current run (its exit code), then SIGKILL whatever is left of any run's group."""
        run = self.current
        code = None
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                code = run.process.wait(60)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        for each in self.runs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(each.process.pid, signal.SIGKILL)
        return code

    def counter_sum(self, name: str) -> float:
        return sum(run.counters.get(name, 0.0) for run in self.runs)


# --- the API ------------------------------------------------------------------------------------


def start_api(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "infraprism.cli", "api", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SoakFailed(f"the API exited with code {process.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return process, base_url
        time.sleep(0.2)
    raise SoakFailed(f"the API was not ready within 60 s:\n{tail(log_path)}")


def stop_process(process: subprocess.Popen[bytes], signum: int = signal.SIGINT) -> None:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# --- Redis and the topics -----------------------------------------------------------------------


@dataclass
class MemorySample:
    t_s: float
    used_memory: int
    dedupe_bytes: int  # MEMORY USAGE (every member) of every dedupe slot set
    dedupe_keys: int
    keys: int
    applied_offsets: int  # messages the stored offsets say are applied
    acked: int  # messages the broker had acknowledged
    load_1m: float
    worker: str = ""  # the current aggregator run and its counters


async def stored_offsets(client: aioredis.Redis, offsets_key: str) -> dict[int, int]:
    return {int(p): int(o) for p, o in (await client.hgetall(offsets_key)).items()}


async def sample_memory(
    client: aioredis.Redis, layout: KeyLayout, offsets_key: str, t_s: float, acked: int
) -> MemorySample:
    used = int((await client.info("memory"))["used_memory"])
    dedupe_keys = [key async for key in client.scan_iter(match=f"{layout.root}:*:dd:*", count=5000)]
    sizes = []
    if dedupe_keys:
        async with client.pipeline(transaction=False) as pipe:
            for key in dedupe_keys:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
    return MemorySample(
        t_s,
        used,
        sum(size or 0 for size in sizes),
        len(dedupe_keys),
        int(await client.dbsize()),
        sum((await stored_offsets(client, offsets_key)).values()),
        acked,
        os.getloadavg()[0],
    )


async def log_ends(bootstrap: str, topic: str, timeout_s: float = 60.0) -> dict[int, int]:
    """Each partition's log end, from a Fetch response's high watermark.

    Not ListOffsets: Tansu answers ListOffsets(latest) with the last record batch's
    base offset + 1 (see tests/pipeline/helpers.py end_offsets).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=1024,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(timeout_s):
            while any(consumer.highwater(tp) is None for tp in tps):
                await consumer.getmany(timeout_ms=100)
        return {tp.partition: int(consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, ends: dict[int, int], each: Callable[[bytes | None], None]) -> None:
    """Every record of `topic` from the log start up to `ends`, handed to `each`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(ends)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp for tp in tps if ends[tp.partition] > 0}
        async with asyncio.timeout(600):
            while left:
                for tp, records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).items():
                    for record in records:
                        if record.offset < ends[tp.partition]:
                            each(record.value)
                    if records and records[-1].offset + 1 >= ends[tp.partition]:
                        left.discard(tp)
    finally:
        await consumer.stop()


def dead_letter_payload(value: bytes) -> bytes:
    """The rejected message a dead-letter record holds (text when it was UTF-8, else base64)."""
    record = orjson.loads(value)
    if record.get("payload_base64") is not None:
        return base64.b64decode(record["payload_base64"])
    return str(record.get("payload") or "").encode()


# --- the checks ---------------------------------------------------------------------------------


def covered_days(reference: Reference) -> list[date]:
    first = datetime.fromtimestamp(reference.first_ts_ms // 1000, UTC).date()
    last = datetime.fromtimestamp(reference.last_ts_ms // 1000, UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def redis_totals(
    client: aioredis.Redis, layout: KeyLayout, projects: list[str], days: list[date]
) -> tuple[dict[str, list[int]], list[str]]:
    """Per project, [events, input, output, cost nano] summed over the daily TOTAL cells of `days`;
    and any daily TOTAL key of another day (there should be none)."""
    totals: dict[str, list[int]] = {}
    outside: list[str] = []
    labels = {day_label(day) for day in days}
    for project in projects:
        total = [0, 0, 0, 0]
        for day in days:
            cell = await client.hget(layout.rollup(project, Dimension.TOTAL, Granularity.DAY, day_label(day)), "")
            if cell is not None:
                counters = Cell.unpack(cell)
                for i, index in enumerate((EVENTS, INPUT, OUTPUT, COST)):
                    total[i] += counters[index]
        totals[project] = total
        pattern = layout.rollup(project, Dimension.TOTAL, Granularity.DAY, "*")
        async for key in client.scan_iter(match=pattern, count=1000):
            if key.decode().rsplit(":", 1)[1] not in labels:
                outside.append(key.decode())
    return totals, outside


async def redis_model_totals(
    client: aioredis.Redis, layout: KeyLayout, projects: list[str], days: list[date]
) -> dict[tuple[str, str, str], list[int]]:
    """(project, model, provider) -> [events, cost nano] summed over the daily MODEL cells of `days`."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    for project in projects:
        for day in days:
            cells = await client.hgetall(layout.rollup(project, Dimension.MODEL, Granularity.DAY, day_label(day)))
            for member, cell in cells.items():
                model, provider = member.decode().split(SEP, 1)
                counters = Cell.unpack(cell)
                total = totals.setdefault((project, model, provider), [0, 0])
                total[0] += counters[EVENTS]
                total[1] += counters[COST]
    return totals


def nano_to_micro_usd(cost_nano: int) -> Decimal:
    return (Decimal(cost_nano) / 10**9).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


async def api_totals(base_url: str, key: str, days: list[date]) -> dict[str, Any]:
    """/costs without group_by over the days: the row's tokens and the summary's events and cost."""
    params = {"start_date": days[0].isoformat(), "end_date": days[-1].isoformat()}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get("/v1/analytics/costs", params=params, headers={"Authorization": f"Bearer {key}"})
    if response.status_code != 200:
        return {"error": f"{response.status_code} {response.text[:300]}"}
    body = json.loads(response.text, parse_float=Decimal)
    row = body["data"][0]
    return {
        "events": body["summary"]["total_events"],
        "input": row["total_input_tokens"],
        "output": row["total_output_tokens"],
        "cost_usd": Decimal(body["summary"]["total_cost"]),
        "row_events": row["total_events"],
        "row_cost_usd": Decimal(row["total_cost"]),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- one soak -----------------------------------------------------------------------------------


@dataclass
class Schedule:
    duration_s: int
    kill_every_s: int
    kills_at_s: list[int]
    pause_at_s: float
    pause_s: float

    @classmethod
    def of(cls, minutes: int, pause_s: float) -> Schedule:
        duration_s = minutes * 60
        kill_every_s = 60 if minutes >= 4 else 30
        kills = list(range(kill_every_s, duration_s, kill_every_s))
        middle = min(kills, key=lambda at: abs(at - duration_s / 2)) if kills else duration_s // 2
        # Centred between the middle kill and the next one, so no kill falls inside the stop.
        pause_at = middle + (kill_every_s - pause_s) / 2 if kills else (duration_s - pause_s) / 2
        return cls(duration_s, kill_every_s, kills, pause_at, pause_s)


@dataclass
class Outcome:
    traffic: Traffic
    producer: SteadyProducer
    aggregators: Aggregators
    schedule: Schedule
    answers: list[Answer]
    answer_failures: Counter[str]
    samples: list[MemorySample]
    recoveries_s: list[float | None]
    pause_window: tuple[float, float]
    catch_up_s: float
    final_exit_code: int | None
    topic_records: int
    topic_copies: list[int]  # per distinct payload produced, its records on the topic
    malformed_records: int  # records on the topic of the malformed payloads
    unknown_records: int
    dlq_records: int
    dlq_payloads: Counter[bytes]
    halted: dict[bytes, bytes]
    days: list[date]
    redis: dict[str, list[int]]
    redis_by_model: dict[tuple[str, str, str], list[int]]
    outside_days: list[str]
    api: dict[str, dict[str, Any]]
    projects_in_redis: set[str]
    redis_offsets: dict[int, int]
    slow_commands: list[dict[str, Any]]  # Redis SLOWLOG: commands over 10 ms
    log_ends: dict[int, int]


async def run_soak(args: argparse.Namespace, traffic: Traffic, broker: Service, redis_url: str) -> Outcome:
    schedule = Schedule.of(args.minutes, args.broker_pause_seconds)
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    group = f"agg-{topic}"
    layout = KeyLayout(PREFIX)
    offsets_key = layout.offsets(topic, group)
    env = dict(
        os.environ,
        INFRAPRISM_KAFKA_BOOTSTRAP=broker.address,
        INFRAPRISM_REDIS_URL=redis_url,
        INFRAPRISM_KEY_PREFIX=PREFIX,
        INFRAPRISM_EVENTS_TOPIC=topic,
        INFRAPRISM_DLQ_TOPIC=f"{topic}.dlq",
        INFRAPRISM_DELTAS_TOPIC=f"{topic}.deltas",
        INFRAPRISM_AGGREGATOR_GROUP=group,
        INFRAPRISM_TOPIC_PARTITIONS=str(PARTITIONS),
        INFRAPRISM_DEDUPE_WINDOW_DAYS=str(args.dedupe_window_days),
        INFRAPRISM_API_WORKERS="1",
        INFRAPRISM_API_RATE_LIMIT_PER_SECOND="0",  # its readers poll as fast as they can, by design
        PYTHONPATH=str(REPO_ROOT),  # the snapshot's code, not the working tree's
    )
    await ensure_topics(broker.address, [topic, f"{topic}.dlq", f"{topic}.deltas"], PARTITIONS)
    settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
    projects = sorted(traffic.reference.totals)
    keys = {project: apikeys.create_key(settings, project, "soak")[1] for project in projects}
    log_dir = Path(tempfile.mkdtemp(prefix="infraprism-soak-"))
    say(f"logs in {log_dir}")
    api_process, base_url = start_api(env, log_dir / "api.log")
    client = aioredis.Redis.from_url(redis_url)
    # What blocks Redis (and so the API's reads) for long: every command over 10 ms, kept.
    await client.config_set("slowlog-log-slower-than", SLOWLOG_OVER_US)
    await client.config_set("slowlog-max-len", SLOWLOG_MAX_LEN)
    aggregators = Aggregators(env, log_dir)
    producer = SteadyProducer(broker.address, topic, traffic.messages, args.rate)
    stop_watching = asyncio.Event()
    samples: list[MemorySample] = []
    offsets_series: list[tuple[float, int]] = []
    now = datetime.now(UTC)
    first_day = (now - timedelta(days=1, minutes=5)).date()
    last_day = (now + timedelta(seconds=schedule.duration_s, hours=1)).date()
    try:
        aggregators.start()
        query_pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        start = time.monotonic()
        loop = asyncio.get_running_loop()
        query_load = loop.run_in_executor(
            query_pool, run_query_load, base_url, keys, first_day, last_day, args.qps, schedule.duration_s, start
        )
        producing = asyncio.create_task(producer.run(start))
        watching = asyncio.create_task(aggregators.watch(stop_watching))

        async def sample_every_10_s() -> None:
            for n in itertools.count():
                await asyncio.sleep(max(0.0, start + n * SAMPLE_EVERY_S - time.monotonic()))
                elapsed_s = time.monotonic() - start
                sample = await sample_memory(client, layout, offsets_key, elapsed_s, producer.acked_count)
                run = aggregators.current
                c = run.counters
                sample.worker = (
                    f"run {run.number}: {c.get('infraprism_events_applied_total', 0):,.0f} applied, "
                    f"{c.get('infraprism_events_duplicate_total', 0):,.0f} dup, "
                    f"{c.get('infraprism_batches_fenced_total', 0):,.0f} fenced, "
                    f"{c.get('infraprism_retries_total', 0):,.0f} retries"
                )
                samples.append(sample)
                say(
                    f"t={sample.t_s:5.0f}s used_memory {sample.used_memory / 2**20:7.1f} MB, dedupe sets "
                    f"{sample.dedupe_bytes / 2**20:6.1f} MB in {sample.dedupe_keys} keys, acked {sample.acked:,}, "
                    f"applied {sample.applied_offsets:,}, load {sample.load_1m:.2f}; {sample.worker}"
                )

        async def poll_offsets() -> None:
            while True:
                offsets_series.append((time.monotonic(), sum((await stored_offsets(client, offsets_key)).values())))
                await asyncio.sleep(OFFSETS_POLL_S)

        sampling = asyncio.create_task(sample_every_10_s())
        polling = asyncio.create_task(poll_offsets())

        async def applied_now() -> int:
            return sum((await stored_offsets(client, offsets_key)).values())

        restarts: list[tuple[float, int]] = []
        pause_window = (0.0, 0.0)
        events: list[tuple[float, str]] = [(at, "kill") for at in schedule.kills_at_s]
        events.append((schedule.pause_at_s, "pause"))
        for at, what in sorted(events):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            if what == "kill":
                killed_at, applied = await aggregators.kill_and_restart(applied_now)
                restarts.append((killed_at, applied))
                say(f"kill -9 of aggregator run {len(aggregators.runs) - 1}; run {len(aggregators.runs)} started")
            else:
                say(f"SIGSTOP of the broker for {schedule.pause_s:.0f} s")
                paused_at = time.monotonic()
                broker.pause()
                try:
                    await asyncio.sleep(schedule.pause_s)
                finally:
                    broker.resume()
                pause_window = (paused_at - start, time.monotonic() - start)
                say("SIGCONT of the broker")

        answers, answer_failures = await query_load
        query_pool.shutdown()
        say(f"queries done: {len(answers):,} answers")
        await producing
        say(
            f"producer done: {producer.acked_count:,} of {len(traffic.messages):,} messages acked, "
            f"{producer.failed_sends:,} failed sends resent, at most {producer.max_behind_s:.1f} s behind schedule"
        )
        ends = await log_ends(broker.address, topic)
        target = sum(ends.values())
        moved_at, last = time.monotonic(), -1
        while True:
            offsets = await stored_offsets(client, offsets_key)
            if all(offsets.get(p, 0) >= end for p, end in ends.items()):
                break
            if sum(offsets.values()) != last:
                moved_at, last = time.monotonic(), sum(offsets.values())
            elif time.monotonic() - moved_at > CATCH_UP_STALL_S:
                raise SoakFailed(
                    f"the aggregator applied nothing for {CATCH_UP_STALL_S} s at {last:,} of {target:,} messages "
                    f"(stored {offsets}, log ends {ends}); run {aggregators.current.number}'s log:\n"
                    f"{aggregators.current.log_tail()}"
                )
            await asyncio.sleep(0.25)
        catch_up_s = time.monotonic() - producer.finished_at
        say(f"caught up {catch_up_s:.1f} s after the last ack: stored offsets {offsets} = log ends")
        await aggregators.scrape(aggregators.current)
        stop_watching.set()
        await watching
        sampling.cancel()
        polling.cancel()
        samples.append(await sample_memory(client, layout, offsets_key, time.monotonic() - start, producer.acked_count))

        # The topic and the DLQ, read back.
        index_of: dict[bytes, int] = {}
        for message in traffic.messages:
            index_of.setdefault(message.value, len(index_of))
        copies = [0] * len(index_of)
        unknown = 0

        def count_copy(value: bytes | None) -> None:
            nonlocal unknown
            index = index_of.get(value) if value is not None else None
            if index is None:
                unknown += 1
            else:
                copies[index] += 1

        await read_topic(broker.address, topic, ends, count_copy)
        dlq_ends = await log_ends(broker.address, f"{topic}.dlq")
        dlq_payloads: Counter[bytes] = Counter()
        await read_topic(
            broker.address, f"{topic}.dlq", dlq_ends, lambda v: dlq_payloads.update([dead_letter_payload(v or b"{}")])
        )

        days = covered_days(traffic.reference)
        redis_sums, outside = await redis_totals(client, layout, projects, days)
        redis_by_model = await redis_model_totals(client, layout, projects, days)
        api = {project: await api_totals(base_url, keys[project], days) for project in projects}
        halted = await client.hgetall(layout.halted_partitions(topic, group))
        projects_in_redis = {p.decode() for p in await client.smembers(layout.projects())}
        final_offsets = await stored_offsets(client, offsets_key)
        slow_commands = await client.slowlog_get(SLOWLOG_MAX_LEN)
    finally:
        stop_watching.set()
        final_exit_code = aggregators.stop() if aggregators.runs else None
        stop_process(api_process)
        await client.aclose()

    recoveries: list[float | None] = []
    for killed_at, applied in restarts:
        resumed = next((t for t, s in offsets_series if t > killed_at and s > applied), None)
        recoveries.append(None if resumed is None else resumed - killed_at)
    return Outcome(
        traffic=traffic,
        producer=producer,
        aggregators=aggregators,
        schedule=schedule,
        answers=answers,
        answer_failures=answer_failures,
        samples=samples,
        recoveries_s=recoveries,
        pause_window=pause_window,
        catch_up_s=catch_up_s,
        final_exit_code=final_exit_code,
        topic_records=sum(ends.values()),
        topic_copies=copies,
        malformed_records=sum(copies[index_of[value]] for value in traffic.malformed),
        unknown_records=unknown,
        dlq_records=sum(dlq_ends.values()),
        dlq_payloads=dlq_payloads,
        halted=halted,
        days=days,
        redis=redis_sums,
        redis_by_model=redis_by_model,
        outside_days=outside,
        api=api,
        projects_in_redis=projects_in_redis,
        redis_offsets=final_offsets,
        slow_commands=slow_commands,
        log_ends=ends,
    )


# --- the report ---------------------------------------------------------------------------------


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603
            ["git", *args],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            cwd=SOURCE_ROOT,
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"`{head}` + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else f"`{head}`"


def window_latency(answers: list[Answer], until_s: float) -> str:
    """p50 / p99 of the answers to requests sent in the SAMPLE_EVERY_S seconds before `until_s`."""
    window = [ms for _, status, ms, sent_s in answers if status and until_s - SAMPLE_EVERY_S <= sent_s < until_s]
    return f"{percentile(window, 0.5):.0f} / {percentile(window, 0.99):.0f}" if window else ""


def megabytes(value: int) -> str:
    return f"{value / 2**20:,.1f}"


def code_note(snapshot_code: dict[str, str]) -> str:
    """Which code ran: the snapshot's fingerprint, and the files edited in the working tree meanwhile."""
    now = code_fingerprint(SOURCE_ROOT)
    edited = sorted(path for path in set(now) | set(snapshot_code) if now.get(path) != snapshot_code.get(path))
    digest = hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(snapshot_code.items())).encode()).hexdigest()
    note = f"Every process ran one copy of the code taken at the start (fingerprint `{digest[:12]}`)"
    if edited:
        return f"{note}; edited in the working tree during the soak, so not in this run: {', '.join(edited)}."
    return f"{note}, identical to the working tree at the end."


def report(
    args: argparse.Namespace, outcome: Outcome, started: str, load_before: tuple[float, ...], code: str
) -> list[str]:
    """Prints the markdown summary; returns what failed (empty when everything held)."""
    o = outcome
    failures: list[str] = []
    reference = o.traffic.reference.totals
    projects = sorted(reference)

    # Exactness, per project.
    exact_lines = []
    for project in projects:
        events, input_tokens, output_tokens, cost_nano = reference[project]
        stored = o.redis.get(project)
        api = o.api.get(project, {})
        api_expected = {
            "events": events,
            "input": input_tokens,
            "output": output_tokens,
            "cost_usd": nano_to_micro_usd(cost_nano),
            "row_events": events,
            "row_cost_usd": nano_to_micro_usd(cost_nano),
        }
        redis_equal = stored == reference[project]
        api_equal = all(api.get(name) == value for name, value in api_expected.items())
        if not redis_equal:
            failures.append(f"Redis totals of {project}: expected {reference[project]}, Redis has {stored}")
        if not api_equal:
            failures.append(f"API totals of {project}: expected {api_expected}, the API answered {api}")
        exact_lines.append(
            f"`{project}` {events:,} events, {input_tokens:,} input and {output_tokens:,} output tokens, "
            f"{cost_nano:,} nano-dollars: Redis {'equal' if redis_equal else '**DIFFERS**'}, "
            f"API {'equal' if api_equal else '**DIFFERS**'}"
        )
    expected_by_model = {model: counters[:2] for model, counters in o.traffic.reference.by_model.items()}
    model_rows = []
    for model in sorted(set(expected_by_model) | set(o.redis_by_model)):
        expected, stored_model = expected_by_model.get(model), o.redis_by_model.get(model)
        if expected != stored_model:
            unpriced = o.traffic.reference.by_model.get(model, [0, 0, 0])[2]
            model_rows.append(
                f"    {' / '.join(model)}: expected [events, cost nano] {expected} ({unpriced} without `cost`), "
                f"Redis MODEL cells {stored_model}"
            )
    if model_rows:
        failures.append("per-model daily cells differ:\n" + "\n".join(model_rows))
    if o.outside_days:
        failures.append(f"daily TOTAL keys outside the covered days: {o.outside_days[:5]}")
    if o.projects_in_redis != set(projects):
        failures.append(f"projects in Redis {sorted(o.projects_in_redis)}, expected {projects}")
    if o.halted:
        failures.append(f"halted partitions: {o.halted}")

    # The topic and the DLQ.
    lost = sum(1 for n in o.topic_copies if n == 0)
    distinct_events = len(o.traffic.reference.event_keys)
    malformed_on_topic = o.malformed_records
    duplicates = o.topic_records - o.unknown_records - distinct_events - malformed_on_topic
    applied = sum(total[0] for total in o.redis.values())
    if lost:
        failures.append(f"{lost:,} produced payloads are not on the topic")
    if o.unknown_records:
        failures.append(f"{o.unknown_records:,} records on the topic that the soak did not produce")
    if o.producer.acked_count != len(o.traffic.messages):
        failures.append(f"the producer got acks for {o.producer.acked_count:,} of {len(o.traffic.messages):,}")
    dead = set(o.dlq_payloads)
    if dead != o.traffic.malformed:
        failures.append(
            f"dead letters: {len(o.traffic.malformed - dead)} malformed messages missing from the DLQ, "
            f"{len(dead - o.traffic.malformed)} other payloads in it"
        )

    # The API.
    statuses = Counter(status for _, status, _, _ in o.answers)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    client_errors = sum(n for status, n in statuses.items() if 400 <= status < 500)
    no_answer = statuses.get(0, 0)
    if server_errors:
        failures.append(f"{server_errors} answers were 5xx")
    if no_answer:
        failures.append(f"{no_answer} requests got no answer")
    latencies = [ms for _, status, ms, _ in o.answers if status]
    by_query: dict[str, list[float]] = {}
    for name, status, ms, _ in o.answers:
        if status:
            by_query.setdefault(name, []).append(ms)

    # The aggregator.
    if o.aggregators.exits:
        failures.append(f"the aggregator exited by itself {len(o.aggregators.exits)} time(s)")
    if o.final_exit_code not in (0, None):
        failures.append(f"the last aggregator run exited with code {o.final_exit_code} on SIGTERM")
    kills = len(o.schedule.kills_at_s)
    recovered = [r for r in o.recoveries_s if r is not None]
    outlived = sum(run.outlived_by for run in o.aggregators.runs)

    # Memory.
    window_s = args.dedupe_window_days * 86_400
    settled_after_s = window_s * (1 + 2 / 7) + SAMPLE_EVERY_S  # a slot set lives a window and a slot past its end
    settled = [s for s in o.samples if settled_after_s <= s.t_s <= o.schedule.duration_s]
    first, last = o.samples[0], o.samples[-1]

    load_after = os.getloadavg()
    load_max = max(s.load_1m for s in o.samples)
    command = " ".join([".venv/bin/python", "bench/soak.py", *sys.argv[1:]])
    print()
    print(f"### Soak (bench/soak.py), {started}")
    print()
    print(
        f"`{command}` at {commit()}. {args.minutes} min of {o.traffic.generator} at a steady "
        f"{args.rate:,} events/s ({len(o.traffic.messages):,} messages: {distinct_events:,} distinct events, "
        f"{o.traffic.retries:,} exact producer retries, {len(o.traffic.malformed)} malformed), {args.qps:g} API "
        f"requests/s alongside, kill -9 of the aggregator {kills} times (every {o.schedule.kill_every_s} s, each "
        f"restarted at once) and one {o.schedule.pause_s:.0f} s SIGSTOP of the broker "
        f"(t = {o.pause_window[0]:.0f}-{o.pause_window[1]:.0f} s). Dedupe window "
        f"{args.dedupe_window_days} days ({window_s:.0f} s). Event timestamps trail their sends by the "
        f"{o.traffic.drawn_in_s:.0f} s it took to draw the traffic, on top of the mix's own lateness. "
        f"Load average {load_before[0]:.2f} before, "
        f"{load_max:.2f} at most during (1-minute), {load_after[0]:.2f} after, on {os.cpu_count()} cores. {code}"
    )
    print()
    print("| | |")
    print("| --- | --- |")
    print(
        f"| totals (Redis daily TOTAL cells; API `/costs` over {o.days[0]}..{o.days[-1]}) | "
        + "<br>".join(exact_lines)
        + " |"
    )
    print(
        f"| messages produced | {o.producer.acked_count:,} acked of {len(o.traffic.messages):,}; "
        f"{o.producer.failed_sends:,} failed sends sent again; at most {o.producer.max_behind_s:.1f} s behind "
        f"the schedule |"
    )
    print(
        f"| on the topic | {o.topic_records:,} records: {distinct_events:,} distinct events, {duplicates:,} "
        f"duplicates (retries and resent copies), {malformed_on_topic} malformed; {lost} produced payloads "
        f"missing, {o.unknown_records} unknown |"
    )
    print(
        f"| applied | {applied:,} events counted (= distinct events: {applied == distinct_events}); "
        f"{o.dlq_records} dead letters for {len(dead)} distinct malformed payloads |"
    )
    c = o.aggregators.counter_sum
    print(
        f"| aggregator counters (each run's last scrape, summed; a killed run's last ~2 s are lost, "
        f"re-read batches count again) | {c('infraprism_events_applied_total'):,.0f} applied, "
        f"{c('infraprism_events_duplicate_total'):,.0f} duplicates skipped, "
        f"{c('infraprism_events_dead_lettered_total'):,.0f} dead-lettered, "
        f"{c('infraprism_batches_fenced_total'):,.0f} batches fenced, "
        f"{c('infraprism_batches_refused_total'):,.0f} refused, {c('infraprism_retries_total'):,.0f} retries |"
    )
    recovery = (
        f"applying again {percentile(recovered, 0.5):.1f} s (median), {max(recovered):.1f} s (max) after a kill"
        if recovered
        else "never applied again after a kill"
    )
    print(
        f"| aggregator runs | {kills} kills; {recovery}; {len(o.aggregators.exits)} exits of its own; "
        f"{outlived} runs whose decoder outlived the kill by 5 s; caught up {o.catch_up_s:.1f} s after the last "
        f"ack; last run's exit code on SIGTERM {o.final_exit_code} |"
    )
    print(
        f"| API | {len(o.answers):,} requests: {sum(n for s, n in statuses.items() if 200 <= s < 300):,} 2xx, "
        f"{client_errors} 4xx, **{server_errors} 5xx**, {no_answer} without answer; latency p50 "
        f"{percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, max "
        f"{max(latencies, default=math.nan):.0f} ms |"
    )
    # A window is a catch-up when the aggregator applied more than it is sent: the backlog of a restart.
    catching_up, steady = [], []
    for before, after in itertools.pairwise(o.samples):
        window = [ms for _, status, ms, sent_s in o.answers if status and before.t_s <= sent_s < after.t_s]
        applied_per_s = (after.applied_offsets - before.applied_offsets) / max(1e-9, after.t_s - before.t_s)
        (catching_up if applied_per_s > 1.2 * args.rate else steady).extend(window)
    print(
        f"| API while the aggregator catches up (10 s windows applying > 1.2x the rate) | {len(catching_up):,} "
        f"requests, p50 {percentile(catching_up, 0.5):.1f} ms, p99 {percentile(catching_up, 0.99):.1f} ms; "
        f"the other windows {len(steady):,} requests, p50 {percentile(steady, 0.5):.1f} ms, "
        f"p99 {percentile(steady, 0.99):.1f} ms |"
    )
    slow_by_command: dict[str, list[float]] = {}
    for entry in o.slow_commands:
        command_text = entry["command"].decode(errors="replace") if isinstance(entry["command"], bytes) else ""
        slow_by_command.setdefault(command_text.split(" ", 1)[0].upper(), []).append(entry["duration"] / 1000)
    slow_text = "; ".join(
        f"{name} {len(ms):,} (longest {max(ms):,.0f} ms, {sum(ms) / 1000:,.1f} s in all)"
        for name, ms in sorted(slow_by_command.items(), key=lambda item: -sum(item[1]))
    )
    print(f"| Redis commands over {SLOWLOG_OVER_US // 1000} ms (SLOWLOG) | {slow_text or 'none'} |")
    if settled:
        dd = [s.dedupe_bytes for s in settled]
        rest_growth = (settled[-1].used_memory - settled[-1].dedupe_bytes) - (
            settled[0].used_memory - settled[0].dedupe_bytes
        )
        minutes = max(1e-9, (settled[-1].t_s - settled[0].t_s) / 60)
        memory_line = (
            f"dedupe sets {megabytes(min(dd))}-{megabytes(max(dd))} MB from t = {settled[0].t_s:.0f} s "
            f"(the window full) to the end of production; everything else grew "
            f"{rest_growth / 2**20 / minutes:,.1f} MB/min there (sessions, rollups)"
        )
    else:
        memory_line = f"the window ({window_s:.0f} s) plus its expiry does not fit the soak: flatness not judged"
    print(
        f"| Redis memory | used_memory {megabytes(first.used_memory)} MB at t = 0, {megabytes(last.used_memory)} MB "
        f"at the end ({last.keys:,} keys); {memory_line} |"
    )
    print()
    print("| query | answers | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in by_query.items():
        print(f"| {name} | {len(values):,} | {percentile(values, 0.5):.1f} | {percentile(values, 0.99):.1f} |")
    print()
    print("Redis memory every 10 s, MB (`dedupe`: MEMORY USAGE of every `*:dd:*` set; `other`: used_memory - dedupe):")
    print()
    print(
        "| t s | used_memory | dedupe (keys) | other | applied messages | acked messages | load 1 min "
        "| API p50 / p99 ms in the 10 s before | aggregator |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in o.samples:
        print(
            f"| {s.t_s:.0f} | {megabytes(s.used_memory)} | {megabytes(s.dedupe_bytes)} ({s.dedupe_keys}) | "
            f"{megabytes(s.used_memory - s.dedupe_bytes)} | {s.applied_offsets:,} | {s.acked:,} | {s.load_1m:.2f} "
            f"| {window_latency(o.answers, s.t_s)} | {s.worker} |"
        )
    print()
    print(f"used_memory series (MB): {', '.join(megabytes(s.used_memory) for s in o.samples)}")
    print(f"dedupe-set series (MB): {', '.join(megabytes(s.dedupe_bytes) for s in o.samples)}")

    errors: Counter[str] = Counter()
    for run in o.aggregators.runs:
        for line in run.error_lines():
            errors[line.split(" ", 3)[-1][:160]] += 1
    if errors:
        print()
        runs = len(o.aggregators.runs)
        print(f"Aggregator log lines at ERROR (or tracebacks), {sum(errors.values())} over {runs} runs:")
        for line, n in errors.most_common(8):
            print(f"    {n:5d}x {line}")
    if o.answer_failures:
        print()
        print("API answers other than 2xx:")
        for line, n in o.answer_failures.most_common(8):
            print(f"    {n:5d}x {line}")
    for number, code, log_tail in o.aggregators.exits:
        print(f"\naggregator run {number} exited by itself with code {code}; its log ends:\n{log_tail}")
    if failures:
        last_run = o.aggregators.current
        print(f"\nThe last aggregator run's log ({last_run.log_path}) ends:\n{last_run.log_tail()}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="minutes of traffic (kill every 30 s below 4)")
    parser.add_argument("--rate", type=int, default=5000, help="messages per second, retries included")
    parser.add_argument("--qps", type=float, default=50.0, help="API requests per second, in total")
    parser.add_argument("--broker-pause-seconds", type=float, default=20.0)
    parser.add_argument(
        "--dedupe-window-days", type=float, default=0.0014, help="the aggregator's window (0.0014 = 121 s)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.minutes < 1 or args.rate < 1 or args.qps <= 0:
        parser.error("--minutes, --rate and --qps must be positive (--minutes at least 1)")
    run_from_snapshot()
    snapshot_code = code_fingerprint(REPO_ROOT)
    say(f"running a copy of the product's code in {REPO_ROOT}")

    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    seconds = args.minutes * 60
    say(f"drawing {args.rate * seconds:,} messages of traffic ...")
    drawing_started = time.monotonic()
    traffic = make_traffic(args.rate, seconds, int(time.time() * 1000), args.seed)
    traffic.drawn_in_s = time.monotonic() - drawing_started
    say(
        f"traffic: {len(traffic.messages):,} messages from {traffic.generator}, "
        f"{len(traffic.reference.event_keys):,} distinct events, {traffic.retries:,} retries, "
        f"{len(traffic.malformed)} malformed; projects {sorted(traffic.reference.totals)}"
    )
    broker = start_broker()
    redis_service = start_redis()
    say(f"broker {broker.address}, redis {redis_service.address}")
    failures: list[str]
    try:
        outcome = asyncio.run(run_soak(args, traffic, broker, redis_service.address))
        failures = report(args, outcome, started, load_before, code_note(snapshot_code))
    except SoakFailed as exc:
        failures = [str(exc)]
    finally:
        broker.stop()
        redis_service.stop()
    if failures:
        print("\nFAILED:")
        for failure in failures:
            print(f"- {failure}")
        sys.exit(1)
    print("\nAll checks held.")


if __name__ == "__main__":
    main()

"""`infraprism dev`: the whole stack on this machine, until Ctrl-C.

Starts a Tansu broker unless INFRAPRISM_KAFKA_BOOTSTRAP is set and a
redis-server unless INFRAPRISM_REDIS_URL is set, creates the topics, runs the
aggregator, detector, budget watcher and API as child processes (`python -m infraprism.cli
...`, each in its own process group, logs in --log-dir), waits for the API's
/healthz, creates a demo key and prints the URL, the key and a curl line that
works. With --demo it first replays a generated dataset (infraprism.dev.demo) and
waits until the aggregator has applied all of it.

SIGINT and SIGTERM only set a flag; every wait below checks it, so a signal at
any moment leads to the same orderly stop: SIGTERM to each child's process
group, SIGKILL after a grace period, then Redis and the broker. Nothing is
left running. Children also get PR_SET_PDEATHSIG so that even a SIGKILL of
this process does not orphan them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx
from pydantic import SecretStr

from infraprism.dev import DevError
from infraprism.dev.local_services import Service, free_port, start_broker, start_redis
from infraprism.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0
CATCH_UP_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0
DEMO_PROJECT = "default"
READY_LINE = "Press Ctrl-C to stop everything."


class DevStackError(DevError):
    """The stack could not be brought up."""


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while starting up."""


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when this process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


@dataclass
class Worker:
    """One child process (aggregator, detector, API) in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class DevStack:
    def __init__(self, settings: Settings, *, log_dir: Path, port: int | None) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.requested_port = port
        self.services: list[Service] = []
        self.workers: list[Worker] = []
        self.stop_requested = False
        self.metrics_port: int | None = None
        self.demo_summary: str | None = None

    # ---- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop_requested:
            sys.stderr.write(f"\ninfraprism dev: {signal.Signals(signum).name}, stopping...\n")
        self.stop_requested = True

    def check(self) -> None:
        if self.stop_requested:
            raise Stopped

    # ---- start ----------------------------------------------------------------------------------

    def start_services(self) -> None:
        updates: dict[str, object] = {}
        if not os.environ.get("INFRAPRISM_KAFKA_BOOTSTRAP"):
            broker = start_broker()
            self.services.append(broker)
            updates["kafka_bootstrap"] = broker.address
            log.info("started Tansu broker on %s (pid %d)", broker.address, broker.process.pid)
        self.check()
        if not os.environ.get("INFRAPRISM_REDIS_URL"):
            redis = start_redis()
            self.services.append(redis)
            updates["redis_url"] = SecretStr(redis.address)
            log.info("started redis-server on %s (pid %d)", redis.address, redis.process.pid)
        self.check()
        updates["api_port"] = self._api_port()
        self.settings = self.settings.model_copy(update=updates)

    def _api_port(self) -> int:
        host = self.settings.api_host
        if self.requested_port is not None:
            return self.requested_port
        if os.environ.get("INFRAPRISM_API_PORT") or _port_free(host, self.settings.api_port):
            return self.settings.api_port
        port = free_port()
        log.warning("port %d is taken; the API will listen on %d", self.settings.api_port, port)
        return port

    def create_topics(self) -> None:
        from infraprism.pipeline.replay import topics_of
        from infraprism.pipeline.topics import ensure_topics

        s = self.settings
        asyncio.run(ensure_topics(s.kafka_bootstrap, topics_of(s), s.topic_partitions))

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["INFRAPRISM_KAFKA_BOOTSTRAP"] = self.settings.kafka_bootstrap
        env["INFRAPRISM_REDIS_URL"] = self.settings.redis_dsn()
        env["INFRAPRISM_API_HOST"] = self.settings.api_host
        env["INFRAPRISM_API_PORT"] = str(self.settings.api_port)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def spawn(self, name: str, *args: str) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
                [sys.executable, "-m", "infraprism.cli", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.child_env(),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        log.info("started %s (pid %d), log %s", name, process.pid, log_path)
        return worker

    def start_workers(self) -> None:
        self.metrics_port = free_port()
        self.spawn("aggregator", "aggregator", "--metrics-port", str(self.metrics_port))
        self.spawn("detector", "detector")
        self.spawn("budget-watcher", "budget-watcher")
        self.spawn("api", "api", "--host", self.settings.api_host, "--port", str(self.settings.api_port))

    @property
    def api_url(self) -> str:
        host = self.settings.api_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
        return f"http://{shown}:{self.settings.api_port}"

    def assert_workers_running(self) -> None:
        for worker in self.workers:
            if not worker.running():
                raise DevStackError(
                    f"{worker.name} exited with code {worker.process.returncode}; "
                    f"last lines of {worker.log_path}:\n{worker.log_tail()}"
                )

    def wait_for(self, what: str, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll `ready` until true; fails when a worker dies, stops when a signal arrives."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while not ready():
            self.check()
            self.assert_workers_running()
            if time.monotonic() > deadline:
                raise DevStackError(f"{what} not ready within {timeout_s:.0f}s; see the logs in {self.log_dir}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def api_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def create_demo_key(self) -> str:
        from infraprism.stores import apikeys

        _, key = apikeys.create_key(self.settings, DEMO_PROJECT, "infraprism dev")
        return key

    def replay_demo(self, *, days: int, seed: int, end: datetime) -> int:
        from tqdm import tqdm

        from infraprism.dev.demo import MALFORMED_COUNT, SPIKE_CUSTOMER, SPIKE_USER, generate
        from infraprism.pipeline.replay import replay_lines

        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / "demo-events.jsonl"
        with path.open("wb") as file:
            for line in generate(days=days, seed=seed, end=end):
                file.write(line + b"\n")
                self.check()
        with path.open("rb") as file:
            total = sum(1 for _ in file)
        bar = tqdm(
            total=total,
            unit=" events",
            file=sys.stderr,
            desc="replaying demo data",
            mininterval=0.25,
        )
        with path.open("rb") as file:
            lines = (line.rstrip(b"\n") for line in file)
            sent = asyncio.run(replay_lines(self.settings, lines, on_progress=bar.update))
        bar.close()
        log.info("replayed %d demo events from %s", sent, path)
        self.demo_summary = (
            f"{sent:,} events over {days} days, {MALFORMED_COUNT} of them malformed "
            f"(see {self.settings.dlq_topic}); spikes planted for {SPIKE_CUSTOMER} and {SPIKE_USER}"
        )
        return sent

    def aggregator_caught_up(self) -> bool:
        return asyncio.run(_caught_up(self.settings))

    # ---- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every worker's process group, SIGKILL what is left after the grace period,
        and return only when no process of those groups runs any more; then the services."""
        for worker in reversed(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in reversed(self.workers):
            # The whole group, not only its leader: a worker may have children of its own.
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            while _group_running(worker.process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_running(worker.process.pid):
                log.warning("%s did not stop within %.0fs; killing it", worker.name, STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
            kill_deadline = time.monotonic() + 5.0
            while _group_running(worker.process.pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        for service in reversed(self.services):
            service.stop()
        self.workers.clear()
        self.services.clear()


def _group_running(pgid: int) -> bool:
    """True while a process of group `pgid` exists that is not a zombie (Linux reads /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


async def _caught_up(settings: Settings) -> bool:
    """True when the aggregator's offsets in Redis reach the log end of every events partition."""
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from infraprism.core.keys import KeyLayout

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.events_topic) or set()
        ends = await consumer.end_offsets([TopicPartition(settings.events_topic, p) for p in partitions])
    finally:
        await consumer.stop()
    client = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        key = KeyLayout(settings.key_prefix).offsets(settings.events_topic, settings.aggregator_group)
        stored = {int(p): int(o) for p, o in (await client.hgetall(key)).items()}
    finally:
        await client.aclose()
    return all(stored.get(tp.partition, 0) >= end for tp, end in ends.items())


def _banner(stack: DevStack, key: str, start_date: str, end_date: str) -> None:
    s = stack.settings
    url = stack.api_url
    embedded = {service.name for service in stack.services}
    kafka_origin = "embedded Tansu" if "kafka" in embedded else "INFRAPRISM_KAFKA_BOOTSTRAP"
    kafka = f"{s.kafka_bootstrap} ({kafka_origin})"
    redis = s.redis_dsn() + " (embedded)" if "redis" in embedded else "INFRAPRISM_REDIS_URL"
    pids = [f"{service.name}={service.process.pid}" for service in stack.services]
    pids += [f"{worker.name}={worker.process.pid}" for worker in stack.workers]
    query = f"{url}/v1/analytics/costs?start_date={start_date}&end_date={end_date}&group_by=entity"
    _out()
    _out("InfraPrism is running.")
    _out(f"  API       {url}   (OpenAPI docs: {url}/docs)")
    _out(f"  API key   {key}   (project {DEMO_PROJECT!r})")
    _out(f"  Kafka     {kafka}; events topic {s.events_topic}, dead letters {s.dlq_topic}")
    _out(f"  Redis     {redis}")
    _out(f"  Metrics   http://127.0.0.1:{stack.metrics_port}/metrics (aggregator)")
    _out(f"  Logs      {stack.log_dir}/")
    _out(f"  PIDs      {' '.join(pids)}")
    if stack.demo_summary:
        _out(f"  Demo      {stack.demo_summary}")
    _out()
    _out("Try:")
    _out(f'  curl -s "{query}" -H "Authorization: Bearer {key}"')
    _out()
    _out(READY_LINE)


def main(
    settings: Settings,
    *,
    demo: bool = False,
    port: int | None = None,
    log_dir: str = ".infraprism/logs",
    demo_days: int = 35,
    demo_seed: int = 7,
) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the exit code."""
    # The readiness polls would otherwise log one line per request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = DevStack(settings, log_dir=Path(log_dir).resolve(), port=port)
    previous = {sig: signal.signal(sig, stack._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    end = datetime.now(UTC)
    today = end.date().isoformat()
    start_date, end_date = today, today
    code = 0
    try:
        stack.start_services()
        stack.create_topics()
        stack.check()
        stack.start_workers()
        stack.wait_for("the API", stack.api_healthy, READY_TIMEOUT_S)
        key = stack.create_demo_key()
        if demo:
            from infraprism.dev.demo import demo_range

            start_date, end_date = demo_range(demo_days, end)
            stack.replay_demo(days=demo_days, seed=demo_seed, end=end)
            stack.check()
            sys.stderr.write("waiting for the aggregator to apply the demo data...\n")
            stack.wait_for("the aggregator", stack.aggregator_caught_up, CATCH_UP_TIMEOUT_S)
        _banner(stack, key, start_date, end_date)
        while not stack.stop_requested:
            stack.assert_workers_running()
            time.sleep(0.2)
    except Stopped:
        pass
    except DevError as exc:
        sys.stderr.write(f"infraprism dev: {exc}\n")
        code = 1
    finally:
        # A second Ctrl-C must not interrupt the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stderr.write("infraprism dev: stopped, nothing left running.\n")
    return code

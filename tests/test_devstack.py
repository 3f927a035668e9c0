"""`infraprism dev` as a user runs it: a subprocess, its ready banner, its curl line, then a signal.

The first test is the README's promise end to end: the embedded broker and
Redis, the demo data replayed and aggregated, the printed curl line answering
with data, the malformed demo events in the dead-letter topic, and after
Ctrl-C (SIGINT) not one of the processes it started left running. The second
runs against an existing broker and Redis (the session's) and stops on
SIGTERM, which must leave those external services alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from infraprism.dev.demo import MALFORMED_COUNT
from infraprism.dev.devstack import READY_LINE
from infraprism.dev.local_services import free_port

READY_TIMEOUT_S = 240


@dataclass
class DevRun:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stderr_path: Path | None = None

    def banner_value(self, label: str) -> str:
        for line in self.lines:
            if line.strip().startswith(label):
                return line.strip()[len(label) :].strip()
        raise AssertionError(f"no {label!r} line in the banner:\n" + "\n".join(self.lines))

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"([\w-]+)=(\d+)", self.banner_value("PIDs"))}

    def curl(self) -> tuple[str, dict[str, str]]:
        """The URL and headers of the printed curl line."""
        line = next(line for line in self.lines if line.strip().startswith("curl "))
        argv = shlex.split(line)
        url = next(arg for arg in argv[1:] if arg.startswith("http"))
        name, value = argv[argv.index("-H") + 1].split(": ", 1)
        return url, {name: value}

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""


def _alive(pid: int) -> bool:
    """True when the process exists and is not a zombie awaiting its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    """True when any process of the group `pgid` still runs (zombies awaiting init excepted)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


@contextlib.contextmanager
def infraprism_dev(args: list[str], env: dict[str, str], tmp_path: Path) -> Iterator[DevRun]:
    """Start `infraprism dev`, wait for its ready line, and always end it (and its children)."""
    stderr_path = tmp_path / "dev.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infraprism.cli",
                "dev",
                "--log-dir",
                str(tmp_path / "logs"),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
    run = DevRun(process, stderr_path=stderr_path)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=READY_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"no ready line within {READY_TIMEOUT_S}s; stderr:\n{run.stderr()[-4000:]}")
            if line is None:
                process.wait(timeout=30)
                tail = run.stderr()[-4000:]
                pytest.fail(f"infraprism dev exited with {process.returncode}; stderr:\n{tail}")
            run.lines.append(line)
            if line == READY_LINE:
                break
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _read_dlq(bootstrap: str, topic: str, expect: int) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[dict] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < expect:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(orjson.loads(r.value) for r in batch)
    finally:
        await consumer.stop()
    return records


def _embedded_env() -> dict[str, str]:
    """The user's environment: no broker, no Redis configured, so `dev` starts its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFRAPRISM_")}
    env["INFRAPRISM_API_PORT"] = str(free_port())
    return env


async def test_dev_demo_answers_its_curl_line_and_ctrl_c_leaves_nothing_running(tmp_path):
    with infraprism_dev(["--demo", "--demo-days", "10"], _embedded_env(), tmp_path) as dev:
        pids = dev.pids()
        assert set(pids) == {"kafka", "redis", "aggregator", "detector", "budget-watcher", "api"}
        assert all(_alive(pid) for pid in pids.values())

        url, headers = dev.curl()
        assert re.search(r"start_date=\d{4}-\d{2}-\d{2}&end_date=\d{4}-\d{2}-\d{2}&group_by=entity", url)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(url, headers=headers)
            unauthorised = await client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        entities = {row["entity_id"] for row in body["data"]}
        assert len(entities) >= 24  # dozens of customers and users were active in 10 days
        assert {"acme-corp", "globex"} <= entities
        assert sum(row["total_events"] for row in body["data"]) > 1000
        assert unauthorised.status_code == 401

        bootstrap = dev.banner_value("Kafka").split()[0]
        dead = await _read_dlq(bootstrap, "llm-cost-events.dlq", expect=MALFORMED_COUNT)
        assert len(dead) == MALFORMED_COUNT
        assert all(record["reason"] for record in dead)

        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=60) == 0, dev.stderr()[-4000:]

    assert "nothing left running" in dev.stderr()
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) is still running"
        assert not _group_alive(pid), f"{name}'s process group {pid} still has members"


async def test_dev_on_existing_services_stops_on_sigterm_and_leaves_them_running(
    tmp_path, settings_env, kafka_bootstrap, redis_client
):
    env = dict(settings_env, INFRAPRISM_API_PORT=str(free_port()))
    with infraprism_dev([], env, tmp_path) as dev:
        pids = dev.pids()
        assert set(pids) == {"aggregator", "detector", "budget-watcher", "api"}  # no broker, no Redis of its own
        assert kafka_bootstrap in dev.banner_value("Kafka")
        url, headers = dev.curl()
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == []  # no demo data: an empty, valid answer

        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(timeout=60) == 0, dev.stderr()[-4000:]

    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) is still running"
        assert not _group_alive(pid), f"{name}'s process group {pid} still has members"
    assert await redis_client.ping()  # the session's Redis was not touched


# ---- the demo dataset (pure) ---------------------------------------------------------------


def test_demo_dataset_is_realistic_and_has_exactly_the_planted_bad_events():
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from infraprism.core.events import InvalidEvent, parse_event
    from infraprism.dev.demo import SPIKE_CUSTOMER, generate

    end = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
    lines = list(generate(days=21, seed=3, end=end))
    assert lines == list(generate(days=21, seed=3, end=end))  # reproducible

    events, reasons = [], []
    for raw in lines:
        try:
            events.append(parse_event(raw))
        except InvalidEvent as exc:
            reasons.append(str(exc))
    assert len(reasons) == MALFORMED_COUNT, reasons
    assert any(r.startswith("cost: absent and the price catalog does not know") for r in reasons)

    start_ms = int((end - timedelta(days=21)).timestamp() * 1000)
    assert all(start_ms <= e.ts_ms <= end.timestamp() * 1000 for e in events)
    entities = Counter((e.entity_type, e.entity_id) for e in events)
    assert sum(1 for t, _ in entities if t == "customer") >= 30
    assert sum(1 for t, _ in entities if t == "user") >= 30
    assert len({e.model for e in events}) >= 5
    assert {tag for e in events for tag, _ in e.tags} >= {"feature", "env"}
    turns = Counter(e.session_id for e in events if e.session_id)
    assert len(turns) > 100
    assert max(turns.values()) >= 5
    raw_objects = [orjson.loads(raw) for raw in lines[:2000] if raw.startswith(b'{"event_id"')]
    assert any("cost" not in obj for obj in raw_objects)  # priced by the pipeline
    assert any(isinstance(obj["timestamp"], int) for obj in raw_objects)  # epoch ms too
    assert len({e.event_id for e in events}) < len(events)  # producer retries to deduplicate

    # The planted spike: the last day of the spiking customer costs several times its usual day.
    day_ms = 86_400_000
    by_day = Counter()
    for e in events:
        if e.entity_id == SPIKE_CUSTOMER:
            by_day[e.ts_ms // day_ms] += e.cost_nano
    days = sorted(by_day)
    usual = sorted(by_day[d] for d in days[:-2])[len(days[:-2]) // 2]
    assert by_day[days[-1]] > 3 * usual


def test_dev_that_cannot_start_its_api_fails_and_leaves_nothing_running(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "infraprism.cli", "dev", "--port", str(port)]
            + ["--log-dir", str(tmp_path / "logs")],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=_embedded_env(),
            text=True,
            timeout=240,
            check=False,
        )

    assert done.returncode == 1, done.stderr[-4000:]
    assert "api exited with code" in done.stderr
    assert "nothing left running" in done.stderr
    started = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", done.stderr)}
    assert len(started) == 6  # broker, redis, aggregator, detector, budget watcher, api
    for pid in started:
        assert not _alive(pid), f"pid {pid} is still running"
        assert not _group_alive(pid), f"process group {pid} still has members"

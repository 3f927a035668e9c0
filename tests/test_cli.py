"""The `infraprism` command line, run as users and scripts run it: as a subprocess.

Producers (replay, send) are checked against the real broker by reading the
topic back; key management against the real redis-server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from infraprism.dev.local_services import free_port
from infraprism.pipeline.replay import iter_lines, line_key
from infraprism.settings import Settings
from infraprism.stores import apikeys

ENTRY_POINT = Path(sys.executable).parent / "infraprism"
T0_MS = 1_736_935_200_000  # 2025-01-15T10:00:00Z

SUBCOMMANDS = [
    [],
    ["aggregator"],
    ["detector"],
    ["api"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["anomalies"],
    ["anomalies", "dismiss"],
    ["prices"],
    ["prices", "set"],
    ["prices", "list"],
    ["prices", "delete"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "redrive"],
    ["reprice"],
    ["rebuild"],
    ["replay"],
    ["send"],
    ["dev"],
]


def cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "infraprism.cli", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def event(i: int, **changes: object) -> dict:
    base = {
        "event_id": f"ev-{i}",
        "timestamp": "2025-01-15T10:00:03.120Z",
        "entity_type": "customer",
        "entity_id": f"c{i % 7}",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 20,
    }
    return base | changes


async def read_topic(settings: Settings, topic: str, expect: int) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of the first `expect` messages of every partition of `topic`."""
    import asyncio

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < expect:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend((r.key, r.value) for r in records)
        # Anything beyond what we expect would be a bug too: drain briefly.
        for records in (await consumer.getmany(timeout_ms=500)).values():
            out.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


# ---- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a) or "infraprism")
def test_every_subcommand_has_help(args):
    done = cli(*args, "--help")
    assert done.returncode == 0, done.stderr
    usage = done.stdout.decode()
    assert usage.startswith(f"usage: infraprism {' '.join(args)}".rstrip())
    assert "--help" in usage


def test_the_installed_entry_point_runs():
    done = subprocess.run([str(ENTRY_POINT), "--help"], capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in (
        "aggregator",
        "detector",
        "api",
        "keys",
        "anomalies",
        "replay",
        "send",
        "dev",
        "rebuild",
    ):
        assert name in done.stdout.decode()


def test_no_subcommand_is_a_usage_error():
    done = cli()
    assert done.returncode == 2
    assert b"usage: infraprism" in done.stderr


def test_invalid_configuration_is_reported_not_a_traceback():
    env = dict(os.environ, INFRAPRISM_TOPIC_PARTITIONS="zero")
    done = cli("keys", "list", env=env)
    assert done.returncode == 2
    assert b"invalid configuration" in done.stderr
    assert b"topic_partitions" in done.stderr
    assert b"Traceback" not in done.stderr


# ---- the producers' pure parts -----------------------------------------------------------------

LINE_KEYS = [
    (b'{"entity_id": "acme-corp", "x": 1}', b"acme-corp"),
    (b'{"entity_id": "\\u5ba2\\u6237"}', "客户".encode()),
    (b'{"entity_id": 42}', None),
    (b'{"other": "x"}', None),
    (b'["entity_id", "x"]', None),
    (b"not json", None),
    (b"\xff\xfe", None),
]


@pytest.mark.parametrize(("raw", "key"), LINE_KEYS)
def test_line_key_is_the_entity_id_when_there_is_one(raw, key):
    assert line_key(raw) == key


def test_iter_lines_strips_line_endings_and_skips_blank_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"b": 2}\nlast without newline')
    with path.open("rb") as stream:
        assert list(iter_lines(stream)) == [b'{"a": 1}', b'{"b": 2}', b"last without newline"]


# ---- replay and send against the real broker ------------------------------------------------


async def test_replay_sends_every_line_as_is_with_entity_keys(settings, settings_env, tmp_path):
    good = [orjson.dumps(event(i)) for i in range(500)]
    bad = [
        b"this is not json",
        b"\xff\xfe not utf-8",
        b'["not", "an", "object"]',
        b'{"entity_id": 5}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*good[:250], b"", *bad, *good[250:]]) + b"\n")

    done = cli("replay", str(path), env=settings_env)

    assert done.returncode == 0, done.stderr.decode()
    assert (
        done.stdout.decode().strip().splitlines()[-1] == f"sent {len(good) + len(bad)} lines to {settings.events_topic}"
    )
    assert f"replay -> {settings.events_topic}".encode() in done.stderr  # the progress bar
    received = await read_topic(settings, settings.events_topic, expect=len(good) + len(bad))
    assert sorted(value for _, value in received) == sorted([*good, *bad])
    keys = {value: key for key, value in received}
    assert keys[good[3]] == b"c3"
    assert all(keys[raw] is None for raw in bad)


async def test_replay_reads_stdin_and_creates_the_topics(settings, settings_env):
    lines = [orjson.dumps(event(i)) for i in range(50)]

    done = cli("replay", "-", "--quiet", env=settings_env, stdin=b"\n".join(lines))

    assert done.returncode == 0, done.stderr.decode()
    assert b"replay ->" not in done.stderr  # --quiet: no progress bar
    assert done.stdout.decode().strip().endswith(f"sent 50 lines to {settings.events_topic}")
    received = await read_topic(settings, settings.events_topic, expect=50)
    assert sorted(v for _, v in received) == sorted(lines)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topics = await consumer.topics()
        partitions = consumer.partitions_for_topic(settings.events_topic)
    finally:
        await consumer.stop()
    assert {
        settings.events_topic,
        settings.dlq_topic,
        settings.deltas_topic,
        settings.anomalies_topic,
    } <= topics
    assert partitions == set(range(settings.topic_partitions))


async def test_replay_stops_at_a_line_the_producer_refuses_after_sending_those_before(settings, settings_env, tmp_path):
    before = [orjson.dumps(event(i)) for i in range(20)]
    huge = b'{"event_id": "' + b"x" * (9 << 20) + b'"}'  # over the 8 MiB request limit
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*before, huge, orjson.dumps(event(99))]))

    done = cli("replay", str(path), env=settings_env)

    assert done.returncode == 1
    assert b"message 21 was refused" in done.stderr
    assert b"20 lines were sent before it" in done.stderr
    assert b"Traceback" not in done.stderr
    received = await read_topic(settings, settings.events_topic, expect=20)
    assert sorted(v for _, v in received) == sorted(before)


def test_replay_of_a_missing_file_fails_cleanly(settings_env, tmp_path):
    done = cli("replay", str(tmp_path / "nope.jsonl"), env=settings_env)
    assert done.returncode == 1
    assert b"no such file" in done.stderr
    assert b"Traceback" not in done.stderr


async def test_send_produces_one_event(settings, settings_env):
    raw = orjson.dumps(event(1, entity_id="acme-corp", cost=0.25))

    done = cli("send", raw.decode(), env=settings_env)

    assert done.returncode == 0, done.stderr.decode()
    assert re.fullmatch(rf"sent 1 event to {settings.events_topic} partition \d+ offset 0\n", done.stdout.decode())
    assert b"warning" not in done.stderr
    assert await read_topic(settings, settings.events_topic, expect=1) == [(b"acme-corp", raw)]


async def test_send_warns_about_an_invalid_event_but_sends_it_for_the_dlq(settings, settings_env):
    raw = orjson.dumps(event(1, input_tokens=-3))

    done = cli("send", raw.decode(), env=settings_env)

    assert done.returncode == 0
    assert b"warning: input_tokens: must be 0-1000000000000" in done.stderr
    assert await read_topic(settings, settings.events_topic, expect=1) == [(b"c1", raw)]


# ---- keys --------------------------------------------------------------------------------------


async def test_keys_create_prints_the_key_alone_on_the_last_line_then_list_and_revoke(settings_env, redis_client):
    done = cli("keys", "create", "--project", "acme", "--name", "ci", env=settings_env)
    assert done.returncode == 0, done.stderr.decode()
    key = done.stdout.decode().splitlines()[-1]
    assert re.fullmatch(r"ip-[A-Za-z0-9_-]{22,}", key), key

    listed = cli("keys", "list", "--json", env=settings_env)
    assert listed.returncode == 0, listed.stderr.decode()
    keys = orjson.loads(listed.stdout)
    assert len(keys) == 1
    assert keys[0]["project"] == "acme"
    assert keys[0]["name"] == "ci"
    assert key not in listed.stdout.decode()  # never the secret
    table = cli("keys", "list", env=settings_env)
    assert keys[0]["id"] in table.stdout.decode()

    revoked = cli("keys", "revoke", keys[0]["id"], env=settings_env)
    assert revoked.returncode == 0, revoked.stderr.decode()
    assert orjson.loads(cli("keys", "list", "--json", env=settings_env).stdout)[0]["revoked_at"]


async def test_keys_revoke_of_an_unknown_id_fails(settings_env, redis_client):
    done = cli("keys", "revoke", "key_does_not_exist", env=settings_env)
    assert done.returncode == 1
    assert b"no key with id 'key_does_not_exist'" in done.stderr


def test_keys_create_requires_a_project(settings_env):
    done = cli("keys", "create", env=settings_env)
    assert done.returncode == 2
    assert b"--project" in done.stderr


async def test_keys_create_refuses_a_bad_project_name(settings_env, redis_client):
    done = cli("keys", "create", "--project", "no spaces please", env=settings_env)
    assert done.returncode == 1
    assert b"project must be" in done.stderr
    assert b"Traceback" not in done.stderr
    assert done.stdout == b""


def test_an_unreachable_redis_is_one_clear_line(settings_env):
    env = dict(settings_env, INFRAPRISM_REDIS_URL="redis://127.0.0.1:1/0")
    done = cli("keys", "list", env=env)
    assert done.returncode == 1
    assert b"cannot reach Redis" in done.stderr
    assert b"Traceback" not in done.stderr


# ---- anomalies ---------------------------------------------------------------------------------


def test_anomalies_dismiss_of_an_unknown_id_fails(settings_env):
    done = cli("anomalies", "dismiss", "anom_does_not_exist", env=settings_env)
    assert done.returncode == 1, done.stderr.decode()
    assert b"no anomaly with id 'anom_does_not_exist'" in done.stderr


async def test_anomalies_dismiss_marks_the_record_dismissed(settings, settings_env, redis_client):
    from infraprism.core.keys import KeyLayout
    from infraprism.stores import anomaly_store

    layout = KeyLayout(settings.key_prefix)
    record = anomaly_store.AnomalyRecord(
        id="anomaly_cli_test",
        project="acme",
        detected_at="2025-01-15T10:00:00Z",
        detected_ms=T0_MS,
        entity_type="customer",
        entity_id="acme-corp",
        type="cost_spike",
        severity="high",
        description="Cost increased 340% compared to 7-day average",
        expected_value=10.0,
        actual_value=44.0,
        status="active",
    )
    await anomaly_store.create(redis_client, layout, record)

    done = cli("anomalies", "dismiss", "anomaly_cli_test", env=settings_env)

    assert done.returncode == 0, done.stderr.decode()
    printed = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    assert (printed["id"], printed["status"]) == ("anomaly_cli_test", "dismissed")
    stored = await anomaly_store.get(redis_client, layout, "acme", "anomaly_cli_test")
    assert stored is not None
    assert stored.status == "dismissed"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...], or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> set[int]:
    """Live (not zombie) child processes of `pid`, from /proc (Linux)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _is_worker(pid: int) -> bool:
    """A uvicorn worker is a multiprocessing spawn child. The parent's other child, multiprocessing's
    resource tracker, is not a worker: it exits on its own once the parent's end of its pipe closes,
    which can be a moment after the parent itself has exited."""
    try:
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pids: set[int]) -> list[int]:
    return sorted(pid for pid in pids if (_stat(pid) or ["Z"])[0] != "Z")


def test_api_with_two_workers_serves_and_stops_with_its_workers(settings, settings_env, redis_client):
    _, key = apikeys.create_key(settings, "workers")
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "infraprism.cli", "api", "--port", str(port), "--workers", "2"],
        env=settings_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "the API did not become ready"
            time.sleep(0.2)
        children = _children(server.pid)
        workers = {pid for pid in children if _is_worker(pid)}
        assert len(workers) == 2, children
        month = {"start_date": "2025-01-01", "end_date": "2025-01-31"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(10):
                response = client.get("/v1/analytics/costs", params=month)
                assert response.status_code == 200, response.text
                assert response.json()["summary"]["total_events"] == 0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0, server.stderr.read().decode() if server.stderr else ""
    # The parent joins its workers before it exits, so they are gone already.
    assert _alive(workers) == []
    helpers = children - workers
    deadline = time.monotonic() + 10
    while _alive(helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(helpers) == []

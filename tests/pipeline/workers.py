"""Aggregator worker subprocesses (to kill -9, SIGSTOP, ...) and the event streams they ingest."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from infraprism.dev.local_services import free_port
from infraprism.pipeline.topics import ensure_topics
from infraprism.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _worker_code(metrics_port: int) -> str:
    # `infraprism aggregator` (the CLI) calls the same main(); running it via -c
    # keeps these tests independent of the CLI module.
    return (
        "from infraprism.pipeline.aggregator import main; from infraprism.settings import Settings; "
        f"main(Settings(), {metrics_port})"
    )


@dataclass
class Worker:
    """One `aggregator` process with the given environment, logging to `log_path`."""

    env: dict[str, str]
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _worker_code(self.metrics_port)],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """kill -9: no chance to flush, commit or leave the group."""
        if self.alive:
            self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit."""
        if not self.alive:
            return
        assert self.process is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def metric(self, name: str) -> float:
        """Sum of every sample of metric `name` (e.g. infraprism_batches_fenced_total)."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        total = 0.0
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name:
                    total += sample.value
        return total


def worker_env(base: dict[str, str], **overrides: Any) -> dict[str, str]:
    """`base` (the settings_env fixture) with INFRAPRISM_* overrides, e.g. batch_max_events=500."""
    env = dict(base)
    for name, value in overrides.items():
        env[f"INFRAPRISM_{name.upper()}"] = str(value)
    return env


# ---- event streams -----------------------------------------------------------------------

ENTITY_TYPES = ("customer", "team", "user")
MODELS = (
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-3-5-sonnet", "anthropic"),
    ("gemini-1.5-pro", "google"),
    ("llama-3-70b", "meta"),
)
CATALOG_MODELS = {"gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro"}
TAG_SETS = (
    {},
    {"env": "production"},
    {"env": "staging", "feature": "chatbot"},
    {"feature": "search"},
    {"env": "production", "feature": "summarize", "region": "eu"},
)


def realistic_events(count: int, *, seed: int, duplicate_rate: float = 0.02) -> list[dict[str, Any]]:
    """`count` valid events (plus exact repeats at ~duplicate_rate) over Jan-Feb 2024.

    Hundreds of entities, several models and tag sets, sessions whose turns
    interleave; timestamps in several formats; a quarter of the events of
    catalog models without `cost` (priced by the pipeline), some with cache
    tokens; repeats are exact copies, as a producer retry or a replay would send them.
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    base_ms = 1_706_659_200_000  # 2024-01-31T00:00:00Z: spans a month end and 29 Feb
    for i in range(count):
        etype = rng.choice(ENTITY_TYPES)
        model, provider = rng.choice(MODELS)
        ts_ms = base_ms + rng.randrange(0, 30 * 86_400_000)
        event: dict[str, Any] = {
            "event_id": f"e{seed}-{i}",
            "timestamp": ts_ms if i % 3 == 0 else _rfc3339(ts_ms, rng.choice((0, 330, -480))),
            "entity_type": etype,
            "entity_id": f"{etype}-{rng.randrange(300)}",
            "model": model,
            "provider": provider,
            "input_tokens": rng.randrange(0, 20_000),
            "output_tokens": rng.randrange(0, 4_000),
            "cost": round(rng.uniform(0, 0.5), rng.choice((2, 6, 9, 11))),
        }
        if model in CATALOG_MODELS and rng.random() < 0.3:
            del event["cost"]  # priced from the catalog
            if rng.random() < 0.5:
                event["cache_read_tokens"] = rng.randrange(0, event["input_tokens"] + 1)
        if i % 4:
            event["latency_ms"] = rng.choice((rng.randrange(50, 9000), round(rng.uniform(1, 900), 3)))
        if i % 5 == 0:
            event["project_id"] = rng.choice(("acme", "globex"))
        tags = rng.choice(TAG_SETS)
        if tags:
            event["tags"] = tags
        if i % 2 == 0:
            # Turns of one session keep one entity (as a real conversation does).
            event["session_id"] = f"s{seed}-{event['entity_id']}-{rng.randrange(4)}"
        events.append(event)
        if rng.random() < duplicate_rate:
            events.insert(rng.randrange(len(events)), dict(event))
    # Later repeats of earlier events (replays reaching back further).
    for _ in range(int(count * duplicate_rate)):
        events.append(dict(rng.choice(events)))
    return events


def _rfc3339(ts_ms: int, offset_minutes: int) -> str:
    from datetime import UTC, datetime, timedelta, timezone

    moment = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts_ms)).astimezone(
        timezone(timedelta(minutes=offset_minutes))
    )
    text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


async def produce_paced(
    settings: Settings, values: list[dict[str, Any] | bytes | None], *, chunk: int = 500, pause_s: float = 0.0
) -> None:
    """Produce in chunks (awaiting each chunk's acks), sleeping `pause_s` between chunks.

    Keys are the entity_id (as producers are told to), so an entity's events
    stay in one partition; a bytes/None value goes with key b"bad".
    """
    topic = settings.events_topic
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for start in range(0, len(values), chunk):
            futures = []
            for value in values[start : start + chunk]:
                if isinstance(value, dict):
                    raw, key = orjson.dumps(value), str(value.get("entity_id", "")).encode()
                else:
                    raw, key = value, b"bad"
                futures.append(await producer.send(topic, raw, key=key))
            await asyncio.gather(*futures)
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def stored_offsets_total(redis: Any, settings: Settings) -> int:
    from infraprism.core.keys import KeyLayout

    key = KeyLayout(settings.key_prefix).offsets(settings.events_topic, settings.aggregator_group)
    return sum(int(v) for v in (await redis.hgetall(key)).values())

"""End to end through the CLI: `infraprism replay` -> `infraprism aggregator` -> Redis and the DLQ.

Every kind of bad event in events.md lands in the dead-letter topic with its
reason, the valid events around them are all counted, exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import orjson
import pytest

from infraprism.core.buckets import Granularity
from infraprism.core.keys import Dimension, KeyLayout
from tests.pipeline.helpers import read_all, wait_caught_up

VALID = [
    {
        "event_id": f"e2e-{i}",
        "timestamp": f"2025-03-0{1 + i % 3}T12:00:00+02:00",
        "entity_type": "customer",
        "entity_id": f"cust-{i % 4}",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 1000 + i,
        "output_tokens": 50 + i,
        "cost": float(f"0.00{i + 1}7"),
        "latency_ms": 200 + i,
        "session_id": f"sess-{i % 3}",
        "tags": {"feature": "chatbot", "env": "production"},
    }
    for i in range(40)
] + [
    # No cost: priced from the genai-prices catalog at the event's timestamp.
    {
        "event_id": "e2e-priced",
        "timestamp": 1740830400000,
        "entity_type": "user",
        "entity_id": "u1",
        "model": "gpt-4o-mini",
        "input_tokens": 1_000_000,
        "output_tokens": 1_000_000,
    },
]

# (raw line, a word the DLQ reason must contain)
BAD = [
    (b"{not json", "JSON"),
    (b'\xff\xfe{"event_id": 1}', "UTF-8"),
    (b"[1, 2, 3]", "object"),
    (orjson.dumps({**VALID[0], "event_id": "bad-missing", "model": None}), "model: required"),
    (orjson.dumps({**VALID[0], "event_id": "bad-type", "input_tokens": "12"}), "input_tokens: must be an integer"),
    (orjson.dumps({**VALID[0], "event_id": "bad-negative", "cost": -0.5}), "cost: must be 0-1000000, got -0.5"),
    (orjson.dumps({**VALID[0], "event_id": "bad-long", "entity_id": "x" * 257}), "entity_id: length"),
    (orjson.dumps({**VALID[0], "event_id": "bad-time", "timestamp": "yesterday"}), "timestamp"),
    (orjson.dumps({**VALID[0], "event_id": "bad-tags", "tags": {f"k{i}": "v" for i in range(33)}}), "tags"),
    (orjson.dumps({**VALID[0], "event_id": "bad-project", "project_id": "no spaces"}), "project_id"),
    (
        orjson.dumps(
            {
                k: v
                for k, v in {**VALID[0], "event_id": "bad-unpriced", "model": "no-such-model-xyz"}.items()
                if k != "cost"
            }
        ),
        "price catalog",
    ),
    (orjson.dumps({**VALID[0], "event_id": "bad-cache", "cache_read_tokens": 5000}), "cache_read_tokens"),
]


def usd_nano(value: float) -> int:
    return int((Decimal(repr(value)) * 1_000_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


@pytest.mark.timeout(180)
async def test_replay_then_aggregate_counts_valid_and_dead_letters_bad(settings, settings_env, redis_client, tmp_path):
    lines = [orjson.dumps(event) for event in VALID[:20]]
    lines += [raw for raw, _ in BAD]
    lines += [orjson.dumps(event) for event in VALID[20:]]
    lines.append(orjson.dumps(VALID[7]))  # a producer retry: counted once
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    replay = subprocess.run(
        [sys.executable, "-m", "infraprism.cli", "replay", str(source)],
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert str(len(lines)) in replay.stdout.strip().splitlines()[-1]

    worker = subprocess.Popen(
        [sys.executable, "-m", "infraprism.cli", "aggregator"],
        env=settings_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        await wait_caught_up(redis_client, settings, timeout_s=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 0, stderr.decode()[-2000:]

    layout = KeyLayout(settings.key_prefix)
    month = await redis_client.hgetall(layout.rollup("default", Dimension.TOTAL, Granularity.MONTH, "202503"))
    events, cost, input_tokens, *_ = (int(counter) for counter in month[""].split(" "))
    assert events == len(VALID)
    priced = month_cost = sum(usd_nano(e["cost"]) for e in VALID if "cost" in e)
    # gpt-4o-mini at $0.15 / $0.60 per million tokens in March 2025.
    priced += 150_000_000 + 600_000_000
    assert cost == priced, (cost, month_cost)
    assert input_tokens == sum(e["input_tokens"] for e in VALID)

    dead = [orjson.loads(v) for v in await read_all(settings, settings.dlq_topic, expect=len(BAD))]
    assert len(dead) == len(BAD)
    # Payloads that are not UTF-8 come back base64-encoded, byte for byte.
    by_payload = {d.get("payload") or base64.b64decode(d["payload_base64"]).decode("latin-1"): d for d in dead}
    for raw, word in BAD:
        record = by_payload[raw.decode("utf-8", errors="ignore") if b"\xff" not in raw else raw.decode("latin-1")]
        assert word in record["reason"], (word, record["reason"])
        assert record["source"]["topic"] == settings.events_topic
        assert isinstance(record["source"]["offset"], int)

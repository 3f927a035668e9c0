from __future__ import annotations

import orjson

from infraprism.core.buckets import Granularity
from infraprism.core.keys import Dimension, KeyLayout
from tests.pipeline.helpers import produce, read_all, running_aggregator, wait_caught_up


def event(i: int, **over):
    base = {
        "event_id": f"ev-{i}",
        "timestamp": "2025-01-15T10:00:03.120Z",
        "entity_type": "customer",
        "entity_id": f"c{i % 3}",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost": 0.001,
        "latency_ms": 100,
        "tags": {"env": "prod"},
    }
    base.update(over)
    return base


async def test_valid_events_counted_once_and_bad_ones_dead_lettered(settings, redis_client):
    good = [event(i) for i in range(100)]
    duplicate = event(5)
    bad = [b"not json", b'{"event_id": "x"}', orjson.dumps(event(1000, input_tokens=-1))]
    await produce(settings, [*good, duplicate, *bad])
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    layout = KeyLayout(settings.key_prefix)
    total = await redis_client.hgetall(layout.rollup("default", Dimension.TOTAL, Granularity.DAY, "20250115"))
    events, cost, *_ = total[""].split(" ")
    assert events == "100"
    assert cost == str(100 * 1_000_000)
    dead = [orjson.loads(v) for v in await read_all(settings, settings.dlq_topic, expect=3)]
    reasons = sorted(d["reason"] for d in dead)
    assert any("not valid UTF-8 JSON" in r for r in reasons)
    assert any(r.startswith("input_tokens: must be 0-1000000000000") for r in reasons)
    assert all(d["source"]["topic"] == settings.events_topic for d in dead)

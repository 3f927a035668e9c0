"""The largest batches a backfill makes: every variadic command of the apply script is chunked
within Lua's stack limit (about 8,000 values), whatever the section."""

from __future__ import annotations

import orjson

from infraprism.core.buckets import Granularity, labels_for_ms
from infraprism.core.cell import Cell
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, decode_batch
from infraprism.pipeline.store import Applied, RollupStore

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def scattered_events(count: int) -> list[bytes]:
    """An event an hour, each its own entity and session: a key, a version field and a
    leaderboard member for every event, as a shuffled backfill has."""
    return [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "timestamp": START_MS + i * HOUR_MS,
                "entity_type": "customer",
                "entity_id": f"c{i}",
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 7,
                "output_tokens": 3,
                "cost": 0.25,
                "session_id": f"s{i}",
                "tags": {"feature": f"f{i % 3}"},
            }
        )
        for i in range(count)
    ]


async def test_a_batch_of_9000_scattered_events_applies_whole(redis_client, settings):
    count = 9_000  # > 4,000 hash keys, version fields and board members in one call
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=7)
    encoder = BatchEncoder(key_prefix=settings.key_prefix, topic="t", group="g", dedupe_window_days=7)
    values = scattered_events(count)
    decoded = decode_batch(encoder, values, [START_MS] * count, [PartitionRange(0, 0, count)])
    assert decoded.events == count

    assert await store.apply_payload(decoded.payload) == Applied()

    months = sorted({labels_for_ms(START_MS + i * HOUR_MS)[2] for i in range(count)})
    counted = 0
    for month in months:
        cell = await redis_client.hget(layout.rollup("default", Dimension.TOTAL, Granularity.MONTH, month), "")
        counted += Cell.unpack(cell)[0]
    assert counted == count
    years = [layout.leaderboard("default", Granularity.YEAR, year, "*") for year in ("2024", "2025")]
    assert sum([await redis_client.zcard(board) for board in years]) == count
    assert await redis_client.zcard(layout.session_index("default")) == count
    assert await redis_client.hlen(layout.bucket_versions("default")) > 2 * count

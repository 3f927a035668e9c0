"""`infraprism rebuild` recomputes the aggregates from the topic alone."""

from __future__ import annotations

from infraprism.core.keys import QUARTER_LAYOUT, KeyLayout
from infraprism.pipeline.rebuild import rebuild
from tests.pipeline.helpers import produce, running_aggregator, wait_caught_up


def cost_event(i: int) -> dict:
    return {
        "event_id": f"rb-{i}",
        "timestamp": 1_736_935_203_120 + i * 997_000,
        "entity_type": "customer",
        "entity_id": f"c{i % 7}",
        "model": "gpt-4o-mini",
        "input_tokens": 100 + i,
        "output_tokens": 7,
        "cost": 0.000123 * (i % 5 + 1),
        "session_id": f"s{i % 11}",
        "tags": {"feature": f"f{i % 3}"},
    }


async def snapshot(redis, layout: KeyLayout, settings) -> dict[str, object]:
    """Every derived key's content (hashes, sorted sets and sets), dedupe sets included."""
    state: dict[str, object] = {}
    versions = layout.bucket_versions("default")
    for pattern in layout.derived_patterns(settings.events_topic, settings.aggregator_group):
        async for key in redis.scan_iter(match=pattern):
            if key == versions:
                # The API cache's bucket versions count batches, and a rebuild applies the
                # same events in batches of its own: bookkeeping, not an aggregate.
                continue
            kind = await redis.type(key)
            if kind == "hash":
                state[key] = await redis.hgetall(key)
            elif kind == "zset":
                state[key] = await redis.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                state[key] = await redis.smembers(key)
    return state


async def test_rebuild_restores_exactly_the_same_aggregates(settings, redis_client):
    layout = KeyLayout(settings.key_prefix)
    await produce(settings, [cost_event(i) for i in range(300)] + [cost_event(3)])  # one replayed duplicate
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    before = await snapshot(redis_client, layout, settings)
    assert any(":r:" in key for key in before)

    # Damage the aggregates: lose some keys, corrupt a counter.
    rollup_keys = sorted(key for key in before if ":r:" in key)
    await redis_client.delete(*rollup_keys[::3])
    member = next(iter(before[rollup_keys[1]]))
    await redis_client.hset(rollup_keys[1], member, "1 999 0 0 0 0")

    # As an earlier build left it: no mark that the hours hold their quarter-hour fields.
    await redis_client.delete(layout.layout_marker())

    deleted = await rebuild(settings)
    assert deleted > 0
    assert await redis_client.get(layout.layout_marker()) == QUARTER_LAYOUT
    # Moved before and after the deletion, so no cached API answer survives the rebuild.
    assert await redis_client.get(layout.generation()) == "2"
    assert await snapshot(redis_client, layout, settings) == before

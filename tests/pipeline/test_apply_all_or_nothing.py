"""A batch apply_batch.lua cannot apply leaves Redis byte for byte as it was, and says which key is wrong.

State is seeded through the product's write path (decode_batch + RollupStore),
then one stored key is corrupted at a time, and a batch that touches that key
is applied: the result must be `Refused` naming the key, and the DUMP and the
expiry of every key under the test's prefix must be unchanged. The new batch
is an earlier turn of the seeded session by another entity, so it writes every
kind of key, including the ones written last (session indexes, data and bucket
versions): a script that wrote anything before its last check fails here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from infraprism.core.buckets import Granularity
from infraprism.core.keys import ALL_ENTITY_TYPES, Dimension, KeyLayout
from infraprism.pipeline.decode import PartitionRange, Retention, decode_batch
from infraprism.pipeline.store import Applied, Refused, RollupStore
from tests.pipeline import reference
from tests.pipeline.poison import valid_event

PROJECT = "acme"
MS_PER_DAY = 86_400_000
# Yesterday noon UTC: inside every retention below, so the buckets keep their TTLs, and an
# hour earlier is the same day.
SEED_TS_MS = (int(time.time() * 1000) // MS_PER_DAY - 1) * MS_PER_DAY + 12 * 3_600_000
DAY = reference.labels(SEED_TS_MS)[reference.DAY]
SEED = valid_event(
    1,
    project_id=PROJECT,
    entity_type="customer",
    entity_id="c1",
    session_id="s1",
    tags={"env": "prod"},
    timestamp=SEED_TS_MS,
    latency_ms=250,
)
# An earlier turn of the session by another entity: the script moves the session out of
# c1's indexes (ZREM) and into t9's, besides every rollup, leaderboard, set and version.
EARLIER_TURN = SEED | {
    "event_id": "ev-2",
    "entity_type": "team",
    "entity_id": "t9",
    "timestamp": SEED_TS_MS - 3_600_000,
}

Corruption = Callable[[aioredis.Redis, str], Awaitable[object]]


async def replace_with_string(redis: aioredis.Redis, key: str) -> None:
    await redis.delete(key)
    await redis.set(key, "not yours")


async def replace_with_list(redis: aioredis.Redis, key: str) -> None:
    await redis.delete(key)
    await redis.rpush(key, "not yours")


async def replace_with_hash(redis: aioredis.Redis, key: str) -> None:
    await redis.delete(key)
    await redis.hset(key, "not", "yours")


def store_of(redis: aioredis.Redis, prefix: str) -> RollupStore:
    return RollupStore(
        redis,
        KeyLayout(prefix),
        topic="events",
        group="agg",
        dedupe_window_days=7.0,
        retention=Retention(hour_days=30, day_days=400, month_days=3650),
    )


class Case(NamedTuple):
    name: str
    key_of: Callable[[RollupStore], str]
    corrupt: Corruption
    written_by_the_batch: bool = True  # False: only read (a nearby dedupe slot)


CASES = [
    Case(
        "rollup cell is not six counters",
        lambda store: store.encoder.layout.rollup(PROJECT, Dimension.TOTAL, Granularity.DAY, DAY),
        lambda redis, key: redis.hset(key, "", "1 2 3"),
    ),
    Case(
        "leaderboard is a string",
        lambda store: store.encoder.layout.leaderboard(PROJECT, Granularity.DAY, DAY, ALL_ENTITY_TYPES),
        replace_with_string,
    ),
    Case(
        "session index is a list",
        lambda store: store.encoder.layout.session_index(PROJECT),
        replace_with_list,
    ),
    Case(
        # Only ZREM'd when an earlier turn moves the session to another entity: the last
        # session write of the script.
        "index the session moves out of is a list",
        lambda store: store.encoder.layout.session_entity_index(PROJECT, "customer", "c1"),
        replace_with_list,
    ),
    Case(
        "index type the session moves out of is a list",
        lambda store: store.encoder.layout.session_type_index(PROJECT, "customer"),
        replace_with_list,
    ),
    Case(
        "session cost is not a counter",
        lambda store: store.encoder.layout.session(PROJECT, "s1"),
        lambda redis, key: redis.hset(key, "cost", "abc"),
    ),
    Case(
        "data version is not a counter",
        lambda store: store.encoder.layout.data_version(PROJECT),
        lambda redis, key: redis.set(key, "x"),
    ),
    Case(
        "bucket version is not a counter",
        lambda store: store.encoder.layout.bucket_versions(PROJECT),
        lambda redis, key: redis.hset(key, f"day:{DAY}", "y"),
    ),
    Case(
        "dedupe set is a hash",
        lambda store: store.encoder.dedupe_key(PROJECT, store.encoder.dedupe_window.slot_of(SEED_TS_MS)),
        replace_with_hash,
    ),
    Case(
        "a nearby dedupe set is a string",
        lambda store: store.encoder.dedupe_key(PROJECT, store.encoder.dedupe_window.slot_of(SEED_TS_MS) - 7),
        replace_with_string,
        False,
    ),
]


@pytest.fixture
async def raw_redis(settings):
    """A client without decode_responses: DUMP answers bytes."""
    client = aioredis.Redis.from_url(settings.redis_dsn())
    yield client
    await client.aclose()


async def snapshot(redis: aioredis.Redis, prefix: str) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key under `prefix`: its DUMP and its absolute expiry (EXPIRETIME, -1 for none)."""
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    return {key: (await redis.dump(key), await redis.execute_command("EXPIRETIME", key)) for key in keys}


def changed(before: dict, after: dict) -> list[bytes]:
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


async def seed_and_encode_the_next_batch(store: RollupStore) -> bytes:
    seeded = decode_batch(store.encoder, [orjson.dumps(SEED)], [SEED_TS_MS], [PartitionRange(0, 0, 1)])
    assert await store.apply_payload(seeded.payload) == Applied()
    following = decode_batch(store.encoder, [orjson.dumps(EARLIER_TURN)], [SEED_TS_MS], [PartitionRange(0, 1, 2)])
    assert following.events == 1
    return following.payload


async def test_uncorrupted_the_batch_writes_every_key_the_cases_corrupt(redis_client, raw_redis, settings):
    """The control: without a corruption the batch applies, and changes each key a case corrupts."""
    store = store_of(redis_client, settings.key_prefix)
    payload = await seed_and_encode_the_next_batch(store)
    before = await snapshot(raw_redis, settings.key_prefix)

    assert await store.apply_payload(payload) == Applied()

    after = await snapshot(raw_redis, settings.key_prefix)
    written = set(changed(before, after))
    for case in CASES:
        if case.written_by_the_batch:
            assert case.key_of(store).encode() in written, case.name
    assert all(ttl > 0 for key, (_, ttl) in after.items() if b":r:" in key or b":lb:" in key or b":dd:" in key)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_a_refused_batch_writes_nothing_and_names_the_key(redis_client, raw_redis, settings, case):
    store = store_of(redis_client, settings.key_prefix)
    payload = await seed_and_encode_the_next_batch(store)
    key = case.key_of(store)
    await case.corrupt(redis_client, key)
    before = await snapshot(raw_redis, settings.key_prefix)

    try:
        result: object = await store.apply_payload(payload)
    except ResponseError as exc:  # the script failed part-way instead of refusing
        result = exc

    after = await snapshot(raw_redis, settings.key_prefix)
    assert changed(before, after) == [], f"the apply ({result!r}) wrote {changed(before, after)}"
    assert isinstance(result, Refused), result
    assert key in result.reason
    # Nothing was lost either: the stored offset still fences the batch's start.
    assert await store.stored_offsets() == {0: 1}


async def test_a_stored_offset_that_is_not_an_offset_refuses_the_batch(redis_client, raw_redis, settings):
    store = store_of(redis_client, settings.key_prefix)
    payload = await seed_and_encode_the_next_batch(store)
    await redis_client.hset(store.offsets_key, "0", "one")
    before = await snapshot(raw_redis, settings.key_prefix)

    result = await store.apply_payload(payload)

    assert changed(before, await snapshot(raw_redis, settings.key_prefix)) == []
    assert isinstance(result, Refused)
    assert "not an offset: one" in result.reason

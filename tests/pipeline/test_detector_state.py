"""The detector's state in the real Redis (pipeline/detector_state.py): what one worker writes,
another reads back the same; the stored formats are pinned (docs/anomalies.md)."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from infraprism.core.baseline import HistoryWrite, HourValues
from infraprism.core.episodes import TOTAL, Episode
from infraprism.core.keys import KeyLayout, entity_member
from infraprism.pipeline.detector_state import RedisEpisodes, RedisHistories, parse_history
from infraprism.settings import Settings

BIG = entity_member("customer", "big")


async def test_histories_are_read_back_as_written(redis_client: aioredis.Redis, settings: Settings) -> None:
    layout = KeyLayout(settings.key_prefix)
    writer = RedisHistories(redis_client, layout)
    fresh = await writer.load("acme", [TOTAL, BIG])
    assert [(h.first_hour, h.covered_from, h.hours) for h in fresh.values()] == [(-1, -1, {}), (-1, -1, {})]

    await writer.write(
        "acme",
        [
            HistoryWrite(BIG, {10: HourValues(3, 40, 500, 2), 11: HourValues(1, 2, 0, 0)}, first_hour=10),
            HistoryWrite(BIG, flagged=[11]),
            HistoryWrite(TOTAL, {11: HourValues(4, 42, 500, 2)}, first_hour=11, covered_from=5),
        ],
    )
    assert await redis_client.hgetall(layout.detector_history("acme", BIG)) == {
        "10": "3,40,500,2",
        "11": "1,2,0,0",
        "x11": "1",
        "first": "10",
    }
    read = await RedisHistories(redis_client, layout).load("acme", [BIG, TOTAL])
    assert read[BIG].hours == {10: HourValues(3, 40, 500, 2), 11: HourValues(1, 2, 0, 0)}
    assert (read[BIG].flagged, read[BIG].first_hour) == ({11}, 10)
    assert read[BIG].covered_from == 10  # no "covered" field: what is held is what is known
    assert (read[TOTAL].first_hour, read[TOTAL].covered_from) == (11, 5)

    await writer.write("acme", [HistoryWrite(BIG, dropped=[10, 11], unflagged=[11], covered_from=12)])
    assert await redis_client.hgetall(layout.detector_history("acme", BIG)) == {"first": "10", "covered": "12"}


async def test_a_tiny_cache_still_returns_every_history(redis_client: aioredis.Redis, settings: Settings) -> None:
    store = RedisHistories(redis_client, KeyLayout(settings.key_prefix), max_cached=1)
    members = [TOTAL, BIG, entity_member("customer", "small")]
    assert list(await store.load("acme", members)) == members


async def test_episodes_are_saved_at_once_and_read_back(redis_client: aioredis.Redis, settings: Settings) -> None:
    layout = KeyLayout(settings.key_prefix)
    store = RedisEpisodes(redis_client, layout)
    open_one = Episode("anomaly_1", "hour", 6e10, "medium", 1_736_937_000_000)
    episodes = await store.load("acme")
    assert episodes == {}
    episodes["cost_spike\x1f"] = open_one
    await store.save("acme", {"cost_spike\x1f": open_one, "volume_spike\x1f": None})
    raw = await redis_client.hgetall(layout.detector_episodes("acme"))
    assert orjson.loads(raw["cost_spike\x1f"]) == {
        "anomaly_id": "anomaly_1",
        "window": "hour",
        "actual": 6e10,
        "severity": "medium",
        "last_anomalous_ms": 1_736_937_000_000,
    }
    assert await RedisEpisodes(redis_client, layout).load("acme") == {"cost_spike\x1f": open_one}
    await store.save("acme", {"cost_spike\x1f": None})
    assert await RedisEpisodes(redis_client, layout).load("acme") == {}


def test_a_history_reads_the_same_from_bytes() -> None:
    raw = {b"first": b"7", b"covered": b"3", b"7": b"1,2,3,4", b"x7": b"1"}
    history = parse_history(raw)
    assert (history.first_hour, history.covered_from, history.flagged) == (7, 3, {7})
    assert history.hours == {7: HourValues(1, 2, 3, 4)}

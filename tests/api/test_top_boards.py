"""/entities/top from leaderboards parsed in the API process, against the script that
unions them inside Redis: the same candidates, the same answers, one moment's data."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from api.cache import ResponseCache
from api.planner import plan_leaderboard
from api.service import Reader, _top_candidates
from infraprism.core.buckets import Granularity
from infraprism.core.keys import ALL_ENTITY_TYPES, KeyLayout
from infraprism.settings import Settings
from tests.api.helpers import load_events


def lua_candidates(scores: list[float], limit: int, descending: bool) -> set[int]:
    """TOP_ENTITIES_LUA's choice, step by step as the script takes it, over the union
    sorted by score: positions in `scores`."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ordered = [scores[i] for i in order]
    n = len(ordered)
    first, last = 0, n - 1
    if descending:
        if n > limit:
            first = n - limit
            while first > 0 and ordered[first - 1] == ordered[first]:
                first -= 1
    else:
        zeros = 0
        while zeros < n and ordered[zeros] <= 0:
            zeros += 1
        last = min(n, zeros + limit) - 1
        while 0 <= last < n - 1 and ordered[last + 1] == ordered[last]:
            last += 1
    return {order[position] for position in range(first, last + 1)}


# Few distinct values, so ties at the boundary are common; zero and negative scores too.
scores = st.lists(st.sampled_from([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 5.0, 5.0, 8.0]), max_size=30)


@given(scores, st.integers(min_value=1, max_value=12), st.booleans())
def test_candidates_are_the_scripts(values: list[float], limit: int, descending: bool) -> None:
    picked = _top_candidates(np.array(values, dtype=np.float64), limit, descending)
    assert set(np.flatnonzero(picked).tolist()) == lua_candidates(values, limit, descending)


def _event(project: str, n: int, entity: tuple[str, str], day: str, cost: float) -> dict[str, object]:
    return {
        "event_id": f"top-{n}",
        "timestamp": f"{day}T12:00:00Z",
        "project_id": project,
        "entity_type": entity[0],
        "entity_id": entity[1],
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
    }


def _random_events(project: str, count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    days = ["2024-12-31", "2025-01-01", "2025-01-15", "2025-01-31", "2025-02-01", "2025-06-30", "2025-12-01"]
    entities = [("customer", f"c{i}") for i in range(12)] + [("team", f"t{i}") for i in range(4)]
    return [
        _event(project, n, rng.choice(entities), rng.choice(days), rng.choice([0.0, 0.5, 1.0, 1.25, 2.0, 3.0]))
        for n in range(count)
    ]


READS = [
    (date(2025, 1, 1), date(2025, 12, 31), None, 5, True),
    (date(2025, 1, 1), date(2025, 12, 31), None, 5, False),
    (date(2025, 1, 2), date(2025, 12, 3), "customer", 3, True),  # year minus, plus edge days
    (date(2025, 1, 2), date(2025, 12, 3), "customer", 100, False),
    (date(2024, 12, 31), date(2025, 1, 31), "team", 2, True),  # across the year's end
    (date(2025, 1, 16), date(2025, 1, 30), None, 4, False),  # no events at all
]


@pytest.mark.parametrize("read", READS)
async def test_parsed_boards_answer_as_the_script_does(
    redis_client: aioredis.Redis, settings: Settings, project: str, read: tuple
):
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, _random_events(project, 120, seed=len(str(read))), batches=3)
    by_script = await Reader(redis_client, layout, project, None).top_entities(*read)
    cache = ResponseCache()
    first = await Reader(redis_client, layout, project, cache).top_entities(*read)
    assert first == by_script
    # A batch changes one board; the answer is recomputed from the parsed others.
    await load_events(redis_client, settings, [_event(project, 1000, ("customer", "c3"), "2025-06-30", 7.5)])
    again = await Reader(redis_client, layout, project, cache).top_entities(*read)
    assert again == await Reader(redis_client, layout, project, None).top_entities(*read)


async def test_boards_are_taken_parsed_while_their_version_stands(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """The parsed path is the one taken: a board deleted behind Redis's back (its version
    stands) still counts from its parsed copy, while the script no longer sees it."""
    layout = KeyLayout(settings.key_prefix)
    cache = ResponseCache()
    read = (date(2025, 1, 1), date(2025, 2, 28), None, 1, True)  # January and February boards
    a, b = ("customer", "a"), ("customer", "b")
    await load_events(
        redis_client, settings, [_event(project, 1, a, "2025-01-10", 3.0), _event(project, 2, b, "2025-02-10", 2.0)]
    )
    first = await Reader(redis_client, layout, project, cache).top_entities(*read)
    assert [(row["entity_id"], row["total_cost"]) for row in first["data"]] == [("a", 3.0)]
    await redis_client.delete(layout.leaderboard(project, Granularity.MONTH, "202501", ALL_ENTITY_TYPES))
    # A batch into February: the answer is recomputed, January's board taken parsed.
    await load_events(redis_client, settings, [_event(project, 3, a, "2025-02-11", 0.5)])
    second = await Reader(redis_client, layout, project, cache).top_entities(*read)
    assert [(row["entity_id"], row["total_cost"]) for row in second["data"]] == [("a", 3.5)]
    by_script = await Reader(redis_client, layout, project, None).top_entities(*read)
    assert [(row["entity_id"], row["total_cost"]) for row in by_script["data"]] == [("b", 2.0)]


async def test_a_key_moved_since_the_token_leaves_the_answer_to_the_script(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """Versions read, then a batch, then the boards and cells: they are not the data of the
    token's moment, so the parsed path declines and the script answers, from the data as
    it is now. Both ways: boards taken parsed (the cells' versions have moved), and boards
    read again (their own versions have moved)."""
    layout = KeyLayout(settings.key_prefix)
    cache = ResponseCache()
    read = (date(2025, 1, 1), date(2025, 1, 31), None, 10, True)
    plan = plan_leaderboard(*read[:3])
    await load_events(redis_client, settings, [_event(project, 1, ("customer", "a"), "2025-01-10", 1.0)])
    early = Reader(redis_client, layout, project, cache)
    await early.top_entities(*read)
    tokens_before = dict(early.bucket_tokens)
    await load_events(redis_client, settings, [_event(project, 2, ("customer", "b"), "2025-01-11", 2.0)])

    late = Reader(redis_client, layout, project, cache, bucket_tokens=tokens_before)
    keys, entity_keys = late._leaderboard_keys(plan)
    assert await late._top_from_parsed_boards(plan, keys, entity_keys, 10, True) is None
    cache.buckets.clear()
    assert await late._top_from_parsed_boards(plan, keys, entity_keys, 10, True) is None
    body = await Reader.top_entities.__wrapped__(late, *read)  # type: ignore[attr-defined]
    assert [(row["entity_id"], row["rank"]) for row in body["data"]] == [("b", 1), ("a", 2)]

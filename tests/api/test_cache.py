"""The response cache serves a repeated read, and never a stale one."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import httpx
import redis.asyncio as aioredis

from infraprism.api.cache import AnswerScope, ResponseCache, cached_answer, range_version_fields
from infraprism.api.repository import Repository
from infraprism.core.buckets import Granularity
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.settings import Settings
from tests.api.helpers import load_events

PARAMS = {"start_date": "2025-01-01", "end_date": "2025-01-31", "group_by": "entity"}


def event(project: str, n: int, cost: float, timestamp: str = "2025-01-15T10:00:00Z") -> dict[str, object]:
    return {
        "event_id": f"cache-{n}",
        "timestamp": timestamp,
        "project_id": project,
        "entity_type": "customer",
        "entity_id": "acme",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
    }


async def test_repeat_is_served_from_cache_and_a_new_batch_invalidates_it(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    first = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert first["summary"]["total_cost"] == 1.25

    # Remove the rollups behind Redis's back (no batch, so no version change):
    # an identical request is answered from the cache.
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:r:*"):
        await redis_client.delete(key)
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json() == first

    # A real batch bumps the project's data version in the same atomic call:
    # the next read is fresh (and sees only what Redis now holds).
    await load_events(redis_client, settings, [event(project, 2, 0.5)])
    fresh = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert fresh["summary"]["total_cost"] == 0.5
    assert fresh["data"][0]["total_events"] == 1


async def test_cache_is_per_project_and_per_query(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    await load_events(redis_client, settings, [event(project, 1, 2.0), event("someone-else", 1, 9.0)])
    january = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    february = (
        await authed.get("/v1/analytics/costs", params={**PARAMS, "start_date": "2025-02-01", "end_date": "2025-02-28"})
    ).json()
    assert january["summary"]["total_cost"] == 2.0
    assert february["summary"]["total_cost"] == 0


async def test_ingest_into_other_buckets_keeps_an_answer_and_ingest_into_its_buckets_refreshes_it(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    """The cache is validated by the versions of exactly the keys an answer reads: live
    ingest into another month leaves January's answers cached, ingest into January does not."""
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    reads = {
        "/v1/analytics/costs": PARAMS,
        "/v1/analytics/entities/top": {"start_date": "2025-01-01", "end_date": "2025-01-31"},
        "/v1/analytics/models": {"start_date": "2025-01-01", "end_date": "2025-01-31"},
    }
    first = {path: (await authed.get(path, params=params)).json() for path, params in reads.items()}
    assert first["/v1/analytics/costs"]["summary"]["total_cost"] == 1.25

    # Remove January's aggregates behind Redis's back, then apply a real batch in March.
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:*202501*"):
        await redis_client.delete(key)
    await load_events(redis_client, settings, [event(project, 2, 7.0, "2025-03-02T08:00:00Z")])
    for path, params in reads.items():
        assert (await authed.get(path, params=params)).json() == first[path], path

    # A batch into January changes the versions of the keys these answers read: all fresh.
    await load_events(redis_client, settings, [event(project, 3, 0.5, "2025-01-20T08:00:00Z")])
    fresh = (await authed.get("/v1/analytics/costs", params=PARAMS)).json()
    assert fresh["summary"]["total_cost"] == 0.5
    top = (await authed.get("/v1/analytics/entities/top", params=reads["/v1/analytics/entities/top"])).json()
    assert [row["total_cost"] for row in top["data"]] == [0.5]
    models = (await authed.get("/v1/analytics/models", params=reads["/v1/analytics/models"])).json()
    assert [row["total_cost"] for row in models["data"]] == [0.5]


async def test_a_rebuild_generation_invalidates_every_cached_answer(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await load_events(redis_client, settings, [event(project, 1, 1.25)])
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json()["summary"]["total_cost"] == 1.25
    # What `infraprism rebuild` does: delete the derived keys, bucket versions included, and
    # move the generation. Re-aggregating then brings the versions back to the numbers the
    # cached answer was stored with, over different data: only the generation tells them apart.
    await redis_client.incr(layout.generation())
    async for key in redis_client.scan_iter(match=f"{layout.root}:{project}:*"):
        await redis_client.delete(key)
    await redis_client.incr(layout.generation())
    await load_events(redis_client, settings, [event(project, 4, 3.0)])
    assert (await authed.get("/v1/analytics/costs", params=PARAMS)).json()["summary"]["total_cost"] == 3.0


async def test_an_answer_over_changed_and_unchanged_buckets_reads_only_the_changed_ones_again(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    """Parsed buckets outlive a cached answer: when a batch changes one bucket of a range,
    the answer is computed again from the parsed copies of the others (the bucket cache),
    and a bucket is read again as soon as its own version moves."""
    layout = KeyLayout(settings.key_prefix)
    # January as its month bucket, February 1-10 as day buckets.
    span = {"start_date": "2025-01-01", "end_date": "2025-02-10", "group_by": "entity"}
    await load_events(redis_client, settings, [event(project, 1, 1.25), event(project, 2, 2.0, "2025-02-05T08:00:00Z")])
    assert (await authed.get("/v1/analytics/costs", params=span)).json()["summary"]["total_cost"] == 3.25

    # January's entity rollup removed behind Redis's back (its version stands), then a real
    # batch into February 5: January still counts, from its parsed copy.
    await redis_client.delete(layout.rollup(project, Dimension.ENTITY, Granularity.MONTH, "202501"))
    await load_events(redis_client, settings, [event(project, 3, 0.5, "2025-02-05T09:00:00Z")])
    second = (await authed.get("/v1/analytics/costs", params=span)).json()
    assert second["summary"] == {
        "total_cost": 3.75,
        "total_events": 3,
        "period": {"start": "2025-01-01", "end": "2025-02-10", "tz": "UTC"},
    }
    assert [(row["entity_id"], row["total_cost"], row["total_events"]) for row in second["data"]] == [("acme", 3.75, 3)]

    # A batch into January moves January's version: it is read again, and Redis now holds
    # only the new event there.
    await load_events(redis_client, settings, [event(project, 4, 0.25, "2025-01-20T08:00:00Z")])
    third = (await authed.get("/v1/analytics/costs", params=span)).json()
    assert (third["summary"]["total_cost"], third["summary"]["total_events"]) == (2.75, 3)


async def test_ingest_into_a_day_outside_the_range_keeps_the_answer_even_when_its_buckets_change(
    authed: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings, project: str
):
    """January 1-29 is read as January minus its 30th and 31st. A batch of January 30 changes
    both keys, not the answer: answers are validated by the versions of their range's days."""
    layout = KeyLayout(settings.key_prefix)
    span = {"start_date": "2025-01-01", "end_date": "2025-01-29", "group_by": "entity"}
    await load_events(redis_client, settings, [event(project, 1, 1.25, "2025-01-05T10:00:00Z")])
    first = (await authed.get("/v1/analytics/costs", params=span)).json()
    assert first["summary"]["total_cost"] == 1.25

    # January's rollup removed behind Redis's back, then a batch of January 30: read again,
    # the answer would be January (now only the 30th) minus the 30th, zero. It stays cached.
    await redis_client.delete(layout.rollup(project, Dimension.ENTITY, Granularity.MONTH, "202501"))
    await load_events(redis_client, settings, [event(project, 2, 4.0, "2025-01-30T10:00:00Z")])
    assert (await authed.get("/v1/analytics/costs", params=span)).json() == first

    # A batch of January 10, inside the range, moves its day's version: read again.
    await load_events(redis_client, settings, [event(project, 3, 0.5, "2025-01-10T10:00:00Z")])
    fresh = (await authed.get("/v1/analytics/costs", params=span)).json()
    assert (fresh["summary"]["total_cost"], fresh["summary"]["total_events"]) == (0.5, 1)


async def test_a_cached_answer_is_rendered_once_per_format_and_again_when_recomputed():
    """A 10,000-row answer is 1.5 MB of JSON: a cached answer keeps its rendering."""
    cache = ResponseCache()
    version = "v1"
    renders: list[str] = []

    async def token() -> str:
        return version

    async def compute() -> dict[str, object]:
        return {"data": [{"n": len(renders)}]}

    def render_as(fmt: str):
        def render(body: dict[str, object]) -> bytes:
            renders.append(fmt)
            return f"{fmt}:{body}".encode()

        return render

    first = await cache.get_or_compute("p", "q", token, compute)
    sent = []
    for _ in range(3):
        body = await cache.get_or_compute("p", "q", token, compute)
        sent.append(cache.render(body, "json", render_as("json")))
    assert sent == [b"json:{'data': [{'n': 0}]}"] * 3
    assert cache.render(first, "csv", render_as("csv")) == b"csv:{'data': [{'n': 0}]}"
    assert renders == ["json", "csv"]

    version = "v2"  # the data changed: a new body, rendered anew
    again = cache.render(await cache.get_or_compute("p", "q", token, compute), "json", render_as("json"))
    assert again == b"json:{'data': [{'n': 2}]}"
    assert renders == ["json", "csv", "json"]
    # A body the cache does not hold is rendered every time.
    loose = {"data": []}
    cache.render(loose, "json", render_as("json"))
    cache.render(loose, "json", render_as("json"))
    assert renders[-2:] == ["json", "json"]


async def test_concurrent_misses_at_one_token_share_one_computation_and_not_across_tokens():
    """Sixteen dashboards asking for an answer the last batch changed: one computes it."""
    cache = ResponseCache()
    version = "v1"
    computed: list[str] = []
    release = asyncio.Event()

    async def token() -> str:
        return version

    async def compute() -> dict[str, object]:
        computed.append(version)
        await release.wait()
        return {"data": [{"at": version}]}

    first = [asyncio.create_task(cache.get_or_compute("p", "q", token, compute)) for _ in range(8)]
    await asyncio.sleep(0)
    version = "v2"  # a batch lands: requests reading the new token must not share v1's body
    second = [asyncio.create_task(cache.get_or_compute("p", "q", token, compute)) for _ in range(8)]
    await asyncio.sleep(0)
    assert computed == ["v1", "v2"]  # sixteen requests, two computations under way
    release.set()
    bodies = await asyncio.gather(*first, *second)
    assert computed == ["v1", "v2"]
    # The v1 computation read the data after the batch: its body holds v2's data, as any
    # answer computed after a write does. What matters is that v2's readers did not share it.
    assert all(body is bodies[0] for body in bodies[:8])
    assert all(body is bodies[8] for body in bodies[8:])
    assert bodies[0] is not bodies[8]


class FirstCallWaits:
    """A computation for the cache whose first call waits for `release` (and then fails,
    if told to), as a leader stuck on Redis does; later calls answer at once."""

    def __init__(self, *, fail: bool) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self) -> dict[str, object]:
        self.calls += 1
        call = self.calls
        if call == 1:
            await self.release.wait()
            if self.fail:
                raise ConnectionError("redis went away")
        await asyncio.sleep(0)  # the others are waiting by now
        return {"data": [{"call": call}]}


async def constant_token() -> str:
    return "v1"


async def test_when_the_shared_computation_fails_one_waiter_takes_over_for_the_others():
    cache = ResponseCache()
    compute = FirstCallWaits(fail=True)
    leader = asyncio.create_task(cache.get_or_compute("p", "q", constant_token, compute))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(cache.get_or_compute("p", "q", constant_token, compute)) for _ in range(3)]
    await asyncio.sleep(0)
    assert compute.calls == 1  # the waiters are waiting, not computing
    compute.release.set()
    results = await asyncio.gather(leader, *waiters, return_exceptions=True)
    assert isinstance(results[0], ConnectionError)
    assert compute.calls == 2  # one waiter computed again, the other two took its answer
    assert all(body is results[1] for body in results[1:])
    assert results[1]["data"] == [{"call": 2}]


async def test_a_cancelled_leader_hands_over_to_a_waiter():
    """A leader whose client went away and whose request was cancelled."""
    cache = ResponseCache()
    compute = FirstCallWaits(fail=False)  # never released: only cancelled
    leader = asyncio.create_task(cache.get_or_compute("p", "q", constant_token, compute))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get_or_compute("p", "q", constant_token, compute))
    await asyncio.sleep(0)
    leader.cancel()
    assert (await waiter)["data"] == [{"call": 2}]
    assert leader.cancelled()


class Counting:
    """A service whose answers count their computations: `cached_answer` on a stand-in."""

    def __init__(self, repository: Repository, cache: ResponseCache | None) -> None:
        self.repository = repository
        self.cache = cache
        self.computed = 0

    def _january(self, *_: Any) -> AnswerScope:
        return AnswerScope(range_version_fields((date(2025, 1, 1), date(2025, 1, 31))))

    @cached_answer(_january)
    async def by_range(self, n: int) -> dict[str, Any]:
        self.computed += 1
        return {"data": [n]}

    @cached_answer(None)
    async def by_data_version(self, n: int) -> dict[str, Any]:
        self.computed += 1
        return {"data": [n]}


async def test_cached_answer_is_kept_per_method_and_arguments_while_its_versions_stand(
    repository: Repository, redis_client: aioredis.Redis, settings: Settings
):
    service = Counting(repository, ResponseCache())
    answers = [await service.by_range(1), await service.by_range(1), await service.by_range(2)]
    assert service.computed == 2
    assert answers[0] is answers[1]
    assert await service.by_data_version(1) is not answers[0]  # another method, another entry
    assert service.computed == 3

    # A batch in March moves the data version, not January's versions.
    march = {**event(repository.project, 1, 1.0), "timestamp": "2025-03-02T08:00:00Z"}
    await load_events(redis_client, settings, [march])
    assert await service.by_range(1) is answers[0]
    await service.by_data_version(1)
    assert service.computed == 4
    await load_events(redis_client, settings, [event(repository.project, 2, 1.0)])
    await service.by_range(1)
    assert service.computed == 5


async def test_without_a_cache_every_answer_is_computed(repository: Repository):
    service = Counting(repository, None)
    await service.by_range(1)
    await service.by_range(1)
    assert service.computed == 2

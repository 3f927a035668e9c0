"""The API's Redis reads: its scripts, one moment's data, version tokens, the session index."""

from __future__ import annotations

import hashlib
from datetime import date
from importlib.resources import files

import redis.asyncio as aioredis
from pydantic import SecretStr

from infraprism.api.planner import Filters, GroupBy, Grouping, instant_range_ms, plan_costs, plan_leaderboard
from infraprism.api.repository import HMGET_MANY, TOP_ENTITIES, Repository, load_scripts
from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import start_redis
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.api.helpers import anomaly_record, load_events, sample_event

JANUARY = (date(2025, 1, 1), date(2025, 1, 31))


def session_event(project: str, n: int, entity: tuple[str, str], session: str, day: int) -> dict[str, object]:
    event = sample_event(project, n, entity[1], 0.25, entity_type=entity[0], session_id=session)
    return {**event, "timestamp": f"2025-01-{day:02d}T10:00:00Z"}


async def test_the_scripts_are_the_packages_lua_files_and_load_under_their_sha(redis_client: aioredis.Redis):
    for script, name in ((HMGET_MANY, "hmget_many.lua"), (TOP_ENTITIES, "top_entities.lua")):
        text = files("infraprism.api").joinpath(name).read_text()
        assert script.text == text
        assert script.sha == hashlib.sha1(text.encode()).hexdigest()
    await load_scripts(redis_client)
    assert await redis_client.script_exists(HMGET_MANY.sha, TOP_ENTITIES.sha) == [True, True]


async def test_reads_load_the_scripts_again_after_a_flush(settings: Settings, project: str):
    own = start_redis()  # a flush of the shared Redis would drop the scripts of other tests
    try:
        local = settings.model_copy(update={"redis_url": SecretStr(own.address)})
        client = aioredis.Redis.from_url(local.redis_dsn(), decode_responses=True)
        try:
            await load_events(client, local, [sample_event(project, 1, "acme", 2.0)])
            repository = Repository(client, KeyLayout(local.key_prefix), project)
            one_entity = plan_costs(*JANUARY, Filters("customer", "acme"), Grouping())
            leaderboard = plan_leaderboard(*JANUARY, None)
            for _ in range(2):
                await client.script_flush()
                ((per_bucket,),) = await repository.read_plans([one_entity])
                assert [cell for (cell,) in per_bucket if cell is not None] == ["1 2000000000 100 50 1001000 1"]
                await client.script_flush()
                members, _ = await repository.top_entity_candidates(leaderboard, 10, True)
                assert members == ["customer\x1facme"]
        finally:
            await client.aclose()
    finally:
        own.stop()


async def test_read_plans_gives_each_plan_its_replies(repository: Repository, redis_client, settings: Settings):
    await load_events(redis_client, settings, [sample_event(repository.project, n, "acme", 1.0) for n in range(3)])
    scan = plan_costs(date(2025, 1, 1), date(2025, 1, 3), Filters(), Grouping(GroupBy.ENTITY))
    member = plan_costs(date(2025, 1, 1), date(2025, 1, 3), Filters("customer", "acme"), Grouping())
    scan_replies, member_replies = await repository.read_plans([scan, member])
    assert len(scan_replies) == len(scan.buckets) == 3  # one HGETALL per day
    assert [set(cells) for cells in scan_replies] == [{"customer\x1facme"}] * 3
    assert len(member_replies) == 1  # one script call for every bucket
    assert [cells[0].split()[0] for cells in member_replies[0]] == ["1", "1", "1"]


async def test_range_versions_move_with_a_batch_in_the_range_only(
    repository: Repository, redis_client, settings: Settings
):
    project = repository.project
    await load_events(redis_client, settings, [sample_event(project, 1, "acme", 1.0)])
    fields = KeyLayout.range_version_fields(*JANUARY)
    keys = repository.rollup_keys(plan_costs(*JANUARY, Filters(), Grouping(GroupBy.ENTITY)))
    first = await repository.range_versions(fields, keys)
    assert set(repository.bucket_tokens) == set(keys)
    _, tokens = await repository.read_hashes(keys)
    assert tokens == repository.bucket_tokens  # the same token, whichever read takes it

    await load_events(
        redis_client, settings, [{**sample_event(project, 2, "acme", 1.0), "timestamp": "2025-03-02T10:00:00Z"}]
    )
    assert await repository.range_versions(fields, keys) == first
    await load_events(redis_client, settings, [sample_event(project, 3, "acme", 1.0)])
    assert await repository.range_versions(fields, keys) != first
    assert repository.bucket_tokens != tokens


async def test_session_ids_newest_first_by_entity_type_and_id(repository: Repository, redis_client, settings):
    project = repository.project
    events = [
        session_event(project, 1, ("customer", "acme"), "s1", 3),
        session_event(project, 2, ("team", "acme"), "s2", 5),
        session_event(project, 3, ("customer", "globex"), "s3", 7),
        session_event(project, 4, ("customer", "acme"), "s4", 9),
        {**session_event(project, 5, ("customer", "acme"), "feb", 9), "timestamp": "2025-02-01T00:00:00Z"},
    ]
    await load_events(redis_client, settings, events)
    start_ms, end_ms = instant_range_ms(*JANUARY)
    expected = {
        (None, None): ["s4", "s3", "s2", "s1"],
        ("customer", None): ["s4", "s3", "s1"],
        (None, "acme"): ["s4", "s2", "s1"],
        ("customer", "acme"): ["s4", "s1"],
        (None, "nobody"): [],
        ("nobody", None): [],
    }
    for (entity_type, entity_id), ids in expected.items():
        assert await repository.session_ids(start_ms, end_ms, entity_type, entity_id) == ids, (entity_type, entity_id)
    ids, records = await repository.read_sessions(start_ms, end_ms, "customer", "acme")
    assert ids == ["s4", "s1"]
    assert [record[:2] for record in records] == [["customer", "acme"], ["customer", "acme"]]


async def test_a_batch_between_the_session_index_and_the_records_reads_both_again(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    """The index and then the records it lists, not in one atomic read: when a batch lands
    in between, the data version has moved and both are read again, together."""
    acme = ("customer", "acme")
    await load_events(redis_client, settings, [session_event(project, 1, acme, "first", 10)])
    index_reads = 0

    class BatchAfterTheFirstIndexRead(Repository):
        async def session_ids(self, *args):  # type: ignore[no-untyped-def]
            nonlocal index_reads
            ids = await super().session_ids(*args)
            index_reads += 1
            if index_reads == 1:
                await load_events(redis_client, settings, [session_event(project, 2, acme, "second", 11)])
            return ids

    repository = BatchAfterTheFirstIndexRead(redis_client, KeyLayout(settings.key_prefix), project)
    ids, records = await repository.read_sessions(*instant_range_ms(*JANUARY), None, None)
    assert index_reads == 2
    assert ids == ["second", "first"]
    assert len(records) == 2


async def test_anomalies_and_dismissals_stay_in_the_project(repository: Repository, redis_client, settings: Settings):
    layout = KeyLayout(settings.key_prefix)
    await anomaly_store.create(redis_client, layout, anomaly_record(repository.project, 1, "active"))
    await anomaly_store.create(redis_client, layout, anomaly_record("another-project", 2, "active"))
    start_ms, end_ms = instant_range_ms(*JANUARY)
    assert [record.id for record in await repository.anomalies(start_ms, end_ms, None, None, None)] == ["an-1"]
    assert await repository.anomalies(start_ms, end_ms, None, None, "resolved") == []
    assert await repository.dismiss_anomaly("an-2") is None
    dismissed = await repository.dismiss_anomaly("an-1")
    assert dismissed is not None
    assert dismissed.status == "dismissed"

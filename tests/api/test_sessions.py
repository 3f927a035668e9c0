"""/sessions: a page of sessions, newest first, with a summary of every matching one."""

from __future__ import annotations

from datetime import date

from infraprism.api.cache import ResponseCache
from infraprism.api.repository import Repository
from infraprism.api.sessions import SessionsService
from infraprism.settings import Settings
from tests.api.helpers import load_events, sample_event

JANUARY = (date(2025, 1, 1), date(2025, 1, 31))


def turn(project: str, n: int, session: str, timestamp: str, cost: float) -> dict[str, object]:
    return {**sample_event(project, n, "acme", cost, session_id=session), "timestamp": timestamp}


async def test_a_page_of_sessions_and_the_summary_of_all(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    events = [
        turn(project, 1, "early", "2025-01-03T10:00:00.250Z", 1.0),
        turn(project, 2, "early", "2025-01-03T10:05:00Z", 0.5),
        turn(project, 3, "late", "2025-01-20T08:00:00Z", 0.25),
        turn(project, 4, "later", "2025-01-21T08:00:00Z", 0.125),
    ]
    await load_events(redis_client, settings, events)
    body = await SessionsService(repository).sessions(*JANUARY, None, None, 2, False, "UTC")
    assert [row["session_id"] for row in body["data"]] == ["later", "late"]  # newest first, a page of 2
    assert body["summary"] == {
        "total_sessions": 3,  # every matching session, not the page
        "avg_turns_per_session": 1.3,  # 4 turns / 3, one decimal
        "avg_cost_per_session": 0.625,  # $1.875 / 3
    }
    everything = await SessionsService(repository).sessions(*JANUARY, "customer", "acme", 1000, False, "UTC")
    assert everything["data"][-1] == {
        "session_id": "early",
        "entity_type": "customer",
        "entity_id": "acme",
        "started_at": "2025-01-03T10:00:00.250Z",  # milliseconds only when there are some
        "ended_at": "2025-01-03T10:05:00Z",
        "turn_count": 2,
        "total_cost": 1.5,
        "total_tokens": 300,
    }


async def test_no_sessions_have_no_averages(repository: Repository):
    body = await SessionsService(repository).sessions(*JANUARY, None, None, 10, False, "UTC")
    assert body == {
        "data": [],
        "summary": {"total_sessions": 0, "avg_turns_per_session": None, "avg_cost_per_session": None},
    }


async def test_cached_until_a_batch_moves_the_data_version(repository: Repository, redis_client, settings: Settings):
    project = repository.project
    await load_events(redis_client, settings, [turn(project, 1, "one", "2025-01-03T10:00:00Z", 1.0)])
    service = SessionsService(repository, ResponseCache())
    first = await service.sessions(*JANUARY, None, None, 10, False, "UTC")
    # A session record removed behind Redis's back (no batch): the cached answer stands.
    await redis_client.delete(repository.layout.session(project, "one"))
    assert await service.sessions(*JANUARY, None, None, 10, False, "UTC") is first
    await load_events(redis_client, settings, [turn(project, 2, "two", "2025-01-04T10:00:00Z", 2.0)])
    fresh = await service.sessions(*JANUARY, None, None, 10, False, "UTC")
    assert [row["session_id"] for row in fresh["data"]] == ["two", "one"]
    assert fresh["data"][1]["turn_count"] == 0  # what Redis now holds of the removed record

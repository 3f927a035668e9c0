"""/sessions reads its index, then the records it lists: one moment's data without
holding Redis for the whole read."""

from __future__ import annotations

from datetime import date

import redis.asyncio as aioredis

from infraprism.api.service import Reader
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from tests.api.helpers import load_events

JANUARY = (date(2025, 1, 1), date(2025, 1, 31))


def _event(project: str, n: int, entity: tuple[str, str], session: str, timestamp: str) -> dict[str, object]:
    return {
        "event_id": f"sess-{n}",
        "timestamp": timestamp,
        "project_id": project,
        "entity_type": entity[0],
        "entity_id": entity[1],
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": 0.25,
        "session_id": session,
    }


class BatchBetweenReads(Reader):
    """A reader that applies a batch right after its first read of the session index,
    as the aggregator may at any moment."""

    async def _session_ids(self, *args):  # type: ignore[no-untyped-def]
        ids = await super()._session_ids(*args)
        object.__setattr__(self, "index_reads", self.index_reads + 1)  # type: ignore[attr-defined]
        if self.index_reads == 1:  # type: ignore[attr-defined]
            await load_events(self.redis, self.settings, [self.late_event])  # type: ignore[attr-defined]
        return ids


async def test_a_batch_between_the_index_and_the_records_is_read_again(
    redis_client: aioredis.Redis, settings: Settings, project: str
):
    acme = ("customer", "acme")
    await load_events(redis_client, settings, [_event(project, 1, acme, "first", "2025-01-10T10:00:00Z")])
    reader = BatchBetweenReads(redis_client, KeyLayout(settings.key_prefix), project, None)
    object.__setattr__(reader, "settings", settings)  # the reader is a frozen dataclass
    object.__setattr__(reader, "index_reads", 0)
    object.__setattr__(reader, "late_event", _event(project, 2, acme, "second", "2025-01-11T10:00:00Z"))

    body = await reader.sessions(*JANUARY, None, None, 100)

    # The first index read listed one session, and the records were then read after the
    # batch: the version moved, so both were read again, together.
    assert reader.index_reads == 2  # type: ignore[attr-defined]
    assert body["summary"]["total_sessions"] == 2
    assert [row["session_id"] for row in body["data"]] == ["second", "first"]

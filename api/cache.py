"""A response cache that can never serve a stale answer.

Every batch the aggregator applies increments its project's data version
(`KeyLayout.data_version`) inside the same atomic call that changes the
aggregates. A cached body is served only while that version is unchanged,
so an answer from the cache is exactly the answer a fresh read would give.
One Redis GET per request buys it; a dashboard or a finance report that asks
for the same view again then skips the rollup reads entirely. Under live
ingest the version moves with every batch and the cache simply misses.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout


@dataclass(slots=True)
class _Entry:
    version: bytes | str | None
    stored_at: float
    rows: int
    body: dict[str, Any]


class ResponseCache:
    """Recent response bodies per (project, query), bounded by rows held and by age."""

    def __init__(self, *, max_rows: int = 200_000, max_age_s: float = 300.0) -> None:
        self._entries: OrderedDict[tuple[str, Hashable], _Entry] = OrderedDict()
        self._rows = 0
        self._max_rows = max_rows
        # Retention TTLs drop old buckets without a version change; the age bound caps that.
        self._max_age_s = max_age_s

    async def get_or_compute(
        self,
        redis: aioredis.Redis,
        layout: KeyLayout,
        project: str,
        query: Hashable,
        compute: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        # The version is read before computing: a write that lands meanwhile
        # changes it, so the entry stored below is never served after that write.
        version = await redis.get(layout.data_version(project))
        key = (project, query)
        entry = self._entries.get(key)
        if entry is not None and entry.version == version and time.monotonic() - entry.stored_at < self._max_age_s:
            self._entries.move_to_end(key)
            return entry.body
        body = await compute()
        self._store(key, _Entry(version, time.monotonic(), _rows(body), body))
        return body

    def _store(self, key: tuple[str, Hashable], entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._rows -= old.rows
        if entry.rows > self._max_rows:
            return
        self._entries[key] = entry
        self._rows += entry.rows
        while self._rows > self._max_rows:
            _, evicted = self._entries.popitem(last=False)
            self._rows -= evicted.rows


def _rows(body: dict[str, Any]) -> int:
    data = body.get("data")
    return 1 + (len(data) if isinstance(data, list) else 0)

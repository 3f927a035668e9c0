"""A response cache that can never serve a stale answer.

A cached body is kept with a *version token* read before it was computed,
and served only while a fresh read of the token gives the same value:

* for the rollup and leaderboard reads, the token is the versions of exactly
  the keys the answer reads (`KeyLayout.bucket_versions`, bumped for every
  key a batch changes, inside the same atomic call that changes it) plus the
  rebuild generation. Live ingest writes today's buckets, so last month's
  answers stay cached while it runs;
* for sessions, the project's data version (`KeyLayout.data_version`), which
  every applied batch increments.

Either way an answer from the cache is exactly the answer a fresh read would
give. One Redis round trip per request buys it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Entry:
    version: Hashable
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
        project: str,
        query: Hashable,
        token: Callable[[], Awaitable[Hashable]],
        compute: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        # The token is read before computing: a write that lands meanwhile
        # changes it, so the entry stored below is never served after that write.
        version = await token()
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

"""Caches in the API process that can never serve a stale answer.

`ResponseCache` keeps an answer with a *version token* read before it was
computed, and serves it only while a fresh read of the token gives the same
value:

* for the rollup and leaderboard reads, the token is the rebuild generation
  and the versions of the days of the answer's range (`KeyLayout.bucket_versions`:
  every batch bumps the version of each day it has events of, inside the same
  atomic call that changes the data). Live ingest writes today's events, so
  every answer over a range that excludes today stays cached while it runs,
  even one read as this month minus today: its reads are one moment's data
  (MULTI/EXEC, `api.repository`), so today's events cancel out;
* for sessions, the project's data version (`KeyLayout.data_version`), which
  every applied batch increments.

Either way an answer from the cache is exactly the answer a fresh read would
give. One Redis round trip per request buys it. Requests that miss at the same
token share one computation.

`BucketCache` keeps scanned rollup hashes parsed, each under the version of
its own key, so an answer that must be recomputed re-reads only the hashes
that changed; and the rows of such answers with the sums they were shaped
from, so it shapes again only the rows that changed.

`cached_answer` puts a service method's answers in the response cache.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np

from infraprism.api.columns import Matrix, MemberIds, parse_cells
from infraprism.api.repository import Repository
from infraprism.core.keys import SEP, KeyLayout
from infraprism.core.zones import day_range_ms, zone


@dataclass(slots=True)
class _Entry:
    version: Hashable
    stored_at: float
    rows: int
    body: dict[str, Any]
    # The body as sent, per format, rendered on first use: a cached answer of 10,000 rows
    # is 1.5 MB of JSON, which takes longer to serialize than to look up.
    rendered: dict[str, bytes] = field(default_factory=dict)


class ResponseCache:
    """Recent response bodies per (project, query), bounded by rows held and by age."""

    def __init__(self, *, max_rows: int = 200_000, max_age_s: float = 300.0) -> None:
        self.buckets = BucketCache(max_age_s=max_age_s)
        self._entries: OrderedDict[tuple[str, Hashable], _Entry] = OrderedDict()
        # id(body) -> its entry, for `render`; an entry holds its body, so the id stays its own.
        self._by_body: dict[int, _Entry] = {}
        self._rows = 0
        self._max_rows = max_rows
        # Retention TTLs drop old buckets without a version change; the age bound caps that.
        self._max_age_s = max_age_s
        # (project, query, token) -> the body being computed: concurrent requests for the
        # same answer at the same token share one computation.
        self._in_flight: dict[tuple[str, Hashable, Hashable], asyncio.Future[dict[str, Any] | None]] = {}

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
        # Under live ingest an answer over today changes with every batch, and the
        # dashboards asking for it all miss at once: one of them computes, the others
        # wait for its body. Same token, same data: the shared body is exactly theirs.
        flight = (project, query, version)
        while (pending := self._in_flight.get(flight)) is not None:
            shared = await asyncio.shield(pending)
            if shared is not None:
                return shared
            # It failed or was cancelled: the first waiter to wake computes, the others wait
            # for that one, rather than all of them at once at a moment Redis may be struggling.
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._in_flight[flight] = future
        try:
            body = await compute()
        except BaseException:
            future.set_result(None)  # failed or cancelled: a waiter takes over
            raise
        finally:
            del self._in_flight[flight]
        future.set_result(body)
        self._store(key, _Entry(version, time.monotonic(), _rows(body), body))
        return body

    def render(self, body: dict[str, Any], fmt: str, render: Callable[[dict[str, Any]], bytes]) -> bytes:
        """`render(body)`, kept with the body's cache entry (if it has one) for the next request."""
        entry = self._by_body.get(id(body))
        if entry is None or entry.body is not body:
            return render(body)
        rendered = entry.rendered.get(fmt)
        if rendered is None:
            rendered = entry.rendered[fmt] = render(body)
        return rendered

    def _store(self, key: tuple[str, Hashable], entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget(old)
        if entry.rows > self._max_rows:
            return
        self._entries[key] = entry
        self._by_body[id(entry.body)] = entry
        self._rows += entry.rows
        while self._rows > self._max_rows:
            _, evicted = self._entries.popitem(last=False)
            self._forget(evicted)

    def _forget(self, entry: _Entry) -> None:
        self._rows -= entry.rows
        self._by_body.pop(id(entry.body), None)


def _rows(body: dict[str, Any]) -> int:
    data = body.get("data")
    return 1 + (len(data) if isinstance(data, list) else 0)


class ScannedBucket(NamedTuple):
    """One rollup hash, parsed: its members as ids of a `BucketCache`'s vocabulary, and
    their counters, row for row."""

    member_ids: MemberIds
    counters: Matrix


class ShapedRows(NamedTuple):
    """The rows of a dimension answer as last shaped, with the summed counters each was
    shaped from: a recompute after a batch shapes again only the rows whose sums changed."""

    position_of: dict[tuple[str | None, ...], int]  # group -> its row
    sums: Matrix  # row for row
    rows: list[dict[str, Any]]


class BucketCache:
    """Parsed rollup hashes kept across requests, each valid at one version token.

    An answer whose range includes today is recomputed after every batch, yet a
    last-31-days answer also reads a dozen closed days: those stay parsed here, and
    only the changed hash (this month's) is read and parsed again. The token is the
    rebuild generation and the key's own version, read in the same MULTI/EXEC as the
    hash, so an entry holds exactly the data of its version. Members are numbered in
    one vocabulary so a sum over buckets is a numpy scatter, not a dict per member.
    """

    def __init__(
        self,
        *,
        max_cells: int = 2_000_000,
        max_members: int = 1_000_000,
        max_age_s: float = 300.0,
        max_shaped_rows: int = 100_000,
    ) -> None:
        self._entries: OrderedDict[str, tuple[Hashable, float, ScannedBucket]] = OrderedDict()
        self._cells = 0
        self._max_cells = max_cells
        self._max_members = max_members
        # As for responses: a retention TTL drops a hash without a version change.
        self._max_age_s = max_age_s
        self._ids: dict[str, int] = {}
        # The vocabulary: member ids index both lists. `clear` starts new lists, so a
        # reader holding ids can tell (by identity) that they were renumbered.
        self.members: list[str] = []
        # Each member split into its identifiers (entity type and id, model, ...).
        self.member_parts: list[tuple[str, ...]] = []
        # query -> its rows as last shaped, least recently used first. The row dicts are
        # shared with the cached answers while those last; the bound caps what outlives them.
        self._shaped: OrderedDict[Hashable, ShapedRows] = OrderedDict()
        self._shaped_rows = 0
        self._max_shaped_rows = max_shaped_rows

    def get(self, key: str, token: Hashable) -> ScannedBucket | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != token or time.monotonic() - entry[1] >= self._max_age_s:
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def parse(self, key: str, token: Hashable | None, cells: dict[str, str]) -> ScannedBucket | None:
        """Parse a hash read at `token` and keep it (not when token is None: unknown version).
        None when a counter is outside the exact range of `api.columns.parse_cells`."""
        counters = parse_cells(list(cells.values()))
        if counters is None:
            return None
        if len(self.members) + len(cells) > self._max_members:
            self.clear()  # numbers of members gone from Redis would pile up forever
        ids, members, parts = self._ids, self.members, self.member_parts
        member_ids = list(map(ids.get, cells))  # C speed; None for a member not numbered yet
        if None in member_ids:
            for position, member in enumerate(cells):
                if member_ids[position] is None:
                    member_ids[position] = ids[member] = len(members)
                    members.append(member)
                    parts.append(tuple(member.split(SEP)))
        scanned = ScannedBucket(np.array(member_ids, dtype=np.int64), counters)
        if token is not None:
            self._store(key, token, scanned)
        return scanned

    def shaped(self, query: Hashable) -> ShapedRows | None:
        shaped = self._shaped.get(query)
        if shaped is not None:
            self._shaped.move_to_end(query)
        return shaped

    def keep_shaped(self, query: Hashable, shaped: ShapedRows) -> None:
        old = self._shaped.pop(query, None)
        if old is not None:
            self._shaped_rows -= len(old.rows)
        if len(shaped.rows) > self._max_shaped_rows:
            return
        self._shaped[query] = shaped
        self._shaped_rows += len(shaped.rows)
        while self._shaped_rows > self._max_shaped_rows:
            _, evicted = self._shaped.popitem(last=False)
            self._shaped_rows -= len(evicted.rows)

    @property
    def vocabulary(self) -> object:
        """Changes identity whenever member ids are renumbered."""
        return self.members

    def clear(self) -> None:
        self._entries.clear()
        self._cells = 0
        self._ids = {}
        self.members = []
        self.member_parts = []

    def _store(self, key: str, token: Hashable, scanned: ScannedBucket) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._cells -= len(old[2].member_ids)
        size = len(scanned.member_ids)
        if size > self._max_cells:
            return
        self._entries[key] = (token, time.monotonic(), scanned)
        self._cells += size
        while self._cells > self._max_cells:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._cells -= len(evicted.member_ids)


# --- answers of the services, cached -------------------------------------------------------

Answer = Callable[..., Awaitable[dict[str, Any]]]


class AnswerScope(NamedTuple):
    """What validates a cached answer: the version fields of its range's days (whole months
    by their own field); and the rollup keys whose parsed copies it may take from the bucket
    cache, whose versions are read along with them."""

    range_fields: list[str]
    bucket_keys: Sequence[str] = ()


def range_version_fields(*ranges: tuple[date, date]) -> list[str]:
    return [name for start, end in ranges for name in KeyLayout.range_version_fields(start, end)]


def utc_days(start: date, end: date, tz: str) -> tuple[date, date]:
    """The UTC days the local days start..end of zone `tz` overlap, from the first instant of
    the range to its last: the days whose versions an answer over them depends on."""
    if tz == "UTC":
        return start, end
    start_ms, end_ms = day_range_ms(zone(tz), start, end)
    epoch = date(1970, 1, 1)
    return epoch + timedelta(days=start_ms // 86_400_000), epoch + timedelta(days=(end_ms - 1) // 86_400_000)


def range_scope(_service: object, start: date, end: date, *rest: Any) -> AnswerScope:
    """The scope of an answer over one range, in the zone its last argument names, that takes
    nothing from the bucket cache."""
    return AnswerScope(range_version_fields(utc_days(start, end, rest[-1])))


class CachedService(Protocol):
    @property
    def repository(self) -> Repository: ...

    @property
    def cache(self) -> ResponseCache | None: ...


def cached_answer(scope: Callable[..., AnswerScope] | None) -> Callable[[Answer], Answer]:
    """Serve a service method's answer from the response cache while the data it answers
    from is unchanged: the versions `scope(service, *args)` names, or, without a scope, the
    project's data version.

    Day versions rather than the versions of the keys read: a range ending yesterday may be
    read as this month minus today, and both keys change with every batch of today's events,
    yet the answer does not."""

    def decorate(method: Answer) -> Answer:
        query_name = method.__qualname__

        @functools.wraps(method)
        async def answer(self: CachedService, *args: Any) -> dict[str, Any]:
            cache = self.cache
            if cache is None:
                return await method(self, *args)
            repository = self.repository

            async def token() -> Hashable:
                if scope is None:
                    return await repository.data_version()
                range_fields, bucket_keys = scope(self, *args)
                return await repository.range_versions(range_fields, bucket_keys)

            return await cache.get_or_compute(
                repository.project, (query_name, repr(args)), token, lambda: method(self, *args)
            )

        return answer

    return decorate

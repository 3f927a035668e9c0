"""Every Redis access of the API, for one request of one project, and the Lua scripts it runs.

Every answer is read as one moment's data: its reads go in one MULTI/EXEC (or one
script, for `/entities/top`), after one round trip for the cache's version token.
`/sessions` reads twice (its second read depends on the first, and may be too large
to hold Redis for), checked by the data version read before and after.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from infraprism.api.bounds import (
    MAX_ANOMALIES,
    MAX_BOARD_MEMBERS,
    MAX_SCAN_FIELDS,
    MAX_SESSIONS,
    check_bucket_reads,
    too_much,
)
from infraprism.api.errors import InvalidParameter
from infraprism.api.planner import BucketRead, LeaderboardPlan, Plan
from infraprism.core.buckets import Granularity
from infraprism.core.keys import (
    ALL_ENTITY_TYPES,
    QUARTER_LAYOUT,
    QUARTER_SEP,
    Dimension,
    KeyLayout,
    entity_member,
    quarter_member,
)
from infraprism.core.rollup import Retention, is_kept
from infraprism.core.text import as_text
from infraprism.stores import anomaly_store
from infraprism.stores.anomaly_store import AnomalyRecord

log = logging.getLogger(__name__)

BucketToken = tuple[Any, Any]  # (rebuild generation, key version), as read from Redis

# A session record's fields, in the order `read_sessions` returns them: the aggregator's
# names (cost in nano-dollars, input and output tokens, instants in epoch ms).
SESSION_FIELDS = ("entity_type", "entity_id", "started_ms", "ended_ms", "turns", "cost", "input", "output", "shared")
# /sessions reads its index and records again while batches land in between, this many times at most.
SESSION_READ_ATTEMPTS = 3


class Script(NamedTuple):
    text: str
    sha: str


def _script(name: str) -> Script:
    text = files(__package__).joinpath(name).read_text()
    return Script(text, hashlib.sha1(text.encode()).hexdigest())  # noqa: S324 - Redis script id


HMGET_MANY = _script("hmget_many.lua")
TOP_ENTITIES = _script("top_entities.lua")


async def load_scripts(redis: aioredis.Redis) -> None:
    """Load the read scripts; called by the app's lifespan and after a NOSCRIPT."""
    for script in (HMGET_MANY, TOP_ENTITIES):
        loaded = await redis.script_load(script.text)
        assert loaded == script.sha


@dataclass(frozen=True, slots=True)
class Repository:
    """One request's access to one project's aggregates."""

    redis: aioredis.Redis
    layout: KeyLayout
    project: str
    # key -> its bucket token, read along with the answer's version token (`range_versions`):
    # what the bucket cache checks its parsed copy of the key against.
    bucket_tokens: dict[str, BucketToken] = field(default_factory=dict)
    # How long the aggregator keeps each granularity's buckets (INFRAPRISM_RETENTION_*_DAYS).
    retention: Retention = field(default_factory=Retention)
    # Whether the request's key sees one entity only: its refusals then say nothing of what
    # other entities hold.
    scoped: bool = False

    async def require_cells(self, reads: Sequence[BucketRead], dimension: Dimension) -> None:
        """Refuse a plan whose sum would be short rather than answer it: a bucket the retention
        settings have let expire, or, on a store an earlier build wrote, a quarter hour's field
        or a cube hour it never kept (KeyLayout.layout_marker); and one that reads more buckets
        than a request may (api/bounds.py)."""
        check_bucket_reads(reads)
        now_s = int(time.time())
        for read in reads:
            if not is_kept(read.granularity, read.label, self.retention, now_s):
                days = self.retention.days_for(read.granularity)
                raise InvalidParameter(
                    "start_date",
                    f"the range needs {read.granularity.name.lower()} bucket {read.label}, and those are kept "
                    f"{days} days after they end (INFRAPRISM_RETENTION_{read.granularity.name}_DAYS), so it "
                    "cannot be answered exactly: ask for a later range",
                )
        needed = any(
            read.quarter or (dimension is Dimension.CUBE and read.granularity is Granularity.HOUR) for read in reads
        )
        if needed and as_text(await self.redis.get(self.layout.layout_marker()) or b"") != QUARTER_LAYOUT:
            raise InvalidParameter(
                "tz",
                "this zone's days start inside UTC hours, and this store's hours were written by an earlier "
                "build without their quarter-hour cells: run `infraprism rebuild` once, or ask with tz=UTC",
            )

    def rollup_keys(self, plan: Plan) -> list[str]:
        return [self.layout.rollup(self.project, plan.dimension, r.granularity, r.label) for r in plan.buckets]

    def leaderboard_keys(self, plan: LeaderboardPlan) -> tuple[list[str], list[str]]:
        """(board keys, entity-rollup keys) of a /entities/top plan."""
        layout, project = self.layout, self.project
        boards = [layout.leaderboard(project, r.granularity, r.label, plan.board_type) for r in plan.boards]
        rollups = [layout.rollup(project, Dimension.ENTITY, r.granularity, r.label) for r in plan.rollups]
        return boards, rollups

    # --- version tokens of the response cache ---------------------------------------------

    async def data_version(self) -> Any:
        """The project's data version, which every applied batch increments."""
        return await self.redis.get(self.layout.data_version(self.project))

    async def range_versions(self, range_fields: list[str], bucket_keys: Sequence[str]) -> Hashable:
        """The rebuild generation and the versions of `range_fields`. The versions of
        `bucket_keys`, read in the same command, go to `bucket_tokens`."""
        fields_of_keys = {key: self.layout.bucket_version_field(self.project, key) for key in bucket_keys}
        key_fields = sorted(set(fields_of_keys.values()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.layout.generation())
            pipe.hmget(self.layout.bucket_versions(self.project), range_fields + key_fields)
            generation, versions = await pipe.execute()
        version_of = dict(zip(key_fields, versions[len(range_fields) :], strict=True))
        for key, version_field in fields_of_keys.items():
            self.bucket_tokens[key] = (generation, version_of[version_field])
        return (generation, tuple(versions[: len(range_fields)]))

    # --- rollups and leaderboards ---------------------------------------------------------

    async def check_scan_size(self, keys: Sequence[str]) -> None:
        """Refuse a scan of whole hashes holding more fields than a request may read
        (api/bounds.py): counted with HLEN, which costs Redis nothing per field."""
        if not keys:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hlen(key)
            fields = sum(await pipe.execute())
        if fields > MAX_SCAN_FIELDS:
            if self.scoped:  # the hashes hold every entity's cells: say nothing of them
                advice = "narrow the range, or ask without model and tags filters and groupings"
                raise too_much("rollup fields", None, MAX_SCAN_FIELDS, "start_date", advice)
            advice = "narrow the range, or filter by entity_type and entity_id"
            raise too_much("rollup fields", fields, MAX_SCAN_FIELDS, "start_date", advice)

    async def read_plans(self, plans: Sequence[Plan]) -> list[list[Any]]:
        """Each plan's replies, all read in one MULTI/EXEC: a plan naming a member gets one
        reply (that member in every bucket), a scan one HGETALL reply per bucket."""
        await self.check_scan_size([key for plan in plans if plan.member is None for key in self.rollup_keys(plan)])
        for attempt in (1, 2):
            try:
                # MULTI/EXEC: a batch applied between two reads could otherwise show in one
                # bucket and not in another (a month read and the day subtracted from it).
                async with self.redis.pipeline(transaction=True) as pipe:
                    for plan in plans:
                        self._queue(pipe, plan)
                    replies = await pipe.execute()
                break
            except NoScriptError:
                # Redis restarted or its scripts were flushed since start-up: load them again, once.
                if attempt == 2:
                    raise
                log.info("reloading the read scripts")
                await load_scripts(self.redis)
        out = []
        position = 0
        for plan in plans:
            count = 1 if plan.member is not None else len(plan.buckets)
            out.append(replies[position : position + count])
            position += count
        return out

    def _queue(self, pipe: Any, plan: Plan) -> None:
        keys = self.rollup_keys(plan)
        if plan.member is not None:
            # One command however many buckets: an hourly week is 168 hashes.
            member = plan.member
            fields = [quarter_member(member, read.quarter) if read.quarter else member for read in plan.buckets]
            pipe.evalsha_ro(HMGET_MANY.sha, len(keys), *keys, *fields)
        else:
            for key in keys:
                pipe.hgetall(key)

    async def read_hashes(self, keys: list[str]) -> tuple[list[dict[str, str]], dict[str, BucketToken]]:
        """HGETALL of `keys` and their bucket tokens, in one MULTI/EXEC: what is read is one
        moment's data, and each hash's token is exactly the version of what was read."""
        fields = [self.layout.bucket_version_field(self.project, key) for key in keys]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.layout.generation())
            pipe.hmget(self.layout.bucket_versions(self.project), fields)
            for key in keys:
                pipe.hgetall(key)
            generation, versions, *replies = await pipe.execute()
        return replies, {key: (generation, version) for key, version in zip(keys, versions, strict=True)}

    async def top_entity_candidates(
        self, plan: LeaderboardPlan, limit: int, descending: bool
    ) -> tuple[list[str], list[list[str | None]]]:
        """The candidates for the first `limit` places (top_entities.lua) and their packed
        cells in each entity rollup of the plan, rollup for rollup."""
        boards, rollups = self.leaderboard_keys(plan)
        edges = [self.layout.rollup(self.project, Dimension.ENTITY, r.granularity, r.label) for r in plan.edges]
        numkeys = len(boards) + len(rollups) + len(edges)
        order = "desc" if descending else "asc"
        args: list[str | int] = [
            *boards,
            *rollups,
            *edges,
            limit,
            order,
            len(boards),
            len(rollups),
            QUARTER_SEP,
            MAX_BOARD_MEMBERS,
            *(r.sign for r in plan.boards),
            *(quarter_member("", r.quarter) if r.quarter else "" for r in plan.rollups),
            "" if plan.board_type == ALL_ENTITY_TYPES else entity_member(plan.board_type, ""),
            *(item for r in plan.edges for item in (quarter_member("", r.quarter) if r.quarter else "", r.sign)),
        ]
        try:
            reply = await self.redis.evalsha_ro(TOP_ENTITIES.sha, numkeys, *args)
        except NoScriptError:
            log.info("reloading the read scripts")
            await load_scripts(self.redis)
            reply = await self.redis.evalsha_ro(TOP_ENTITIES.sha, numkeys, *args)
        if isinstance(reply, int):  # the script's count of members, over the bound: it read none
            raise too_much("leaderboard members", reply, MAX_BOARD_MEMBERS, "start_date")
        members, *cells = reply
        return members, cells

    # --- sessions -------------------------------------------------------------------------

    async def read_sessions(
        self, start_ms: int, end_ms: int, entity_type: str | None, entity_id: str | None
    ) -> tuple[list[str], list[list[str | None]]]:
        """The ids of the sessions started in [start_ms, end_ms), newest first, and their
        records (`SESSION_FIELDS`), as one moment's data.

        Two reads, the index and then the records it lists, and not in one MULTI or script:
        a year can list 100,000 sessions, and an atomic read of them all would stall the
        aggregator and every API worker. If the data version moved between them, the count
        and the page might disagree, so both are read again.
        """
        version_key = self.layout.data_version(self.project)
        for _ in range(SESSION_READ_ATTEMPTS):
            before = await self.redis.get(version_key)
            ids = await self.session_ids(start_ms, end_ms, entity_type, entity_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    pipe.hmget(self.layout.session(self.project, str(session_id)), SESSION_FIELDS)
                pipe.get(version_key)
                *records, after = await pipe.execute()
            if after == before:
                break
        else:
            log.info("sessions read while batches kept landing", extra={"attempts": SESSION_READ_ATTEMPTS})
        return ids, records

    async def session_ids(
        self, start_ms: int, end_ms: int, entity_type: str | None, entity_id: str | None
    ) -> list[str]:
        """The ids of the sessions started in [start_ms, end_ms), newest first (equal starts:
        the greater id first)."""
        layout, project, redis = self.layout, self.project, self.redis
        if entity_type is not None and entity_id is not None:
            index = layout.session_entity_index(project, entity_type, entity_id)
        elif entity_type is not None:
            index = layout.session_type_index(project, entity_type)
        elif entity_id is not None:
            types: list[Any] = sorted(await redis.smembers(layout.entity_types(project)))
            if not types:
                return []
            keys = [layout.session_entity_index(project, t, entity_id) for t in types]
            await self._check_session_count(keys, start_ms, end_ms)
            # A session is in the index of one entity only (the apply script moves it when
            # an earlier turn names another), so the union's scores are the starts.
            pairs: Any = await redis.zunion(keys, withscores=True)
            selected = [(score, session_id) for session_id, score in pairs if start_ms <= score < end_ms]
            selected.sort(reverse=True)
            return [session_id for _, session_id in selected]
        else:
            index = layout.session_index(project)
        await self._check_session_count([index], start_ms, end_ms)
        ids: list[Any] = await redis.zrevrangebyscore(index, f"({end_ms}", start_ms)
        return ids

    async def _check_session_count(self, indexes: Sequence[str], start_ms: int, end_ms: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcount(index, start_ms, f"({end_ms}")
            count = sum(await pipe.execute())
        if count > MAX_SESSIONS:
            raise too_much("sessions", count, MAX_SESSIONS, "start_date", "narrow the range, or filter by entity")

    # --- anomalies ------------------------------------------------------------------------

    async def anomalies(
        self, start_ms: int, end_ms: int, entity_type: str | None, entity_id: str | None, status: str | None
    ) -> list[AnomalyRecord]:
        count = await self.redis.zcount(self.layout.anomaly_index(self.project), start_ms, f"({end_ms}")
        if count > MAX_ANOMALIES:
            raise too_much("anomalies", None if self.scoped else count, MAX_ANOMALIES, "start_date")
        return await anomaly_store.list_range(
            self.redis,
            self.layout,
            self.project,
            start_ms,
            end_ms,
            entity_type=entity_type,
            entity_id=entity_id,
            status=status,
        )

    async def dismiss_anomaly(self, anomaly_id: str) -> AnomalyRecord | None:
        """The API's only write; None when the project has no such anomaly."""
        return await anomaly_store.dismiss(self.redis, self.layout, anomaly_id, self.project)


__all__ = ["SESSION_FIELDS", "BucketToken", "Repository", "load_scripts"]

"""API keys: `ip-` + 192 random bits, stored only as a SHA-256 hash, each bound to one project,
and optionally to one entity of it (a scoped key) and to an expiry.

A key's record lives at KeyLayout.api_key(sha256 hex): id, project (or restricted_project,
for a key an older build could not hold to its scope or expiry), name, created_at,
revoked_at, key_hash, and for a scoped key entity_type and entity_id, for an expiring key
expires_ms. KeyLayout.api_key_ids() maps the public key id to that hash, so `keys list` and
`keys revoke ID` never need the secret. KeyLayout.project_api_keys(project) lists a
project's key ids by creation, for `GET /v1/keys`, and KeyLayout.project_api_key_ends(project)
by the instant each ended or will end. The secret itself is shown once, when the key is made,
and never stored.

A record outlives its use by KEEP_ENDED_KEYS_MS: a revoked or expired key is still listed,
with its status, for a month, and then Redis drops the record; the next mint or listing of
its project forgets its id, found by its end.

Every request authenticates with one script call (authenticate.lua): the record, its revocation
and expiry, and the key's token bucket of the rate limit, read and updated together.

The CLI uses the synchronous functions; the API the coroutines.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis
import redis.asyncio as aioredis

from infraprism.core.keys import ALL_ENTITY_TYPES, KeyLayout
from infraprism.core.text import as_text, rfc3339_ms
from infraprism.settings import Settings
from infraprism.stores import StoreError

log = logging.getLogger(__name__)

KEY_PREFIX = "ip-"
# token_urlsafe(24) is 24 random bytes = 192 bits, 32 URL-safe characters.
KEY_RANDOM_BYTES = 24
MAX_KEY_LENGTH = 256
MAX_NAME_LENGTH = 128
# A scoped key names an entity as the event contract does (docs/events.md).
MAX_ENTITY_TYPE_LENGTH = 64
MAX_ENTITY_ID_LENGTH = 256
# Ten years: a key meant to last longer should not expire at all.
MAX_EXPIRES_IN_SECONDS = 10 * 366 * 86_400
# How long a revoked or expired key stays listed before its record is dropped.
KEEP_ENDED_KEYS_MS = 30 * 86_400_000
# Live keys a project may hold at once (about 300 bytes of Redis each): what bounds the
# memory a minting loop can take. Ended keys do not count.
MAX_LIVE_KEYS_PER_PROJECT = 1_000_000
# Ended keys forgotten per mint or listing, at most: pruning stays a bounded step.
PRUNE_BATCH = 1000
# The entity type under which the detector files a project-wide anomaly, with the project's
# own id as the entity id (infraprism/core/episodes.py).
PROJECT_ENTITY_TYPE = "project"
_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class ApiKeyError(StoreError, ValueError):
    """A key could not be made: `field` names the input at fault (None: not one field)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class KeyLimitReached(ApiKeyError):
    """The project holds MAX_LIVE_KEYS_PER_PROJECT live keys already."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The one entity a scoped key sees."""

    entity_type: str
    entity_id: str

    def public(self) -> dict[str, str]:
        return {"entity_type": self.entity_type, "entity_id": self.entity_id}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A live key as the API sees it: which project it may read, and which entity of it."""

    key_id: str
    project: str
    name: str
    scope: Scope | None = None
    expires_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Authentication:
    """What one request's key check found: the key, or why there is none, and for a live key
    how long to wait before the rate limit lets it in (0: it may go now)."""

    key: ApiKey | None
    refusal: str = ""
    retry_after_ms: int = 0
    key_hash: str = ""


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_name(name: str | None) -> None:
    if name is not None and (len(name) > MAX_NAME_LENGTH or _CONTROL_RE.search(name)):
        raise ApiKeyError(f"name must be at most {MAX_NAME_LENGTH} characters without control characters", "name")


def check_scope(entity_type: str, entity_id: str, project: str | None = None) -> Scope:
    """The scope of a key, checked as the event contract checks an event's entity. Of
    `project`, its own id under the type `project` is refused: that names the detector's
    project-wide anomalies, which a scoped key must not see."""
    for name, value, limit in (
        ("entity_type", entity_type, MAX_ENTITY_TYPE_LENGTH),
        ("entity_id", entity_id, MAX_ENTITY_ID_LENGTH),
    ):
        if not isinstance(value, str) or not value or len(value) > limit or _CONTROL_RE.search(value):
            raise ApiKeyError(f"{name} must be 1-{limit} characters without control characters", name)
    if entity_type == ALL_ENTITY_TYPES:
        raise ApiKeyError(f"entity_type {ALL_ENTITY_TYPES!r} is reserved: no event can have it", "entity_type")
    if entity_type == PROJECT_ENTITY_TYPE and entity_id == project:
        raise ApiKeyError(
            f"entity {PROJECT_ENTITY_TYPE} {project!r} names the project itself: use a project key", "entity_id"
        )
    return Scope(entity_type, entity_id)


def parse_duration(text: str) -> int:
    """`90`, `90s`, `30m`, `24h` or `7d` as seconds, for `keys create --expires-in`."""
    match = re.fullmatch(r"\s*(\d{1,10})\s*([smhd]?)\s*", text)
    if match is None:
        raise ApiKeyError(f"expected a duration such as 3600, 30m, 24h or 7d, got {text[:40]!r}", "expires_in")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match.group(2)]
    return int(match.group(1)) * unit


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key about to be stored: the secret (shown once), its hash and record."""

    key: str
    key_id: str
    key_hash: str
    project: str
    record: dict[str, str]
    created_ms: int
    expires_ms: int | None


def _new_key(
    project: str, name: str | None, scope: Scope | None, expires_in_seconds: int | None, now_ms: int
) -> NewKey:
    if not _PROJECT_RE.match(project or ""):
        raise ApiKeyError("project must be 1-64 characters of [A-Za-z0-9._-]", "project")
    check_name(name)
    if expires_in_seconds is not None and not 1 <= expires_in_seconds <= MAX_EXPIRES_IN_SECONDS:
        raise ApiKeyError(
            f"expires_in_seconds must be 1-{MAX_EXPIRES_IN_SECONDS} (ten years), or absent", "expires_in_seconds"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    key_hash = hash_key(key)
    expires_ms = None if expires_in_seconds is None else now_ms + expires_in_seconds * 1000
    restricted = scope is not None or expires_ms is not None
    record = {
        "id": "key_" + secrets.token_hex(8),
        # A build before scoped keys reads `project` alone, and would let a scoped or expiring
        # key see the whole project for good. It refuses a key whose `project` is empty, so
        # such a key keeps its project under a name only this build reads.
        "project": "" if restricted else project,
        "restricted_project": project if restricted else "",
        "name": name or "",
        "created_at": rfc3339_ms(now_ms - now_ms % 1000),
        "created_ms": str(now_ms),
        "revoked_at": "",
        "key_hash": key_hash,
        "entity_type": scope.entity_type if scope else "",
        "entity_id": scope.entity_id if scope else "",
        "expires_ms": "" if expires_ms is None else str(expires_ms),
    }
    return NewKey(key, record["id"], key_hash, project, record, now_ms, expires_ms)


def project_of(record: Mapping[Any, Any]) -> str:
    """The project a key record belongs to, whichever field holds it."""
    return as_text(record.get("project") or record.get("restricted_project") or "")


def _queue_new_key(pipe: Any, layout: KeyLayout, new: NewKey) -> None:
    record_key = layout.api_key(new.key_hash)
    pipe.hset(record_key, mapping=new.record)
    pipe.hset(layout.api_key_ids(), new.key_id, new.key_hash)
    pipe.zadd(layout.project_api_keys(new.project), {new.key_id: new.created_ms})
    if new.expires_ms is not None:
        pipe.pexpireat(record_key, new.expires_ms + KEEP_ENDED_KEYS_MS)
        pipe.zadd(layout.project_api_key_ends(new.project), {new.key_id: new.expires_ms})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def key_status(record: Mapping[str, Any], now_ms: int) -> str:
    if as_text(record.get("revoked_at") or ""):
        return "revoked"
    expires = as_text(record.get("expires_ms") or "")
    if expires and now_ms >= int(expires):
        return "expired"
    return "active"


def public_record(record: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """A key as listings show it: never the secret, nor its hash."""
    text = {name: as_text(value) for name, value in record.items()}
    expires = text.get("expires_ms", "")
    scope = Scope(text["entity_type"], text.get("entity_id", "")).public() if text.get("entity_type") else None
    return {
        "id": text.get("id", ""),
        "project": project_of(text),
        "name": text.get("name") or None,
        "scope": scope,
        "created_at": text.get("created_at") or None,
        "expires_at": rfc3339_ms(int(expires)) if expires else None,
        "revoked_at": text.get("revoked_at") or None,
        "status": key_status(text, now_ms),
    }


# KEYS: the key's record, its project's index of ends. ARGV: the project it must belong to
# ("" for any), whether it must be a scoped key ("1" or ""), now in ms and as RFC 3339.
# Marks the key revoked (once: a second revocation keeps the first time), files its end, and
# lets its record go KEEP_ENDED_KEYS_MS later. Returns 1 when the key exists (in that
# project), -1 when it is a project key and a scoped one was required, else 0.
REVOKE = f"""
local fields = redis.call('HMGET', KEYS[1], 'project', 'restricted_project', 'revoked_at', 'entity_type', 'id')
local project = fields[1]
if not project or project == '' then project = fields[2] end
if not project or project == '' or (ARGV[1] ~= '' and project ~= ARGV[1]) then return 0 end
if ARGV[2] == '1' and (not fields[4] or fields[4] == '') then return -1 end
if not fields[3] or fields[3] == '' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], {KEEP_ENDED_KEYS_MS})
  redis.call('ZADD', KEYS[2], ARGV[3], fields[5])
end
return 1
"""


# --- the CLI's side --------------------------------------------------------------------------


def _sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_dsn(), decode_responses=True)


def create_key(
    settings: Settings,
    project: str,
    name: str | None = None,
    scope: Scope | None = None,
    expires_in_seconds: int | None = None,
) -> tuple[str, str]:
    """Create a key for `project` (and `scope`); returns (key_id, key). The key is shown only here."""
    new = _new_key(project, name, scope, expires_in_seconds, _now_ms())
    layout = KeyLayout(settings.key_prefix)
    client = _sync_client(settings)
    try:
        with client.pipeline(transaction=True) as pipe:
            _queue_new_key(pipe, layout, new)
            pipe.execute()
    finally:
        client.close()
    log.info("api key created", extra={"key_id": new.key_id, "project": project, "scoped": scope is not None})
    return new.key_id, new.key


def list_keys(settings: Settings) -> list[dict[str, Any]]:
    """Every key's public record (`public_record`), oldest first; no secrets."""
    layout = KeyLayout(settings.key_prefix)
    client = _sync_client(settings)
    try:
        ids = client.hgetall(layout.api_key_ids())
        with client.pipeline(transaction=False) as pipe:
            for key_hash in ids.values():
                pipe.hgetall(layout.api_key(as_text(key_hash)))
            records = pipe.execute()
    finally:
        client.close()
    now_ms = _now_ms()
    out = [public_record(record, now_ms) for record in records if record]
    out.sort(key=lambda r: (r["created_at"] or "", r["id"]))
    return out


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke a key by id; False when no such key exists. Revoking twice keeps the first time."""
    layout = KeyLayout(settings.key_prefix)
    client = _sync_client(settings)
    try:
        key_hash = client.hget(layout.api_key_ids(), key_id)
        if key_hash is None:
            return False
        record_key = layout.api_key(as_text(key_hash))
        project = project_of(client.hgetall(record_key))
        if not project:
            return False
        now_ms = _now_ms()
        ends = layout.project_api_key_ends(project)
        found = client.eval(REVOKE, 2, record_key, ends, "", "", now_ms, rfc3339_ms(now_ms - now_ms % 1000))
    finally:
        client.close()
    if found:
        log.info("api key revoked", extra={"key_id": key_id})
    return found == 1


# --- the API's side --------------------------------------------------------------------------

_AUTHENTICATE = files(__package__).joinpath("authenticate.lua").read_text()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per key: `per_second` tokens a second, at most `burst` saved up; a
    request takes one. `per_second` 0 turns the limit off."""

    per_second: float
    burst: int


class KeyStore:
    """The API's access to the keys: authentication, and the `/v1/keys` management of one project."""

    def __init__(self, client: aioredis.Redis, layout: KeyLayout, rate_limit: RateLimit) -> None:
        self.client = client
        self.layout = layout
        self.rate_limit = rate_limit
        self._authenticate = client.register_script(_AUTHENTICATE)
        self._revoke = client.register_script(REVOKE)

    async def authenticate(self, key: str) -> Authentication:
        """The live key matching `key`, or why there is none; a live key's request takes a
        token from its bucket, or learns how long until one is there."""
        if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
            return Authentication(None, "unknown")
        key_hash = hash_key(key)
        limit = self.rate_limit
        reply = await self._authenticate(
            keys=[self.layout.api_key(key_hash), self.layout.api_key_rate(key_hash)],
            args=[repr(float(limit.per_second)), limit.burst],
        )
        verdict = as_text(reply[0])
        if verdict != "ok":
            return Authentication(None, verdict)
        key_id, project, name, entity_type, entity_id, expires, stored_hash, retry_after_ms = (
            as_text(item) for item in reply[1:]
        )
        # The record is found by its hash; compare in constant time anyway so nothing about
        # a near-miss key leaks through timing.
        if not hmac.compare_digest(stored_hash.encode(), key_hash.encode()):
            return Authentication(None, "unknown")
        scope = Scope(entity_type, entity_id) if entity_type else None
        found = ApiKey(key_id, project, name, scope, int(expires) if expires else None)
        return Authentication(found, retry_after_ms=int(retry_after_ms), key_hash=key_hash)

    async def mint(
        self, project: str, scope: Scope, name: str | None, expires_in_seconds: int | None
    ) -> tuple[dict[str, Any], str]:
        """A new scoped key of `project`: its public record and the secret, shown once."""
        new = _new_key(project, name, scope, expires_in_seconds, _now_ms())
        await self._forget_ended(project, new.created_ms)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.layout.project_api_keys(project))
            pipe.zcount(self.layout.project_api_key_ends(project), "-inf", new.created_ms)
            held, ended = await pipe.execute()
        if held - ended >= MAX_LIVE_KEYS_PER_PROJECT:
            raise KeyLimitReached(
                f"the project holds {MAX_LIVE_KEYS_PER_PROJECT:,} live keys: revoke some, or mint keys that expire"
            )
        async with self.client.pipeline(transaction=True) as pipe:
            _queue_new_key(pipe, self.layout, new)
            await pipe.execute()
        log.info("api key minted", extra={"key_id": new.key_id, "project": project})
        return public_record(new.record, new.created_ms), new.key

    async def project_keys(self, project: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the project's keys, oldest first, and how many it holds in all."""
        await self._forget_ended(project, _now_ms())
        index = self.layout.project_api_keys(project)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(index, offset, offset + limit - 1)
            pipe.zcard(index)
            ids, total = await pipe.execute()
        records = await self._records(ids)
        now_ms = _now_ms()
        return [public_record(record, now_ms) for record in records if record], total

    async def revoke(self, project: str, key_id: str) -> bool | None:
        """Revoke a scoped key of `project`: True when revoked (or already), False when the
        project has no key of that id, None when it is a project key (the CLI revokes those)."""
        key_hash = await self.client.hget(self.layout.api_key_ids(), key_id)
        if key_hash is None:
            return False
        now_ms = _now_ms()
        found = await self._revoke(
            keys=[self.layout.api_key(as_text(key_hash)), self.layout.project_api_key_ends(project)],
            args=[project, "1", now_ms, rfc3339_ms(now_ms - now_ms % 1000)],
        )
        if found == -1:
            return None
        if found:
            log.info("api key revoked", extra={"key_id": key_id, "project": project})
        return bool(found)

    async def index_existing(self) -> int:
        """Put keys made before projects had a key index (by an earlier build) in their
        project's index, once: the first API to start does it and sets the marker
        KeyLayout.api_keys_indexed. Returns how many it added."""
        if await self.client.exists(self.layout.api_keys_indexed()):
            return 0
        ids = await self.client.hgetall(self.layout.api_key_ids())
        async with self.client.pipeline(transaction=False) as pipe:
            for key_hash in ids.values():
                pipe.hgetall(self.layout.api_key(as_text(key_hash)))
            records = await pipe.execute()
        async with self.client.pipeline(transaction=False) as pipe:
            for key_id, record in zip(ids, records, strict=True):
                if project_of(record):
                    created = int(record.get("created_ms") or 0)
                    pipe.zadd(self.layout.project_api_keys(project_of(record)), {as_text(key_id): created}, nx=True)
            pipe.set(self.layout.api_keys_indexed(), "1")
            *replies, _ = await pipe.execute()
        return sum(int(was_added) for was_added in replies)

    async def _records(self, ids: list[Any]) -> list[dict[str, Any]]:
        if not ids:
            return []
        hashes = await self.client.hmget(self.layout.api_key_ids(), ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for key_hash in hashes:
                if key_hash is not None:
                    pipe.hgetall(self.layout.api_key(as_text(key_hash)))
            found = iter(await pipe.execute())
        return [{} if key_hash is None else next(found) for key_hash in hashes]

    async def _forget_ended(self, project: str, now_ms: int) -> None:
        """Forget up to PRUNE_BATCH keys that ended more than KEEP_ENDED_KEYS_MS ago (their
        records have expired): out of the project's indexes and the id map."""
        ends = self.layout.project_api_key_ends(project)
        gone = await self.client.zrangebyscore(ends, "-inf", now_ms - KEEP_ENDED_KEYS_MS, start=0, num=PRUNE_BATCH)
        if not gone:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.layout.project_api_keys(project), *gone)
            pipe.zrem(ends, *gone)
            pipe.hdel(self.layout.api_key_ids(), *gone)
            await pipe.execute()


__all__ = [
    "ApiKey",
    "ApiKeyError",
    "Authentication",
    "KeyLimitReached",
    "KeyStore",
    "RateLimit",
    "Scope",
    "check_name",
    "check_scope",
    "create_key",
    "hash_key",
    "list_keys",
    "parse_duration",
    "project_of",
    "public_record",
    "revoke_key",
]

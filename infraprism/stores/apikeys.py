"""API keys: `ip-` + 192 random bits, stored only as a SHA-256 hash, each bound to one project,
and optionally to one entity of it (a scoped key) and to an expiry.

A key's record lives at KeyLayout.api_key(sha256 hex): id, project, name, created_at,
revoked_at, key_hash, and for a scoped key entity_type and entity_id, for an expiring key
expires_ms. KeyLayout.api_key_ids() maps the public key id to that hash, so `keys list` and
`keys revoke ID` never need the secret, and KeyLayout.project_api_keys(project) lists a
project's key ids by creation for `GET /v1/keys`. The secret itself is shown once, when the
key is made, and never stored.

A record outlives its use by KEEP_ENDED_KEYS_MS: a revoked or expired key is still listed,
with its status, for a month, and then Redis drops the record. The id map and the project
index forget such a key the next time a listing finds its record gone.

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
# Keys a project may hold at once (live, or ended less than KEEP_ENDED_KEYS_MS ago): what
# bounds the work of `GET /v1/keys` and the memory a minting loop can take.
MAX_KEYS_PER_PROJECT = 100_000
_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class ApiKeyError(StoreError, ValueError):
    """A key could not be made: a bad project, scope, name or expiry, or too many keys."""


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


def check_scope(entity_type: str, entity_id: str) -> Scope:
    """The scope of a key, checked as the event contract checks an event's entity."""
    for name, value, limit in (
        ("entity_type", entity_type, MAX_ENTITY_TYPE_LENGTH),
        ("entity_id", entity_id, MAX_ENTITY_ID_LENGTH),
    ):
        if not isinstance(value, str) or not value or len(value) > limit or _CONTROL_RE.search(value):
            raise ApiKeyError(f"{name} must be 1-{limit} characters without control characters")
    if entity_type == ALL_ENTITY_TYPES:
        raise ApiKeyError(f"entity_type {ALL_ENTITY_TYPES!r} is reserved: no event can have it")
    return Scope(entity_type, entity_id)


def parse_duration(text: str) -> int:
    """`90`, `90s`, `30m`, `24h` or `7d` as seconds, for `keys create --expires-in`."""
    match = re.fullmatch(r"\s*(\d{1,10})\s*([smhd]?)\s*", text)
    if match is None:
        raise ApiKeyError(f"expected a duration such as 3600, 30m, 24h or 7d, got {text[:40]!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match.group(2)]
    return int(match.group(1)) * unit


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key about to be stored: the secret (shown once), its hash and record."""

    key: str
    key_id: str
    key_hash: str
    record: dict[str, str]
    created_ms: int
    expires_ms: int | None


def _new_key(
    project: str, name: str | None, scope: Scope | None, expires_in_seconds: int | None, now_ms: int
) -> NewKey:
    if not _PROJECT_RE.match(project or ""):
        raise ApiKeyError("project must be 1-64 characters of [A-Za-z0-9._-]")
    if name is not None and (len(name) > MAX_NAME_LENGTH or _CONTROL_RE.search(name)):
        raise ApiKeyError(f"name must be at most {MAX_NAME_LENGTH} characters without control characters")
    if expires_in_seconds is not None and not 1 <= expires_in_seconds <= MAX_EXPIRES_IN_SECONDS:
        raise ApiKeyError(f"expires_in_seconds must be 1-{MAX_EXPIRES_IN_SECONDS} (ten years), or absent")
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    key_hash = hash_key(key)
    expires_ms = None if expires_in_seconds is None else now_ms + expires_in_seconds * 1000
    record = {
        "id": "key_" + secrets.token_hex(8),
        "project": project,
        "name": name or "",
        "created_at": rfc3339_ms(now_ms - now_ms % 1000),
        "created_ms": str(now_ms),
        "revoked_at": "",
        "key_hash": key_hash,
        "entity_type": scope.entity_type if scope else "",
        "entity_id": scope.entity_id if scope else "",
        "expires_ms": "" if expires_ms is None else str(expires_ms),
    }
    return NewKey(key, record["id"], key_hash, record, now_ms, expires_ms)


def _queue_new_key(pipe: Any, layout: KeyLayout, new: NewKey) -> None:
    record_key = layout.api_key(new.key_hash)
    pipe.hset(record_key, mapping=new.record)
    if new.expires_ms is not None:
        pipe.pexpireat(record_key, new.expires_ms + KEEP_ENDED_KEYS_MS)
    pipe.hset(layout.api_key_ids(), new.key_id, new.key_hash)
    pipe.zadd(layout.project_api_keys(new.record["project"]), {new.key_id: new.created_ms})


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
        "project": text.get("project", ""),
        "name": text.get("name") or None,
        "scope": scope,
        "created_at": text.get("created_at") or None,
        "expires_at": rfc3339_ms(int(expires)) if expires else None,
        "revoked_at": text.get("revoked_at") or None,
        "status": key_status(text, now_ms),
    }


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
        gone = [key_id for key_id, record in zip(ids, records, strict=True) if not record]
        if gone:
            client.hdel(layout.api_key_ids(), *gone)
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
        now_ms = _now_ms()
        found = client.eval(
            REVOKE, 1, layout.api_key(as_text(key_hash)), "", now_ms, rfc3339_ms(now_ms - now_ms % 1000)
        )
    finally:
        client.close()
    if found:
        log.info("api key revoked", extra={"key_id": key_id})
    return bool(found)


# KEYS: the key's record. ARGV: the project it must belong to ("" for any), now in ms and as
# RFC 3339. Marks the key revoked (once: a second revocation keeps the first time) and lets its
# record go KEEP_ENDED_KEYS_MS later. Returns 1 when the key exists (in that project), else 0.
REVOKE = f"""
local project = redis.call('HGET', KEYS[1], 'project')
if not project or (ARGV[1] ~= '' and project ~= ARGV[1]) then return 0 end
local revoked = redis.call('HGET', KEYS[1], 'revoked_at')
if not revoked or revoked == '' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], {KEEP_ENDED_KEYS_MS})
end
return 1
"""


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
        index = self.layout.project_api_keys(project)
        if await self.client.zcard(index) >= MAX_KEYS_PER_PROJECT:
            await self._forget_ended(project)
            if await self.client.zcard(index) >= MAX_KEYS_PER_PROJECT:
                raise ApiKeyError(
                    f"the project holds {MAX_KEYS_PER_PROJECT} keys: revoke some, or mint keys that expire"
                )
        async with self.client.pipeline(transaction=True) as pipe:
            _queue_new_key(pipe, self.layout, new)
            await pipe.execute()
        log.info("api key minted", extra={"key_id": new.key_id, "project": project})
        return public_record(new.record, new.created_ms), new.key

    async def project_keys(self, project: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the project's keys, oldest first, and how many it holds in all."""
        index = self.layout.project_api_keys(project)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(index, offset, offset + limit - 1)
            pipe.zcard(index)
            ids, total = await pipe.execute()
        records = await self._records(ids)
        gone = [key_id for key_id, record in zip(ids, records, strict=True) if not record]
        if gone:
            await self._forget(project, gone)
        now_ms = _now_ms()
        return [public_record(record, now_ms) for record in records if record], total - len(gone)

    async def revoke(self, project: str, key_id: str) -> bool:
        """Revoke a key of `project`; False when it has none of that id."""
        key_hash = await self.client.hget(self.layout.api_key_ids(), key_id)
        if key_hash is None:
            return False
        now_ms = _now_ms()
        found = await self._revoke(
            keys=[self.layout.api_key(as_text(key_hash))],
            args=[project, now_ms, rfc3339_ms(now_ms - now_ms % 1000)],
        )
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
        records = await self._records(list(ids))
        async with self.client.pipeline(transaction=False) as pipe:
            for key_id, record in zip(ids, records, strict=True):
                if record and record.get("project"):
                    created = record.get("created_ms") or 0
                    index = self.layout.project_api_keys(as_text(record["project"]))
                    pipe.zadd(index, {as_text(key_id): int(created)}, nx=True)
            pipe.set(self.layout.api_keys_indexed(), "1")
            *replies, _ = await pipe.execute()
        return sum(int(was_added) for was_added in replies)

    async def _records(self, ids: list[Any]) -> list[dict[str, Any]]:
        if not ids:
            return []
        hashes = await self.client.hmget(self.layout.api_key_ids(), ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for key_hash in hashes:
                pipe.hgetall(self.layout.api_key(as_text(key_hash or "-")))
            records: list[dict[str, Any]] = await pipe.execute()
        return records

    async def _forget(self, project: str, ids: list[Any]) -> None:
        """Drop ids whose records Redis has let go from the project index and the id map."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.layout.project_api_keys(project), *ids)
            pipe.hdel(self.layout.api_key_ids(), *ids)
            await pipe.execute()

    async def _forget_ended(self, project: str) -> None:
        """Walk the whole index once, forgetting the keys whose records are gone: only when the
        project is at its key limit, so its cost is paid by the minting that needs the room."""
        index = self.layout.project_api_keys(project)
        offset = 0
        while True:
            ids = await self.client.zrange(index, offset, offset + 999)
            if not ids:
                return
            records = await self._records(ids)
            gone = [key_id for key_id, record in zip(ids, records, strict=True) if not record]
            if gone:
                await self._forget(project, gone)
            offset += len(ids) - len(gone)


__all__ = [
    "ApiKey",
    "ApiKeyError",
    "Authentication",
    "KeyStore",
    "RateLimit",
    "Scope",
    "check_scope",
    "create_key",
    "hash_key",
    "list_keys",
    "parse_duration",
    "public_record",
    "revoke_key",
]

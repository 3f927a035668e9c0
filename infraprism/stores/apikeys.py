"""API keys: `ip-` + 192 random bits, stored only as a SHA-256 hash, each bound to one project.

A key's record lives at KeyLayout.api_key(sha256 hex) (fields id, project,
name, created_at, revoked_at, key_hash) and KeyLayout.api_key_ids() maps the
public key id to that hash, so `keys list` and `keys revoke ID` never need the
secret. The secret itself is shown once, by `create_key`, and never stored.

The CLI uses the synchronous functions; the API uses `lookup`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text, rfc3339_now
from infraprism.settings import Settings
from infraprism.stores import StoreError

log = logging.getLogger(__name__)

KEY_PREFIX = "ip-"
# token_urlsafe(24) is 24 random bytes = 192 bits, 32 URL-safe characters.
KEY_RANDOM_BYTES = 24
MAX_KEY_LENGTH = 256


class ApiKeyError(StoreError, ValueError):
    """A key could not be created (bad project name)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A valid, unrevoked key as the API sees it: which project it may read."""

    key_id: str
    project: str
    name: str


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_dsn(), decode_responses=True)


def create_key(settings: Settings, project: str, name: str | None = None) -> tuple[str, str]:
    """Create a key for `project`; returns (key_id, key). The key is shown only here."""
    if not project or len(project) > 64 or not all(c.isalnum() or c in "._-" for c in project):
        raise ApiKeyError("project must be 1-64 characters of [A-Za-z0-9._-]")
    layout = KeyLayout(settings.key_prefix)
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    key_hash = hash_key(key)
    key_id = "key_" + secrets.token_hex(8)
    client = _sync_client(settings)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(
                layout.api_key(key_hash),
                mapping={
                    "id": key_id,
                    "project": project,
                    "name": name or "",
                    "created_at": rfc3339_now(),
                    "revoked_at": "",
                    "key_hash": key_hash,
                },
            )
            pipe.hset(layout.api_key_ids(), key_id, key_hash)
            pipe.execute()
    finally:
        client.close()
    log.info("api key created", extra={"key_id": key_id, "project": project})
    return key_id, key


def list_keys(settings: Settings) -> list[dict[str, str | None]]:
    """Every key's id, project, name, created_at and revoked_at (None if active); no secrets."""
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
    out: list[dict[str, str | None]] = []
    for record in records:
        if not record:
            continue
        out.append(
            {
                "id": record.get("id", ""),
                "project": record.get("project", ""),
                "name": record.get("name") or None,
                "created_at": record.get("created_at") or None,
                "revoked_at": record.get("revoked_at") or None,
            }
        )
    out.sort(key=lambda r: (r["created_at"] or "", r["id"] or ""))
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
        if not client.exists(record_key):
            return False
        if not client.hget(record_key, "revoked_at"):
            client.hset(record_key, "revoked_at", rfc3339_now())
    finally:
        client.close()
    log.info("api key revoked", extra={"key_id": key_id})
    return True


async def lookup(client: aioredis.Redis, layout: KeyLayout, key: str) -> ApiKey | None:
    """The active key matching `key`, or None (unknown, revoked or malformed)."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
        return None
    key_hash = hash_key(key)
    record = await client.hgetall(layout.api_key(key_hash))
    if not record:
        return None
    stored = as_text(record.get("key_hash", ""))
    # The record is found by its hash; compare in constant time anyway so
    # nothing about a near-miss key leaks through timing.
    if not hmac.compare_digest(stored.encode(), key_hash.encode()):
        return None
    if as_text(record.get("revoked_at", "")):
        return None
    project = as_text(record.get("project", ""))
    if not project:
        return None
    return ApiKey(key_id=as_text(record.get("id", "")), project=project, name=as_text(record.get("name", "")))


__all__ = ["ApiKey", "ApiKeyError", "create_key", "hash_key", "list_keys", "lookup", "revoke_key"]

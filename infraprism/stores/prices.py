"""Every project's price overrides in Redis, as a versioned price book.

Written by `infraprism prices` and `PUT`/`DELETE /v1/prices`, read by the aggregator
(which prices events without `cost` with the current book) and by `infraprism reprice`.

The book is one JSON document per version, kept for every version
(`KeyLayout.price_books`), and `KeyLayout.prices_version` names the current one. A
change writes the next version in one atomic call that refuses when another change
landed meanwhile (then it is recomputed and tried again), so versions form one
sequence. The aggregator's apply script refuses a batch priced with any other
version than the current one, so every event applied after a change has its new
price; a re-price reads old versions to know what an event was priced at. A book
is small (an override is ~300 bytes) and changes are rare, so keeping every
version costs little.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date

import orjson
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import InvalidPrice, PriceBook, PriceOverride
from infraprism.core.text import rfc3339_now
from infraprism.core.zones import local_midnight_ms, zone
from infraprism.stores import StoreError
from infraprism.stores.projects import reporting_zone

# A book bigger than this is refused: the aggregator ships it to its decoder with a batch.
MAX_OVERRIDES_PER_PROJECT = 10_000
_COMMIT_ATTEMPTS = 20

# KEYS[1] the version counter, KEYS[2] the books hash; ARGV[1] the version the change was
# computed from, ARGV[2] the new book. Returns the new version, or -1 when another change
# landed first.
_COMMIT = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return -1 end
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], tostring(version), ARGV[2])
return version
"""


class UnknownProject(StoreError, ValueError):
    """Prices were set for a project that has no events, keys or settings."""


class NoSuchOverride(StoreError, LookupError):
    """A delete named no stored override."""


def _encode(book: PriceBook) -> bytes:
    return orjson.dumps(
        {"projects": {project: [o.to_json() for o in items] for project, items in sorted(book.by_project.items())}}
    )


def _decode(version: int, raw: str | bytes | None) -> PriceBook:
    if raw is None:
        return PriceBook(version)
    projects = orjson.loads(raw).get("projects") or {}
    return PriceBook(version, {p: [PriceOverride.from_json(o) for o in items] for p, items in projects.items()})


async def current_version(redis: aioredis.Redis, layout: KeyLayout) -> int:
    raw = await redis.get(layout.prices_version())
    return 0 if raw is None else int(raw)


async def book_at(redis: aioredis.Redis, layout: KeyLayout, version: int) -> PriceBook:
    """The book as it was at `version` (0: no overrides at all)."""
    if version == 0:
        return PriceBook(0)
    return _decode(version, await redis.hget(layout.price_books(), str(version)))


async def load_book(redis: aioredis.Redis, layout: KeyLayout) -> PriceBook:
    """The current book. Versions are immutable, so reading the counter first is enough."""
    return await book_at(redis, layout, await current_version(redis, layout))


async def list_overrides(redis: aioredis.Redis, layout: KeyLayout, project: str) -> list[PriceOverride]:
    """The project's overrides by model, provider and effective instant."""
    book = await load_book(redis, layout)
    return sorted(book.by_project.get(project, ()), key=lambda o: (o.model, o.provider or "", o.effective_from_ms))


async def project_exists(redis: aioredis.Redis, layout: KeyLayout, project: str) -> bool:
    """Whether the project has data, settings or API keys: a price for any other name is a typo."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sismember(layout.projects(), project)
        pipe.exists(layout.project_settings(project))
        pipe.exists(layout.project_api_keys(project))
        found = await pipe.execute()
    return any(bool(value) for value in found)


async def effective_from_ms(redis: aioredis.Redis, layout: KeyLayout, project: str, day: date | None) -> int:
    """Local midnight of `day` in the project's reporting zone; 0 (the beginning of time) for None."""
    if day is None:
        return 0
    return local_midnight_ms(zone(await reporting_zone(redis, layout, project)), day)


async def _change(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    change: Callable[[list[PriceOverride]], list[PriceOverride]],
) -> int:
    """Apply `change` to the project's overrides as the next version; returns that version."""
    script = redis.register_script(_COMMIT)
    for _ in range(_COMMIT_ATTEMPTS):
        version = await current_version(redis, layout)
        book = await book_at(redis, layout, version)
        overrides = dict(book.by_project)
        changed = change(list(overrides.get(project, ())))
        if len(changed) > MAX_OVERRIDES_PER_PROJECT:
            raise InvalidPrice("model", f"a project holds at most {MAX_OVERRIDES_PER_PROJECT} price overrides")
        overrides[project] = tuple(changed)
        keys = [layout.prices_version(), layout.price_books()]
        new_version = int(await script(keys=keys, args=[str(version), _encode(PriceBook(0, overrides))]))
        if new_version > 0:
            return new_version
    raise StoreError("the price book kept changing under this write; try again")


async def set_override(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    override: PriceOverride,
    *,
    replace: bool = False,
) -> PriceOverride:
    """Store `override`. One of the same model, provider and effective day is an overlap:
    refused (InvalidPrice on effective_from) unless `replace`."""
    if not await project_exists(redis, layout, project):
        raise UnknownProject(
            f"unknown project {project!r}: it has no events, settings or API keys yet. Check the name; a new "
            f"project is created by `infraprism keys create --project {project}` or `infraprism projects "
            f"set-timezone {project} UTC`"
        )
    stored = dataclasses.replace(override, set_at=rfc3339_now())

    def put(existing: list[PriceOverride]) -> list[PriceOverride]:
        same = [o for o in existing if o.identity == override.identity]
        if same and not replace:
            since = override.effective_from or "the beginning of time"
            raise InvalidPrice(
                "effective_from",
                f"overlaps the override of {override.model!r}"
                + (f" (provider {override.provider!r})" if override.provider else "")
                + f" already in effect from {since}; delete it first, or replace it",
            )
        return [o for o in existing if o.identity != override.identity] + [stored]

    await _change(redis, layout, project, put)
    return stored


async def delete_overrides(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    model: str,
    *,
    provider: str | None = None,
    effective_from_ms: int | None = None,
) -> list[PriceOverride]:
    """Delete the model's overrides (of `provider` only, from `effective_from_ms` only, when
    given); NoSuchOverride when none matches. Returns what was deleted."""
    deleted: list[PriceOverride] = []

    def matches(o: PriceOverride) -> bool:
        return (
            o.model == model
            and (provider is None or o.provider == provider)
            and (effective_from_ms is None or o.effective_from_ms == effective_from_ms)
        )

    def drop(existing: list[PriceOverride]) -> list[PriceOverride]:
        deleted[:] = [o for o in existing if matches(o)]
        if not deleted:
            raise NoSuchOverride(f"no price override of model {model!r} matches in project {project!r}")
        return [o for o in existing if not matches(o)]

    await _change(redis, layout, project, drop)
    return deleted

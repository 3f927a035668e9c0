"""Every project's price overrides in Redis, as a versioned price book.

Written by `infraprism prices` and `PUT`/`DELETE /v1/prices`, read by the aggregator
(which prices events without `cost` with the current book) and by `infraprism reprice`.

A change of one project's overrides makes the next version of the whole book
(`KeyLayout.prices_version`), in one atomic call that refuses when another change landed
meanwhile (then it is recomputed and tried again), so versions form one sequence. What
is stored per change is the changed project's overrides only (`KeyLayout.price_books`,
every version kept, with `price_changes` listing each project's versions), so the book
at any version is each project's overrides as of its last change at or before it.

The aggregator's apply script refuses a batch that priced a project's events with a
book older than that project's last change (`KeyLayout.prices_changed`), so every event
counted after a change has its new price, and a change in one project never refuses
another project's batches. A re-price reads old versions to know what an event was
priced at. A change that would store what is stored makes no version.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Iterable
from datetime import date

import orjson
import redis.asyncio as aioredis

from infraprism.core.keys import SEP, KeyLayout
from infraprism.core.price_book import InvalidPrice, PriceBook, PriceOverride
from infraprism.core.text import as_text, rfc3339_now
from infraprism.core.zones import local_midnight_ms, zone
from infraprism.stores import StoreError
from infraprism.stores.projects import reporting_zone

# A book bigger than this is refused: the aggregator ships it to its decoder with a batch.
MAX_OVERRIDES_PER_PROJECT = 10_000
_COMMIT_ATTEMPTS = 20

# KEYS: the version counter, the hash project -> version of its last change, the hash
# project -> its change versions ("3,7,12"), the books hash. ARGV: the version the change
# was computed from, the project, its overrides as JSON, the separator of a books field. Returns the new version, or -1
# when another change landed first.
_COMMIT = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return -1 end
local version = tostring(redis.call('INCR', KEYS[1]))
redis.call('HSET', KEYS[2], ARGV[2], version)
local changes = redis.call('HGET', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], changes and (changes .. ',' .. version) or version)
redis.call('HSET', KEYS[4], ARGV[2] .. ARGV[4] .. version, ARGV[3])
return tonumber(version)
"""


class UnknownProject(StoreError, ValueError):
    """Prices were set for a project that has no events, keys or settings."""


class NoSuchOverride(StoreError, LookupError):
    """A delete named no stored override."""


class CorruptPriceBook(StoreError, ValueError):
    """What Redis holds as the price book is not what InfraPrism writes."""


def _encode(overrides: Iterable[PriceOverride]) -> bytes:
    return orjson.dumps([o.to_json() for o in overrides])


def _decode(project: str, raw: str | bytes) -> list[PriceOverride]:
    try:
        items = orjson.loads(raw)
        return [PriceOverride.from_json(item) for item in items]
    except (orjson.JSONDecodeError, InvalidPrice, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptPriceBook(f"the stored price overrides of project {project!r} are unreadable: {exc!r}") from exc


async def current_version(redis: aioredis.Redis, layout: KeyLayout) -> int:
    raw = await redis.get(layout.prices_version())
    try:
        return 0 if raw is None else int(raw)
    except ValueError:
        raise CorruptPriceBook(f"{layout.prices_version()} holds {raw!r}, not a version") from None


async def book_at(redis: aioredis.Redis, layout: KeyLayout, version: int, *, project: str | None = None) -> PriceBook:
    """The book as it was at `version` (0: no overrides at all): each project's overrides as
    of its last change at or before `version`, or `project`'s alone. Versions are immutable
    once written."""
    if version == 0:
        return PriceBook(0)
    changes_of: list[tuple[bytes | str, bytes | str]]
    if project is None:
        changes_of = list((await redis.hgetall(layout.price_changes())).items())
    else:
        one = await redis.hget(layout.price_changes(), project)
        changes_of = [] if one is None else [(project, one)]
    fields: dict[str, str] = {}
    for raw_project, raw_changes in changes_of:
        project = as_text(raw_project)
        try:
            changes = [int(v) for v in as_text(raw_changes).split(",")]
        except ValueError:
            raise CorruptPriceBook(f"the change versions of project {project!r} are unreadable") from None
        at = bisect_right(changes, version)
        if at:
            fields[project] = f"{project}{SEP}{changes[at - 1]}"
    if not fields:
        return PriceBook(version)
    stored = await redis.hmget(layout.price_books(), list(fields.values()))
    overrides = {}
    for project, raw in zip(fields, stored, strict=True):
        if raw is None:
            raise CorruptPriceBook(f"the overrides of project {project!r} at {fields[project]!r} are missing")
        overrides[project] = _decode(project, raw)
    return PriceBook(version, overrides)


async def load_book(redis: aioredis.Redis, layout: KeyLayout) -> PriceBook:
    """The current book. Versions are immutable, so reading the counter first is enough."""
    return await book_at(redis, layout, await current_version(redis, layout))


async def list_overrides(redis: aioredis.Redis, layout: KeyLayout, project: str) -> list[PriceOverride]:
    """The project's overrides by model, provider and effective instant."""
    book = await book_at(redis, layout, await current_version(redis, layout), project=project)
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
    keys = [layout.prices_version(), layout.prices_changed(), layout.price_changes(), layout.price_books()]
    for _ in range(_COMMIT_ATTEMPTS):
        version = await current_version(redis, layout)
        book = await book_at(redis, layout, version, project=project)
        changed = change(list(book.by_project.get(project, ())))
        if len(changed) > MAX_OVERRIDES_PER_PROJECT:
            raise InvalidPrice("model", f"a project holds at most {MAX_OVERRIDES_PER_PROJECT} price overrides")
        new_version = int(await script(keys=keys, args=[str(version), project, _encode(changed), SEP]))
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
    """Store `override`. One of the same model, provider and effective day (as given) is an
    overlap: refused (InvalidPrice on effective_from) unless `replace`. A change to what is
    stored already makes no new version."""
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
        if same and _same_prices(same[0], override):
            raise _Unchanged
        return [o for o in existing if o.identity != override.identity] + [stored]

    try:
        await _change(redis, layout, project, put)
    except _Unchanged:
        return next(o for o in await list_overrides(redis, layout, project) if o.identity == override.identity)
    return stored


class _Unchanged(Exception):
    """The change would store what is stored: no new version (each refuses batches in flight)."""


def _same_prices(a: PriceOverride, b: PriceOverride) -> bool:
    return a.to_json() | {"set_at": None} == b.to_json() | {"set_at": None}


async def delete_overrides(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    model: str,
    *,
    provider: str | None = None,
    effective_from: date | None = None,
) -> list[PriceOverride]:
    """Delete the model's overrides (of `provider` only, starting on the day `effective_from`
    only, when given: the day as it was set, which a later change of the project's zone does
    not move); NoSuchOverride when none matches. Returns what was deleted."""
    deleted: list[PriceOverride] = []
    day = None if effective_from is None else effective_from.isoformat()

    def matches(o: PriceOverride) -> bool:
        return (
            o.model == model
            and (provider is None or o.provider == provider)
            and (effective_from is None or o.effective_from == day)
        )

    def drop(existing: list[PriceOverride]) -> list[PriceOverride]:
        deleted[:] = [o for o in existing if matches(o)]
        if not deleted:
            raise NoSuchOverride(f"no price override of model {model!r} matches in project {project!r}")
        return [o for o in existing if not matches(o)]

    await _change(redis, layout, project, drop)
    return deleted

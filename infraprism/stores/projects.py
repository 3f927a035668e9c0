"""A project's settings: its reporting zone, the `tz` its analytics answer in when a request names none.

The zone only chooses how instants are grouped when they are read: the rollups
are kept in UTC hours with their quarter hours (core/keys.py), so setting or
changing it rewrites nothing and every earlier answer in an explicit `tz` stays
the same. The record lives at KeyLayout.project_settings(project): fields `tz`,
`tz_set_at` (RFC 3339 UTC).

The CLI uses the synchronous functions; the API uses `reporting_zone`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text, rfc3339_now
from infraprism.core.zones import zone

DEFAULT_ZONE = "UTC"


@dataclass(frozen=True, slots=True)
class ProjectSettings:
    project: str
    tz: str
    tz_set_at: str | None  # None while the default applies


def _settings_of(project: str, raw: dict) -> ProjectSettings:
    fields = {as_text(key): as_text(value) for key, value in raw.items()}
    return ProjectSettings(project, fields.get("tz", DEFAULT_ZONE), fields.get("tz_set_at"))


def set_reporting_zone(client: redis.Redis, layout: KeyLayout, project: str, name: str) -> ProjectSettings:
    """Validate `name` against the pinned zone database and make it the project's zone."""
    zone(name)  # UnknownZone, with the name, for anything else
    now = rfc3339_now()
    client.hset(layout.project_settings(project), mapping={"tz": name, "tz_set_at": now})
    return ProjectSettings(project, name, now)


def project_settings(client: redis.Redis, layout: KeyLayout, project: str) -> ProjectSettings:
    return _settings_of(project, client.hgetall(layout.project_settings(project)))


async def reporting_zone(client: aioredis.Redis, layout: KeyLayout, project: str) -> str:
    """The project's zone name; UTC unless set."""
    stored = await client.hget(layout.project_settings(project), "tz")
    return DEFAULT_ZONE if stored is None else as_text(stored)

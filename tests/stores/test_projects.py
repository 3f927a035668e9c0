"""The project settings store on a real redis-server."""

from __future__ import annotations

import fnmatch

import pytest
import redis
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.zones import UnknownZone
from infraprism.settings import Settings
from infraprism.stores.projects import project_settings, reporting_zone, set_reporting_zone


@pytest.fixture
def sync_client(settings: Settings):
    client = redis.Redis.from_url(settings.redis_dsn())
    yield client
    for key in client.scan_iter(match=f"{settings.key_prefix}:*"):
        client.delete(key)
    client.close()


async def test_a_project_reports_in_utc_until_its_zone_is_set(
    settings: Settings, sync_client, redis_client: aioredis.Redis
):
    layout = KeyLayout(settings.key_prefix)
    assert await reporting_zone(redis_client, layout, "acme") == "UTC"
    assert project_settings(sync_client, layout, "acme").tz_set_at is None

    stored = set_reporting_zone(sync_client, layout, "acme", "Asia/Kolkata")

    assert await reporting_zone(redis_client, layout, "acme") == "Asia/Kolkata"
    assert await reporting_zone(redis_client, layout, "other") == "UTC"
    shown = project_settings(sync_client, layout, "acme")
    assert shown == stored
    assert shown.tz_set_at is not None
    assert shown.tz_set_at.endswith("Z")


def test_an_unknown_zone_is_refused_and_changes_nothing(settings: Settings, sync_client):
    layout = KeyLayout(settings.key_prefix)
    set_reporting_zone(sync_client, layout, "acme", "Europe/Berlin")
    with pytest.raises(UnknownZone, match="Mars/Olympus"):
        set_reporting_zone(sync_client, layout, "acme", "Mars/Olympus")
    assert project_settings(sync_client, layout, "acme").tz == "Europe/Berlin"


def test_settings_are_not_derived_data_a_rebuild_deletes(settings: Settings):
    layout = KeyLayout(settings.key_prefix)
    key = layout.project_settings("s")  # a project named like the session key part
    assert not [pattern for pattern in layout.derived_patterns("events", "agg") if fnmatch.fnmatchcase(key, pattern)]

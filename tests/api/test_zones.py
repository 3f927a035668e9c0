"""`tz` over HTTP: the zone's local days and hours, the project's zone as the default, and the 422s."""

from __future__ import annotations

import httpx
import redis
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores.projects import set_reporting_zone
from tests.api.helpers import load_events, sample_event

COSTS = "/v1/analytics/costs"
SERIES = "/v1/analytics/costs/timeseries"


def at(project: str, n: int, timestamp: str, cost: float) -> dict[str, object]:
    return sample_event(project, n, "acme", cost, timestamp=timestamp)


async def test_a_local_day_holds_exactly_the_events_of_its_local_hours(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
) -> None:
    # Kolkata's 2025-01-15 runs from 18:30 UTC on the 14th to 18:30 UTC on the 15th.
    events = [
        at(project, 1, "2025-01-14T18:29:59.999Z", 1.0),  # the 14th, local
        at(project, 2, "2025-01-14T18:30:00Z", 2.0),
        at(project, 3, "2025-01-15T12:00:00Z", 4.0),
        at(project, 4, "2025-01-15T18:29:59.999Z", 8.0),
        at(project, 5, "2025-01-15T18:30:00Z", 16.0),  # the 16th, local
    ]
    await load_events(redis_client, settings, events)
    day = {"start_date": "2025-01-15", "end_date": "2025-01-15"}
    kolkata = (await authed.get(COSTS, params={**day, "tz": "Asia/Kolkata"})).json()
    assert kolkata["summary"] == {
        "total_cost": 14.0,
        "total_events": 3,
        "period": {"start": "2025-01-15", "end": "2025-01-15", "tz": "Asia/Kolkata"},
    }
    utc = (await authed.get(COSTS, params=day)).json()["summary"]
    assert (utc["total_cost"], utc["period"]["tz"]) == (28.0, "UTC")
    by_day = (
        await authed.get(COSTS, params={**day, "end_date": "2025-01-16", "group_by": "day", "tz": "Asia/Kolkata"})
    ).json()
    assert [(row["period"], row["total_cost"]) for row in by_day["data"]] == [
        ("2025-01-15", 14.0),
        ("2025-01-16", 16.0),
    ]


async def test_an_hourly_series_on_a_dst_day_has_the_hours_that_occur(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
) -> None:
    # 2025-03-09 in Los Angeles: 02:00 PST is 03:00 PDT; 10:30 UTC is 03:30 PDT.
    await load_events(redis_client, settings, [at(project, 1, "2025-03-09T10:30:00Z", 5.0)])
    params = {"start_date": "2025-03-09", "end_date": "2025-03-09", "interval": "hour", "tz": "America/Los_Angeles"}
    body = (await authed.get(SERIES, params=params)).json()
    stamps = [row["timestamp"] for row in body["data"]]
    assert len(stamps) == 23
    assert stamps[:3] == ["2025-03-09T00:00:00-08:00", "2025-03-09T01:00:00-08:00", "2025-03-09T03:00:00-07:00"]
    assert [row["cost"] for row in body["data"] if row["events"]] == [5.0]
    assert body["data"][2]["cost"] == 5.0
    assert (body["interval"], body["tz"]) == ("hour", "America/Los_Angeles")

    lord_howe = {**params, "start_date": "2025-10-05", "end_date": "2025-10-05", "tz": "Australia/Lord_Howe"}
    stamps = [row["timestamp"] for row in (await authed.get(SERIES, params=lord_howe)).json()["data"]]
    assert len(stamps) == 24  # 23.5 hours: the 2 o'clock hour is 30 minutes long
    assert "2025-10-05T02:30:00+11:00" in stamps


async def test_days_are_labelled_with_their_own_offset(authed: httpx.AsyncClient) -> None:
    params = {"start_date": "2025-03-09", "end_date": "2025-03-10", "tz": "America/Los_Angeles"}
    stamps = [row["timestamp"] for row in (await authed.get(SERIES, params=params)).json()["data"]]
    assert stamps == ["2025-03-09T00:00:00-08:00", "2025-03-10T00:00:00-07:00"]


async def test_without_tz_the_projects_zone_applies(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
) -> None:
    await load_events(redis_client, settings, [at(project, 1, "2025-01-15T23:30:00Z", 3.0)])
    day = {"start_date": "2025-01-16", "end_date": "2025-01-16"}
    assert (await authed.get(COSTS, params=day)).json()["summary"]["total_events"] == 0
    with redis.Redis.from_url(settings.redis_dsn()) as client:
        set_reporting_zone(client, KeyLayout(settings.key_prefix), project, "Europe/Berlin")
    summary = (await authed.get(COSTS, params=day)).json()["summary"]
    assert (summary["total_events"], summary["period"]["tz"]) == (1, "Europe/Berlin")
    # An explicit tz still wins, and nothing stored changed.
    assert (await authed.get(COSTS, params={**day, "tz": "UTC"})).json()["summary"]["total_events"] == 0


async def test_an_unknown_zone_is_a_422_naming_tz(authed: httpx.AsyncClient) -> None:
    for path in (COSTS, SERIES, "/v1/analytics/models", "/v1/analytics/entities/top", "/v1/analytics/sessions"):
        response = await authed.get(
            path, params={"start_date": "2025-01-01", "end_date": "2025-01-02", "tz": "Mars/Base"}
        )
        assert response.status_code == 422, path
        assert response.json()["error"]["code"] == "invalid_parameter"
        assert response.json()["error"]["message"].startswith("tz: unknown time zone 'Mars/Base'")


async def test_a_zone_whose_old_offset_splits_a_quarter_hour_is_refused_not_approximated(
    authed: httpx.AsyncClient,
) -> None:
    # Liberia kept -0:44:30 until 1972: its local midnights then fell inside UTC quarter hours.
    response = await authed.get(
        COSTS, params={"start_date": "1971-06-01", "end_date": "1971-06-01", "tz": "Africa/Monrovia"}
    )
    assert response.status_code == 422
    assert "cannot be answered exactly" in response.json()["error"]["message"]
    modern = await authed.get(
        COSTS, params={"start_date": "2025-06-01", "end_date": "2025-06-01", "tz": "Africa/Monrovia"}
    )
    assert modern.status_code == 200

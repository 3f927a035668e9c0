"""Bounded work per request (api/bounds.py): each bound's 422, naming the parameter to narrow.

The bounds that need a large store to reach (fields, board members, anomalies, cells) are
lowered for the test on the module that applies them; the session bound is reached for real.
"""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from infraprism.api import bounds, repository
from infraprism.api.planner import GroupBy, Interval, local_periods
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.api.helpers import RANGE, anomaly_record

COSTS = "/v1/analytics/costs"
SERIES = "/v1/analytics/costs/timeseries"


def assert_too_much(response: httpx.Response, parameter: str, what: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith(f"{parameter}: this request would read "), error
    assert what in error["message"], error


@pytest.mark.usefixtures("with_sample_events")  # a store of this build's layout: local days in Kolkata
async def test_ten_years_by_day_with_a_filter_is_refused_and_a_year_is_not(authed: httpx.AsyncClient):
    ten_years = {"start_date": "2015-01-01", "end_date": "2024-12-31", "entity_id": "acme", "group_by": "day"}
    assert_too_much(await authed.get(COSTS, params=ten_years), "end_date", "time buckets")
    by_month = await authed.get(COSTS, params={**ten_years, "group_by": "month"})
    assert by_month.status_code == 200, by_month.text
    a_year = {**ten_years, "start_date": "2024-01-01", "tz": "Asia/Kolkata"}
    answered = await authed.get(COSTS, params=a_year)
    assert answered.status_code == 200, answered.text
    series = {"start_date": "2015-01-01", "end_date": "2024-12-31", "entity_type": "customer"}
    assert_too_much(await authed.get(SERIES, params=series), "end_date", "time buckets")
    assert (await authed.get(SERIES, params={**series, "interval": "week"})).status_code == 200


async def test_an_hourly_series_for_a_year_is_refused_and_for_a_quarter_is_not(authed: httpx.AsyncClient):
    a_year = {"start_date": "2024-01-01", "end_date": "2024-12-31", "interval": "hour", "entity_id": "acme"}
    response = await authed.get(SERIES, params=a_year)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "end_date: the range may span at most 100 days"
    a_quarter = {**a_year, "end_date": "2024-03-31", "tz": "Australia/Lord_Howe"}
    answered = await authed.get(SERIES, params=a_quarter)
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["data"]) == 91 * 24  # no DST change before April in Lord Howe


async def test_sessions_over_a_range_holding_too_many_are_refused(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    index = KeyLayout(settings.key_prefix).session_index(project)
    start_ms = 1735689600000  # 2025-01-01
    members = bounds.MAX_SESSIONS + 1
    for first in range(0, members, 20_000):
        await redis_client.zadd(index, {f"s{n}": start_ms + n for n in range(first, min(members, first + 20_000))})
    assert_too_much(await authed.get("/v1/analytics/sessions", params=RANGE), "start_date", "sessions")
    later = {"start_date": "2025-01-02", "end_date": "2025-01-31"}
    assert (await authed.get("/v1/analytics/sessions", params=later)).json()["summary"]["total_sessions"] == 0


@pytest.mark.usefixtures("with_sample_events")
async def test_scans_of_too_many_fields_are_refused_on_both_paths(
    authed: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(repository, "MAX_SCAN_FIELDS", 0)  # any field at all is too many
    # By entity: the column path; by tag: the path of Python sums.
    for group_by in ("entity", "tags.feature"):
        response = await authed.get(COSTS, params={**RANGE, "group_by": group_by})
        assert_too_much(response, "start_date", "rollup fields")
    # A member read touches no whole hash.
    exact = {**RANGE, "entity_type": "customer", "entity_id": "acme"}
    assert (await authed.get(COSTS, params=exact)).status_code == 200


@pytest.mark.usefixtures("with_sample_events")
async def test_a_leaderboard_of_too_many_members_is_refused(authed: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch):
    top = "/v1/analytics/entities/top"
    # A range of its own: the answer cache would otherwise serve RANGE's answer again.
    assert len((await authed.get(top, params={**RANGE, "end_date": "2025-01-30"})).json()["data"]) == 3
    monkeypatch.setattr(repository, "MAX_BOARD_MEMBERS", 2)
    assert_too_much(await authed.get(top, params=RANGE), "start_date", "leaderboard members")
    # Local days of a zone add edge hashes, counted too.
    assert_too_much(await authed.get(top, params={**RANGE, "tz": "Asia/Kolkata"}), "start_date", "leaderboard members")


async def test_too_many_anomalies_are_refused(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client, monkeypatch: pytest.MonkeyPatch
):
    layout = KeyLayout(settings.key_prefix)
    for n in (1, 2):
        await anomaly_store.create(redis_client, layout, anomaly_record(project, n, "active"))
    monkeypatch.setattr(repository, "MAX_ANOMALIES", 1)
    assert_too_much(await authed.get("/v1/analytics/anomalies", params=RANGE), "start_date", "anomalies")
    one = {"start_date": "2025-01-11", "end_date": "2025-01-11"}
    assert len((await authed.get("/v1/analytics/anomalies", params=one)).json()["data"]) == 1


async def test_a_plan_of_too_many_cells_is_refused(authed: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bounds, "MAX_BUCKET_READS", 10)
    response = await authed.get(COSTS, params={**RANGE, "group_by": "day"})
    assert_too_much(response, "end_date", "rollup cells")
    assert (await authed.get(COSTS, params={"start_date": "2025-01-01", "end_date": "2025-01-01"})).status_code == 200


@given(
    start=st.dates(date(1990, 1, 1), date(2030, 12, 31)),
    days=st.integers(0, 800),
    kind=st.sampled_from([GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH, Interval.HOUR]),
    tz=st.sampled_from(["UTC", "America/Los_Angeles", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_the_period_count_from_dates_alone_is_exact_or_for_hours_an_upper_bound(start, days, kind, tz):
    end = start + timedelta(days=days if kind is not Interval.HOUR else days % 40)
    counted = bounds.period_count(start, end, kind.value)
    actual = len(local_periods(start, end, kind, tz))
    if kind is Interval.HOUR:
        assert actual <= counted
        assert counted - actual <= (end - start).days + 2
    else:
        assert counted == actual

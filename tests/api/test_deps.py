"""Request dependencies: the key's project before anything else, the services bound to it,
and the date ranges validated before a route runs."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from infraprism.api.deps import SeriesRange, get_date_range, get_period2, get_series_range
from infraprism.api.errors import InvalidParameter
from infraprism.api.params import DateRange
from infraprism.api.planner import Interval
from tests.api.helpers import RANGE


async def test_the_ranges_are_parsed_with_their_parameters_names():
    assert await get_date_range("2025-01-01", "2025-01-31") == DateRange(date(2025, 1, 1), date(2025, 1, 31))
    with pytest.raises(InvalidParameter, match="^period2_end: 2025-01-01 is before period2_start 2025-01-02$"):
        await get_period2("2025-01-02", "2025-01-01")


async def test_an_hourly_series_spans_at_most_100_days():
    hundred_days = await get_series_range("2024-01-01", "2024-04-09", Interval.HOUR)
    assert hundred_days == SeriesRange(date(2024, 1, 1), date(2024, 4, 9), Interval.HOUR)
    with pytest.raises(InvalidParameter, match="^end_date: the range may span at most 100 days$"):
        await get_series_range("2024-01-01", "2024-04-10", Interval.HOUR)
    assert (await get_series_range("2024-01-01", "2025-01-01", Interval.DAY)).end == date(2025, 1, 1)


async def test_a_request_without_a_key_is_401_whatever_its_parameters(api_client: httpx.AsyncClient):
    for path, params in [
        ("/v1/analytics/costs", {"start_date": "2025-02-30", "end_date": "x", "format": "xml"}),
        ("/v1/analytics/costs/timeseries", {"start_date": "2024-01-01", "end_date": "2025-06-01", "interval": "hour"}),
        ("/v1/analytics/compare", {}),
    ]:
        response = await api_client.get(path, params=params)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_every_malformed_parameter_is_named_and_a_range_is_checked_before_the_route(
    authed: httpx.AsyncClient,
):
    """Malformed values (FastAPI's own checks) are all reported together. A range whose days
    are well-formed is then validated by its dependency, before the route's other parameters
    are looked at: its error is the one reported."""
    malformed = await authed.get("/v1/analytics/costs", params={"start_date": "x", "end_date": "y", "format": "xml"})
    assert malformed.status_code == 422
    assert [part.split(":")[0] for part in malformed.json()["error"]["message"].split("; ")] == [
        "start_date",
        "end_date",
        "format",
    ]
    too_long = {"start_date": "2024-01-01", "end_date": "2025-06-01", "interval": "hour", "entity_id": ""}
    response = await authed.get("/v1/analytics/costs/timeseries", params=too_long)
    assert response.json()["error"]["message"] == "end_date: the range may span at most 100 days"
    assert (await authed.get("/v1/analytics/costs/timeseries", params={**RANGE, "interval": "hour"})).status_code == 200

"""Query parameters: each refusal is a 422 whose message starts with the parameter's name."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from infraprism.api.errors import InvalidParameter
from infraprism.api.params import (
    MAX_RANGE_DAYS,
    DateRange,
    check_text,
    filters,
    parse_date,
    parse_group_by,
    parse_range,
    parse_tags,
)
from infraprism.api.planner import Filters, GroupBy, Grouping
from tests.api.helpers import RANGE


def refused(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameter) as caught:
        call(*args)
    return str(caught.value)


def test_dates_and_ranges():
    assert parse_date("start_date", "2024-02-29") == date(2024, 2, 29)
    assert refused(parse_date, "start_date", "2025-02-29") == "start_date: not a calendar date: '2025-02-29'"
    assert refused(parse_date, "d", "1969-12-31").startswith("d: must be between 1970-01-01")
    assert refused(parse_date, "d", "2025-1-1").startswith("d: must be a date YYYY-MM-DD")
    assert parse_range("2025-01-01", "2025-01-01") == DateRange(date(2025, 1, 1), date(2025, 1, 1))
    assert refused(parse_range, "2025-01-02", "2025-01-01") == "end_date: 2025-01-01 is before start_date 2025-01-02"
    assert refused(parse_range, "2025-01-02", "2025-01-01", "p_start", "p_end").startswith("p_end: ")
    last_day = date.fromordinal(date(2000, 1, 1).toordinal() + MAX_RANGE_DAYS - 1).isoformat()
    assert parse_range("2000-01-01", last_day).end.isoformat() == last_day
    assert (
        refused(parse_range, "2000-01-01", "2011-01-01")
        == f"end_date: the range may span at most {MAX_RANGE_DAYS} days"
    )
    assert refused(parse_range, "2025-01-01", "2025-01-03", "start_date", "end_date", 2).endswith("at most 2 days")


def test_tags_are_sorted_deduplicated_pairs_split_at_the_first_colon():
    assert parse_tags(None) == ()
    assert parse_tags("feature:chat:bot,env:prod,env:prod") == (("env", "prod"), ("feature", "chat:bot"))
    for bad in ("feature", "a:1,:2", "k:", "k:\x01"):
        assert refused(parse_tags, bad).startswith("tags: "), bad
    assert refused(parse_tags, ",".join(f"k{n}:v" for n in range(33))) == "tags: at most 32 key:value pairs"


def test_group_by():
    assert parse_group_by(None) == parse_group_by("") == Grouping()
    assert parse_group_by("entity") == Grouping(GroupBy.ENTITY)
    assert parse_group_by("tags.team:a") == Grouping(GroupBy.TAG, "team:a")
    for bad in ("none", "tags", "tags.", "customer", "tags." + "k" * 65):
        assert refused(parse_group_by, bad).startswith("group_by: "), bad


def test_text_filters():
    assert check_text("entity_id", None) is None
    assert check_text("entity_id", "a:b c") == "a:b c"
    for bad in ("", "x" * 257, "a\x00b", "a\x7f"):
        assert refused(check_text, "entity_id", bad).startswith("entity_id: "), bad
    assert filters("team", None, "gpt-4o", "env:prod") == Filters("team", None, "gpt-4o", (("env", "prod"),))
    assert refused(filters, None, None, "m\x1f").startswith("model: ")


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/v1/analytics/costs", {"start_date": "2025-13-01", "end_date": "2025-01-31"}, "start_date"),
        ("/v1/analytics/costs", {"start_date": "2025-02-30", "end_date": "2025-03-31"}, "start_date"),
        ("/v1/analytics/costs", {"start_date": "2025-01-31", "end_date": "2025-01-01"}, "end_date"),
        ("/v1/analytics/costs", {"start_date": "2025-01-01"}, "end_date"),
        ("/v1/analytics/costs", {**RANGE, "group_by": "customer"}, "group_by"),
        ("/v1/analytics/costs", {**RANGE, "tags": "feature"}, "tags"),
        ("/v1/analytics/costs", {**RANGE, "tags": "a:1,:2"}, "tags"),
        ("/v1/analytics/costs", {**RANGE, "format": "xml"}, "format"),
        ("/v1/analytics/costs/timeseries", {**RANGE, "interval": "minute"}, "interval"),
        ("/v1/analytics/entities/top", {**RANGE, "limit": 0}, "limit"),
        ("/v1/analytics/entities/top", {**RANGE, "limit": 101}, "limit"),
        ("/v1/analytics/entities/top", {**RANGE, "order": "up"}, "order"),
        ("/v1/analytics/sessions", {**RANGE, "limit": 1001}, "limit"),
        ("/v1/analytics/anomalies", {**RANGE, "status": "open"}, "status"),
        (
            "/v1/analytics/compare",
            {
                "period1_start": "2025-01-01",
                "period1_end": "2025-01-02",
                "period2_start": "2025-01-05",
                "period2_end": "2025-01-04",
            },
            "period2_end",
        ),
    ],
)
async def test_invalid_parameters_are_422_naming_the_parameter(
    with_sample_events: httpx.AsyncClient, path, params, parameter
):
    response = await with_sample_events.get(path, params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith(parameter), error["message"]

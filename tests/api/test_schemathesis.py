"""schemathesis against the app's own OpenAPI schema, over HTTP to a live uvicorn server.

Checks: no 5xx, documented status codes and content types, and every JSON
response matches its documented schema. A valid key is sent, over data that
exists (events, a session, an anomaly), so the 200 shapes are exercised.

/costs answers one of five shapes (api/schemas.py CostsResponse); the schema
alone cannot say which one a request gets, and a one-row grouped answer
missing its identifying fields looks like the totals of no group_by. So one
more check, `costs_rows_match_group_by`, validates a /costs answer against the
shape its request's group_by asks for, with the same validator.

A schema is only worth checking against if a wrong answer fails it, so the
second half takes a real response of every endpoint and grouping, shows that
it conforms, then breaks it one place at a time (a field dropped, a field
added, rows of two groupings mixed, a value out of range) and shows that the
checks above reject every broken copy.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infraprism.api.app import create_app
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store, apikeys
from infraprism.stores.anomaly_store import AnomalyRecord
from tests.api.helpers import LiveServer, load_events

# Building the app makes no client; the schema is the one the live server serves.
OPENAPI = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
COSTS = "/v1/analytics/costs"


def costs_shape(group_by: str | None) -> str:
    """The component of api/schemas.py's CostsResponse that answers this group_by."""
    if group_by is None:
        return "CostsTotals"
    if group_by.startswith("tags."):
        return "CostsByTag"
    return {"entity": "CostsByEntity", "model": "CostsByModel"}.get(group_by, "CostsByPeriod")


def _costs_answering(component: str) -> Any:
    """GET /costs of a copy of the app's schema whose 200 JSON is `component` alone."""
    # schemathesis passes a response whose schema $ref resolves to nothing: make sure it does.
    assert component in OPENAPI["components"]["schemas"], component
    document = copy.deepcopy(OPENAPI)
    ok = document["paths"][COSTS]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/CostsResponse"}
    ok["schema"] = {"$ref": f"#/components/schemas/{component}"}
    return schemathesis.openapi.from_dict(document)[COSTS]["GET"]


COSTS_SHAPES = {name: _costs_answering(name) for name in map(costs_shape, [None, "tags.k", "entity", "model", "day"])}


def costs_rows_match_group_by(ctx: Any, response: Any, case: Any) -> bool | None:
    """A /costs JSON answer has the row shape of the group_by it was asked for."""
    if case.operation.path != COSTS or response.status_code != 200:
        return None
    if not any("json" in value for value in response.headers.get("content-type", [])):
        return None
    group_by = (case.query or {}).get("group_by")
    if isinstance(group_by, list):  # a repeated parameter: the server reads the last
        group_by = group_by[-1] if group_by else None
    return COSTS_SHAPES[costs_shape(None if group_by is None else str(group_by))].validate_response(response)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    costs_rows_match_group_by,
]


@dataclass
class Live:
    url: str
    key: str


async def _seed(settings: Settings, project: str) -> None:
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        events = [
            {
                "event_id": f"s{n}",
                "timestamp": f"2025-01-{1 + n:02d}T10:00:00Z",
                "project_id": project,
                "entity_type": ["customer", "team"][n % 2],
                "entity_id": f"id-{n % 3}",
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 10,
                "output_tokens": 5,
                "cost": 0.25 * n,
                "latency_ms": 100 + n if n % 2 else None,
                "session_id": f"sess-{n % 4}",
                "tags": {"feature": "chat", "env": "a:b"} if n % 3 else {},
            }
            for n in range(20)
        ]
        await load_events(redis, settings, [{k: v for k, v in e.items() if v is not None} for e in events])
        await anomaly_store.create(
            redis,
            KeyLayout(settings.key_prefix),
            AnomalyRecord(
                id="an-1",
                project=project,
                detected_at="2025-01-05T10:00:00Z",
                detected_ms=1736071200000,
                entity_type="customer",
                entity_id="id-1",
                type="cost_spike",
                severity="high",
                description="spike",
                expected_value=1.0,
                actual_value=5.0,
                status="active",
            ),
        )
    finally:
        await redis.aclose()


async def _cleanup(settings: Settings) -> None:
    redis = aioredis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    try:
        async for name in redis.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
            await redis.delete(name)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[Live]:
    # The rate limit is for clients, not for a generator of thousands of requests.
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"st{uuid.uuid4().hex[:10]}",
        api_rate_limit_per_second=100_000,
        api_rate_limit_burst=1_000_000,
    )
    project = "schemathesis"
    asyncio.run(_seed(settings, project))
    key = apikeys.create_key(settings, project)[1]
    try:
        with LiveServer(settings) as server:
            yield Live(server.url, key)
    finally:
        asyncio.run(_cleanup(settings))


@schema.parametrize()
@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, live: Live):
    response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=30)
    case.validate_response(response, checks=CHECKS)


# --- the checks reject wrong answers --------------------------------------------------------

RANGE = {"start_date": "2025-01-01", "end_date": "2025-01-31"}
# group_by -> the fields that identify a /costs row of that grouping (api/routes.py GROUP_COLUMNS).
GROUPINGS: dict[str | None, tuple[str, ...]] = {
    None: (),
    "entity": ("entity_type", "entity_id"),
    "model": ("model", "provider"),
    "day": ("period",),
    "week": ("period",),
    "month": ("period",),
    "tags.feature": ("tag_key", "tag_value"),
    "tags.absent": ("tag_key", "tag_value"),
}
PERIODS = {
    "period1_start": "2025-01-11",
    "period1_end": "2025-01-20",
    "period2_start": "2025-01-01",
    "period2_end": "2025-01-10",
}
ENDPOINTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/v1/analytics/costs/timeseries", {**RANGE, "interval": "week"}),
    (
        "GET",
        "/v1/analytics/costs/timeseries",
        {"start_date": "2025-01-02", "end_date": "2025-01-02", "interval": "hour"},
    ),
    ("GET", "/v1/analytics/models", RANGE),
    ("GET", "/v1/analytics/entities/top", RANGE),
    ("GET", "/v1/analytics/sessions", RANGE),
    ("GET", "/v1/analytics/anomalies", RANGE),
    ("GET", "/v1/analytics/compare", PERIODS),
    ("GET", "/healthz", {}),
]


def _fetch(live: Live, case: Any) -> httpx.Response:
    response = httpx.request(
        case.method,
        live.url + case.formatted_path,
        params=case.query,
        headers={"Authorization": f"Bearer {live.key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def _costs_case(group_by: str | None) -> Any:
    return schema[COSTS]["GET"].Case(query={**RANGE, **({"group_by": group_by} if group_by else {})})


def _with_body(real: httpx.Response, body: Any) -> httpx.Response:
    """The real response with another JSON body: same request, status and content type."""
    fake = httpx.Response(real.status_code, json=body, request=real.request)
    fake.elapsed = real.elapsed
    return fake


def _rejected(case: Any, response: httpx.Response) -> bool:
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, FailureGroup):
        return True
    return False


def _mutations(body: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Copies of `body` broken in one place each: every field of every object (of a list:
    its first item) dropped in turn, and an unknown field added to every object."""
    if isinstance(body, dict):
        for name in body:
            yield f"{where}.{name} dropped", {k: v for k, v in body.items() if k != name}
        yield f"{where}.unexpected added", {**body, "unexpected": 1}
        for name, value in body.items():
            for what, broken in _mutations(value, f"{where}.{name}"):
                yield what, {**body, name: broken}
    elif isinstance(body, list) and body:
        for what, broken in _mutations(body[0], f"{where}[0]"):
            yield what, [broken, *body[1:]]


def _assert_real_conforms_and_every_mutation_is_rejected(case: Any, real: httpx.Response) -> None:
    case.validate_response(real, checks=CHECKS)  # raises, with the reason, if the real answer does not conform
    mutations = list(_mutations(real.json()))
    assert mutations
    accepted = [what for what, body in mutations if not _rejected(case, _with_body(real, body))]
    assert not accepted, f"the checks accept a broken response: {accepted}"


@pytest.mark.parametrize("group_by", list(GROUPINGS), ids=lambda g: g or "none")
def test_costs_real_rows_conform_and_any_field_missing_or_extra_is_rejected(live: Live, group_by):
    case = _costs_case(group_by)
    real = _fetch(live, case)
    rows = real.json()["data"]
    assert rows, "the seed data must give this grouping rows to check"
    assert all(set(GROUPINGS[group_by]) <= set(row) for row in rows)
    _assert_real_conforms_and_every_mutation_is_rejected(case, real)
    if group_by and group_by.startswith("tags."):
        # The untagged remainder is a row of its own, with tag_value null, and conforms.
        assert any(row["tag_value"] is None for row in rows)


def test_the_schema_alone_rejects_an_identifying_field_missing_from_one_row_of_several(live: Live):
    """Without the group_by check too: response_schema_conformance on the served schema."""
    operation = schema[COSTS]["GET"]
    real = _fetch(live, _costs_case("entity"))
    body = real.json()
    assert len(body["data"]) > 1
    assert operation.is_valid_response(real)
    for name in GROUPINGS["entity"]:
        broken = copy.deepcopy(body)
        del broken["data"][-1][name]
        assert not operation.is_valid_response(_with_body(real, broken)), name


def test_costs_rows_of_two_groupings_or_two_rows_of_totals_are_rejected(live: Live):
    by = {g: _fetch(live, _costs_case(g)) for g in ("entity", "model", "day")}
    entity, model, day = (by[g].json() for g in ("entity", "model", "day"))
    case = _costs_case("entity")
    for first, second in ((entity, model), (model, day), (day, entity)):
        mixed = {**first, "data": [first["data"][0], second["data"][0]]}
        assert _rejected(case, _with_body(by["entity"], mixed))
        assert not schema[COSTS]["GET"].is_valid_response(_with_body(by["entity"], mixed))
    # A row that names an identifying field of another grouping as well.
    hybrid = {**entity, "data": [{**entity["data"][0], "period": "2025-01-01"}]}
    assert _rejected(case, _with_body(by["entity"], hybrid))
    # Right rows for the wrong group_by: model rows answering group_by=entity.
    assert _rejected(case, _with_body(by["entity"], model))
    totals_case = _costs_case(None)
    totals = _fetch(live, totals_case)
    two = copy.deepcopy(totals.json())
    two["data"].append(two["data"][0])
    assert _rejected(totals_case, _with_body(totals, two))


def test_costs_values_out_of_range_are_rejected(live: Live):
    case = _costs_case("day")
    real = _fetch(live, case)
    row = real.json()["data"][0]
    for field, value in [
        ("period", "2025-01"),  # not a day
        ("period", None),
        ("total_cost", -0.5),  # costs are never negative
        ("total_events", 1.5),
        ("total_input_tokens", "10"),
        ("avg_latency_ms", -1),
    ]:
        body = {**real.json(), "data": [{**row, field: value}]}
        assert _rejected(case, _with_body(real, body)), (field, value)


@pytest.mark.parametrize(
    ("method", "path", "params"),
    ENDPOINTS,
    ids=[path + (f"[{params['interval']}]" if "interval" in params else "") for _, path, params in ENDPOINTS],
)
def test_every_real_answer_conforms_and_any_field_missing_or_extra_is_rejected(live: Live, method, path, params):
    case = schema[path][method].Case(query=params)
    real = _fetch(live, case)
    data = real.json().get("data")
    if isinstance(data, list):
        assert data, "the seed data must give this endpoint rows to check"
    _assert_real_conforms_and_every_mutation_is_rejected(case, real)

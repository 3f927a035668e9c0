"""`/v1/prices`: setting, listing, replacing and deleting a project's own prices, every bad
body, exact rates on the wire, and the stored overrides being the ones the aggregator reads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import OVERRIDE, RATE_FIELDS
from infraprism.settings import Settings
from infraprism.stores import apikeys, prices
from infraprism.stores.projects import set_reporting_zone

GPT4O = {"provider": "openai", "input_per_mtok": 2, "output_per_mtok": 8, "effective_from": "2025-03-01"}
JSON = {"Content-Type": "application/json"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


async def test_a_price_is_set_listed_replaced_and_deleted(authed: httpx.AsyncClient):
    stored = await authed.put("/v1/prices/gpt-4o", json=GPT4O)
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body == {
        "model": "gpt-4o",
        "provider": "openai",
        "effective_from": "2025-03-01",
        "effective_from_ms": utc_ms("2025-03-01T00:00:00"),
        "input_per_mtok": 2,
        "output_per_mtok": 8,
        "cache_read_per_mtok": None,
        "cache_write_per_mtok": None,
        "discount_percent": None,
        "set_at": body["set_at"],
    }
    assert body["set_at"].endswith("Z")
    assert (await authed.get("/v1/prices")).json() == {"data": [body]}

    again = await authed.put("/v1/prices/gpt-4o", json={**GPT4O, "input_per_mtok": 3})
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"].startswith("effective_from: overlaps")
    assert "replace=true" in error["message"]
    assert (await authed.get("/v1/prices")).json() == {"data": [body]}  # nothing changed

    replaced = await authed.put("/v1/prices/gpt-4o?replace=true", json={**GPT4O, "input_per_mtok": 3})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["input_per_mtok"] == 3
    listed = (await authed.get("/v1/prices")).json()["data"]
    assert [(p["model"], p["input_per_mtok"]) for p in listed] == [("gpt-4o", 3)]

    assert (await authed.delete("/v1/prices/gpt-4o")).status_code == 204
    assert (await authed.get("/v1/prices")).json() == {"data": []}
    missing = await authed.delete("/v1/prices/gpt-4o")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_another_day_or_provider_is_no_overlap_and_delete_narrows_by_them(authed: httpx.AsyncClient):
    general = {"input_per_mtok": 1, "output_per_mtok": 4}
    for body in (GPT4O, {**GPT4O, "effective_from": "2025-04-01"}, general, {**general, "provider": "azure"}):
        response = await authed.put("/v1/prices/gpt-4o", json=body)
        assert response.status_code == 200, (body, response.text)
    listed = (await authed.get("/v1/prices")).json()["data"]
    # By provider, the general one first, then by effective day.
    assert [(p["provider"], p["effective_from"]) for p in listed] == [
        (None, None),
        ("azure", None),
        ("openai", "2025-03-01"),
        ("openai", "2025-04-01"),
    ]
    assert (await authed.delete("/v1/prices/gpt-4o?provider=openai&effective_from=2025-04-01")).status_code == 204
    assert (await authed.delete("/v1/prices/gpt-4o?provider=openai&effective_from=2025-04-01")).status_code == 404
    assert (await authed.delete("/v1/prices/gpt-4o?provider=mistral")).status_code == 404
    assert (await authed.delete("/v1/prices/gpt-4o?provider=azure")).status_code == 204
    left = (await authed.get("/v1/prices")).json()["data"]
    assert [(p["provider"], p["effective_from"]) for p in left] == [(None, None), ("openai", "2025-03-01")]
    assert (await authed.delete("/v1/prices/gpt-4o")).status_code == 204  # every one left
    assert (await authed.get("/v1/prices")).json() == {"data": []}


async def test_a_discount_alone_and_cache_rates(authed: httpx.AsyncClient):
    discount = await authed.put("/v1/prices/claude-3-5-sonnet", json={"discount_percent": 12.5})
    assert discount.status_code == 200, discount.text
    assert discount.json()["discount_percent"] == 12.5
    assert all(discount.json()[name] is None for name in RATE_FIELDS)
    assert discount.json()["effective_from"] is None
    assert discount.json()["effective_from_ms"] == 0
    cached = {
        "input_per_mtok": 3,
        "output_per_mtok": 15,
        "cache_read_per_mtok": 0.3,
        "cache_write_per_mtok": 3.75,
        "discount_percent": 10,
    }
    response = await authed.put("/v1/prices/claude-sonnet-4", json=cached)
    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in cached} == cached


async def test_rates_are_exact_decimals_on_the_wire_both_ways(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    # 18 decimals and 20 significant digits: a float would keep 17 of them.
    body = b'{"input_per_mtok": 12.123456789012345678, "output_per_mtok": 1E+1, "cache_read_per_mtok": 1e-18}'
    response = await authed.put("/v1/prices/m", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    for text in ('"input_per_mtok":12.123456789012345678', '"output_per_mtok":10,', '"cache_read_per_mtok":0.0000'):
        assert text in response.text, response.text
    [stored] = await prices.list_overrides(redis_client, KeyLayout(settings.key_prefix), project)
    assert stored.input_per_mtok == Decimal("12.123456789012345678")
    assert stored.cache_read_per_mtok == Decimal("1E-18")
    assert '"input_per_mtok":12.123456789012345678' in (await authed.get("/v1/prices")).text
    too_fine = b'{"input_per_mtok": 0.1234567890123456789, "output_per_mtok": 1}'
    refused = await authed.put("/v1/prices/m2", content=too_fine, headers=JSON)
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == "input_per_mtok: at most 18 decimal places: 0.1234567890123456789"


async def test_the_stored_price_is_the_one_the_aggregator_prices_with(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    layout = KeyLayout(settings.key_prefix)
    before = await prices.current_version(redis_client, layout)
    assert (await authed.put("/v1/prices/gpt-4o", json=GPT4O)).status_code == 200
    book = await prices.load_book(redis_client, layout)
    assert book.version == before + 1
    march = utc_ms("2025-03-02T00:00:00")
    # A million tokens each way at $2 and $8 per million: $10.
    assert book.price(project, "gpt-4o", "openai", march, 1_000_000, 1_000_000) == (10_000_000_000, "openai", OVERRIDE)
    february = utc_ms("2025-02-28T23:59:59")
    assert book.override_for(project, "gpt-4o", "openai", february) is None  # the catalog's


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_per_mtok": -1}, "input_per_mtok: must not be negative"),
        ({"output_per_mtok": -0.5}, "output_per_mtok: must not be negative"),
        ({"cache_read_per_mtok": -2}, "cache_read_per_mtok: must not be negative"),
        ({"input_per_mtok": "2"}, "input_per_mtok: must be a JSON number"),
        ({"input_per_mtok": True}, "input_per_mtok: must be a number"),
        ({"input_per_mtok": [2]}, "input_per_mtok: must be a number"),
        ({"input_per_mtok": 1_000_001}, "input_per_mtok: at most 1000000"),
        ({"discount_percent": 0}, "discount_percent: must be more than 0 and at most 100"),
        ({"discount_percent": 100.5}, "discount_percent: must be more than 0 and at most 100"),
        ({"discount_percent": 12.1234567}, "discount_percent: at most 6 decimal places"),
        ({"output_per_mtok": None}, "output_per_mtok: an override's own rates need both"),
        ({"input_per_mtok": None}, "input_per_mtok: an override's own rates need both"),
        ({"provider": ""}, "provider:"),
        ({"provider": "a\nb"}, "provider:"),
        ({"provider": "p" * 129}, "provider:"),
        ({"effective_from": "2025-02-30"}, "effective_from: not a calendar date"),
        ({"effective_from": "2025-3-1"}, "effective_from:"),
        ({"effective_from": "1969-12-31"}, "effective_from: must be between"),
        ({"colour": "red"}, "colour:"),
    ],
)
async def test_every_bad_body_is_a_422_naming_the_field(
    authed: httpx.AsyncClient, change: dict[str, Any], message: str
):
    response = await authed.put("/v1/prices/gpt-4o", json={**GPT4O, **change})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert response.json()["error"]["message"].startswith(message), response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "input_per_mtok: give input_per_mtok and output_per_mtok, or a discount_percent"),
        ({"cache_read_per_mtok": 1}, "input_per_mtok: cache rates need the input and output rates too"),
        ({"provider": "openai"}, "input_per_mtok: give input_per_mtok"),
    ],
)
async def test_a_body_that_is_no_price_is_a_422(authed: httpx.AsyncClient, body: dict[str, Any], message: str):
    response = await authed.put("/v1/prices/gpt-4o", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(message), response.text


async def test_bodies_that_are_not_json_objects(authed: httpx.AsyncClient):
    # An integer past Python's 4,300-digit parsing limit is read as a decimal too.
    huge = b'{"input_per_mtok": ' + b"9" * 5000 + b', "output_per_mtok": 1}'
    response = await authed.put("/v1/prices/gpt-4o", content=huge, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("input_per_mtok: at most 1000000")
    for content in (b"{", b"[1]", b"2", b'"text"'):
        response = await authed.put("/v1/prices/gpt-4o", content=content, headers=JSON)
        assert response.status_code == 422, (content, response.text)
        assert response.json()["error"]["code"] == "invalid_parameter"
    assert (await authed.put("/v1/prices/gpt-4o")).status_code == 422  # no body at all


async def test_models_with_slashes_and_colons_and_bad_model_names(authed: httpx.AsyncClient):
    rates = {"input_per_mtok": 0.9, "output_per_mtok": 0.9}
    for model in ("meta-llama/Llama-3-70b", "ft:gpt-4o:acme", "llama-3-70b-internal", "a b%?#"):
        response = await authed.put(f"/v1/prices/{quote(model, safe='/:')}", json=rates)
        assert response.status_code == 200, (model, response.text)
        assert response.json()["model"] == model
    listed = [p["model"] for p in (await authed.get("/v1/prices")).json()["data"]]
    assert listed == ["a b%?#", "ft:gpt-4o:acme", "llama-3-70b-internal", "meta-llama/Llama-3-70b"]
    assert (await authed.delete("/v1/prices/meta-llama/Llama-3-70b")).status_code == 204
    assert (await authed.delete("/v1/prices/meta-llama")).status_code == 404
    for bad in ("x" * 129, "a%01b", "a%7Fb", ""):
        response = await authed.put(f"/v1/prices/{bad}", json=rates)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["message"].startswith("model:"), response.text
    # A line break ends a path parameter for Starlette's router: no route, so no such price.
    assert (await authed.put("/v1/prices/a%0Ab", json=rates)).json()["error"]["code"] == "not_found"
    assert (await authed.put(f"/v1/prices/{'x' * 128}", json=rates)).status_code == 200


async def test_effective_from_is_local_midnight_in_the_projects_zone(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    with sync_redis.Redis.from_url(settings.redis_dsn(), decode_responses=True) as client:
        set_reporting_zone(client, KeyLayout(settings.key_prefix), project, "America/Los_Angeles")
    response = await authed.put("/v1/prices/gpt-4o", json=GPT4O)
    assert response.status_code == 200, response.text
    assert response.json()["effective_from"] == "2025-03-01"
    assert response.json()["effective_from_ms"] == utc_ms("2025-03-01T08:00:00")  # PST is UTC-8
    # After the switch to PDT on March 9, midnight is 07:00 UTC.
    summer = await authed.put("/v1/prices/gpt-4o", json={**GPT4O, "effective_from": "2025-03-10"})
    assert summer.json()["effective_from_ms"] == utc_ms("2025-03-10T07:00:00")
    assert (await authed.delete("/v1/prices/gpt-4o?effective_from=2025-03-01")).status_code == 204
    assert [p["effective_from"] for p in (await authed.get("/v1/prices")).json()["data"]] == ["2025-03-10"]
    for query, named in (("effective_from=2025-3-1", "effective_from"), ("provider=", "provider")):
        bad = await authed.delete(f"/v1/prices/gpt-4o?{query}")
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["message"].startswith(named)


async def test_the_list_as_csv(authed: httpx.AsyncClient):
    await authed.put("/v1/prices/gpt-4o", json={**GPT4O, "cache_read_per_mtok": 0.000001})
    await authed.put("/v1/prices/gpt-4o-mini", json={"discount_percent": 15})
    response = await authed.get("/v1/prices?format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "model",
        "provider",
        "effective_from",
        "effective_from_ms",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
        "discount_percent",
        "set_at",
    ]
    assert rows[1][:9] == [
        "gpt-4o",
        "openai",
        "2025-03-01",
        str(utc_ms("2025-03-01T00:00:00")),
        "2",
        "8",
        "0.000001",
        "",
        "",
    ]
    assert rows[2][:9] == ["gpt-4o-mini", "", "", "0", "", "", "", "", "15"]
    assert len(rows) == 3
    empty = await authed.delete("/v1/prices/gpt-4o")
    assert empty.status_code == 204


async def test_a_scoped_key_may_not_see_or_set_prices(
    api_client: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis, api_key: str
):
    assert (await api_client.put("/v1/prices/gpt-4o", json=GPT4O, headers=bearer(api_key))).status_code == 200
    scoped = apikeys.create_key(settings, project, None, apikeys.Scope("customer", "acme"))[1]
    for method, path in (("GET", "/v1/prices"), ("PUT", "/v1/prices/gpt-4o"), ("DELETE", "/v1/prices/gpt-4o")):
        response = await api_client.request(
            method, path, json=GPT4O if method == "PUT" else None, headers=bearer(scoped)
        )
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    listed = (await api_client.get("/v1/prices", headers=bearer(api_key))).json()["data"]
    assert len(listed) == 1  # the scoped key's PUT and DELETE changed nothing
    assert (await api_client.get("/v1/prices")).status_code == 401


async def test_another_projects_prices_are_not_seen_or_deleted(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client: aioredis.Redis
):
    other = apikeys.create_key(settings, f"{project}-other", "tests")[1]
    assert (await authed.put("/v1/prices/gpt-4o", json=GPT4O)).status_code == 200
    assert (await authed.get("/v1/prices", headers=bearer(other))).json() == {"data": []}
    assert (await authed.delete("/v1/prices/gpt-4o", headers=bearer(other))).status_code == 404
    assert len((await authed.get("/v1/prices")).json()["data"]) == 1


async def test_a_price_book_this_build_did_not_write_is_a_503_not_a_500(
    authed: httpx.AsyncClient, settings: Settings, redis_client: aioredis.Redis, project: str
):
    layout = KeyLayout(settings.key_prefix)
    await redis_client.hset(layout.price_changes(), project, "1")
    await redis_client.set(layout.prices_version(), "1")
    await redis_client.hset(layout.price_books(), f"{project}\x1f1", b"{not json")
    for response in (
        await authed.get("/v1/prices"),
        await authed.put("/v1/prices/gpt-4o", json={"input_per_mtok": 1, "output_per_mtok": 2}),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert "unreadable" in response.json()["error"]["message"]

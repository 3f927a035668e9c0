"""The routes' own work: bodies sent as JSON (exact past 64 bits) or CSV, rendered once per cached answer."""

from __future__ import annotations

import httpx
import orjson

from infraprism.api.cache import ResponseCache
from infraprism.api.routes import Format, json_bytes, respond
from infraprism.core.keys import KeyLayout
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.api.helpers import RANGE, anomaly_record


def test_json_bytes_falls_back_only_past_64_bits():
    assert json_bytes({"a": 2**64 - 1}) == orjson.dumps({"a": 2**64 - 1})
    assert (
        json_bytes({"a": [2**64, -(2**70)], "b": 0.5})
        == b'{"a":[18446744073709551616,-1180591620717411303424],"b":0.5}'
    )


def test_respond_sends_json_or_the_data_as_csv():
    body = {"data": [{"a": 1, "b": None}], "summary": {"n": 1}}
    as_json = respond(body, Format.JSON, ["a", "b"])
    assert (as_json.media_type, as_json.body) == ("application/json", b'{"data":[{"a":1,"b":null}],"summary":{"n":1}}')
    as_csv = respond(body, Format.CSV, ["a", "b"])
    assert (as_csv.media_type, as_csv.body) == ("text/csv; charset=utf-8", b"a,b\r\n1,\r\n")
    one_object = respond({"data": {"a": 2}}, Format.CSV, ["a"])  # a dismissed anomaly: one line
    assert one_object.body == b"a\r\n2\r\n"
    whole_body = respond({"x": {"y": 3}}, Format.CSV, ["x.y"])  # /compare has no "data"
    assert whole_body.body == b"x.y\r\n3\r\n"


async def test_a_cached_answer_is_rendered_once_per_format():
    cache = ResponseCache()

    async def token() -> str:
        return "v1"

    async def compute() -> dict[str, object]:
        return {"data": [{"a": 1}]}

    body = await cache.get_or_compute("p", "q", token, compute)
    first = respond(body, Format.JSON, ["a"], cache)
    body["data"] = [{"a": "changed behind the cache's back"}]  # a rendering kept is not redone
    assert respond(body, Format.JSON, ["a"], cache).body == first.body
    assert respond(body, Format.CSV, ["a"], cache).body.endswith(b"changed behind the cache's back\r\n")


async def test_dismissing_in_csv(authed: httpx.AsyncClient, settings: Settings, project: str, redis_client):
    await anomaly_store.create(redis_client, KeyLayout(settings.key_prefix), anomaly_record(project, 1, "active"))
    response = await authed.post("/v1/analytics/anomalies/an-1/dismiss", params={"format": "csv"})
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    header, line = response.text.splitlines()
    assert header.startswith("id,detected_at,entity_type")
    assert line.startswith("an-1,2025-01-11T10:30:00Z,customer")
    assert line.endswith(",dismissed,,")  # no budget_id, no threshold: not a budget alert
    assert (await authed.get("/v1/analytics/anomalies", params=RANGE)).json()["data"][0]["status"] == "dismissed"

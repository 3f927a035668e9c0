"""The bound on the query string: 414 `uri_too_long` in the JSON envelope, before routing,
in process and under real uvicorn, where httptools' own URL bound answers the same."""

from __future__ import annotations

import socket
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from starlette.types import ASGIApp

from infraprism.api import request_limits
from infraprism.api.app import create_app
from infraprism.api.request_limits import MAX_QUERY_BYTES
from infraprism.settings import Settings
from tests.api.helpers import RANGE, LiveServer

COSTS = "/v1/analytics/costs"
KIB = 1024


def assert_uri_too_long(status: int, content_type: str, body: bytes) -> str:
    """The 414 envelope's message."""
    assert status == 414, body[:300]
    assert content_type.startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] == "uri_too_long"
    return error["message"]


def tags_of_bytes(size: int) -> str:
    """A tags value of `size` bytes, one pair: the parameter rules would refuse it too."""
    return "feature:" + "x" * (size - len("feature:"))


# ---- in process: the middleware, before routing and before the key is checked --------------


@pytest.mark.parametrize("size", [MAX_QUERY_BYTES + 1, 40 * KIB])
async def test_a_query_string_over_the_bound_is_a_414_naming_its_longest_parameter(
    authed: httpx.AsyncClient, size: int
):
    query = urlencode({**RANGE, "tags": tags_of_bytes(size)})
    response = await authed.get(f"{COSTS}?{query}")
    message = assert_uri_too_long(response.status_code, response.headers["content-type"], response.content)
    assert message.startswith(f"query string: {len(query)} bytes, over the bound of {MAX_QUERY_BYTES}")
    assert "'tags'" in message


async def asgi_get(app: ASGIApp, path: str, query: bytes) -> tuple[int, dict[str, str], bytes]:
    """One GET straight into the ASGI app: httpx refuses to build a URL over 64 KiB."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"api")],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *bodies = sent
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, b"".join(part.get("body", b"") for part in bodies)


@pytest.mark.parametrize("size", [64 * KIB, 1024 * KIB])
async def test_a_query_string_of_64_kib_or_1_mib_is_a_414_from_the_app(settings: Settings, size: int):
    # No lifespan: the bound answers before anything that needs Redis.
    query = urlencode({**RANGE, "tags": tags_of_bytes(size)}).encode()
    status, headers, body = await asgi_get(create_app(settings), COSTS, query)
    message = assert_uri_too_long(status, headers["content-type"], body)
    assert message == request_limits.query_too_long_message(query)
    assert f"'tags' ({len('tags=') + size + 2} bytes)" in message  # ':' is written %3A


@pytest.mark.parametrize("path", [COSTS, "/healthz", "/no/such/path"])
async def test_the_bound_holds_before_routing_and_without_a_key(api_client: httpx.AsyncClient, path: str):
    response = await api_client.get(path, params={"x": "y" * MAX_QUERY_BYTES})
    assert_uri_too_long(response.status_code, response.headers["content-type"], response.content)


async def test_a_query_string_at_the_bound_passes_to_the_endpoint(api_client: httpx.AsyncClient):
    filler = MAX_QUERY_BYTES - len("x=")
    response = await api_client.get(f"{COSTS}?x={'y' * filler}")
    assert response.status_code == 401  # past the bound: the endpoint asks for a key


async def test_the_longest_filter_the_parameters_allow_is_within_the_bound(authed: httpx.AsyncClient):
    tags = ",".join(f"{i:02d}{'k' * 62}:{'v' * 256}" for i in range(32))  # 32 pairs, each at its longest
    params = {
        **RANGE,
        "tags": tags,
        "model": "m" * 256,
        "group_by": "tags." + "g" * 64,
        "tz": "UTC",
    }
    assert len(urlencode(params)) <= MAX_QUERY_BYTES
    response = await authed.get(COSTS, params=params)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "tags",
    [
        ",".join(f"k{i}:v" for i in range(33)),  # one pair too many
        ",".join(f"k{i}:v" for i in range(900)),  # far too many, still within the bound
        tags_of_bytes(10 * KIB),  # one value far too long
        "feature:" + "é" * 257,
    ],
    ids=["33-pairs", "900-pairs", "10-kib-value", "257-character-value"],
)
async def test_a_long_tags_value_within_the_bound_is_a_422_naming_tags(authed: httpx.AsyncClient, tags: str):
    params = {**RANGE, "tags": tags}
    assert len(urlencode(params)) <= MAX_QUERY_BYTES
    response = await authed.get(COSTS, params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith("tags: ")


def test_the_message_names_the_longest_parameter_decoded():
    message = request_limits.query_too_long_message(b"a=1&t%61gs=" + b"x" * 100 + b"&b=22")
    assert message == (
        f"query string: 116 bytes, over the bound of {MAX_QUERY_BYTES}; "
        "the longest parameter is 'tags' (107 bytes): narrow it"
    )


# ---- real uvicorn: what `infraprism api` serves with --------------------------------------


def raw_get(port: int, target: bytes) -> tuple[int, dict[str, str], bytes]:
    """One GET over a plain socket (httpx refuses to build a URL over 64 KiB), read to the close."""
    request = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(64 * KIB):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def live(settings: Settings):
    with LiveServer(settings) as served:
        yield served


@pytest.mark.parametrize(
    ("size", "answered_by"),
    [
        (20 * KIB, "query string:"),  # the app's middleware
        (64 * KIB, "the URL is over 65535 bytes"),  # past httptools' URL bound: the protocol
        (1024 * KIB, "the URL is over 65535 bytes"),
    ],
)
def test_uvicorn_answers_a_long_tags_query_with_the_414_envelope(live, size: int, answered_by: str):
    target = f"{COSTS}?{urlencode({**RANGE, 'tags': tags_of_bytes(size)})}".encode()
    status, headers, body = raw_get(live.port, target)
    message = assert_uri_too_long(status, headers["content-type"], body)
    assert message.startswith(answered_by)
    assert headers["connection"] == "close"


def test_uvicorn_still_serves_after_refusing_and_at_the_bound(live):
    raw_get(live.port, f"{COSTS}?tags={tags_of_bytes(64 * KIB)}".encode())
    status, _, body = raw_get(live.port, f"{COSTS}?x={'y' * (MAX_QUERY_BYTES - 2)}".encode())
    assert status == 401, body  # reached the endpoint
    assert raw_get(live.port, b"/healthz")[0] == 200

"""Bounds on a request that hold before routing: a query string longer than
MAX_QUERY_BYTES is answered 414 `uri_too_long` in the JSON envelope.

The bound covers every filter the parameters allow at their longest in ASCII
(32 tag pairs of a 64-character key and a 256-character value are 10,303
characters), so it refuses no request the parameter rules would take, and it
keeps what one request makes the API parse (`tags` is split before its pairs
are counted) to a few kilobytes. Under uvicorn, a URL too long for its
httptools parser gets the same answer from the protocol (api/server.py).
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infraprism.api.errors import envelope

MAX_QUERY_BYTES = 16 * 1024
STATUS = 414
CODE = "uri_too_long"


def query_too_long_message(query: bytes) -> str:
    """The 414's message: the query's size against the bound, naming its longest parameter."""
    longest = max(query.split(b"&"), key=len)
    name = unquote_plus(longest.partition(b"=")[0].decode("latin-1"))
    return (
        f"query string: {len(query)} bytes, over the bound of {MAX_QUERY_BYTES}; "
        f"the longest parameter is {name[:64]!r} ({len(longest)} bytes): narrow it"
    )


class QueryStringBound:
    """Pure ASGI middleware: refuses a query string over MAX_QUERY_BYTES before any
    routing or parameter parsing, so no endpoint ever reads one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["query_string"]) > MAX_QUERY_BYTES:
            refusal = envelope(STATUS, CODE, query_too_long_message(scope["query_string"]))
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


# A body is a small JSON object (`POST /v1/keys`); FastAPI would read any size into memory,
# and before the key is checked.
MAX_BODY_BYTES = 16 * 1024


class BodyBound:
    """Pure ASGI middleware: reads a request's body, at most MAX_BODY_BYTES of it, before the
    app sees the request, and answers 413 `payload_too_large` for a longer one (by its
    Content-Length, or by what arrives when it has none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _body_refusal()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _body_refusal()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _body_refusal() -> Response:
    return envelope(413, "payload_too_large", f"the request body may be at most {MAX_BODY_BYTES} bytes")


def install(app: FastAPI) -> None:
    app.add_middleware(BodyBound)
    app.add_middleware(QueryStringBound)

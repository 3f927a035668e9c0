"""Runs the API under uvicorn: what `infraprism api` calls."""

from __future__ import annotations

from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from infraprism.api import request_limits
from infraprism.api.app import create_app
from infraprism.settings import Settings

# httptools' URL parser refuses a URL over 65,535 bytes (it keeps offsets in 16 bits),
# which uvicorn answers with a bare text 400. The app's own bound is far below it.
MAX_URL_BYTES = 65_535
# How long the rest of a refused request is read and dropped before the connection closes.
LINGER_SECONDS = 2.0


class UriBoundHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering a URL over MAX_URL_BYTES with the 414
    `uri_too_long` envelope that the app gives a query string over its bound.

    The URL is refused as it arrives, so no more than MAX_URL_BYTES of it is held.
    The connection then closes like a careful server's: the answer is sent and the
    sending side shut, and what the client still sends is read and dropped until it
    closes, or for LINGER_SECONDS. Closing with the request unread would reset the
    connection, and a reset can destroy the answer before the client reads it.
    """

    _uri_too_long = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._uri_too_long = True
            # The parser stops; uvicorn's data_received then calls send_400_response.
            raise ValueError("URL too long")

    def data_received(self, data: bytes) -> None:
        if not self._uri_too_long:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._uri_too_long:
            super().send_400_response(msg)
            return
        message = f"the URL is over {MAX_URL_BYTES} bytes; the query string's bound is {request_limits.MAX_QUERY_BYTES}"
        body = orjson.dumps({"error": {"code": request_limits.CODE, "message": message}})
        head = [STATUS_LINE[request_limits.STATUS]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join([*head, body]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


# What every server of the app runs with, whatever else it sets.
PROTOCOL_OPTIONS: dict[str, Any] = {"http": UriBoundHttpToolsProtocol}


def app_from_environment() -> FastAPI:
    """The app of one worker process when there are several: settings come from INFRAPRISM_*."""
    return create_app(Settings())


def main(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve the API on host:port until interrupted, in `workers` processes.

    One process serves on one core; more need an import string so that each
    worker builds its own app, from the environment (`app_from_environment`).
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,
        "lifespan": "on",
        "proxy_headers": False,
        **PROTOCOL_OPTIONS,
    }
    if workers > 1:
        uvicorn.run("infraprism.api.server:app_from_environment", factory=True, workers=workers, **options)
        return
    uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()

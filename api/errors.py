"""API errors and the one set of handlers that turns every failure into the JSON envelope.

Every error a client can see is `{"error": {"code": "...", "message": "..."}}`
with the right status: validation 422 (naming the parameter), 401, 404, 405,
and 503 when Redis cannot be reached. Nothing answers a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from infraprism.errors import InfraprismError
from infraprism.stores.prices import CorruptPriceBook

log = logging.getLogger(__name__)


class ApiError(InfraprismError):
    """Base of every error the API answers on purpose."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(ApiError):
    status_code = 422
    code = "invalid_parameter"

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The key is valid but may not do this: a scoped key managing keys or dismissing."""

    status_code = 403
    code = "forbidden"


class ForbiddenScope(ApiError):
    """A scoped key's parameter names an entity outside its scope. Never an empty answer
    instead: that would hide the client's mistake."""

    status_code = 403
    code = "forbidden_scope"

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")


class RateLimited(ApiError):
    """The key's token bucket is empty. The answer was held before it was sent (api/rate_gate.py);
    `retry_after_seconds` is what is left to wait after that."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"this key's rate limit is reached: retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "rate_limited",
    503: "unavailable",
}


def envelope(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message, **details}})
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "request"
        problems.append(f"{name}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def error_response(exc: ApiError) -> Response:
    """The envelope of an error the API answers on purpose, with its headers."""
    if isinstance(exc, RateLimited):
        seconds = exc.retry_after_seconds
        return envelope(429, exc.code, exc.message, {"Retry-After": str(seconds)}, retry_after=seconds)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return envelope(exc.status_code, exc.code, exc.message, headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return envelope(422, "invalid_parameter", _validation_message(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code if exc.status_code >= 400 else 400
    if status >= 500:
        status = 503
    code = _STATUS_CODES.get(status, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return envelope(status, code, message, dict(exc.headers) if exc.headers else None)


async def _redis_error(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable", extra={"path": request.url.path, "error": repr(exc)})
    return envelope(503, "unavailable", "the data store is unavailable; retry shortly", {"Retry-After": "1"})


async def _corrupt_price_book(request: Request, exc: Exception) -> Response:
    # Stored data this build did not write: no answer can be computed until an operator repairs it.
    log.error("unreadable price book", extra={"path": request.url.path, "error": repr(exc)})
    return envelope(503, "unavailable", f"{exc}; an operator must repair or delete it")


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug. Logged with the request so it can be fixed; the client still gets the envelope.
    log.exception("unhandled error", extra={"path": request.url.path, "query": str(request.url.query)})
    return envelope(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    handlers: list[tuple[Any, Any]] = [
        (ApiError, _api_error),
        (RequestValidationError, _validation_error),
        (StarletteHTTPException, _http_error),
        (RedisConnectionError, _redis_error),
        (RedisTimeoutError, _redis_error),
        (RedisError, _redis_error),
        (CorruptPriceBook, _corrupt_price_book),
        (Exception, _unexpected),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)

"""Every failure a client sees is the JSON envelope with the right status; never a bare 500."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from infraprism.api import errors
from infraprism.api.app import create_app
from infraprism.dev.local_services import start_redis
from infraprism.settings import Settings
from infraprism.stores import apikeys
from tests.api.helpers import RANGE


async def test_unknown_path_and_method_are_enveloped(authed: httpx.AsyncClient):
    missing = await authed.get("/v1/analytics/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await authed.delete("/v1/analytics/costs")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_redis_going_away_is_503_not_500(settings: Settings):
    own = start_redis()
    try:
        local = settings.model_copy(update={"redis_url": SecretStr(own.address)})
        key = apikeys.create_key(local, "p")[1]
        app = create_app(local)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                assert (await client.get("/v1/analytics/costs", params=RANGE)).status_code == 200
                own.stop()
                down = await client.get("/v1/analytics/costs", params=RANGE)
                assert down.status_code == 503
                assert down.json()["error"]["code"] == "unavailable"
                assert down.headers["retry-after"] == "1"
    finally:
        own.stop()


async def test_api_errors_and_bugs_are_enveloped_too():
    app = FastAPI()
    errors.install(app)

    @app.get("/unauthorized")
    async def unauthorized() -> None:
        raise errors.Unauthorized("no key")

    @app.get("/bug")
    async def bug() -> None:
        raise ZeroDivisionError

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/unauthorized")
        assert (response.status_code, response.json()) == (
            401,
            {"error": {"code": "unauthorized", "message": "no key"}},
        )
        assert response.headers["www-authenticate"] == "Bearer"
        response = await client.get("/bug")
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}

"""Runs the API under uvicorn: what `infraprism api` calls."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from infraprism.api.app import create_app
from infraprism.settings import Settings


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
    }
    if workers > 1:
        uvicorn.run("infraprism.api.server:app_from_environment", factory=True, workers=workers, **options)
        return
    uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()

"""Runs the API under uvicorn: what `infraprism api` calls."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from infraprism.settings import Settings


def main(settings: Settings, host: str, port: int) -> None:
    """Serve the API on host:port until interrupted."""
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
    )
    uvicorn.Server(config).run()

"""Helpers for API tests: write events straight into the rollups, run a live uvicorn server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
import uvicorn

from infraprism.api.app import create_app
from infraprism.core.events import validate_event
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.dev.local_services import free_port
from infraprism.pipeline.store import Applied, RollupStore
from infraprism.settings import Settings


async def load_events(
    redis: aioredis.Redis, settings: Settings, events: Iterable[dict[str, Any]], batches: int = 1
) -> int:
    """Validate and apply events through BatchRollup + RollupStore, in `batches` batches."""
    validated = [validate_event(event) for event in events]
    store = RollupStore(
        redis,
        KeyLayout(settings.key_prefix),
        topic="api-tests",
        group="api-tests",
        dedupe_window_days=3650,
    )
    size = max(1, -(-len(validated) // max(1, batches)))
    for begin in range(0, len(validated), size):
        rollup = BatchRollup()
        for event in validated[begin : begin + size]:
            rollup.add(event)
        result = await store.apply(rollup, [])
        assert isinstance(result, Applied), result
    return len(validated)


class LiveServer:
    """The API under a real uvicorn server on a free port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

"""Helpers for API tests: events written straight into the rollups, a live uvicorn server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
import uvicorn

from infraprism.api import server
from infraprism.api.app import create_app
from infraprism.core.events import validate_event
from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import EMPTY_BOOK, PriceBook
from infraprism.core.rollup import BatchRollup
from infraprism.dev.local_services import free_port
from infraprism.pipeline.store import Applied, RollupStore
from infraprism.settings import Settings
from infraprism.stores.anomaly_store import AnomalyRecord


async def load_events(
    redis: aioredis.Redis,
    settings: Settings,
    events: Iterable[dict[str, Any]],
    batches: int = 1,
    book: PriceBook = EMPTY_BOOK,
) -> int:
    """Validate (events without cost priced by `book`) and apply events through BatchRollup +
    RollupStore, in `batches` batches."""
    validated = [validate_event(event, book) for event in events]
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


RANGE = {"start_date": "2025-01-01", "end_date": "2025-01-31"}


def sample_event(project: str, n: int, entity_id: str, cost: float, **extra: object) -> dict[str, object]:
    """An event of January 2025 (the day and hour follow n), tagged feature=chat:bot."""
    return {
        "event_id": f"e{n}",
        "timestamp": f"2025-01-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
        "project_id": project,
        "entity_type": "customer",
        "entity_id": entity_id,
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost": cost,
        "latency_ms": 1000 + n,
        "tags": {"feature": "chat:bot"},
        **extra,
    }


def sample_events(project: str) -> list[dict[str, object]]:
    """Twelve events of January 1-12 over three customers, one with a comma in its id."""
    return [sample_event(project, n, ["acme", "globex, inc", "initech"][n % 3], 0.5 + n) for n in range(12)]


def anomaly_record(project: str, n: int, status: str, entity_type: str = "customer") -> AnomalyRecord:
    """An anomaly of acme detected on January 10 + n, 2025."""
    return AnomalyRecord(
        id=f"an-{n}",
        project=project,
        detected_at=f"2025-01-{10 + n:02d}T10:30:00Z",
        detected_ms=1736505000000 + n * 86_400_000,
        entity_type=entity_type,
        entity_id="acme",
        type="cost_spike",
        severity="high",
        description=f"spike {n}",
        expected_value=12.5,
        actual_value=55.0,
        status=status,
    )


class LiveServer:
    """The API under a real uvicorn server on a free port, in a background thread, with the
    protocol options `infraprism api` runs with (api/server.py)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            **server.PROTOCOL_OPTIONS,
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

"""The reference's Python example (analytics-api.txt), unchanged but for BASE_URL and API_KEY,
run as its own process with `requests` against the API served by a real uvicorn server."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

from infraprism.settings import Settings
from infraprism.stores import apikeys
from tests.api.helpers import LiveServer, load_events

EXAMPLE = Path(__file__).with_name("reference_example.py.txt")


def _events(project: str) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    events: list[dict[str, object]] = []
    spend = {"acme-corp": [3.25, 2.5, 1.0], "globex": [0.125, 0.5], "initech": [0.001]}
    n = 0
    for customer, costs in spend.items():
        for days_ago, cost in enumerate(costs, start=2):
            n += 1
            events.append(
                {
                    "event_id": f"ex-{n}",
                    "timestamp": (now - timedelta(days=days_ago)).isoformat(),
                    "project_id": project,
                    "entity_type": "customer",
                    "entity_id": customer,
                    "model": "gpt-4o",
                    "provider": "openai",
                    "input_tokens": 512,
                    "output_tokens": 1730,
                    "cost": cost,
                }
            )
    # Not a customer: must not be printed.
    events.append({**events[0], "event_id": "ex-team", "entity_type": "team", "entity_id": "platform"})
    return events


async def test_reference_python_example_runs_unchanged(settings: Settings, project: str, redis_client: aioredis.Redis):
    await load_events(redis_client, settings, _events(project))
    _, key = apikeys.create_key(settings, project, "example")
    source = EXAMPLE.read_text()
    original_lines = source.splitlines()
    with LiveServer(settings) as server:
        script = source.replace('API_KEY = "ip-your-api-key"', f'API_KEY = "{key}"').replace(
            'BASE_URL = "https://api.infraprism.com/v1"', f'BASE_URL = "{server.url}/v1"'
        )
        changed = [a for a, b in zip(original_lines, script.splitlines(), strict=True) if a != b]
        assert [line.split(" = ")[0] for line in changed] == ["API_KEY", "BASE_URL"]
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["acme-corp: $6.75", "globex: $0.62", "initech: $0.00"]

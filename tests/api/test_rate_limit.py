"""The rate limit per key: a token bucket in Redis, checked by the script that checks the key.

The isolation test runs the API as `infraprism api` in its own process, under real uvicorn,
and floods it with one key while another key and /healthz are used. It checks what the limit
promises functionally: the flood is refused with 429 and Retry-After, the other key and the
health check are never refused. How fast they stay is measured by bench/rate_limit.py, not
asserted here (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from infraprism.api import rate_gate
from infraprism.api.app import create_app
from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import free_port
from infraprism.settings import Settings
from infraprism.stores import apikeys
from tests.api.helpers import RANGE

COSTS = "/v1/analytics/costs"


@pytest.fixture
def limited(settings: Settings) -> Settings:
    """One request a second, three saved up."""
    return settings.model_copy(update={"api_rate_limit_per_second": 1.0, "api_rate_limit_burst": 3})


@pytest.fixture
async def limited_client(limited: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def test_a_key_past_its_burst_gets_a_held_429_with_retry_after_and_others_do_not(
    limited_client: httpx.AsyncClient, limited: Settings, project: str
):
    flooding = {"Authorization": f"Bearer {apikeys.create_key(limited, project)[1]}"}
    other = {"Authorization": f"Bearer {apikeys.create_key(limited, project)[1]}"}
    statuses = [(await limited_client.get(COSTS, params=RANGE, headers=flooding)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    started = time.monotonic()
    refused = await limited_client.get(COSTS, params=RANGE, headers=flooding)
    held_s = time.monotonic() - started
    assert refused.status_code == 429
    # The bucket has a token again within a second, and the answer was held half of that or
    # more: what is left of the wait is a second at most, rounded up.
    seconds = refused.headers["retry-after"]
    assert seconds in ("0", "1")
    assert refused.json() == {
        "error": {
            "code": "rate_limited",
            "message": f"this key's rate limit is reached: retry after {seconds} s",
            "retry_after": int(seconds),
        }
    }
    assert held_s >= rate_gate.HOLD_S / 2
    assert (await limited_client.get(COSTS, params=RANGE, headers=other)).status_code == 200
    assert (await limited_client.get("/healthz")).status_code == 200
    # A refused request took no token: once the refusal Redis gave ends, the key may go
    # again, and is held once more when its bucket is empty.
    await asyncio.sleep(max(0.0, started + rate_gate.HOLD_S + 0.05 - time.monotonic()))
    after = [(await limited_client.get(COSTS, params=RANGE, headers=flooding)).status_code for _ in range(4)]
    assert after[0] == 200
    assert 429 in after


async def test_the_gate_answers_a_refused_key_without_redis_until_its_hold_ends(
    limited_client: httpx.AsyncClient, limited: Settings, project: str, redis_client: aioredis.Redis
):
    key = apikeys.create_key(limited, project)[1]
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        await limited_client.get(COSTS, params=RANGE, headers=headers)
    refused_at = time.monotonic()
    first = asyncio.create_task(limited_client.get(COSTS, params=RANGE, headers=headers))
    await asyncio.sleep(0.2)  # Redis has refused it; its answer is being held
    # Refill the bucket behind the gate's back: Redis alone would now let the key in.
    await redis_client.delete(KeyLayout(limited.key_prefix).api_key_rate(apikeys.hash_key(key)))
    second = await limited_client.get(COSTS, params=RANGE, headers=headers)
    assert second.status_code == 429  # answered by the gate, from its memory of the refusal
    assert (await first).status_code == 429
    # Once the refusal Redis gave is over, Redis judges again, and its bucket is full.
    await asyncio.sleep(max(0.0, refused_at + rate_gate.HOLD_S + 0.05 - time.monotonic()))
    assert (await limited_client.get(COSTS, params=RANGE, headers=headers)).status_code == 200


async def test_revoked_keys_get_401_and_touch_no_bucket(
    limited_client: httpx.AsyncClient, limited: Settings, project: str, redis_client: aioredis.Redis
):
    layout = KeyLayout(limited.key_prefix)
    key_id, key = apikeys.create_key(limited, project)
    apikeys.revoke_key(limited, key_id)
    for _ in range(5):
        response = await limited_client.get(COSTS, params=RANGE, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401
    assert await redis_client.exists(layout.api_key_rate(apikeys.hash_key(key))) == 0
    live = apikeys.create_key(limited, project)[1]
    response = await limited_client.get(COSTS, params=RANGE, headers={"Authorization": f"Bearer {live}"})
    assert response.status_code == 200
    assert await redis_client.exists(layout.api_key_rate(apikeys.hash_key(live))) == 1


async def test_no_limit_when_the_rate_is_zero(settings: Settings, project: str, redis_client: aioredis.Redis):
    unlimited = settings.model_copy(update={"api_rate_limit_per_second": 0.0, "api_rate_limit_burst": 1})
    headers = {"Authorization": f"Bearer {apikeys.create_key(unlimited, project)[1]}"}
    app = create_app(unlimited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            statuses = {(await client.get(COSTS, params=RANGE, headers=headers)).status_code for _ in range(10)}
    assert statuses == {200}


# --- isolation, under real uvicorn -------------------------------------------------------------


@pytest.fixture
def api_process(settings: Settings, settings_env: dict[str, str]) -> Iterator[str]:
    """`infraprism api` with 50 requests a second per key, 50 saved up."""
    port = free_port()
    env = {**settings_env, "INFRAPRISM_API_RATE_LIMIT_PER_SECOND": "50", "INFRAPRISM_API_RATE_LIMIT_BURST": "50"}
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "infraprism.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "the API did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


async def test_one_key_flooding_is_refused_while_another_key_and_healthz_are_served(
    api_process: str, settings: Settings, project: str, redis_client: aioredis.Redis
):
    flooder = apikeys.create_key(settings, project, "flood")[1]
    other = apikeys.create_key(settings, project, "dashboard")[1]
    flood_statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    stop = asyncio.Event()

    async def flood(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await client.get(COSTS, params=RANGE, headers={"Authorization": f"Bearer {flooder}"})
            flood_statuses[response.status_code] += 1
            if response.status_code == 429:
                retry_after.add(response.headers["retry-after"])

    async with httpx.AsyncClient(base_url=api_process, timeout=30, limits=httpx.Limits(max_connections=40)) as client:
        flood_started = time.monotonic()
        flooders = [asyncio.create_task(flood(client)) for _ in range(16)]
        await asyncio.sleep(0.5)  # the flood is under way and past its burst
        other_statuses = []
        health_statuses = []
        for _ in range(40):
            answer = await client.get(COSTS, params=RANGE, headers={"Authorization": f"Bearer {other}"})
            other_statuses.append(answer.status_code)
            assert answer.json()["summary"]["total_events"] == 0
            health_statuses.append((await client.get("/healthz")).status_code)
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*flooders)
        elapsed = time.monotonic() - flood_started
    assert set(other_statuses) == {200}
    assert set(health_statuses) == {200}
    assert set(flood_statuses) == {200, 429}, flood_statuses
    # What got through is what the bucket allows: its 50 saved up and 50 a second since.
    assert flood_statuses[200] <= 50 + 50 * (elapsed + 1), (flood_statuses, elapsed)
    assert retry_after <= {"0", "1"}  # 50 a second: a token is never more than 20 ms away, less the hold


async def test_the_gate_never_extends_a_refusal_so_a_key_out_of_step_gets_back_in(
    monkeypatch: pytest.MonkeyPatch,
):
    """A connection of one key half a hold after Redis's refusal, retrying as soon as it is
    answered: the gate holds it, and the refusal still ends when Redis's would, so the key's
    next request is Redis's to judge."""
    clock = [100.0]
    monkeypatch.setattr(rate_gate.time, "monotonic", lambda: clock[0])

    async def no_wait(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(rate_gate.asyncio, "sleep", no_wait)
    refused = rate_gate.RefusedKeys()
    refused.refuse("k", 1000)  # Redis said no at t=100 for 1 s
    clock[0] = 100.5
    answer = await rate_gate.hold_remembered(refused.remaining_s("k"))
    assert 100.5 + rate_gate.HOLD_S / 2 <= clock[0] <= 100.5 + rate_gate.HOLD_S  # held, at its own moment
    assert answer.retry_after_seconds == 0
    assert refused.remaining_s("k") == 0  # not extended: the key's next request goes to Redis


def test_refused_keys_stay_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(rate_gate, "MAX_REFUSED_KEYS", 100)
    refused = rate_gate.RefusedKeys()
    for n in range(1000):
        refused.refuse(f"k{n}", 60_000)
    assert len(refused._until) <= 100
    assert refused.remaining_s("k999") > 0  # the newest are kept

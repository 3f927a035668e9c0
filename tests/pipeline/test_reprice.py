"""`infraprism reprice`: a project's range priced again with today's prices, exactly once, on the real stack.

The expected state comes from the independent reference (tests/pipeline/reference.py),
whose override prices are computed here in Decimal from the rates, not by InfraPrism.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import PriceOverride, parse_rate
from infraprism.pipeline.reprice import RepriceError, reprice
from infraprism.stores import prices
from tests.pipeline import reference
from tests.pipeline.helpers import produce, running_aggregator, wait_caught_up
from tests.test_cli import cli

DAY_MS = 86_400_000
FIRST_DAY = date(2025, 3, 1)
FIRST_MS = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
MODEL = "gpt-4o-mini"
RATES = {"input_per_mtok": "0.12", "output_per_mtok": "0.5", "cache_read_per_mtok": "0.03"}


def event(i: int, *, project: str = "default", priced: bool = True, day: int | None = None) -> dict[str, Any]:
    """Events over days 0-5 of March 2025; `priced` ones carry no cost (the catalog or an override prices them)."""
    raw: dict[str, Any] = {
        "event_id": f"rp-{project}-{i}",
        "project_id": project,
        "timestamp": FIRST_MS + (day if day is not None else i % 6) * DAY_MS + (i * 7_919_000) % DAY_MS,
        "entity_type": "customer" if i % 3 else "team",
        "entity_id": f"c{i % 5}",
        "model": MODEL if i % 4 else "gpt-4o",
        "provider": "openai",
        "input_tokens": 1_000 + 37 * i,
        "output_tokens": 50 + i,
        "session_id": f"s{i % 9}",
        "tags": {"feature": f"f{i % 2}"},
    }
    if i % 5 == 0:
        raw["cache_read_tokens"] = 400
    if not priced:
        raw["cost"] = round(0.0001 * (i % 7 + 1), 6)
    return raw


def override_nano(raw: dict[str, Any]) -> int:
    """The override's price, in Decimal from the rates: input net of cache reads, cache reads, output."""
    cache_read = raw.get("cache_read_tokens", 0)
    usd = (
        Decimal(RATES["input_per_mtok"]) * (raw["input_tokens"] - cache_read)
        + Decimal(RATES["cache_read_per_mtok"]) * cache_read
        + Decimal(RATES["output_per_mtok"]) * raw["output_tokens"]
    ) / 1_000_000
    return int((usd * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def repriced_between(first_day: int, last_day: int, override_from_day: int):
    """The reference's price of the events a re-price of days first..last gives, with an override from a day."""

    def price_of(raw: dict[str, Any]) -> tuple[int, str] | None:
        day = (raw["timestamp"] - FIRST_MS) // DAY_MS
        if raw["model"] == MODEL and raw.get("project_id") == "default" and first_day <= day <= last_day:
            if day >= override_from_day:
                return override_nano(raw), "override"
        return None

    return price_of


async def set_price(redis_client, settings, *, from_day: int | None) -> PriceOverride:
    layout = KeyLayout(settings.key_prefix)
    override = PriceOverride(
        model=MODEL,
        provider=None,
        effective_from=None if from_day is None else (date(2025, 3, 1 + from_day)).isoformat(),
        effective_from_ms=0 if from_day is None else FIRST_MS + from_day * DAY_MS,
        **{name: parse_rate(name, value) for name, value in RATES.items()},
    )
    return await prices.set_override(redis_client, layout, "default", override)


async def assert_state(redis_client, settings, expected: dict) -> None:
    actual = await reference.read_state(redis_client, settings.key_prefix)
    assert actual == expected, reference.diff(expected, actual)


def days(first: int, last: int) -> tuple[date, date]:
    return date(2025, 3, 1 + first), date(2025, 3, 1 + last)


async def test_reprice_matches_the_reference_and_a_second_run_changes_nothing(settings, redis_client):
    events = [event(i) for i in range(240)] + [event(i, priced=False) for i in range(240, 300)]
    events += [event(i, project="other") for i in range(60)]
    # Producer retries, counted once: two priced events of the days the override changes, one of gpt-4o.
    events += [events[3], events[14], events[100]]
    await produce(settings, events)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
        assert await reference.read_state(redis_client, settings.key_prefix) == reference.expected_state(events)

        # An override from day 2, then a re-price of days 1-4: days 2-4 take the override,
        # day 1 keeps the catalog (the override is not in effect yet), days 0 and 5 are untouched.
        await set_price(redis_client, settings, from_day=2)
        first = await reprice(settings, "default", *days(1, 4))
        assert first.events_repriced > 0
        assert not first.resumed
        expected = reference.expected_state(events, repriced_between(1, 4, 2))
        await assert_state(redis_client, settings, expected)

        # Live events of the range after the change are priced with the override as they arrive.
        late = [event(i, day=3) for i in range(300, 320)]
        await produce(settings, late)
        await wait_caught_up(redis_client, settings)
        expected = reference.expected_state(events + late, repriced_between(1, 4, 2))
        await assert_state(redis_client, settings, expected)

        # Exactly once: running it again re-prices nothing.
        second = await reprice(settings, "default", *days(1, 4))
        assert (second.events_repriced, second.cost_change_nano) == (0, 0)
        await assert_state(redis_client, settings, expected)

        # Days 0-5 now: day 0 and 5 join, from the override's day on only; what was re-priced stays.
        await reprice(settings, "default", *days(0, 5))
        expected = reference.expected_state(events + late, repriced_between(0, 5, 2))
        await assert_state(redis_client, settings, expected)


async def test_deleting_the_override_and_repricing_restores_the_catalog(settings, redis_client):
    events = [event(i) for i in range(120)]
    await produce(settings, events)
    layout = KeyLayout(settings.key_prefix)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
        await set_price(redis_client, settings, from_day=None)
        await reprice(settings, "default", *days(0, 5))
        await assert_state(redis_client, settings, reference.expected_state(events, repriced_between(0, 5, 0)))
        await prices.delete_overrides(redis_client, layout, "default", MODEL)
        await reprice(settings, "default", *days(0, 5))
        assert await reference.read_state(redis_client, settings.key_prefix) == reference.expected_state(events)


async def test_a_reprice_refuses_an_unknown_project_and_a_reversed_range(settings, redis_client):
    with pytest.raises(RepriceError, match="unknown project 'nobody'"):
        await reprice(settings, "nobody", *days(0, 1))
    with pytest.raises(RepriceError, match="before --from"):
        await reprice(settings, "default", *days(3, 1))


REPRICE_IN_CHUNKS = """
import asyncio, sys
from datetime import date
import infraprism.pipeline.reprice as reprice_module
from infraprism.settings import Settings

reprice_module.CHUNK_RECORDS = 40  # many chunks, so a kill lands between two of them
reprice_module.FETCH_RECORDS = 40
settings = Settings()
result = asyncio.run(reprice_module.reprice(settings, "default", date(2025, 3, 1), date(2025, 3, 6)))
print(result.chunks_applied, result.resumed, flush=True)
"""


async def test_reprice_killed_with_9_midway_and_rerun_is_exact(settings, settings_env, redis_client):
    events = [event(i) for i in range(400)]
    await produce(settings, events)
    layout = KeyLayout(settings.key_prefix)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    await set_price(redis_client, settings, from_day=None)
    env = {**os.environ, **settings_env}
    run = subprocess.Popen([sys.executable, "-c", REPRICE_IN_CHUNKS], env=env, stdout=subprocess.PIPE)
    try:
        # Kill it once some chunks, not all, have landed: progress has moved past a partition's start.
        progress_key = layout.reprice_progress("default")
        start = None
        for _ in range(600):
            progress = await redis_client.hgetall(progress_key)
            if start is None and progress:
                start = dict(progress)
            if start is not None and progress and progress != start:
                break
            if run.poll() is not None:
                break
            await asyncio.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == -signal.SIGKILL, "the re-price finished before it could be killed"
    assert await redis_client.hget(layout.reprice_job("default"), "status") == "running"

    result = await reprice(settings, "default", *days(0, 5))
    assert result.resumed
    assert await redis_client.hget(layout.reprice_job("default"), "status") == "done"
    expected = reference.expected_state(events, repriced_between(0, 5, 0))
    await assert_state(redis_client, settings, expected)


async def test_the_reprice_command(settings, settings_env, redis_client):
    events = [event(i) for i in range(60)]
    await produce(settings, events)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    await set_price(redis_client, settings, from_day=None)
    env = {**os.environ, **settings_env}
    done = cli("reprice", "--project", "default", "--from", "2025-03-01", "--to", "2025-03-06", "-q", env=env)
    assert done.returncode == 0, done.stderr
    changed = sum(1 for raw in events if raw["model"] == MODEL)
    assert done.stdout.decode().startswith(
        f"re-priced default 2025-03-01..2025-03-06 with price book version 1: {changed} events changed"
    )
    await assert_state(redis_client, settings, reference.expected_state(events, repriced_between(0, 5, 0)))

    unknown = cli("reprice", "--project", "nobody", "--from", "2025-03-01", "-q", env=env)
    assert unknown.returncode != 0
    assert "unknown project 'nobody'" in unknown.stderr.decode()
    assert "Traceback" not in unknown.stderr.decode()
    bad_day = cli("reprice", "--project", "default", "--from", "2025-02-30", "-q", env=env)
    assert bad_day.returncode != 0
    assert "--from: not a day of the calendar: '2025-02-30'" in bad_day.stderr.decode()


PRIVATE = "ft:gpt-4o:acme"


def private_override(input_rate: str) -> PriceOverride:
    return PriceOverride(
        PRIVATE, None, None, 0, input_per_mtok=parse_rate("input_per_mtok", input_rate), output_per_mtok=Decimal(1)
    )


async def test_an_override_deleted_then_set_again_is_repriced_from_the_price_each_event_kept(settings, redis_client):
    layout = KeyLayout(settings.key_prefix)
    await redis_client.hset(layout.project_settings("default"), "tz", "UTC")  # a project before its events
    await prices.set_override(redis_client, layout, "default", private_override("2"))
    events = [{**event(i), "model": PRIVATE} for i in range(30)]
    await produce(settings, events)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)

    def priced_at(input_rate: str):
        def price_of(raw: dict[str, Any]) -> tuple[int, str]:
            usd = (Decimal(input_rate) * raw["input_tokens"] + raw["output_tokens"]) / 1_000_000
            return int((usd * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)), "override"

        return price_of

    def expected(input_rate: str) -> dict:
        return reference.expected_state(events, priced_at(input_rate))

    # Deleted: the catalog does not know the model, so a re-price keeps every event's price.
    await prices.delete_overrides(redis_client, layout, "default", PRIVATE)
    kept = await reprice(settings, "default", *days(0, 5))
    assert (kept.unpriced_now, kept.events_repriced) == (len(events), 0)
    await assert_state(redis_client, settings, expected("2"))
    # Set again at another rate: the events move from the price they kept to the new one.
    await prices.set_override(redis_client, layout, "default", private_override("3"))
    moved = await reprice(settings, "default", *days(0, 5))
    assert (moved.unpriced_now, moved.events_repriced) == (0, len(events))
    await assert_state(redis_client, settings, expected("3"))


async def test_two_runs_of_one_reprice_at_once_apply_each_chunk_once(settings, redis_client, monkeypatch):
    import infraprism.pipeline.reprice as reprice_module

    monkeypatch.setattr(reprice_module, "CHUNK_RECORDS", 25)
    events = [event(i) for i in range(300)]
    await produce(settings, events)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    await set_price(redis_client, settings, from_day=None)
    runs = await asyncio.gather(
        reprice(settings, "default", *days(0, 5)), reprice(settings, "default", *days(0, 5)), return_exceptions=True
    )
    for run in runs:  # each either took part in the job or was told another one started with it
        assert not isinstance(run, BaseException) or "at the same moment" in str(run), run
    await assert_state(redis_client, settings, reference.expected_state(events, repriced_between(0, 5, 0)))


async def test_a_rebuild_during_a_reprice_stops_it_and_leaves_the_rebuilt_totals(settings, redis_client):
    events = [event(i) for i in range(120)]
    await produce(settings, events)
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings)
    await set_price(redis_client, settings, from_day=None)
    layout = KeyLayout(settings.key_prefix)
    rebuilt = asyncio.Event()

    def rebuild_first(done: int, total: int) -> None:
        # Reading went on; before its first chunk lands, a rebuild deletes its job and progress.
        if not rebuilt.is_set():
            rebuilt.set()
            asyncio.get_running_loop().create_task(redis_client.delete(layout.reprice_job("default")))

    with pytest.raises(RepriceError, match="a rebuild"):
        await reprice(settings, "default", *days(0, 5), on_progress=rebuild_first)
    # Nothing of it was applied: the totals are still the catalog's.
    await assert_state(redis_client, settings, reference.expected_state(events))

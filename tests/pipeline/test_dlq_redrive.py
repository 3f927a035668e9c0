"""Dead letters of an unknown model, priced later and re-driven: counted once, however often it runs.

The real broker, a real redis-server and the real aggregator. The expected totals are
computed here with integer arithmetic from the override's rates, not by the product's
pricing code.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

import orjson
import pytest

from infraprism.core.buckets import Granularity
from infraprism.core.cell import Cell
from infraprism.core.keys import Dimension, KeyLayout
from infraprism.core.price_book import PriceOverride
from infraprism.pipeline import dlq
from infraprism.pipeline.rebuild import rebuild
from infraprism.pipeline.reprice import reprice
from infraprism.stores import prices
from tests.pipeline.helpers import end_offsets, produce, read_all, running_aggregator, wait_caught_up
from tests.pipeline.poison import valid_event
from tests.test_cli import cli

PROJECT = "acme"
MODEL = "ft:gpt-4o:acme"
UNKNOWN_REASON = f"cost: absent and the price catalog does not know model {MODEL!r}"
MALFORMED = b'{"event_id": "broken", '
MALFORMED_GROUP = "not valid UTF-8 JSON: unexpected end of data"
GOOD_COST_NANO = 250_000_000  # valid_event's cost, 0.25 USD
# The override, in hundredths of a nano-dollar per token ($/Mtok x 10**5): 37.5 and 18.75
# nano-dollars a token make the per-event rounding matter.
INPUT_PER_MTOK, OUTPUT_PER_MTOK, CACHE_READ_PER_MTOK = "0.0375", "0.15", "0.01875"
INPUT_CENTINANO, OUTPUT_CENTINANO, CACHE_READ_CENTINANO = 3750, 15_000, 1875


def unknown_model_event(i: int) -> dict:
    return {
        "event_id": f"ft-{i}",
        "timestamp": "2025-01-15T11:00:00Z",
        "project_id": PROJECT,
        "entity_type": "customer",
        "entity_id": f"c{i % 3}",
        "model": MODEL,
        "input_tokens": 1001 + 37 * i,
        "output_tokens": 203 + 11 * i,
        "cache_read_tokens": 99 + i,
    }


def expected_cost_nano(event: dict) -> int:
    """The override's price of one event: the exact sum, rounded half-even once to nano-dollars."""
    cached = event["cache_read_tokens"]
    total = (
        INPUT_CENTINANO * (event["input_tokens"] - cached)
        + OUTPUT_CENTINANO * event["output_tokens"]
        + CACHE_READ_CENTINANO * cached
    )
    nano, rest = divmod(total, 100)
    return nano + (rest > 50 or (rest == 50 and nano % 2 == 1))


async def day_total(redis_client, settings) -> list[int]:
    key = KeyLayout(settings.key_prefix).rollup(PROJECT, Dimension.TOTAL, Granularity.DAY, "20250115")
    cell = await redis_client.hget(key, "")
    return [0] * 4 if cell is None else Cell.unpack(cell)[:4]


async def aggregate(redis_client, settings) -> None:
    async with running_aggregator(settings):
        await wait_caught_up(redis_client, settings, timeout_s=60)


@pytest.mark.timeout(240)
async def test_unknown_model_is_dead_lettered_then_priced_redriven_and_counted_once(
    settings, settings_env, redis_client
):
    layout = KeyLayout(settings.key_prefix)
    ledger = layout.dlq_redriven(settings.dlq_topic)
    good = [valid_event(i, project_id=PROJECT) for i in range(5)]
    unknown = [unknown_model_event(i) for i in range(6)]
    # Sent 30 days ago: the re-driven copies are far outside the dedupe window of their
    # originals, so only the redrive's own bookkeeping can keep a rebuild from counting both.
    await produce(settings, [*good, *unknown, MALFORMED], record_time_ms=int(time.time() * 1000) - 30 * 86_400_000)
    await aggregate(redis_client, settings)

    good_total = [5, 5 * GOOD_COST_NANO, 5 * 10, 5 * 20]
    assert await day_total(redis_client, settings) == good_total
    summaries = await dlq.summarise(settings)
    assert [(s.reason, s.count, s.redriven) for s in summaries] == [(UNKNOWN_REASON, 6, 0), (MALFORMED_GROUP, 1, 0)]
    examples = summaries[0].examples
    assert len(examples) == dlq.EXAMPLES_PER_REASON
    assert all(e.source.startswith(f"{settings.events_topic}[") for e in examples)
    assert all(e.payload_prefix.startswith('{"event_id":"ft-') for e in examples)
    assert summaries[1].examples[0].reason.startswith(MALFORMED_GROUP + ": line 1 column")
    listed = cli("dlq", "list", env=settings_env)
    assert listed.returncode == 0, listed.stderr
    assert f"      6          0  {UNKNOWN_REASON}" in listed.stdout.decode().splitlines()
    only = orjson.loads(cli("dlq", "list", "--reason", "CATALOG", "--json", env=settings_env).stdout)
    assert (only["total"], [r["reason"] for r in only["reasons"]]) == (6, [UNKNOWN_REASON])

    # The DLQ is at-least-once: one dead letter in it twice must still be counted once.
    letters = await read_all(settings, settings.dlq_topic, expect=7)
    [twice] = [v for v in letters if orjson.loads(v).get("payload", "").startswith('{"event_id":"ft-0"')]
    await produce(settings, [twice], topic=settings.dlq_topic)

    # Nothing passes before the price is set.
    unpriced = await dlq.redrive(settings)
    assert (unpriced.redriven, unpriced.still_failing) == ({}, {UNKNOWN_REASON: 7, MALFORMED_GROUP: 1})
    await prices.set_override(
        redis_client,
        layout,
        PROJECT,
        PriceOverride(
            model=MODEL,
            provider=None,
            effective_from=None,
            effective_from_ms=0,
            input_per_mtok=Decimal(INPUT_PER_MTOK),
            output_per_mtok=Decimal(OUTPUT_PER_MTOK),
            cache_read_per_mtok=Decimal(CACHE_READ_PER_MTOK),
        ),
    )
    dry_run = cli("dlq", "redrive", "--dry-run", "--json", env=settings_env)
    assert dry_run.returncode == 0, dry_run.stderr
    dry = orjson.loads(dry_run.stdout)
    assert (dry["redriven"], dry["copies"], dry["still_failing"]) == ({UNKNOWN_REASON: 6}, 1, {MALFORMED_GROUP: 1})
    assert await redis_client.scard(ledger) == 0
    filtered = await dlq.redrive(settings, "json")
    assert (filtered.matched, filtered.redriven, filtered.still_failing) == (1, {}, {MALFORMED_GROUP: 1})

    first = await dlq.redrive(settings)
    assert first.redriven == {UNKNOWN_REASON: 6}
    assert (first.copies, first.redriven_before, first.already_counted) == (1, 0, 0)
    assert first.still_failing == {MALFORMED_GROUP: 1}
    assert await redis_client.scard(ledger) == 6

    # A crash between the broker's ack and the ledger write: those two are sent again,
    # and the aggregator's dedupe drops the second copies.
    lost = sorted(await redis_client.smembers(ledger))[:2]
    await redis_client.srem(ledger, *lost)
    again = await dlq.redrive(settings)
    assert (again.redriven.total(), again.redriven_before, again.copies) == (2, 4, 1)
    await aggregate(redis_client, settings)

    expected = [
        5 + 6,
        5 * GOOD_COST_NANO + sum(expected_cost_nano(e) for e in unknown),
        5 * 10 + sum(e["input_tokens"] for e in unknown),
        5 * 20 + sum(e["output_tokens"] for e in unknown),
    ]
    assert await day_total(redis_client, settings) == expected
    after = await dlq.summarise(settings)
    assert [(s.reason, s.count, s.redriven) for s in after] == [(UNKNOWN_REASON, 7, 6), (MALFORMED_GROUP, 1, 0)]

    # Once counted, a dead letter the ledger lost is found counted and not sent; then nothing at all is.
    ends = await end_offsets(settings)
    await redis_client.srem(ledger, lost[0])
    found = await dlq.redrive(settings)
    assert (found.redriven, found.already_counted, found.redriven_before) == ({}, 1, 5)
    assert await redis_client.scard(ledger) == 6
    done = cli("dlq", "redrive", "--quiet", env=settings_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        f"re-drove 0 dead letters to {settings.events_topic}",
        f"still failing, left in {settings.dlq_topic}: 1",
        f"      1  {MALFORMED_GROUP}",
        "skipped: 6 re-driven before, 1 copy of a re-driven event",
    ]
    assert await end_offsets(settings) == ends
    await aggregate(redis_client, settings)
    assert await day_total(redis_client, settings) == expected

    # A rebuild prices the whole topic with today's book, by which the re-driven originals
    # would pass now: their copies count them, so the rebuild leaves them out. A re-price
    # of their day finds nothing to change either.
    await rebuild(settings)
    assert await day_total(redis_client, settings) == expected
    repriced = await reprice(settings, PROJECT, date(2025, 1, 15), date(2025, 1, 15))
    assert (repriced.events_repriced, repriced.unpriced_now) == (0, 0)
    assert await day_total(redis_client, settings) == expected


REASON_GROUPS = [
    (UNKNOWN_REASON, UNKNOWN_REASON),
    (
        "cost: absent and the price catalog does not know model 'x: 1' of provider 'p'",
        "cost: absent and the price catalog does not know model 'x: 1' of provider 'p'",
    ),
    (
        "not valid UTF-8 JSON: unexpected character: line 1 column 5 (char 4)",
        "not valid UTF-8 JSON: unexpected character",
    ),
    ("timestamp: not RFC 3339: '2025-13-01'", "timestamp: not RFC 3339: …"),
    (
        "timestamp: epoch milliseconds out of range 0-253402300799999: -5",
        "timestamp: epoch milliseconds out of range 0-253402300799999: …",
    ),
    ("event_id: length must be 1-128, got 200", "event_id: length must be 1-128, got …"),
    ("tags.team: value must be a string", "tags.…: value must be a string"),
    (
        "cost: absent, and priced at 1,234,567.00 USD, above the contract's 1,000,000 USD an event",
        "cost: absent, and priced at … USD, above the contract's 1,000,000 USD an event",
    ),
    ("internal error: TypeError: unhashable type: 'list'", "internal error: TypeError: …"),
    ("event must be a JSON object", "event must be a JSON object"),
]


@pytest.mark.parametrize(("reason", "group"), REASON_GROUPS)
def test_a_reason_groups_without_its_variable_part(reason: str, group: str) -> None:
    assert dlq.reason_group(reason) == group


@pytest.mark.timeout(240)
async def test_a_redrive_after_a_rebuild_sends_nothing_the_rebuild_counted(settings, redis_client):
    layout = KeyLayout(settings.key_prefix)
    unknown = [unknown_model_event(i) for i in range(4)]
    month_ago = int(time.time() * 1000) - 30 * 86_400_000  # beyond the dedupe window of a copy sent now
    await produce(settings, [valid_event(0, project_id=PROJECT), *unknown], record_time_ms=month_ago)
    await aggregate(redis_client, settings)
    await prices.set_override(
        redis_client,
        layout,
        PROJECT,
        PriceOverride(MODEL, None, None, 0, input_per_mtok=Decimal(INPUT_PER_MTOK), output_per_mtok=Decimal(1)),
    )
    # The rebuild judges the dead letters' messages with today's book: it counts them.
    await rebuild(settings)
    counted = await day_total(redis_client, settings)
    assert counted[0] == 1 + len(unknown)
    result = await dlq.redrive(settings)
    assert (result.redriven, result.already_counted) == ({}, len(unknown))
    await aggregate(redis_client, settings)
    assert await day_total(redis_client, settings) == counted


def test_a_dead_letters_source_counts_only_in_the_topic_it_came_from() -> None:
    letter = dlq.DeadLetter.of(
        0, 7, orjson.dumps({"reason": "r", "source": {"topic": "a", "partition": 2, "offset": 9}})
    )
    assert letter.source_in("a") == (2, 9)
    # Another topic's position names another message: never one of the events topic.
    assert letter.source_in("b") is None
    assert dlq.DeadLetter.of(0, 8, b'{"source": {"topic": "a", "partition": "2", "offset": 9}}').source_in("a") is None

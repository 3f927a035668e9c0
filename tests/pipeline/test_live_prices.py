"""Overrides on the live path: a batch priced with a book that is no longer current never lands.

Real broker and redis-server; the expected state is the independent reference's.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

import infraprism.pipeline.aggregator as aggregator_module
from infraprism.core.keys import KeyLayout
from infraprism.core.price_book import EMPTY_BOOK, PriceBook, PriceOverride
from infraprism.pipeline.decode import BatchEncoder, PartitionRange, decode_batch
from infraprism.pipeline.store import Applied, RollupStore, StalePrices
from infraprism.stores import prices
from tests.pipeline import reference
from tests.pipeline.helpers import produce, read_all, running_aggregator, wait_caught_up
from tests.pipeline.test_reprice import RATES, event, override_nano

MODEL = "gpt-4o-mini"


def own_price() -> PriceOverride:
    return PriceOverride(MODEL, None, None, 0, **{name: Decimal(value) for name, value in RATES.items()})


async def test_a_worker_on_an_old_book_is_refused_and_prices_again(settings, redis_client, monkeypatch):
    # The worker never looks for a new book by the clock here: only Redis's refusal can tell it.
    monkeypatch.setattr(aggregator_module, "PRICE_BOOK_CHECK_S", 1e9)
    layout = KeyLayout(settings.key_prefix)
    before = [event(i) for i in range(40)]
    after = [event(i) for i in range(40, 80)]
    await produce(settings, before)
    async with running_aggregator(settings) as aggregator:
        await wait_caught_up(redis_client, settings)
        await prices.set_override(redis_client, layout, "default", own_price())
        assert aggregator._book.version == 0
        await produce(settings, after)
        await wait_caught_up(redis_client, settings)
        assert aggregator._book.version == 1
    after_ids = {raw["event_id"] for raw in after}

    def price_of(raw):
        if raw["event_id"] in after_ids and raw["model"] == MODEL:
            return override_nano(raw), "override"
        return None

    expected = reference.expected_state(before + after, price_of)
    actual = await reference.read_state(redis_client, settings.key_prefix)
    assert actual == expected, reference.diff(expected, actual)
    # The partitions that priced events after the change are marked with its version.
    marks = await redis_client.hgetall(layout.price_marks(settings.events_topic, settings.aggregator_group))
    assert "1" in {value for name, value in marks.items() if ":" not in name}


async def test_the_apply_script_refuses_a_stale_book_before_writing(settings, redis_client):
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=7)
    raws = [orjson.dumps(event(i)) for i in range(5)]
    stale = decode_batch(store.encoder, raws, [0] * 5, [PartitionRange(0, 0, 5)], book=EMPTY_BOOK)
    assert stale.price_version == 0
    await redis_client.sadd(layout.projects(), "default")  # a project the store knows
    await prices.set_override(redis_client, layout, "default", own_price())
    state = await reference.read_state(redis_client, settings.key_prefix)
    assert await store.apply_payload(stale.payload) == StalePrices(1)
    assert await reference.read_state(redis_client, settings.key_prefix) == state
    book = await prices.load_book(redis_client, layout)
    fresh = decode_batch(store.encoder, raws, [0] * 5, [PartitionRange(0, 0, 5)], book=book)
    assert await store.apply_payload(fresh.payload) == Applied()
    # A batch of supplied costs only does not depend on the book: no version, no refusal.
    supplied = [orjson.dumps(event(i, priced=False)) for i in range(5, 8)]
    decoded = decode_batch(store.encoder, supplied, [0] * 3, [PartitionRange(0, 5, 8)], book=EMPTY_BOOK)
    assert decoded.price_version is None
    assert await store.apply_payload(decoded.payload) == Applied()


def test_a_dead_letter_kept_on_a_redecode_is_marked_when_the_new_book_would_price_it():
    encoder = BatchEncoder(key_prefix="kept-dead", topic="t", group="g", dedupe_window_days=7)
    unknown = {**event(1), "model": "ft:gpt-4o:acme"}
    raws = [orjson.dumps(event(0)), orjson.dumps(unknown)]
    first = decode_batch(encoder, raws, [0, 0], [PartitionRange(3, 10, 12)])
    assert [index for index, _ in first.dead_letters] == [1]
    reason = first.dead_letters[0][1]
    book = PriceBook(
        1,
        {
            "default": [
                PriceOverride(
                    "ft:gpt-4o:acme",
                    None,
                    None,
                    0,
                    discount_percent=None,
                    input_per_mtok=Decimal(1),
                    output_per_mtok=Decimal(1),
                )
            ]
        },
    )
    again = decode_batch(
        encoder, raws, [0, 0], [PartitionRange(3, 10, 12)], book=book, known_dead=[None, (3, 11, reason)]
    )
    assert again.dead_letters == [(1, reason)]  # it stays the dead letter it was sent as
    assert again.events == 1
    assert orjson.loads(again.payload)["prices"]["kept_dead"] == ["3@11"]


async def test_a_change_in_another_project_refuses_nothing_and_an_unchanged_one_makes_no_version(
    settings, redis_client
):
    layout = KeyLayout(settings.key_prefix)
    store = RollupStore(redis_client, layout, topic="t", group="g", dedupe_window_days=7)
    await redis_client.sadd(layout.projects(), "default", "other")
    await prices.set_override(redis_client, layout, "default", own_price())
    book = await prices.load_book(redis_client, layout)
    raws = [orjson.dumps(event(i)) for i in range(4)]
    decoded = decode_batch(store.encoder, raws, [0] * 4, [PartitionRange(0, 0, 4)], book=book)
    await prices.set_override(redis_client, layout, "other", own_price())
    assert await prices.current_version(redis_client, layout) == 2
    assert await store.apply_payload(decoded.payload) == Applied()  # "other" changed, not "default"
    # Setting what is set already is no change: no version, so nothing in flight is refused.
    await prices.set_override(redis_client, layout, "default", own_price(), replace=True)
    assert await prices.current_version(redis_client, layout) == 2
    again = decode_batch(store.encoder, raws, [0] * 4, [PartitionRange(0, 4, 8)], book=book)
    await prices.delete_overrides(redis_client, layout, "default", MODEL)
    assert await store.apply_payload(again.payload) == StalePrices(3)
    # The book of every version stays readable: what a re-price needs.
    [first] = (await prices.book_at(redis_client, layout, 1)).by_project["default"]
    assert first.to_json() | {"set_at": None} == own_price().to_json()
    assert set((await prices.book_at(redis_client, layout, 2)).by_project) == {"default", "other"}
    assert set((await prices.book_at(redis_client, layout, 3)).by_project) == {"other"}


async def test_an_override_deleted_while_its_events_are_in_flight_makes_them_dead_letters(
    settings, redis_client, monkeypatch
):
    monkeypatch.setattr(aggregator_module, "PRICE_BOOK_CHECK_S", 1e9)  # only the fence can tell the worker
    layout = KeyLayout(settings.key_prefix)
    private = {"model": "ft:gpt-4o:acme"}
    await redis_client.hset(layout.project_settings("default"), "tz", "UTC")  # a project with no data yet
    await prices.set_override(
        redis_client,
        layout,
        "default",
        PriceOverride("ft:gpt-4o:acme", None, None, 0, input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)),
    )
    events = [{**event(i), **private} for i in range(12)]
    async with running_aggregator(settings) as aggregator:
        async with asyncio.timeout(30):
            while aggregator._book.version != 1:  # started, with the book that prices them
                await asyncio.sleep(0.05)
        await prices.delete_overrides(redis_client, layout, "default", "ft:gpt-4o:acme")
        await produce(settings, events)
        await wait_caught_up(redis_client, settings)
        assert aggregator._book.version == 2
    letters = await read_all(settings, settings.dlq_topic, expect=len(events))
    assert {orjson.loads(letter)["reason"] for letter in letters} == {
        "cost: absent and the price catalog does not know model 'ft:gpt-4o:acme' of provider 'openai'"
    }
    assert [key async for key in redis_client.scan_iter(match=f"{layout.root}:default:r:*")] == []

"""The decoder's memo of what its latest batches counted (pipeline/encode.RecentlyCounted)."""

from __future__ import annotations

import orjson

from infraprism.core.dedupe import DedupeWindow
from infraprism.pipeline.decode import BatchEncoder, RecentlyCounted, decode_batch

WINDOW = DedupeWindow.of_days(7)
DAY_MS = 86_400_000


def raw(event_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "timestamp": 1_736_935_200_000,
            "entity_type": "customer",
            "entity_id": "acme",
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost": 0.5,
        }
    )


def test_a_copy_counted_by_an_earlier_batch_is_a_duplicate_but_not_one_of_the_same_batch():
    memo = RecentlyCounted()
    memo.start(epoch=1)
    memo.remember(5, {("p", "a"): [100]})
    assert memo.counted_near(("p", "a"), 100, 6, WINDOW)
    assert memo.counted_near(("p", "a"), 107, 6, WINDOW)  # seven slots: within the window
    assert not memo.counted_near(("p", "a"), 108, 6, WINDOW)
    assert not memo.counted_near(("p", "a"), 100, 5, WINDOW)  # batch 5 decoded again: not its own copy
    assert not memo.counted_near(("other", "a"), 100, 6, WINDOW)


def test_decoding_a_batch_again_replaces_what_it_counted():
    memo = RecentlyCounted()
    memo.start(epoch=1)
    memo.remember(5, {("p", "a"): [100], ("p", "b"): [100]})
    memo.remember(5, {("p", "b"): [100]})  # "a" excluded on the second decode
    assert not memo.counted_near(("p", "a"), 100, 6, WINDOW)
    assert memo.counted_near(("p", "b"), 100, 6, WINDOW)


def test_a_new_epoch_forgets_everything():
    memo = RecentlyCounted()
    memo.start(epoch=1)
    memo.remember(5, {("p", "a"): [100]})
    memo.start(epoch=1)
    assert memo.counted_near(("p", "a"), 100, 6, WINDOW)
    memo.start(epoch=2)
    assert not memo.counted_near(("p", "a"), 100, 6, WINDOW)


def test_the_memo_is_bounded_and_forgets_the_oldest_batches_first():
    memo = RecentlyCounted(max_ids=4)
    memo.start(epoch=1)
    for seq in range(1, 6):
        memo.remember(seq, {("p", f"id{seq}-{i}"): [100] for i in range(2)})
    held = [seq for seq in range(1, 6) if memo.counted_near(("p", f"id{seq}-0"), 100, 99, WINDOW)]
    assert held == [4, 5]


def test_decode_batch_drops_a_retry_of_an_earlier_batch_only_in_the_same_epoch():
    encoder = BatchEncoder(key_prefix="memo-test", topic="t", group="g", dedupe_window_days=7)
    now = 1_800_000_000_000
    first = decode_batch(encoder, [raw("a"), raw("b")], [now, now], [], seq=1, epoch=1)
    assert first.events == 2
    retry = decode_batch(encoder, [raw("b"), raw("c")], [now, now], [], seq=2, epoch=1)
    assert (retry.events, retry.duplicates_in_batch) == (1, 1)
    # After a re-seek nothing decoded before is trusted: Redis judges the repeat again.
    after_seek = decode_batch(encoder, [raw("b"), raw("c")], [now, now], [], seq=3, epoch=2)
    assert (after_seek.events, after_seek.duplicates_in_batch) == (2, 0)
    # Far outside the window in record time, a copy counts again.
    later = decode_batch(encoder, [raw("b")], [now + 9 * DAY_MS], [], seq=4, epoch=2)
    assert later.events == 1

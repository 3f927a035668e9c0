"""A bug of ours on one message sets that message aside: decode_batch never raises on content."""

from __future__ import annotations

import orjson

import infraprism.pipeline.decode as decode
from infraprism.pipeline.decode import BatchEncoder, decode_batch, judge

NOW_MS = 1_800_000_000_000


def raw(event_id: str, entity_id: str = "acme") -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "timestamp": 1_736_935_200_000,
            "entity_type": "customer",
            "entity_id": entity_id,
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost": 0.5,
        }
    )


def encoder() -> BatchEncoder:
    return BatchEncoder(key_prefix="isolation", topic="t", group="g", dedupe_window_days=7)


def test_a_failure_while_validating_one_message_is_its_dead_letter_as_an_internal_error(monkeypatch):
    real_parse = decode.parse_event

    def parse_failing_on_bob(value, book):
        if b'"bob"' in value:
            raise KeyError("a bug")
        return real_parse(value, book)

    monkeypatch.setattr(decode, "parse_event", parse_failing_on_bob)
    decoded = decode_batch(encoder(), [raw("a"), raw("b", "bob"), raw("c")], [NOW_MS] * 3, [])
    assert decoded.events == 2
    assert decoded.dead_letters == [(1, "internal error: KeyError: 'a bug'")]


_REAL_DELTAS = decode.deltas_of_groups


def deltas_failing_on_bob(groups, newest):
    """The batch-level fold failing whenever a batch holds entity `bob`: a stand-in for our bug."""
    if any(key[2] == "bob" for key in groups):
        raise OverflowError("a bug")
    return _REAL_DELTAS(groups, newest)


def test_a_failure_while_folding_the_batch_sets_aside_only_the_events_that_cause_it(monkeypatch):
    monkeypatch.setattr(decode, "deltas_of_groups", deltas_failing_on_bob)
    values = [raw("a"), raw("b", "bob"), b"not json", raw("c"), raw("d", "bob")]
    decoded = decode_batch(encoder(), values, [NOW_MS] * len(values), [])
    assert decoded.events == 2
    assert [index for index, _ in decoded.dead_letters] == [1, 2, 4]
    assert decoded.dead_letters[0][1] == "internal error: OverflowError: a bug"
    assert decoded.dead_letters[1][1].startswith("not valid UTF-8 JSON")
    assert {cell[1] for delta in decoded.deltas for cell in orjson.loads(delta[1])["cells"]} == {"acme"}


def test_judge_never_raises_and_words_a_bug_as_an_internal_error(monkeypatch):
    monkeypatch.setattr(decode, "parse_event", lambda value, book: 1 / 0)
    assert judge(raw("a")) == "internal error: ZeroDivisionError: division by zero"


def test_an_event_set_aside_is_not_remembered_as_counted(monkeypatch):
    enc = BatchEncoder(key_prefix="isolation-memo", topic="t", group="g", dedupe_window_days=7)
    with monkeypatch.context() as patched:
        patched.setattr(decode, "deltas_of_groups", deltas_failing_on_bob)
        first = decode_batch(enc, [raw("a"), raw("b", "bob")], [NOW_MS] * 2, [], seq=1, epoch=1)
    assert (first.events, [index for index, _ in first.dead_letters]) == (1, [1])
    # The bug fixed, the same message again: a first copy to count, not a repeat of a counted one.
    again = decode_batch(enc, [raw("a"), raw("b", "bob")], [NOW_MS] * 2, [], seq=2, epoch=1)
    assert (again.events, again.duplicates_in_batch) == (1, 1)

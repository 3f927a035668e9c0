"""The event contract (spec/events.md) as tables: accepted, normalised, rejected and why."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from infraprism.core.events import (
    CostEvent,
    InvalidEvent,
    _common_rfc3339_ms,
    _fast_event,
    _rfc3339_ms,
    _validate_fully,
    parse_event,
    validate_event,
)

GOOD: dict = {
    "event_id": "9f1c2e34-5b7a-4c1d-9e8f-0a1b2c3d4e5f",
    "timestamp": "2025-01-15T10:00:03.120Z",
    "project_id": "default",
    "entity_type": "customer",
    "entity_id": "acme-corp",
    "model": "gpt-4o",
    "provider": "openai",
    "input_tokens": 512,
    "output_tokens": 1730,
    "cost": 0.01858,
    "latency_ms": 1180,
    "session_id": "550e8400-e29b-41d4-a716-446655440000",
    "tags": {"feature": "chatbot", "env": "production"},
}
# 2025-01-15T10:00:00Z in epoch milliseconds.
T0_MS = 1_736_935_200_000


def event(**changes: object) -> dict:
    """GOOD with fields changed; a value of `...` removes the field."""
    out = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def reason_of(value: object) -> str:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(value)
    return str(caught.value)


def catalog_nano(model: str, provider: str | None, at: datetime, **usage: int) -> int:
    """The catalog's price in nano-dollars, computed here independently of infraprism.core."""
    price = calc_price(Usage(**usage), model_ref=model, provider_id=provider, genai_request_timestamp=at)
    return int((Decimal(str(price.total_price)) * 10**9).to_integral_value())


def test_the_spec_example_is_accepted_exactly():
    assert validate_event(GOOD) == CostEvent(
        event_id="9f1c2e34-5b7a-4c1d-9e8f-0a1b2c3d4e5f",
        ts_ms=T0_MS + 3120,
        project_id="default",
        entity_type="customer",
        entity_id="acme-corp",
        model="gpt-4o",
        provider="openai",
        input_tokens=512,
        output_tokens=1730,
        cost_nano=18_580_000,
        latency_us=1_180_000,
        session_id="550e8400-e29b-41d4-a716-446655440000",
        tags=(("env", "production"), ("feature", "chatbot")),
    )


# ---- rejections: every kind of bad message, each with a reason naming what is wrong ---------

RAW_REJECTIONS = [
    pytest.param(None, "empty message (null value)", id="null-value"),
    pytest.param(b"", "not valid UTF-8 JSON", id="empty-bytes"),
    pytest.param(b"this is not json", "not valid UTF-8 JSON", id="not-json"),
    pytest.param(b'{"event_id": "e1", "timestamp": ', "not valid UTF-8 JSON", id="truncated-json"),
    pytest.param(b"\xff\xfe\x00garbage", "not valid UTF-8 JSON", id="not-utf8"),
    pytest.param(b'{"event_id": "\xe9"}', "not valid UTF-8 JSON", id="latin1-inside-json"),
    pytest.param(b'{"cost": NaN}', "not valid UTF-8 JSON", id="nan-literal"),
    pytest.param(b"[1, 2, 3]", "event must be a JSON object", id="array"),
    pytest.param(b'"an event"', "event must be a JSON object", id="string"),
    pytest.param(b"42", "event must be a JSON object", id="number"),
    pytest.param(b"null", "event must be a JSON object", id="json-null"),
]


@pytest.mark.parametrize(("raw", "reason"), RAW_REJECTIONS)
def test_undecodable_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert str(caught.value).startswith(reason)


REQUIRED = [
    "event_id",
    "timestamp",
    "entity_type",
    "entity_id",
    "model",
    "input_tokens",
    "output_tokens",
]


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_required_field_is_named(field):
    assert reason_of(event(**{field: ...})) == f"{field}: required"


@pytest.mark.parametrize("field", REQUIRED)
def test_a_null_required_field_is_named(field):
    assert reason_of(event(**{field: None})).startswith(f"{field}: ")


LONG = "x" * 300
FIELD_REJECTIONS = [
    # identifiers: type, length, control characters
    ({"event_id": 123}, "event_id: must be a string"),
    ({"event_id": ""}, "event_id: length must be 1-128, got 0"),
    ({"event_id": "e" * 129}, "event_id: length must be 1-128, got 129"),
    ({"event_id": "a\x1fb"}, "event_id: control characters are not allowed"),
    ({"entity_type": "t" * 65}, "entity_type: length must be 1-64, got 65"),
    ({"entity_type": ["customer"]}, "entity_type: must be a string"),
    ({"entity_type": "*"}, "entity_type: '*' is reserved (the all-types leaderboard)"),
    ({"entity_id": "i" * 257}, "entity_id: length must be 1-256, got 257"),
    ({"entity_id": "acme\ncorp"}, "entity_id: control characters are not allowed"),
    ({"model": "m" * 129}, "model: length must be 1-128, got 129"),
    ({"model": ""}, "model: length must be 1-128, got 0"),
    ({"provider": 7}, "provider: must be a string"),
    ({"provider": ""}, "provider: length must be 1-128, got 0"),
    ({"session_id": ""}, "session_id: length must be 1-128, got 0"),
    ({"session_id": "s" * 129}, "session_id: length must be 1-128, got 129"),
    ({"session_id": 5}, "session_id: must be a string"),
    # project
    ({"project_id": "has space"}, "project_id: must be 1-64 characters of [A-Za-z0-9._-]"),
    ({"project_id": ""}, "project_id: must be 1-64 characters of [A-Za-z0-9._-]"),
    ({"project_id": "p" * 65}, "project_id: must be 1-64 characters of [A-Za-z0-9._-]"),
    ({"project_id": 12}, "project_id: must be 1-64 characters of [A-Za-z0-9._-]"),
    ({"project_id": "a:b"}, "project_id: must be 1-64 characters of [A-Za-z0-9._-]"),
    # token counts
    ({"input_tokens": -1}, "input_tokens: must be 0-1000000000000, got -1"),
    ({"input_tokens": 10**12 + 1}, "input_tokens: must be 0-1000000000000, got 1000000000001"),
    ({"input_tokens": 2**64 - 1}, "input_tokens: must be 0-1000000000000"),
    ({"input_tokens": 1.5}, "input_tokens: must be an integer"),
    ({"input_tokens": "10"}, "input_tokens: must be an integer"),
    ({"input_tokens": True}, "input_tokens: must be an integer"),
    ({"output_tokens": -7}, "output_tokens: must be 0-1000000000000, got -7"),
    ({"output_tokens": "many"}, "output_tokens: must be an integer"),
    ({"cache_read_tokens": -1}, "cache_read_tokens: must be 0-1000000000000, got -1"),
    ({"cache_write_tokens": 2.0}, "cache_write_tokens: must be an integer"),
    ({"reasoning_tokens": -3}, "reasoning_tokens: must be 0-1000000000000, got -3"),
    (
        {"cache_read_tokens": 400, "cache_write_tokens": 113},
        "cache_read_tokens + cache_write_tokens: part of",
    ),
    ({"reasoning_tokens": 1731}, "reasoning_tokens: part of output_tokens"),
    # money and latency
    ({"cost": -0.01}, "cost: must be 0-1000000, got -0.01"),
    ({"cost": 1e300}, "cost: must be 0-1000000, got 1e+300"),
    ({"cost": 1_000_001}, "cost: must be 0-1000000, got 1000001"),
    ({"cost": "0.01"}, "cost: must be a number"),
    ({"cost": True}, "cost: must be a number"),
    ({"cost": float("inf")}, "cost: must be finite"),
    ({"cost": float("nan")}, "cost: must be finite"),
    ({"latency_ms": -1}, "latency_ms: must be 0-86400000, got -1"),
    ({"latency_ms": 1e306}, "latency_ms: must be 0-86400000, got 1e+306"),
    ({"project_id": ["x"]}, "project_id: must be 1-64 characters"),
    ({"latency_ms": "fast"}, "latency_ms: must be a number"),
    # tags
    ({"tags": ["feature", "chatbot"]}, "tags: must be an object of string -> string"),
    ({"tags": "feature:chatbot"}, "tags: must be an object of string -> string"),
    ({"tags": {f"k{i}": "v" for i in range(33)}}, "tags: at most 32 pairs, got 33"),
    ({"tags": {"": "v"}}, "tags: key must be 1-64 characters"),
    ({"tags": {"k" * 65: "v"}}, "tags: key must be 1-64 characters"),
    ({"tags": {"a\x1eb": "v"}}, "tags: key must be 1-64 characters without control characters"),
    ({"tags": {"env": 1}}, "tags.env: value must be a string"),
    ({"tags": {"env": None}}, "tags.env: value must be a string"),
    ({"tags": {"env": ""}}, "tags.env: value must be 1-256 characters"),
    ({"tags": {"env": LONG}}, "tags.env: value must be 1-256 characters"),
    (
        {"tags": {"env": "prod\x1d"}},
        "tags.env: value must be 1-256 characters without control characters",
    ),
    # pricing: never $0 for a model the catalog does not know
    (
        {"cost": ..., "model": "my-private-finetune"},
        "cost: absent and the price catalog does not know model",
    ),
    (
        {"cost": ..., "provider": "no-such-provider"},
        "cost: absent and the price catalog does not know model",
    ),
]


@pytest.mark.parametrize(
    ("changes", "reason"),
    FIELD_REJECTIONS,
    ids=[f"{i}-{next(iter(c))}" for i, (c, _) in enumerate(FIELD_REJECTIONS)],
)
def test_bad_fields_are_rejected_with_a_reason_naming_the_field(changes, reason):
    assert reason_of(event(**changes)).startswith(reason)


TIMESTAMP_REJECTIONS = [
    ("2025-01-15", "timestamp: not RFC 3339"),
    ("2025-01-15T10:00:00", "timestamp: not RFC 3339"),
    ("2025-01-15T10:00:00.123", "timestamp: RFC 3339 needs an offset or Z"),
    ("2025-01-15T10:00", "timestamp: not RFC 3339"),
    ("yesterday at noon", "timestamp: not RFC 3339"),
    ("2025-13-01T00:00:00Z", "timestamp: not RFC 3339"),
    ("2025-02-30T00:00:00Z", "timestamp: not RFC 3339"),
    ("2025-01-15T25:00:00Z", "timestamp: not RFC 3339"),
    ("2025-01-15T10:00:00+25:00", "timestamp: not RFC 3339"),
    ("1969-12-31T23:59:59Z", "timestamp: outside 1970-01-01 to 9998-12-31 UTC"),
    # At the datetime limits: converting to UTC would overflow.
    ("9999-12-31T23:00:00-05:00", "timestamp: outside 1970-01-01 to 9998-12-31 UTC"),
    ("0001-01-01T00:00:00+01:00", "timestamp: outside 1970-01-01 to 9998-12-31 UTC"),
    ("9999-01-01T00:00:00Z", "timestamp: outside 1970-01-01 to 9998-12-31 UTC"),
    (253_402_300_799_000, "timestamp: epoch milliseconds out of range"),  # 9999-12-31T23:59:59Z
    ("", "timestamp: not RFC 3339"),
    (-1, "timestamp: epoch milliseconds out of range"),
    (10**16, "timestamp: epoch milliseconds out of range"),
    (1.7e12, "timestamp: must be an RFC 3339 string or epoch milliseconds"),
    (True, "timestamp: must be an RFC 3339 string or epoch milliseconds"),
    ([2025, 1, 15], "timestamp: must be an RFC 3339 string or epoch milliseconds"),
    (None, "timestamp: must be an RFC 3339 string or epoch milliseconds"),
]


@pytest.mark.parametrize(("value", "reason"), TIMESTAMP_REJECTIONS)
def test_bad_timestamps_are_rejected(value, reason):
    assert reason_of(event(timestamp=value)).startswith(reason)


# ---- time: any RFC 3339 offset or epoch ms, normalised to UTC epoch ms ----------------------

TIMESTAMPS = [
    ("2025-01-15T10:00:00Z", T0_MS),
    ("2025-01-15T10:00:00z", T0_MS),
    ("2025-01-15t10:00:00Z", T0_MS),
    ("2025-01-15 10:00:00Z", T0_MS),
    ("2025-01-15T10:00:00+00:00", T0_MS),
    ("2025-01-15T10:00:00-00:00", T0_MS),
    ("2025-01-15T12:00:00+02:00", T0_MS),
    ("2025-01-15T05:00:00-05:00", T0_MS),
    ("2025-01-15T15:30:00+05:30", T0_MS),
    ("2025-01-14T23:00:00-11:00", T0_MS),  # the day before locally, the 15th in UTC
    ("2025-01-16T00:30:00+14:30", T0_MS),
    ("2025-01-15T10:00:00.120Z", T0_MS + 120),
    ("2025-01-15T10:00:00.1Z", T0_MS + 100),
    ("2025-01-15T10:00:00.123999Z", T0_MS + 123),  # sub-millisecond digits are truncated
    ("2025-01-15T11:00:00.5+01:00", T0_MS + 500),
    ("1970-01-01T00:00:00Z", 0),
    ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
    (T0_MS, T0_MS),
    (0, 0),
    (T0_MS + 999, T0_MS + 999),
]


@pytest.mark.parametrize(("value", "expected_ms"), TIMESTAMPS)
def test_timestamps_are_normalised_to_utc_epoch_ms(value, expected_ms):
    assert validate_event(event(timestamp=value)).ts_ms == expected_ms


def test_epoch_ms_and_rfc3339_of_the_same_instant_give_the_same_event():
    assert validate_event(event(timestamp=T0_MS)) == validate_event(event(timestamp="2025-01-15T11:00:00+01:00"))


# ---- money: integer nano-dollars, rounded half-even once per event ----------------------------

COSTS = [
    ("0.01858", 18_580_000),
    ("0", 0),
    ("2", 2_000_000_000),
    ("1e-9", 1),
    ("0.0000000004", 0),
    ("0.0000000005", 0),  # half-even: 0.5 nano -> 0
    ("0.0000000015", 2),  # 1.5 -> 2
    ("0.0000000025", 2),  # 2.5 -> 2
    ("0.0000000026", 3),
    ("0.1", 100_000_000),  # no binary-float drift: 0.1 is exactly 100,000,000 nano
    ("0.3", 300_000_000),
    ("123456.789012345", 123_456_789_012_345),
    ("1e3", 1_000_000_000_000),
]


@pytest.mark.parametrize(("json_text", "nano"), COSTS)
def test_cost_becomes_exact_nano_dollars(json_text, nano):
    raw = orjson.dumps(event(cost=0)).replace(b'"cost":0', b'"cost":' + json_text.encode())
    assert parse_event(raw).cost_nano == nano


def test_many_small_costs_sum_exactly():
    # 0.1 + 0.2 != 0.3 in floats; in nano-dollars per event it is exact.
    total = sum(validate_event(event(cost=c)).cost_nano for c in (0.1, 0.2) * 1000)
    assert total == 300_000_000_000


# ---- pricing fallback: no cost -> the genai-prices catalog at the event's time ---------------

AT = datetime(2025, 1, 15, 10, 0, 3, 120_000, tzinfo=UTC)
PRICED = [
    ("gpt-4o", "openai", {"input_tokens": 512, "output_tokens": 1730}),
    ("gpt-4o-mini", None, {"input_tokens": 10_000, "output_tokens": 0}),
    ("claude-3-5-sonnet", "anthropic", {"input_tokens": 2000, "output_tokens": 300}),
    ("gemini-1.5-flash", None, {"input_tokens": 1, "output_tokens": 1}),
    ("gpt-4o", None, {"input_tokens": 5000, "output_tokens": 100, "cache_read_tokens": 4000}),
    (
        "claude-3-5-sonnet",
        None,
        {"input_tokens": 5000, "output_tokens": 100, "cache_write_tokens": 1000},
    ),
]


@pytest.mark.parametrize(("model", "provider", "usage"), PRICED)
def test_missing_cost_is_priced_from_the_catalog(model, provider, usage):
    changes: dict = {"cost": ..., "model": model, "provider": provider or ..., **usage}
    priced = validate_event(event(**changes))
    cache = {k: usage[k] for k in ("cache_read_tokens", "cache_write_tokens") if k in usage}
    expected = catalog_nano(
        model,
        provider,
        AT,
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        **cache,
    )
    assert priced.cost_nano == expected
    assert priced.cost_nano > 0


def test_a_missing_provider_is_taken_from_the_catalog():
    assert validate_event(event(cost=..., provider=...)).provider == "openai"
    assert validate_event(event(provider=..., model="claude-3-5-sonnet")).provider == "anthropic"


def test_an_unknown_model_with_a_cost_is_accepted_with_provider_unknown():
    accepted = validate_event(event(model="my-private-finetune", provider=...))
    assert (accepted.provider, accepted.cost_nano) == ("unknown", 18_580_000)


def test_cache_reads_are_priced_at_the_cheaper_cache_rate():
    plain = validate_event(event(cost=..., input_tokens=10_000, output_tokens=0))
    cached = validate_event(event(cost=..., input_tokens=10_000, output_tokens=0, cache_read_tokens=8_000))
    assert 0 < cached.cost_nano < plain.cost_nano


def test_a_reported_cost_wins_over_the_catalog():
    assert validate_event(event(cost=0.5, model="gpt-4o")).cost_nano == 500_000_000


# ---- defaults, normalisation and ignored fields ------------------------------------------------

ACCEPTED = [
    ({"project_id": ...}, "project_id", "default"),
    ({"project_id": None}, "project_id", "default"),
    ({"project_id": "Team_1.prod-eu"}, "project_id", "Team_1.prod-eu"),
    ({"latency_ms": 0.5}, "latency_us", 500),
    ({"latency_ms": 0}, "latency_us", 0),
    ({"latency_ms": ...}, "latency_us", None),
    ({"session_id": ...}, "session_id", None),
    ({"tags": ...}, "tags", ()),
    ({"tags": {}}, "tags", ()),
    ({"tags": {"b": "2", "a": "1:with:colons"}}, "tags", (("a", "1:with:colons"), ("b", "2"))),
    (
        {"tags": {f"k{i:02d}": "v" for i in range(32)}},
        "tags",
        tuple((f"k{i:02d}", "v") for i in range(32)),
    ),
    ({"input_tokens": 0, "output_tokens": 0}, "input_tokens", 0),
    ({"entity_id": "é-ünïcode-客户"}, "entity_id", "é-ünïcode-客户"),
    ({"entity_type": "t" * 64}, "entity_type", "t" * 64),
    ({"entity_type": "**"}, "entity_type", "**"),  # only `*` itself names the all-types board
    ({"entity_type": " *"}, "entity_type", " *"),
    ({"entity_id": "*"}, "entity_id", "*"),
    ({"event_id": "e" * 128}, "event_id", "e" * 128),
    ({"reasoning_tokens": 1730}, "output_tokens", 1730),
    ({"cache_read_tokens": 500, "cache_write_tokens": 12}, "input_tokens", 512),
    ({"some_future_field": {"x": 1}, "user_agent": "sdk/1.0"}, "event_id", GOOD["event_id"]),
]


@pytest.mark.parametrize(("changes", "field", "value"), ACCEPTED)
def test_accepted_variants(changes, field, value):
    assert getattr(validate_event(event(**changes)), field) == value


def test_raw_bytes_and_decoded_objects_validate_the_same():
    assert parse_event(orjson.dumps(GOOD)) == validate_event(GOOD)


# ---- the contract's bounds: the largest values are accepted, one past is not ---------------


def test_the_largest_values_the_contract_allows_are_accepted():
    accepted = validate_event(
        event(
            input_tokens=10**12,
            output_tokens=10**12,
            cost=1_000_000,
            latency_ms=86_400_000,
            timestamp="9998-12-31T23:59:59.999Z",
        )
    )
    assert (accepted.input_tokens, accepted.cost_nano, accepted.latency_us) == (10**12, 10**15, 86_400_000_000)
    assert accepted.ts_ms == 253_370_764_799_999
    assert validate_event(event(timestamp="1970-01-01T05:30:00+05:30")).ts_ms == 0
    assert validate_event(event(timestamp=253_370_764_799_999)).ts_ms == 253_370_764_799_999
    assert reason_of(event(timestamp=253_370_764_800_000)).startswith("timestamp: epoch milliseconds out of range")


# ---- the fast path and the full path judge alike -------------------------------------------

FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(0, 2 * 10**12),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(
        [
            "gpt-4o",
            "gpt-4o-mini",
            "claude-3-5-haiku",
            "no-such-model",
            "openai",
            "anthropic",
            "2025-01-15T10:00:00+05:30",
            "9999-12-31T23:00:00-05:00",
            "acme\x1f",
            "*",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
FIELDS = [*GOOD, "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"]


def _judged(judge, obj):
    try:
        return judge(obj)
    except InvalidEvent:
        return "refused"


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=4), st.sets(st.sampled_from(FIELDS), max_size=2))
def test_the_fast_path_accepts_only_what_the_full_path_accepts_and_alike(changes, removed):
    obj = {name: value for name, value in {**GOOD, **changes}.items() if name not in removed}
    fast = _fast_event(obj)
    if fast is not None:
        assert fast == _judged(_validate_fully, obj)


@pytest.mark.parametrize(
    "changes",
    [
        {"entity_type": "*"},
        {"entity_type": "*", "cost": ...},
        {"entity_type": "*", "timestamp": T0_MS, "session_id": ..., "tags": ...},
    ],
)
def test_both_paths_refuse_the_entity_type_of_the_all_types_leaderboard(changes):
    obj = event(**changes)
    assert _fast_event(obj) is None
    assert _judged(_validate_fully, obj) == "refused"
    assert reason_of(obj) == "entity_type: '*' is reserved (the all-types leaderboard)"


@pytest.mark.parametrize(
    "changes",
    [
        {"cost": ...},
        {"cost": ..., "provider": ...},
        {"cost": ..., "cache_read_tokens": 200, "cache_write_tokens": 100},
        {"cache_read_tokens": 512, "reasoning_tokens": 1730},
        {"timestamp": "2025-01-15T15:30:03.120+05:30"},
    ],
)
def test_unpriced_events_and_cache_tokens_take_the_fast_path(changes):
    obj = event(**changes)
    assert _fast_event(obj) == _validate_fully(obj)


# ---- the common RFC 3339 shapes, read without datetime, agree with the general reading ------

SHAPED = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["1970", "2024", "2025", "9998", "9999", "0001", "2o25", "١٩٧٠"]),
    st.sampled_from(["01", "02", "12", "13", "00", "1a"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["T", "t", " ", "X"]),
    st.sampled_from(["00", "09", "23", "24", "²3"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "5:"]),
    st.sampled_from(["", ".120", ".1", ".123456", ".12x"]),
    st.sampled_from(
        ["Z", "z", "+05:30", "-08:00", "+00:00", "-00:00", "+23:59", "+24:00", "+05:60", "+05::0", "+5:30", "Q", ""]
    ),
)


@settings(max_examples=1500, deadline=None)
@given(SHAPED)
def test_the_common_shapes_read_as_the_general_reading_reads_them(text):
    try:
        general: int | None = _rfc3339_ms(text)
    except InvalidEvent:
        general = None
    common = _common_rfc3339_ms(text)
    assert common is None or common == general


@pytest.mark.parametrize(
    "text",
    ["2025-01-15T10:00:00Z", "2025-01-15t10:00:00.120z", "2025-01-15 15:30:00+05:30", "2024-02-29T23:59:59.999-08:00"],
)
def test_the_usual_shapes_take_the_quick_way(text):
    assert _common_rfc3339_ms(text) == _rfc3339_ms(text)

"""Which price applies to an event, as a pure table: override windows, providers, discounts, cache rates."""

from __future__ import annotations

import pickle
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraprism.core.events import InvalidEvent, parse_event
from infraprism.core.price_book import (
    CATALOG,
    OVERRIDE,
    InvalidPrice,
    PriceBook,
    PriceOverride,
    PricingError,
    parse_discount,
    parse_rate,
)
from infraprism.core.pricing import price_event_nano

JAN_1 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
FEB_1 = 1_738_368_000_000
MAR_1 = 1_740_787_200_000


def override(model="ft:gpt-4o:acme", provider=None, from_ms=0, discount=None, **rates) -> PriceOverride:
    return PriceOverride(
        model=model,
        provider=provider,
        effective_from=None,
        effective_from_ms=from_ms,
        discount_percent=parse_discount(discount),
        **{name: parse_rate(name, value) for name, value in rates.items()},
    )


def nano(usd: Decimal) -> int:
    return int((usd * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


CACHE_RATES = {"input_per_mtok": "2.5", "output_per_mtok": "10", "cache_read_per_mtok": "1.25"}
EVENT = (
    b'{"event_id":"e","timestamp":1735689600000,"project_id":"p","entity_type":"customer","entity_id":"a",'
    b'"model":"ft:gpt-4o:acme","input_tokens":%d,"output_tokens":0}'
)


def book(*overrides: PriceOverride, project="p") -> PriceBook:
    return PriceBook(1, {project: overrides})


WINDOWS = book(
    override(from_ms=0, input_per_mtok="1", output_per_mtok="2"),
    override(from_ms=FEB_1, input_per_mtok="3", output_per_mtok="4"),
    override(from_ms=MAR_1, provider="azure", input_per_mtok="5", output_per_mtok="6"),
)


@pytest.mark.parametrize(
    ("ts_ms", "provider", "expected_rates"),
    [
        (JAN_1, None, ("1", "2")),  # the first override, from the beginning of time
        (FEB_1 - 1, None, ("1", "2")),  # the last instant before the later one ends it
        (FEB_1, None, ("3", "4")),  # a later override ends the earlier one
        (MAR_1, None, ("3", "4")),  # the provider-specific one applies to its provider only
        (MAR_1, "azure", ("5", "6")),  # one naming the provider wins over one naming none
        (MAR_1 - 1, "azure", ("3", "4")),  # before it is in effect, the provider-less one applies
    ],
)
def test_override_windows_and_providers(ts_ms, provider, expected_rates):
    cost, _, source = WINDOWS.price("p", "ft:gpt-4o:acme", provider, ts_ms, 1_000_000, 1_000_000)
    input_rate, output_rate = (Decimal(r) for r in expected_rates)
    assert (cost, source) == (nano(input_rate + output_rate), OVERRIDE)


def test_other_projects_and_models_are_not_touched():
    with pytest.raises(PricingError):
        WINDOWS.price("other", "ft:gpt-4o:acme", None, JAN_1, 10, 10)  # no catalog price, no override of theirs
    cost, provider, source = WINDOWS.price("p", "gpt-4o", None, JAN_1, 1000, 100)
    assert (cost, provider, source) == (*price_event_nano("gpt-4o", None, JAN_1, 1000, 100), CATALOG)


def test_an_event_before_every_override_falls_back_to_the_catalog():
    dated = book(override(model="gpt-4o", from_ms=FEB_1, input_per_mtok="1", output_per_mtok="1"))
    assert dated.price("p", "gpt-4o", None, JAN_1, 1000, 100)[2] == CATALOG
    assert dated.price("p", "gpt-4o", None, FEB_1, 1000, 100)[2] == OVERRIDE


@pytest.mark.parametrize(
    ("rates", "tokens", "expected_usd"),
    [
        # cache reads and writes are part of input_tokens, at their own rates
        (
            {
                "input_per_mtok": "2.5",
                "output_per_mtok": "10",
                "cache_read_per_mtok": "1.25",
                "cache_write_per_mtok": "3",
            },
            (1000, 500, 400, 100),
            Decimal("2.5") * 500 / 10**6
            + Decimal(10) * 500 / 10**6
            + Decimal("1.25") * 400 / 10**6
            + Decimal(3) * 100 / 10**6,
        ),
        # without cache rates a cache token costs the input rate, as the catalog prices an unpriced key
        (
            {"input_per_mtok": "2.5", "output_per_mtok": "10"},
            (1000, 500, 400, 100),
            Decimal("2.5") * 1000 / 10**6 + Decimal(10) * 500 / 10**6,
        ),
        # 18 decimal places are exact: the last, a yocto-dollar a token, moves a half nano-dollar up
        ({"input_per_mtok": "0.000500000000000001", "output_per_mtok": "0"}, (1, 0, 0, 0), Decimal("0.000000001")),
        # half a nano-dollar rounds to even
        ({"input_per_mtok": "0.0005", "output_per_mtok": "0"}, (1, 0, 0, 0), Decimal("0.0000000005")),
        ({"input_per_mtok": "0.0015", "output_per_mtok": "0"}, (1, 0, 0, 0), Decimal("0.0000000015")),
    ],
)
def test_cache_rates_and_rounding(rates, tokens, expected_usd):
    cost, _, _ = book(override(**rates)).price("p", "ft:gpt-4o:acme", None, JAN_1, *tokens)
    assert cost == nano(expected_usd)


def test_a_discount_on_the_catalog_and_on_own_rates():
    catalog, _ = price_event_nano("gpt-4o", None, JAN_1, 123_457, 9_871, 1_000, 0)
    discounted = book(override(model="gpt-4o", discount="20"))
    cost, _, source = discounted.price("p", "gpt-4o", None, JAN_1, 123_457, 9_871, 1_000, 0)
    assert (cost, source) == (int((Decimal(catalog) * Decimal("0.8")).quantize(Decimal(1), ROUND_HALF_EVEN)), OVERRIDE)
    own = book(override(input_per_mtok="3", output_per_mtok="7", discount="12.5"))
    cost, _, _ = own.price("p", "ft:gpt-4o:acme", None, JAN_1, 1_000_001, 3)
    assert cost == nano((Decimal(3) * 1_000_001 + Decimal(7) * 3) / 10**6 * Decimal("0.875"))
    with pytest.raises(PricingError):  # a discount needs a catalog price to discount
        book(override(discount="10")).price("p", "ft:gpt-4o:acme", None, JAN_1, 10, 10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_per_mtok", "-1", "must not be negative"),
        ("input_per_mtok", "1e400", "at most"),
        ("input_per_mtok", "0.0000000000000000001", "at most 18 decimal places"),
        ("input_per_mtok", "NaN", "not a finite number"),
        ("input_per_mtok", "two", "not a decimal number"),
        ("input_per_mtok", True, "must be a number"),
        ("input_per_mtok", [1], "must be a number"),
    ],
)
def test_bad_rates_name_their_field(field, value, message):
    with pytest.raises(InvalidPrice, match=message) as raised:
        parse_rate(field, value)
    assert raised.value.field == field


@pytest.mark.parametrize("value", ["0", "-5", "100.5", "1.0000001", "inf"])
def test_bad_discounts(value):
    with pytest.raises(InvalidPrice) as raised:
        parse_discount(value)
    assert raised.value.field == "discount_percent"


def test_an_override_needs_both_rates_or_a_discount():
    with pytest.raises(InvalidPrice, match="output_per_mtok"):
        override(input_per_mtok="1")
    with pytest.raises(InvalidPrice, match="input_per_mtok"):
        override()
    with pytest.raises(InvalidPrice, match="cache rates need"):
        override(cache_read_per_mtok="1", discount="5")


def test_overrides_survive_their_stored_form_and_pickling():
    for item in WINDOWS.by_project["p"]:
        assert PriceOverride.from_json(item.to_json()) == item
    copy = pickle.loads(pickle.dumps(WINDOWS))
    assert copy.price("p", "ft:gpt-4o:acme", "azure", MAR_1, 7, 9) == WINDOWS.price(
        "p", "ft:gpt-4o:acme", "azure", MAR_1, 7, 9
    )


def test_events_are_priced_by_the_book_and_say_so():
    raw = EVENT % 1_000_000
    with pytest.raises(InvalidEvent, match="cost: absent and the price catalog does not know"):
        parse_event(raw)
    event = parse_event(raw, WINDOWS)
    assert (event.cost_nano, event.price_source, event.provider) == (1_000_000_000, OVERRIDE, "unknown")
    supplied = parse_event(raw[:-1] + b',"cost":0.5}', WINDOWS)
    assert (supplied.cost_nano, supplied.price_source) == (500_000_000, "supplied")  # a supplied cost always wins


def test_a_price_above_the_contracts_cost_bound_is_a_dead_letter():
    dear = book(override(input_per_mtok="1000000", output_per_mtok="0"))
    raw = EVENT % 2_000_000
    with pytest.raises(InvalidEvent, match="above the contract"):
        parse_event(raw, dear)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.decimals(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(), max_size=2),
    )
)
def test_the_rate_and_discount_parsers_take_anything_and_answer_or_refuse_clearly(value):
    for field, parse in (
        ("input_per_mtok", lambda v: parse_rate("input_per_mtok", v)),
        ("discount_percent", parse_discount),
    ):
        refused = None
        try:
            parsed = parse(value)
        except InvalidPrice as exc:
            refused = exc
        if refused is not None:
            assert refused.field == field
            assert refused.message
        else:
            assert parsed is None or (parsed.is_finite() and parsed >= 0)


@given(
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.integers(0, 10**6),
    st.decimals(min_value=0, max_value=1000, places=6),
    st.decimals(min_value=0, max_value=1000, places=6),
)
def test_own_rates_are_the_exact_decimal_sum_rounded_once(input_tokens, output_tokens, cache_read, in_rate, out_rate):
    cache_read = min(cache_read, input_tokens)
    priced = book(override(input_per_mtok=str(in_rate), output_per_mtok=str(out_rate), cache_read_per_mtok="0.1"))
    cost, _, _ = priced.price("p", "ft:gpt-4o:acme", None, JAN_1, input_tokens, output_tokens, cache_read, 0)
    usd = (in_rate * (input_tokens - cache_read) + out_rate * output_tokens + Decimal("0.1") * cache_read) / 10**6
    assert cost == nano(usd)

"""price_event_nano against genai_prices.calc_price, the slow obvious reference.

The requirement is equality to the nano-dollar with
`usd_to_nano(calc_price(...).total_price)` (what pricing.py returned before its
rate cards), for every catalog model and price period, up to 10**12 tokens a
field. Where calc_price's Decimal arithmetic (28 digits) is not exact, the
reference is still calc_price, not the exact sum: see
test_where_calc_price_rounds_a_tie_its_answer_wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from genai_prices.types import (
    ClauseEquals,
    ClauseStartsWith,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infraprism.core import pricing
from infraprism.core.money import usd_to_nano
from infraprism.core.pricing import PricingError, catalog_provider_for, price_event_nano

MAX_TOKENS = 10**12  # the event contract's bound per token field
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


class Tokens(NamedTuple):
    input: int
    output: int
    cache_read: int
    cache_write: int


def reference(model: str, provider: str | None, ts_ms: int, tokens: Tokens) -> tuple[int, str] | None:
    """calc_price as pricing.py called it before its rate cards; None where the catalog has no such model."""
    usage = Usage(
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read or None,
        cache_write_tokens=tokens.cache_write or None,
    )
    at = EPOCH + timedelta(milliseconds=ts_ms)
    try:
        result = calc_price(usage, model_ref=model, provider_id=provider, genai_request_timestamp=at)
    except LookupError:
        return None
    return usd_to_nano(result.total_price), str(result.provider.id)


def priced(model: str, provider: str | None, ts_ms: int, tokens: Tokens) -> tuple[int, str] | None:
    try:
        return price_event_nano(model, provider, ts_ms, *tokens)
    except PricingError:
        return None


def price_reference_nano(price: ModelPrice, tokens: Tokens) -> int:
    usage = Usage(
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read or None,
        cache_write_tokens=tokens.cache_write or None,
    )
    return usd_to_nano(price.calc_price(usage)["total_price"])


def prices_of(model: ModelInfo) -> list[ModelPrice]:
    return [model.prices] if isinstance(model.prices, ModelPrice) else [c.prices for c in model.prices]


def is_tiered(price: ModelPrice) -> bool:
    return any(isinstance(value, TieredPrices) for value in vars(price).values())


def names_itself(provider: Provider, model: ModelInfo) -> bool:
    try:
        return get_snapshot().find_provider_model(model.id, None, provider.id, None)[1] is model
    except LookupError:
        return False


CATALOG = get_snapshot().providers
# Every (provider, model) of the catalog whose id names it (2245 of 2330; the
# others' ids match an earlier model: their prices are checked card by card).
NAMED = [(provider, model) for provider in CATALOG for model in provider.models if names_itself(provider, model)]
# Every price of the catalog: each model's, each of its dated and off-peak prices.
PRICES = [
    (provider.id, model.id, price) for provider in CATALOG for model in provider.models for price in prices_of(model)
]
TIERED = [(provider, model) for provider, model in NAMED if any(is_tiered(price) for price in prices_of(model))]
SCHEDULED = [(provider, model) for provider, model in NAMED if not isinstance(model.prices, ModelPrice)]

# Half the draws stay under two million tokens, where the tier thresholds (32k-524k) are.
token_field = st.sampled_from((2_000_000, MAX_TOKENS)).flatmap(lambda size: st.integers(0, size))


@st.composite
def token_counts(draw: st.DrawFn) -> Tokens:
    input_tokens = draw(token_field)
    cache_read = draw(st.just(0) | st.integers(0, input_tokens))
    cache_write = draw(st.just(0) | st.integers(0, input_tokens - cache_read))
    return Tokens(input_tokens, draw(token_field), cache_read, cache_write)


# Spans every dated price change of the catalog (2024-2027) and every time of day.
timestamps = st.integers(ms(datetime(2023, 1, 1, tzinfo=UTC)), ms(datetime(2028, 1, 1, tzinfo=UTC)))
# A prime, so that consecutive catalog entries get different draws each example.
DRAWS = 37
# No shrinking: an example prices the whole catalog, and the assertion names the failing entry.
sweep = settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def rate_cards() -> dict[int, pricing.RateCard | None]:
    return {id(price): pricing._rate_card(price) for _, _, price in PRICES}


def test_the_catalog_has_the_forms_these_tests_rely_on() -> None:
    assert len(NAMED) > 2000
    assert len(TIERED) > 50  # thresholds of 100k-524k tokens
    assert any(
        isinstance(value, TieredPrices) and len(value.tiers) > 1
        for _, model in TIERED
        for price in prices_of(model)
        for value in vars(price).values()
    )
    constraints = [c.constraint for _, model in SCHEDULED if isinstance(model.prices, list) for c in model.prices]
    assert any(isinstance(constraint, StartDateConstraint) for constraint in constraints)
    assert any(isinstance(constraint, TimeOfDateConstraint) for constraint in constraints)


def test_every_catalog_price_has_an_exact_rate_card(rate_cards: dict[int, pricing.RateCard | None]) -> None:
    """No price of the bundled catalog needs the calc_price fallback: the fast path is the one tested."""
    assert [(provider, model) for provider, model, price in PRICES if rate_cards[id(price)] is None] == []


def test_every_named_catalog_model_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fallback(*args: object) -> tuple[int, str]:
        raise AssertionError(f"calc_price fallback taken for {args[0]}")

    monkeypatch.setattr(pricing, "_catalog_price_nano", no_fallback)
    at_ms = ms(datetime(2026, 6, 1, 12, tzinfo=UTC))
    for provider, model in NAMED:
        price_event_nano(model.id, provider.id, at_ms, 999_999_999_999, 10**12, 123_456_789, 987_654_321)


@sweep
@given(st.lists(token_counts(), min_size=DRAWS, max_size=DRAWS))
def test_every_catalog_price_equals_calc_price(
    rate_cards: dict[int, pricing.RateCard | None], draws: list[Tokens]
) -> None:
    for index, (provider_id, model_id, price) in enumerate(PRICES):
        tokens = draws[index % DRAWS]
        card = rate_cards[id(price)]
        assert card is not None
        nano = card.cost_nano(*tokens)
        # None only within 10**-25 of the total of a half nano-dollar: calc_price then decides.
        if nano is not None:
            assert nano == price_reference_nano(price, tokens), (provider_id, model_id, price, tokens)


@sweep
@given(st.lists(st.tuples(token_counts(), timestamps), min_size=DRAWS, max_size=DRAWS))
def test_every_named_catalog_model_equals_calc_price_at_any_time(draws: list[tuple[Tokens, int]]) -> None:
    for index, (provider, model) in enumerate(NAMED):
        tokens, ts_ms = draws[index % DRAWS]
        # Every fourth without a provider: the catalog then picks it by the model name.
        provider_id = None if index % 4 == 0 else provider.id
        expected = reference(model.id, provider_id, ts_ms, tokens)
        assert priced(model.id, provider_id, ts_ms, tokens) == expected, (provider_id, model.id, ts_ms, tokens)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(p.id, m.id) for p, m in NAMED + SCHEDULED + TIERED]), token_counts(), timestamps)
def test_a_random_model_at_a_random_time_equals_calc_price(
    catalog_entry: tuple[str, str], tokens: Tokens, ts_ms: int
) -> None:
    provider_id, model_id = catalog_entry
    assert priced(model_id, provider_id, ts_ms, tokens) == reference(model_id, provider_id, ts_ms, tokens)


# ---- tiers: above a threshold of input tokens, every token of the key costs the tier's rate --------


def test_every_tier_boundary_equals_calc_price() -> None:
    at_ms = ms(datetime(2026, 6, 1, tzinfo=UTC))
    for provider, model in TIERED:
        price = model.get_prices(EPOCH + timedelta(milliseconds=at_ms))
        starts = {
            tier.start for value in vars(price).values() if isinstance(value, TieredPrices) for tier in value.tiers
        }
        for start in starts:
            for input_tokens in (start - 1, start, start + 1):
                for tokens in (
                    Tokens(input_tokens, 1234, 0, 0),
                    Tokens(input_tokens, 7, input_tokens // 3, input_tokens // 5),
                    Tokens(input_tokens, 0, input_tokens, 0),
                    Tokens(input_tokens, MAX_TOKENS, 0, input_tokens),
                ):
                    expected = reference(model.id, provider.id, at_ms, tokens)
                    assert priced(model.id, provider.id, at_ms, tokens) == expected, (provider.id, model.id, tokens)


AT = ms(datetime(2025, 9, 1, 12, tzinfo=UTC))
AT_TIERS = ms(datetime(2026, 11, 1, tzinfo=UTC))
EXPLICIT = [
    # claude-sonnet-4-5: $3/Mtok input up to 200k input tokens, $6 above; output $15 -> $22.5
    ("claude-sonnet-4-5", "anthropic", AT, Tokens(199_999, 0, 0, 0), 599_997_000),
    ("claude-sonnet-4-5", "anthropic", AT, Tokens(200_000, 0, 0, 0), 600_000_000),
    ("claude-sonnet-4-5", "anthropic", AT, Tokens(200_001, 0, 0, 0), 1_200_006_000),
    ("claude-sonnet-4-5", "anthropic", AT, Tokens(200_001, 1_000, 0, 0), 1_200_006_000 + 22_500_000),
    # the cache rates tier too: 100k reads at $0.6 and 100,001 plain at $6
    ("claude-sonnet-4-5", "anthropic", AT, Tokens(200_001, 0, 100_000, 0), 60_000_000 + 600_006_000),
    # two tiers from 2026-10-19 (openrouter): $0.195/Mtok input up to 32k, $0.325 above, $0.52 above 128k
    ("qwen/qwen3-coder-flash", "openrouter", AT_TIERS, Tokens(32_000, 0, 0, 0), 6_240_000),
    ("qwen/qwen3-coder-flash", "openrouter", AT_TIERS, Tokens(32_001, 0, 0, 0), 10_400_325),
    ("qwen/qwen3-coder-flash", "openrouter", AT_TIERS, Tokens(128_000, 0, 0, 0), 41_600_000),
    ("qwen/qwen3-coder-flash", "openrouter", AT_TIERS, Tokens(128_001, 0, 0, 0), 66_560_520),
    ("qwen/qwen3-coder-flash", "openrouter", AT, Tokens(128_001, 0, 0, 0), 24_960_195),  # before: no tiers
    # a fee per request: perplexity sonar, $12 per 1,000 requests
    ("sonar", "perplexity", AT, Tokens(0, 0, 0, 0), 12_000_000),
    # o3: $10/Mtok input until 2025-06-09, $2 from 2025-06-10 (UTC)
    ("o3", "openai", ms(datetime(2025, 6, 9, 23, 59, 59, 999_000, tzinfo=UTC)), Tokens(10**6, 0, 0, 0), 10**10),
    ("o3", "openai", ms(datetime(2025, 6, 10, tzinfo=UTC)), Tokens(10**6, 0, 0, 0), 2 * 10**9),
    # deepseek-chat: $0.27/Mtok input 00:30-16:30 UTC, $0.135 off-peak
    (
        "deepseek-chat",
        None,
        ms(datetime(2025, 3, 1, 0, 29, 59, 999_000, tzinfo=UTC)),
        Tokens(10**6, 0, 0, 0),
        135 * 10**6,
    ),
    ("deepseek-chat", None, ms(datetime(2025, 3, 1, 0, 30, tzinfo=UTC)), Tokens(10**6, 0, 0, 0), 270 * 10**6),
    (
        "deepseek-chat",
        None,
        ms(datetime(2025, 3, 1, 16, 29, 59, 999_000, tzinfo=UTC)),
        Tokens(10**6, 0, 0, 0),
        270 * 10**6,
    ),
    ("deepseek-chat", None, ms(datetime(2025, 3, 1, 16, 30, tzinfo=UTC)), Tokens(10**6, 0, 0, 0), 135 * 10**6),
]


@pytest.mark.parametrize(("model", "provider", "ts_ms", "tokens", "nano"), EXPLICIT)
def test_explicit_prices(model: str, provider: str | None, ts_ms: int, tokens: Tokens, nano: int | None) -> None:
    expected = reference(model, provider, ts_ms, tokens)
    assert expected is not None
    assert price_event_nano(model, provider, ts_ms, *tokens) == expected
    if nano is not None:
        assert expected[0] == nano


# ---- price periods: dated prices change at UTC midnight, off-peak prices at their times of day ----


def test_every_price_period_boundary_equals_calc_price() -> None:
    tokens = Tokens(1_234_567, 7_654_321, 234_567, 12_345)
    for provider, model in SCHEDULED:
        schedule = pricing._schedule_for(model.id, provider.id)
        assert schedule is not None
        boundaries = [day * DAY_MS for day in schedule.day_starts]
        boundaries += [ms(datetime(2025, 3, 1, tzinfo=UTC)) + us // 1000 for us in schedule.time_starts_us]
        assert boundaries, (provider.id, model.id)
        for boundary in boundaries:
            for ts_ms in (boundary - 1, boundary, boundary + 1):
                expected = reference(model.id, provider.id, ts_ms, tokens)
                assert priced(model.id, provider.id, ts_ms, tokens) == expected, (provider.id, model.id, ts_ms)


def test_a_dated_price_change_changes_the_price() -> None:
    before = price_event_nano("gpt-5.6-sol", "openai", ms(datetime(2026, 8, 20, 23, 59, tzinfo=UTC)), 10**6, 10**6)
    after = price_event_nano("gpt-5.6-sol", "openai", ms(datetime(2026, 8, 21, tzinfo=UTC)), 10**6, 10**6)
    assert before[0] > after[0]


# ---- precision: where calc_price's 28-digit Decimal is not exact ---------------------------------


def test_calc_price_rounds_at_large_counts_and_the_nano_dollar_still_agrees() -> None:
    """Rates with 17 decimals ($0.13999999999999999/Mtok) times 10**12 tokens need 29+ digits."""
    model, provider, at_ms = "deepseek-ai/DeepSeek-V4-Flash-0731", "huggingface_together", AT
    tokens = Tokens(987_654_321_987, 999_999_999_997, 0, 0)
    price = get_snapshot().find_provider_model(model, None, provider, None)[1].get_prices(EPOCH)
    input_rate, output_rate = price.input_mtok, price.output_mtok
    assert isinstance(input_rate, Decimal)
    assert isinstance(output_rate, Decimal)
    assert len(str(input_rate).split(".")[1]) == 17
    usage = Usage(input_tokens=tokens.input, output_tokens=tokens.output)
    exact_usd = (Fraction(input_rate) * tokens.input + Fraction(output_rate) * tokens.output) / 10**6
    assert Fraction(price.calc_price(usage)["total_price"]) != exact_usd  # calc_price is off, in the 23rd decimal
    assert price_event_nano(model, provider, at_ms, *tokens) == reference(model, provider, at_ms, tokens)


@dataclass
class OnWeekends:
    """A constraint genai_prices could add: pricing.py cannot place it in time, so calc_price decides."""

    def active(self, request_timestamp: datetime) -> bool:
        return request_timestamp.weekday() >= 5


def synthetic_provider() -> Provider:
    def model(model_id: str, prices: ModelPrice | list[ConditionalPrice]) -> ModelInfo:
        return ModelInfo(id=model_id, match=ClauseEquals(equals=model_id), prices=prices)

    return Provider(
        id="synthetic",
        name="Synthetic",
        api_pattern="https://synthetic\\.invalid",
        model_match=ClauseStartsWith(starts_with="synthetic-"),
        models=[
            # $1.001/Mtok input and $0.00049999999999999/Mtok output: with 10**12 - 1 input
            # tokens and 1 output token the exact cost is 1000999999998999.49999999999999
            # nano-dollars, and calc_price's 28 digits round it to the tie ...8999.5.
            model("synthetic-tie", ModelPrice(input_mtok=Decimal("1.001"), output_mtok=Decimal("0.00049999999999999"))),
            # 19 decimals: finer than 10**-24 USD a token, no exact integer rate.
            model("synthetic-fine", ModelPrice(input_mtok=Decimal("0.1234567890123456789"), output_mtok=Decimal(1))),
            model(
                "synthetic-weekend",
                [
                    ConditionalPrice(prices=ModelPrice(input_mtok=Decimal(2), output_mtok=Decimal(8))),
                    ConditionalPrice(
                        constraint=OnWeekends(),  # type: ignore[arg-type]
                        prices=ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(4)),
                    ),
                ],
            ),
            # genai_prices refuses this price (a cache-write price without the cache-write
            # price its 1h variant refines): every event gets its ValueError, as before.
            model("synthetic-invalid", ModelPrice(input_mtok=Decimal(1), cache_write_1h_mtok=Decimal(2))),
            model(
                "synthetic-dated",
                [
                    ConditionalPrice(prices=ModelPrice(input_mtok=Decimal(3))),
                    ConditionalPrice(
                        constraint=StartDateConstraint(start_date=date(2025, 1, 1)),
                        prices=ModelPrice(input_mtok=Decimal(1)),
                    ),
                ],
            ),
        ],
    )


@pytest.fixture
def synthetic_catalog() -> Iterator[None]:
    set_custom_snapshot(DataSnapshot(providers=[synthetic_provider()], from_auto_update=False))
    pricing.forget_catalog()
    yield
    set_custom_snapshot(None)
    pricing.forget_catalog()


@pytest.mark.usefixtures("synthetic_catalog")
def test_where_calc_price_rounds_a_tie_its_answer_wins() -> None:
    """The exact sum rounds to ...8999; calc_price's rounded sum is a tie and goes to even, ...9000.

    We return calc_price's: the requirement is one function of the event, the
    same whichever path prices it, and the same as genai-prices re-pricing it.
    """
    tokens = Tokens(10**12 - 1, 1, 0, 0)
    exact_nano = (Fraction("1.001") * tokens.input + Fraction("0.00049999999999999") * tokens.output) * 1000
    assert round(exact_nano) == 1_000_999_999_998_999
    assert reference("synthetic-tie", None, AT, tokens) == (1_000_999_999_999_000, "synthetic")
    assert price_event_nano("synthetic-tie", None, AT, *tokens) == (1_000_999_999_999_000, "synthetic")
    # one token less and no tie: the exact sum, from the rate card
    assert price_event_nano("synthetic-tie", None, AT, 10**12 - 2, 1) == reference(
        "synthetic-tie", None, AT, Tokens(10**12 - 2, 1, 0, 0)
    )


@pytest.mark.usefixtures("synthetic_catalog")
@pytest.mark.parametrize("model", ["synthetic-fine", "synthetic-weekend", "synthetic-dated"])
def test_forms_without_an_exact_rate_card_fall_back_to_calc_price(model: str) -> None:
    schedule = pricing._schedule_for(model, None)
    assert schedule is not None
    assert (None in schedule.cards) is (model != "synthetic-dated")
    for day in range(1, 15):  # both sides of 2025-01-01, weekdays and weekends
        ts_ms = ms(datetime(2024, 12, 25, 13, tzinfo=UTC)) + day * DAY_MS
        for tokens in (Tokens(MAX_TOKENS, MAX_TOKENS, 0, 0), Tokens(123_457, 98_765, 0, 0)):
            assert price_event_nano(model, None, ts_ms, *tokens) == reference(model, None, ts_ms, tokens)


@pytest.mark.usefixtures("synthetic_catalog")
def test_a_price_genai_prices_refuses_raises_its_error_as_before() -> None:
    with pytest.raises(ValueError, match="Missing ancestor price") as refused:
        price_event_nano("synthetic-invalid", None, AT, 1000, 10)
    assert not isinstance(refused.value, PricingError)


# ---- lookups, errors and the memo's bound ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("my-private-finetune", None),
        ("my-private-finetune", "openai"),
        ("gpt-4o", "no-such-provider"),
        ("claude-no-such-model", "anthropic"),
        ("claude-no-such-model", None),
    ],
)
def test_a_model_the_catalog_does_not_know_is_an_error_never_zero(model: str, provider: str | None) -> None:
    assert reference(model, provider, AT, Tokens(1000, 10, 0, 0)) is None
    with pytest.raises(PricingError, match="does not know"):
        price_event_nano(model, provider, AT, 1000, 10)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("GPT-4o", None),  # matched case-insensitively
        ("gpt-4o-2024-08-06", None),
        ("gpt-4o", "azure"),  # a provider that falls back to another's prices
        ("claude-sonnet-4-5", "google"),
        ("anthropic/claude-sonnet-4-5", "litellm"),  # litellm names the provider in the model
        ("gpt-5.2-20251211", None),  # a compact date, retried with dashes
    ],
)
def test_catalog_matching_equals_calc_price(model: str, provider: str | None) -> None:
    tokens = Tokens(250_000, 1000, 50_000, 1000)
    expected = reference(model, provider, AT, tokens)
    assert expected is not None
    assert price_event_nano(model, provider, AT, *tokens) == expected


def test_catalog_provider_for() -> None:
    assert catalog_provider_for("gpt-4o") == "openai"
    assert catalog_provider_for("claude-3-5-sonnet") == "anthropic"
    assert catalog_provider_for("my-private-finetune") is None
    for _, model in NAMED:
        found = reference(model.id, None, AT, Tokens(0, 0, 0, 0))
        assert catalog_provider_for(model.id) == (None if found is None else found[1]), model.id


def test_cache_tokens_above_input_are_calc_prices_error() -> None:
    with pytest.raises(ValueError, match="cannot exceed") as refused:
        price_event_nano("gpt-4o", "openai", AT, 10, 5, 20, 0)
    assert not isinstance(refused.value, PricingError)


def test_the_memo_is_bounded_and_names_of_one_model_share_its_rate_cards() -> None:
    lookups_before = len(get_snapshot()._lookup_cache)
    chat = pricing._schedule_for("deepseek-chat", None)
    for index in range(pricing.MAX_MEMO_NAMES + 500):
        with pytest.raises(PricingError):
            price_event_nano(f"claude-no-such-model-{index}", None, AT, 1, 1)
        # every name that starts with deepseek-chat is deepseek-chat
        assert price_event_nano(f"deepseek-chat-{index}", None, AT, 1000, 10) == price_event_nano(
            "deepseek-chat", None, AT, 1000, 10
        )
        assert pricing._schedule_for(f"deepseek-chat-{index}", None) is chat
    assert pricing._schedule_for.cache_info().currsize <= pricing.MAX_MEMO_NAMES
    assert len(pricing._schedules) <= len(PRICES)
    # genai_prices' own lookup caches are unbounded; the memo keeps names out of them
    assert len(get_snapshot()._lookup_cache) == lookups_before

"""Prices an event that arrives without `cost`, with the genai-prices catalog.

Pure apart from the catalog, which ships inside the genai-prices wheel (no
network at run time). A model the catalog does not know is an error, never $0.

`genai_prices.calc_price` takes 100-200 us a call: it re-collects and
re-validates the price's units and does the sum in Decimal every time. Here
the catalog is read once per (model, provider): the match, the model's price
periods and, for each period, a `RateCard` of exact integer rates. An event
then costs a memo hit and a few integer products (about 1 us), and the result
is calc_price's to the nano-dollar (tests/core/test_pricing.py checks every
model of the catalog). What calc_price does, and so what a rate card must do:

- price keys are $/Mtok Decimals, some `TieredPrices`: when the event's total
  input tokens exceed a tier's start, that tier's rate applies to all tokens
  of the key (a cliff, not marginal brackets);
- cache reads and writes are part of input_tokens; a key the model does not
  price leaves its tokens in the plain-input count, so an unpriced cache read
  costs the input rate;
- `requests_kcount` is a fee per 1,000 requests; one event is one request;
- keys for units an event never reports here (audio, images, web searches...)
  count zero tokens and add nothing.

A price form this cannot reproduce exactly (a rate finer than 10**-24 USD a
token, a constraint type it cannot place in time, a card that disagrees with
calc_price when probed) is priced by calc_price itself, for that form only.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from genai_prices import Usage
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from infraprism.core import CoreError
from infraprism.core.money import div_round_half_even, usd_to_nano

# Rates are integer yocto-dollars (10**-24 USD) a token: the catalog's finest
# $/Mtok values carry 18 decimals (float artefacts such as 0.04166666666666665),
# and 18 decimals per million tokens is 24 per token.
YOCTO_PER_USD = 10**24
YOCTO_PER_NANO = 10**15
TOKENS_PER_MTOK = 1_000_000
REQUESTS_PER_KCOUNT = 1_000
DAY_MS = 86_400_000
# Model names come from untrusted events; the memo of names is bounded.
MAX_MEMO_NAMES = 4096
# The catalog is finite, so this only bounds a process that swaps snapshots.
MAX_MEMO_SCHEDULES = 16_384
# calc_price runs in Decimal's default context: 28 significant digits.
EXACT_BELOW_UNITS = 10**28

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = _EPOCH.date()


class PricingError(CoreError, ValueError):
    """The catalog cannot price this event."""


class TokenRates(NamedTuple):
    """What one token of each kind costs, and the fee of one request, in its rate card's unit."""

    input: int  # an input token that is neither a cache read nor a cache write
    output: int
    cache_read: int
    cache_write: int
    request: int


class RateCard(NamedTuple):
    """One catalog price resolved to exact integers.

    The rates are whole numbers of `unit_yocto` yocto-dollars, the coarsest
    power of ten that keeps them whole, so the products stay small. `tiers` is
    (start, rates) with the highest start first: `rates` apply when the event's
    input_tokens exceed `start`. A cost is `cost_units * nano_per_unit /
    units_per_nano` nano-dollars (one of the two is 1).
    """

    unit_yocto: int
    base: TokenRates
    tiers: tuple[tuple[int, TokenRates], ...]
    nano_per_unit: int
    units_per_nano: int

    def cost_nano(
        self, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int
    ) -> int | None:
        """The cost in nano-dollars as calc_price rounds it; None where only calc_price can tell.

        None for counts outside the contract (negative, cache tokens above
        input_tokens: calc_price raises on those) and near a half nano-dollar
        where calc_price's own rounding decides (`_near_a_half_nano`).
        """
        if not (
            cache_read_tokens + cache_write_tokens <= input_tokens
            and 0 <= cache_read_tokens
            and 0 <= cache_write_tokens
            and 0 <= output_tokens
        ):
            return None
        total_units = self.cost_units(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        # Below 10**28 units every intermediate of calc_price's Decimal sum (a
        # multiple of the unit, no larger than the total) fits in its 28 digits.
        if total_units >= EXACT_BELOW_UNITS and _near_a_half_nano(total_units * self.unit_yocto):
            return None
        if self.units_per_nano == 1:
            return total_units * self.nano_per_unit
        return div_round_half_even(total_units, self.units_per_nano)

    def cost_units(self, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int) -> int:
        """The event's exact cost in units of `unit_yocto` (cache tokens are part of input_tokens)."""
        rates = self.base
        for start, tier_rates in self.tiers:
            if input_tokens > start:
                rates = tier_rates
                break
        input_rate, output_rate, cache_read_rate, cache_write_rate, request_fee = rates
        return (
            input_rate * (input_tokens - cache_read_tokens - cache_write_tokens)
            + output_rate * output_tokens
            + cache_read_rate * cache_read_tokens
            + cache_write_rate * cache_write_tokens
            + request_fee
        )


class PriceSchedule(NamedTuple):
    """A catalog model as one provider prices it: a rate card for each price period.

    A price period is a stretch of time over which the catalog picks the same
    price: dated prices change at UTC midnight of their start date, off-peak
    prices at their UTC times of day. The period of an instant is (how many of
    `day_starts` are <= its UTC day) x (how many of `time_starts_us` are <= its
    UTC time of day), flattened into an index of `cards`; a card of None is
    priced by calc_price.
    """

    provider_id: str
    provider: Provider
    model: ModelInfo
    day_starts: tuple[int, ...]  # days since 1970-01-01 (UTC) on which a dated price starts
    time_starts_us: tuple[int, ...]  # microseconds into the UTC day where an off-peak window opens or closes
    cards: tuple[RateCard | None, ...]

    def card_at(self, ts_ms: int) -> RateCard | None:
        """The card of the price period the instant `ts_ms` (UTC epoch ms) falls in."""
        if len(self.cards) == 1:
            return self.cards[0]
        day_period = bisect_right(self.day_starts, ts_ms // DAY_MS)
        time_period = bisect_right(self.time_starts_us, ts_ms % DAY_MS * 1000)
        return self.cards[day_period * (len(self.time_starts_us) + 1) + time_period]


def catalog_provider_for(model: str) -> str | None:
    """The provider the catalog matches for `model`, or None when it knows none."""
    schedule = _schedule_for(model, None)
    return None if schedule is None else schedule.provider_id


def price_event_nano(
    model: str,
    provider: str | None,
    ts_ms: int,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> tuple[int, str]:
    """(cost in nano-dollars rounded half-even, catalog provider id) at the event's time.

    Cache tokens are part of `input_tokens` in the event contract; genai-prices
    takes them the same way and prices them at the cache rates. Equal to
    `usd_to_nano(calc_price(...).total_price)` for every input; counts outside
    the contract (negative, cache tokens above input) go to calc_price, which
    raises its ValueError as before.
    """
    schedule = _schedule_for(model, provider)
    if schedule is None:
        known_as = f"model {model!r}" + (f" of provider {provider!r}" if provider else "")
        raise PricingError(f"the price catalog does not know {known_as}")
    card = schedule.card_at(ts_ms)
    if card is not None:
        nano = card.cost_nano(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        if nano is not None:
            return nano, schedule.provider_id
    return _catalog_price_nano(schedule, ts_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)


def _near_a_half_nano(total_yocto: int) -> bool:
    """Whether calc_price's 28-digit rounding could move `total_yocto` across a half nano-dollar.

    Above `EXACT_BELOW_UNITS` (in practice only rates with 16-18 decimals at
    large counts) calc_price's Decimal sum rounds: at most a dozen roundings
    (products, sums, usd_to_nano's x10**9), each off by at most 10**-27 of the
    total. The exact sum is the mathematically right cost, but we return
    calc_price's where the two can differ, which is only within this band
    (10**-25 of the total each side of a half nano-dollar; two chances in
    10**12 for a $10,000 event): the cost is then one function of the event
    whichever path priced it, and genai-prices reproduces it. The difference
    is at most one nano-dollar.
    """
    error_bound_yocto = total_yocto // 10**25 + 1
    rest_yocto = total_yocto % YOCTO_PER_NANO
    return abs(2 * rest_yocto - YOCTO_PER_NANO) <= 2 * error_bound_yocto


def _catalog_price_nano(
    schedule: PriceSchedule,
    ts_ms: int,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
) -> tuple[int, str]:
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    # The model's own calc_price is calc_price after the catalog lookup, without
    # the lookup's caches (unbounded, keyed by the untrusted name).
    result = schedule.model.calc_price(usage, schedule.provider, genai_request_timestamp=_datetime_of(ts_ms))
    return usd_to_nano(result.total_price), schedule.provider_id


def _datetime_of(ts_ms: int) -> datetime:
    # Exact, unlike datetime.fromtimestamp(ts_ms / 1000), which is microseconds
    # off after 2106; both agree on every day and time of day the catalog uses.
    return _EPOCH + timedelta(milliseconds=ts_ms)


# ---- the memo: name -> catalog match -> price schedule ---------------------------------------

_schedules: dict[tuple[int, int], PriceSchedule] = {}


@lru_cache(maxsize=MAX_MEMO_NAMES)
def _schedule_for(model: str, provider: str | None) -> PriceSchedule | None:
    """The schedule of the catalog model `model` names with `provider`, None when there is none.

    Misses are memoized too: an unknown name costs one catalog scan per
    process, not one per event. Names that match the same catalog model share
    one schedule, so a flood of new names never rebuilds rate cards.
    """
    found = _find_in_catalog(model, provider)
    if found is None:
        return None
    catalog_provider, catalog_model = found
    # The schedule holds both objects, so their ids stay theirs while it is stored.
    key = (id(catalog_provider), id(catalog_model))
    schedule = _schedules.get(key)
    if schedule is None:
        if len(_schedules) >= MAX_MEMO_SCHEDULES:
            _schedules.clear()
        schedule = _schedules[key] = _schedule(catalog_provider, catalog_model)
    return schedule


def forget_catalog() -> None:
    """Drop every memoized match and rate card, e.g. after genai_prices' set_custom_snapshot."""
    _schedule_for.cache_clear()
    _schedules.clear()


def _find_in_catalog(model_ref: str, provider_id: str | None) -> tuple[Provider, ModelInfo] | None:
    """genai_prices' DataSnapshot.find_provider_model(model_ref, None, provider_id, None), without its caches."""
    providers = get_snapshot().providers
    model_ref = model_ref.lower()
    # A LiteLLM provider names the real one as the model's prefix.
    if provider_id and provider_id.lower() == "litellm" and "/" in model_ref:
        actual_provider_id, actual_model_ref = model_ref.split("/", 1)
        if actual_provider_id and find_provider_by_id(providers, actual_provider_id):
            provider_id, model_ref = actual_provider_id, actual_model_ref
    catalog_provider: Provider | None = None
    if provider_id is not None:
        catalog_provider = find_provider_by_id(providers, provider_id)
        if catalog_provider is None and provider_id.lower() != "litellm":
            return None
    if catalog_provider is None and model_ref:
        catalog_provider = next(
            (p for p in providers if p.model_match is not None and p.model_match.is_match(model_ref)), None
        )
    if catalog_provider is None:
        return None
    catalog_model = catalog_provider.find_model(model_ref, all_providers=providers)
    return None if catalog_model is None else (catalog_provider, catalog_model)


def _schedule(provider: Provider, model: ModelInfo) -> PriceSchedule:
    constraints = [] if isinstance(model.prices, ModelPrice) else [price.constraint for price in model.prices]
    day_starts: set[int] = set()
    time_starts_us: set[int] = set()
    for constraint in constraints:
        if isinstance(constraint, StartDateConstraint):
            day_starts.add((constraint.start_date - _EPOCH_DATE).days)
        elif isinstance(constraint, TimeOfDateConstraint):
            time_starts_us.update((_utc_us_of_day(constraint.start_time), _utc_us_of_day(constraint.end_time)))
        elif constraint is not None:
            # A constraint we cannot place in time: calc_price decides each event.
            return PriceSchedule(provider.id, provider, model, (), (), (None,))

    days, times = tuple(sorted(day_starts)), tuple(sorted(time_starts_us))
    # Every instant of a period picks the same price; ask for the period's first
    # (period 0 of the day is empty when a window opens at midnight; it is never indexed).
    cards_by_price: dict[int, RateCard | None] = {}
    cards: list[RateCard | None] = []
    for day in (days[0] - 1 if days else 0, *days):
        for time_us in (0, *times):
            price = model.get_prices(_EPOCH + timedelta(days=day, microseconds=time_us))
            if id(price) not in cards_by_price:
                cards_by_price[id(price)] = _rate_card(price)
            cards.append(cards_by_price[id(price)])
    return PriceSchedule(provider.id, provider, model, days, times, tuple(cards))


def _utc_us_of_day(value: time) -> int:
    """Microseconds into the UTC day; a naive time is UTC (as genai_prices reads it)."""
    if value.tzinfo is not None:
        value = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).timetz()
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


# ---- rate cards -----------------------------------------------------------------------------

_TOKEN_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def _rate_card(price: ModelPrice) -> RateCard | None:
    """The exact integer form of a catalog price, or None when it has none (calc_price prices it)."""
    values = {key: value for key, value in vars(price).items() if value is not None and not key.startswith("_")}
    input_price = values.get("input_mtok", Decimal(0))
    # An unpriced cache key leaves its tokens in the input count.
    by_key = {
        "input_mtok": input_price,
        "output_mtok": values.get("output_mtok", Decimal(0)),
        "cache_read_mtok": values.get("cache_read_mtok", input_price),
        "cache_write_mtok": values.get("cache_write_mtok", input_price),
        "requests_kcount": values.get("requests_kcount", Decimal(0)),
    }
    starts = sorted({tier.start for p in by_key.values() if isinstance(p, TieredPrices) for tier in p.tiers})
    yocto_by_segment: list[list[int]] = []
    # A tier's rates hold from its start + 1 to the next start; the base from 0.
    for input_tokens in (0, *(start + 1 for start in starts)):
        rates = [_yocto(_rate_at(by_key[key], input_tokens), TOKENS_PER_MTOK) for key in _TOKEN_KEYS]
        rates.append(_yocto(_rate_at(by_key["requests_kcount"], input_tokens), REQUESTS_PER_KCOUNT))
        exact_rates = [rate for rate in rates if rate is not None]
        if len(exact_rates) < len(rates):
            return None
        yocto_by_segment.append(exact_rates)

    unit_yocto = min(
        (_largest_power_of_ten_dividing(rate) for rates in yocto_by_segment for rate in rates if rate),
        default=YOCTO_PER_USD,
    )
    by_segment = [TokenRates(*(rate // unit_yocto for rate in rates)) for rates in yocto_by_segment]
    card = RateCard(
        unit_yocto=unit_yocto,
        base=by_segment[0],
        tiers=tuple(reversed(list(zip(starts, by_segment[1:], strict=True)))),
        nano_per_unit=max(unit_yocto // YOCTO_PER_NANO, 1),
        units_per_nano=max(YOCTO_PER_NANO // unit_yocto, 1),
    )
    return card if _agrees_with_catalog(card, price, starts) else None


def _rate_at(price: object, input_tokens: int) -> object:
    """The rate that applies at `input_tokens`, as genai_prices' calc_unit_price picks it."""
    if not isinstance(price, TieredPrices):
        return price
    for tier in reversed(price.tiers):
        if input_tokens > tier.start:
            return tier.price
    return price.base


def _yocto(price: object, per: int) -> int | None:
    """A Decimal price per `per` units as integer yocto-dollars a unit, None when not exact."""
    if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
        return None
    yocto = Fraction(price) * YOCTO_PER_USD / per
    return yocto.numerator if yocto.denominator == 1 else None


def _largest_power_of_ten_dividing(value: int) -> int:
    power = 1
    while value % (power * 10) == 0:
        power *= 10
    return power


def _agrees_with_catalog(card: RateCard, price: ModelPrice, starts: list[int]) -> bool:
    """Whether `card` costs exactly what calc_price does at both ends of every tier.

    The guard against a price form this module reads wrongly (one a newer
    catalog may bring): such a card is dropped and calc_price prices the form.
    The probes are small enough that calc_price's Decimal is exact for any
    catalog rate, so equality is exact; were it not, the card would be dropped,
    which is the safe way to be wrong.
    """
    top_start = starts[-1] if starts else 0
    for input_tokens in (0, *(tokens for start in starts for tokens in (start, start + 1)), top_start + 1_000_003):
        output_tokens = input_tokens // 2 + 1009
        cache_read_tokens, cache_write_tokens = input_tokens // 3, input_tokens // 7
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )
        try:
            expected_usd = price.calc_price(usage)["total_price"]
        except (ValueError, ArithmeticError):
            return False  # calc_price refuses this price; events will get its error
        cost_units = card.cost_units(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        if Fraction(cost_units * card.unit_yocto, YOCTO_PER_USD) != Fraction(expected_usd):
            return False
    return True

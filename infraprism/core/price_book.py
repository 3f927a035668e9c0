"""A project's own prices: overrides of the catalog, each from an effective instant. Pure.

Which price applies to an event (shared/spec/semantics.md leaves it to us; the
price issue sets the order):

1. a `cost` the event supplies, always;
2. else the project's override for the event's model that is in effect at the
   event's time: one naming the event's provider wins over one naming none;
3. else the genai-prices catalog (core/pricing.py);
4. else nothing: the event is a dead letter, never $0.

An override either sets its own rates ($ per million tokens; cache rates default
to the input rate, as the catalog prices an unpriced cache key) or takes a
discount on the catalog's price, or both (a discount on its own rates). Rates
are exact decimals of at most 18 places, so a token's price is a whole number
of yocto-dollars (10**-24 USD) and a cost is one half-even rounding of the exact
sum to nano-dollars. A discount on the catalog applies to the catalog's cost in
nano-dollars (the figure calc_price gives), rounded half-even once more.

A later override for the same (model, provider) ends the earlier one: each
lasts from its `effective_from_ms` to the next one's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from infraprism.core import CoreError
from infraprism.core.money import div_round_half_even
from infraprism.core.pricing import PricingError, catalog_provider_for, price_event_nano

# $/Mtok with 18 decimals is a whole number of yocto-dollars a token.
MAX_RATE_DECIMALS = 18
YOCTO_PER_NANO = 10**15
YOCTO_PER_TOKEN_PER_USD_PER_MTOK = 10**18
# Far above any real rate ($75/Mtok was the dearest in 2025), and it keeps one event's
# cost within the contract's $1,000,000 for realistic token counts.
MAX_RATE_PER_MTOK = Decimal(1_000_000)
MAX_DISCOUNT_DECIMALS = 6
BEGINNING_OF_TIME_MS = 0

SUPPLIED, CATALOG, OVERRIDE = "supplied", "catalog", "override"
PRICE_SOURCES = (SUPPLIED, CATALOG, OVERRIDE)
RATE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")


class InvalidPrice(CoreError, ValueError):
    """An override that cannot be stored; `field` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def parse_rate(field_name: str, value: Any) -> Decimal | None:
    """A $/Mtok rate from JSON or the command line: a non-negative decimal of at most 18 places."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidPrice(field_name, "must be a number of dollars per million tokens")
    rate = _decimal(field_name, value)
    if rate < 0:
        raise InvalidPrice(field_name, f"must not be negative: {value}")
    if rate > MAX_RATE_PER_MTOK:
        raise InvalidPrice(field_name, f"at most {MAX_RATE_PER_MTOK} dollars per million tokens: {value}")
    if -rate.as_tuple().exponent > MAX_RATE_DECIMALS:  # type: ignore[operator]
        raise InvalidPrice(field_name, f"at most {MAX_RATE_DECIMALS} decimal places: {value}")
    return rate.normalize() if rate else Decimal(0)


def parse_discount(value: Any) -> Decimal | None:
    """A discount in percent: more than 0 and at most 100, at most 6 decimal places."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidPrice("discount_percent", "must be a number of percent")
    discount = _decimal("discount_percent", value)
    if not 0 < discount <= 100:
        raise InvalidPrice("discount_percent", f"must be more than 0 and at most 100: {value}")
    if -discount.as_tuple().exponent > MAX_DISCOUNT_DECIMALS:  # type: ignore[operator]
        raise InvalidPrice("discount_percent", f"at most {MAX_DISCOUNT_DECIMALS} decimal places: {value}")
    return discount.normalize()


def _decimal(field_name: str, value: int | float | str | Decimal) -> Decimal:
    try:
        # A float is read through its shortest repr: the JSON text it came from.
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidPrice(field_name, f"not a decimal number: {str(value)[:40]!r}") from None
    if not number.is_finite():
        raise InvalidPrice(field_name, f"not a finite number: {value}")
    return number


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """One price of one model in one project, from `effective_from_ms` (UTC) on.

    `effective_from` is the day as given (in the project's zone when it was set),
    None for the beginning of time; `effective_from_ms` is its local midnight.
    """

    model: str
    provider: str | None
    effective_from: str | None
    effective_from_ms: int
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    discount_percent: Decimal | None = None
    set_at: str | None = None
    # Integer yocto-dollars a token, or None for a discount on the catalog; derived.
    _yocto: tuple[int, int, int, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.input_per_mtok is None and self.output_per_mtok is None:
            if self.cache_read_per_mtok is not None or self.cache_write_per_mtok is not None:
                raise InvalidPrice("input_per_mtok", "cache rates need the input and output rates too")
            if self.discount_percent is None:
                raise InvalidPrice(
                    "input_per_mtok", "give input_per_mtok and output_per_mtok, or a discount_percent on the catalog"
                )
            return
        if self.input_per_mtok is None or self.output_per_mtok is None:
            missing = "input_per_mtok" if self.input_per_mtok is None else "output_per_mtok"
            raise InvalidPrice(missing, "an override's own rates need both input_per_mtok and output_per_mtok")
        rates = (
            self.input_per_mtok,
            self.output_per_mtok,
            self.cache_read_per_mtok if self.cache_read_per_mtok is not None else self.input_per_mtok,
            self.cache_write_per_mtok if self.cache_write_per_mtok is not None else self.input_per_mtok,
        )
        yocto = tuple(int(rate * YOCTO_PER_TOKEN_PER_USD_PER_MTOK) for rate in rates)
        object.__setattr__(self, "_yocto", yocto)

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        """What two overrides must not share: the model, the provider and the day (as given) it
        starts on. A day names one instant, its midnight in the project's zone when it was set."""
        return (self.model, self.provider, self.effective_from)

    @property
    def is_discount_only(self) -> bool:
        return self._yocto is None

    def cost_nano(
        self,
        ts_ms: int,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
    ) -> int:
        """The event's cost under this override; PricingError when it discounts a catalog price
        the catalog does not have."""
        if self._yocto is None:
            catalog_nano, _ = price_event_nano(
                self.model, provider, ts_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
            )
            return _discounted(catalog_nano, 1, self.discount_percent)
        input_rate, output_rate, cache_read_rate, cache_write_rate = self._yocto
        total_yocto = (
            input_rate * (input_tokens - cache_read_tokens - cache_write_tokens)
            + output_rate * output_tokens
            + cache_read_rate * cache_read_tokens
            + cache_write_rate * cache_write_tokens
        )
        return _discounted(total_yocto, YOCTO_PER_NANO, self.discount_percent)

    def to_json(self) -> dict[str, Any]:
        """The stored and answered form: rates as decimal text, so they stay exact."""
        out: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "effective_from": self.effective_from,
            "effective_from_ms": self.effective_from_ms,
        }
        for name in (*RATE_FIELDS, "discount_percent"):
            value = getattr(self, name)
            # Fixed-point text: normalize() leaves 10 as 1E+1.
            out[name] = None if value is None else format(value, "f")
        out["set_at"] = self.set_at
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PriceOverride:
        return cls(
            model=data["model"],
            provider=data.get("provider"),
            effective_from=data.get("effective_from"),
            effective_from_ms=int(data.get("effective_from_ms") or 0),
            input_per_mtok=parse_rate("input_per_mtok", data.get("input_per_mtok")),
            output_per_mtok=parse_rate("output_per_mtok", data.get("output_per_mtok")),
            cache_read_per_mtok=parse_rate("cache_read_per_mtok", data.get("cache_read_per_mtok")),
            cache_write_per_mtok=parse_rate("cache_write_per_mtok", data.get("cache_write_per_mtok")),
            discount_percent=parse_discount(data.get("discount_percent")),
            set_at=data.get("set_at"),
        )


def _discounted(amount: int, per_nano: int, discount_percent: Decimal | None) -> int:
    """amount / per_nano nano-dollars less the discount, rounded half-even once."""
    if discount_percent is None:
        return div_round_half_even(amount, per_nano) if per_nano > 1 else amount
    numerator, denominator = (100 - discount_percent).as_integer_ratio()
    return div_round_half_even(amount * numerator, per_nano * denominator * 100)


class _ModelPrices:
    """The overrides of one (project, model, provider), ordered by effective instant."""

    __slots__ = ("starts", "overrides")

    def __init__(self, overrides: Iterable[PriceOverride]) -> None:
        ordered = sorted(overrides, key=lambda o: o.effective_from_ms)
        self.overrides = tuple(ordered)
        self.starts = tuple(o.effective_from_ms for o in ordered)

    def at(self, ts_ms: int) -> PriceOverride | None:
        index = bisect_right(self.starts, ts_ms)
        return self.overrides[index - 1] if index else None


class PriceBook:
    """Every project's overrides at one version of the store (stores/prices.py); version 0 is empty.

    Picklable, and small: the aggregator sends it to its decoder process with a
    batch whenever the version moved.
    """

    def __init__(self, version: int = 0, overrides: Mapping[str, Iterable[PriceOverride]] | None = None) -> None:
        self.version = version
        self.by_project: dict[str, tuple[PriceOverride, ...]] = {}
        # (project, model) -> provider (None for "any") -> its overrides
        self._index: dict[tuple[str, str], dict[str | None, _ModelPrices]] = {}
        for project, items in (overrides or {}).items():
            items = tuple(items)
            if not items:
                continue
            self.by_project[project] = items
            grouped: dict[tuple[str, str | None], list[PriceOverride]] = {}
            for override in items:
                grouped.setdefault((override.model, override.provider), []).append(override)
            for (model, provider), group in grouped.items():
                self._index.setdefault((project, model), {})[provider] = _ModelPrices(group)

    def __bool__(self) -> bool:
        return bool(self._index)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PriceBook, (self.version, self.by_project))

    def override_for(self, project: str, model: str, provider: str | None, ts_ms: int) -> PriceOverride | None:
        """The override in effect for an event, or None when the catalog prices it."""
        by_provider = self._index.get((project, model))
        if by_provider is None:
            return None
        if provider is None:
            provider = catalog_provider_for(model)
        if provider is not None:
            specific = by_provider.get(provider)
            if specific is not None:
                found = specific.at(ts_ms)
                if found is not None:
                    return found
        general = by_provider.get(None)
        return None if general is None else general.at(ts_ms)

    def price(
        self,
        project: str,
        model: str,
        provider: str | None,
        ts_ms: int,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[int, str | None, str]:
        """(cost in nano-dollars, the provider to record or None, price source) of an event
        without `cost`; PricingError when nothing prices it."""
        override = self.override_for(project, model, provider, ts_ms) if self._index else None
        if override is not None:
            cost = override.cost_nano(
                ts_ms, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
            )
            return cost, provider or override.provider or catalog_provider_for(model), OVERRIDE
        cost, catalog_provider = price_event_nano(
            model, provider, ts_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
        )
        return cost, provider or catalog_provider, CATALOG


EMPTY_BOOK = PriceBook()

__all__ = [
    "CATALOG",
    "EMPTY_BOOK",
    "InvalidPrice",
    "OVERRIDE",
    "PRICE_SOURCES",
    "PriceBook",
    "PriceOverride",
    "PricingError",
    "SUPPLIED",
    "parse_discount",
    "parse_rate",
]

"""Prices an event that arrives without `cost`, with the genai-prices catalog.

Pure apart from the catalog, which ships inside the genai-prices wheel (no
network at run time). A model the catalog does not know is an error, never $0.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from genai_prices import Usage, calc_price

from infraprism.core.money import usd_to_nano


class PricingError(ValueError):
    """The catalog cannot price this event."""


@lru_cache(maxsize=4096)
def catalog_provider_for(model: str) -> str | None:
    """The provider the catalog matches for `model`, or None when it knows none."""
    try:
        return str(calc_price(Usage(input_tokens=0, output_tokens=0), model_ref=model).provider.id)
    except LookupError:
        return None


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
    takes them the same way and prices them at the cache rates.
    """
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    try:
        result = calc_price(usage, model_ref=model, provider_id=provider, genai_request_timestamp=at)
    except LookupError as exc:
        known_as = f"model {model!r}" + (f" of provider {provider!r}" if provider else "")
        raise PricingError(f"the price catalog does not know {known_as}") from exc
    return usd_to_nano(result.total_price), str(result.provider.id)

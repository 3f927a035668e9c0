"""Money is integer nano-dollars from the event to the response; these are the only conversions."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANO_PER_USD = 1_000_000_000


def usd_to_nano(usd: float | int | str | Decimal) -> int:
    """USD to integer nano-dollars, rounded half-even.

    A float is read through its shortest repr, which is the JSON text it came
    from, so 0.01858 becomes exactly 18_580_000, never 18_579_999.
    """
    if isinstance(usd, Decimal):
        value = usd
    elif isinstance(usd, float):
        value = Decimal(repr(usd))
    else:
        value = Decimal(usd)
    return int((value * NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def nano_to_usd(nano: int) -> float:
    """Integer nano-dollars to USD rounded half-even to 6 decimals, for a response only."""
    return float((Decimal(nano) / NANO_PER_USD).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))

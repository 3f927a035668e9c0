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


def div_round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-even to an integer, exactly (denominator > 0).

    Integer arithmetic only: the API formats thousands of rows per response, and
    Decimal made that the largest part of shaping them.
    """
    quotient, remainder = divmod(numerator, denominator)  # floor: 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def nano_to_usd(nano: int) -> float:
    """Integer nano-dollars to USD rounded half-even to 6 decimals, for a response only.

    The micro-dollar integer divided by 10**6 is correctly rounded by Python's
    int / int, so the float is the nearest double to the 6-decimal value.
    """
    return div_round_half_even(nano, 1000) / 1_000_000

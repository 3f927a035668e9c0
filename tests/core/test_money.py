"""Money conversions against Decimal, the slow obvious reference (ratios: tests/api/test_shaping.py)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from infraprism.core.money import div_round_half_even, nano_to_usd

big = st.integers(min_value=-(10**24), max_value=10**24)


# Enough digits that the reference itself never rounds (Decimal's default is 28).
PRECISION = 80


def decimal_usd(nano: int) -> float:
    with localcontext(prec=PRECISION):
        return float((Decimal(nano) / 10**9).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


@given(big)
def test_nano_to_usd_matches_decimal_half_even(nano: int) -> None:
    assert nano_to_usd(nano) == decimal_usd(nano)


def test_nano_to_usd_ties_go_to_even() -> None:
    assert nano_to_usd(1_500) == 0.000002  # 1.5 micro-dollars -> 2
    assert nano_to_usd(2_500) == 0.000002  # 2.5 -> 2
    assert nano_to_usd(-2_500) == -0.000002
    assert nano_to_usd(-3_500) == -0.000004
    assert nano_to_usd(18_580_000) == 0.01858


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=1, max_value=1000))
def test_div_round_half_even_matches_decimal(numerator: int, denominator: int) -> None:
    expected = int((Decimal(numerator) / Decimal(denominator)).to_integral_value(rounding=ROUND_HALF_EVEN))
    assert div_round_half_even(numerator, denominator) == expected

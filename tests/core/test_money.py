"""The response-side money and ratio conversions against Decimal, the slow obvious reference."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from infraprism.api.service import avg_latency_ms, ratio
from infraprism.core.money import div_round_half_even, nano_to_usd

big = st.integers(min_value=-(10**24), max_value=10**24)


# Enough digits that the reference itself never rounds (Decimal's default is 28).
PRECISION = 80


def decimal_usd(nano: int) -> float:
    with localcontext(prec=PRECISION):
        return float((Decimal(nano) / 10**9).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def decimal_ratio(numerator: int, denominator: int, decimals: int) -> float:
    with localcontext(prec=PRECISION):
        quantum = Decimal(1).scaleb(-decimals)
        return float((Decimal(numerator) / Decimal(denominator)).quantize(quantum, rounding=ROUND_HALF_EVEN))


@given(big)
def test_nano_to_usd_matches_decimal_half_even(nano: int) -> None:
    assert nano_to_usd(nano) == decimal_usd(nano)


def test_nano_to_usd_ties_go_to_even() -> None:
    assert nano_to_usd(1_500) == 0.000002  # 1.5 micro-dollars -> 2
    assert nano_to_usd(2_500) == 0.000002  # 2.5 -> 2
    assert nano_to_usd(-2_500) == -0.000002
    assert nano_to_usd(-3_500) == -0.000004
    assert nano_to_usd(18_580_000) == 0.01858


@given(big, st.integers(min_value=1, max_value=10**15), st.sampled_from([1, 6]))
def test_ratio_matches_decimal_half_even(numerator: int, denominator: int, decimals: int) -> None:
    assert ratio(numerator, denominator, decimals) == decimal_ratio(numerator, denominator, decimals)


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=1, max_value=1000))
def test_div_round_half_even_matches_decimal(numerator: int, denominator: int) -> None:
    expected = int((Decimal(numerator) / Decimal(denominator)).to_integral_value(rounding=ROUND_HALF_EVEN))
    assert div_round_half_even(numerator, denominator) == expected


def test_ratio_of_nothing_is_none() -> None:
    assert ratio(5, 0) is None


@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=10**9))
def test_mean_latency_is_half_even_tenths_of_a_millisecond(latency_sum_us: int, latency_count: int) -> None:
    cell = [max(1, latency_count), 0, 0, 0, latency_sum_us, latency_count]
    expected = None if latency_count == 0 else decimal_ratio(latency_sum_us, latency_count * 1000, 1)
    assert avg_latency_ms(cell) == expected

"""Pricing events that arrive without `cost`: price_event_nano's rate cards against genai_prices.calc_price.

    .venv/bin/python bench/pricing.py [--events 200000] [--baseline-events 5000] [--seed 1]

Draws a production-like mix of unpriced events: bench/workload.py's six models
plus a tiered one (claude-sonnet-4-5, $3 -> $6/Mtok above 200k input tokens),
one whose price changed inside the window (o3, 2025-06-10) and one with
off-peak hours (deepseek-chat); `provider` omitted on 10%; cache reads on 25%,
cache writes on 10%; 3% long-context calls of 150k-400k input tokens;
timestamps over 45 days. Then, in this run and on the same events, one core:

- calc_price as pricing.py called it before its rate cards (the baseline), on
  the first `--baseline-events` events (it takes ~100-200 us a call);
- price_event_nano with a warm memo, every event, best of five passes;
- price_event_nano's first call for each model (a memo miss: the catalog
  match, the rate cards and their probes against calc_price);
- PriceBook.price, which the aggregator calls, for a project with overrides of
  four models (own rates changing mid-window, a provider-specific one,
  discounts on the catalog) and for a project without any.

It checks that both give the same nano-dollars on the baseline events, then
prints a one-line summary and a markdown table.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from genai_prices import Usage, calc_price

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402

from infraprism.core import pricing  # noqa: E402
from infraprism.core.money import usd_to_nano  # noqa: E402
from infraprism.core.price_book import PriceBook, PriceOverride  # noqa: E402

MODELS = [(model, provider) for model, provider, _, _ in workload.MODELS] + [
    ("claude-sonnet-4-5", "anthropic"),
    ("o3", "openai"),
    ("deepseek-chat", "deepseek"),
]
START_MS = 1_747_699_200_000  # 2025-05-20T00:00:00Z: o3's price change falls inside the window
DAYS = 45
DAY_MS = 86_400_000

Event = tuple[str, str | None, int, int, int, int, int]


def draw_events(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    for _ in range(count):
        model, provider = rng.choice(MODELS)
        if rng.random() < 0.03:
            input_tokens = rng.randint(150_000, 400_000)
        else:
            input_tokens = int(rng.lognormvariate(7.0, 1.2))
        output_tokens = int(rng.lognormvariate(5.8, 1.0))
        cache_read = rng.randint(0, input_tokens) if rng.random() < 0.25 else 0
        cache_write = rng.randint(0, input_tokens - cache_read) if rng.random() < 0.10 else 0
        ts_ms = START_MS + rng.randrange(DAYS * DAY_MS)
        events.append(
            (
                model,
                None if rng.random() < 0.10 else provider,
                ts_ms,
                input_tokens,
                output_tokens,
                cache_read,
                cache_write,
            )
        )
    return events


def calc_price_nano(
    model: str,
    provider: str | None,
    ts_ms: int,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
) -> tuple[int, str]:
    """pricing.price_event_nano before its rate cards: one calc_price a call."""
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    result = calc_price(usage, model_ref=model, provider_id=provider, genai_request_timestamp=at)
    return usd_to_nano(result.total_price), str(result.provider.id)


def override_book() -> PriceBook:
    """Project `tenant`'s overrides, as a negotiated contract has them: own rates for two models
    (one changing mid-window, one provider-specific), a discount on two others."""
    (m0, p0), (m1, p1), (m2, _), (m3, _) = MODELS[:4]
    mid = START_MS + DAYS // 2 * DAY_MS
    own = {"input_per_mtok": Decimal("2.25"), "output_per_mtok": Decimal(9), "cache_read_per_mtok": Decimal("1.125")}
    overrides = [
        PriceOverride(m0, None, None, 0, **own),
        PriceOverride(m0, None, None, mid, input_per_mtok=Decimal(2), output_per_mtok=Decimal(8)),
        PriceOverride(m1, p1, None, 0, **own),
        PriceOverride(m2, None, None, 0, discount_percent=Decimal(20)),
        PriceOverride(m3, None, None, 0, discount_percent=Decimal("12.5")),
    ]
    return PriceBook(1, {"tenant": overrides})


def seconds_per_call(price: Callable[..., object], events: list[Event]) -> float:
    started = time.perf_counter()
    for event in events:
        price(*event)
    return (time.perf_counter() - started) / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--baseline-events", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    events = draw_events(args.events, args.seed)
    baseline_events = events[: args.baseline_events]

    pricing.forget_catalog()
    first_calls = [events[next(i for i, e in enumerate(events) if e[0] == model)] for model, _ in MODELS]
    miss_s = seconds_per_call(pricing.price_event_nano, first_calls)

    mismatches = [e for e in baseline_events if pricing.price_event_nano(*e) != calc_price_nano(*e)]
    if mismatches:
        raise SystemExit(f"{len(mismatches)} events priced differently, first {mismatches[0]}")

    calc_s = seconds_per_call(calc_price_nano, baseline_events)
    hit_s = min(seconds_per_call(pricing.price_event_nano, events) for _ in range(5))
    book = override_book()
    own_s = min(seconds_per_call(functools.partial(book.price, "tenant"), events) for _ in range(5))
    none_s = min(seconds_per_call(functools.partial(book.price, "other"), events) for _ in range(5))

    print(
        f"price_event_nano: {1 / hit_s:,.0f} unpriced events/s per core ({hit_s * 1e6:.2f} us a call), "
        f"calc_price: {1 / calc_s:,.0f}/s ({calc_s * 1e6:.0f} us): {calc_s / hit_s:,.0f}x faster, "
        f"same nano-dollars on all {len(baseline_events):,} baseline events"
    )
    print()
    print("| pricer | events | calls/s | us/call | vs calc_price |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("calc_price (baseline)", len(baseline_events), calc_s),
        ("price_event_nano, memo hit", len(events), hit_s),
        ("price_event_nano, memo miss (first event of a model)", len(first_calls), miss_s),
        ("PriceBook.price, a project with overrides of 4 of its 9 models", len(events), own_s),
        ("PriceBook.price, a project without overrides (the catalog)", len(events), none_s),
    ]
    for name, count, seconds in rows:
        print(f"| {name} | {count:,} | {1 / seconds:,.0f} | {seconds * 1e6:,.2f} | {calc_s / seconds:,.2f}x |")


if __name__ == "__main__":
    main()

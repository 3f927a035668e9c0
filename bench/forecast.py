"""Budget forecast error: month-end forecasts against the month's true spend, with the naive
run-rate as the baseline measured on the same days.

    .venv/bin/python bench/forecast.py [--seeds 5]

Two series (infraprism/dev/spend_series.py): a synthetic year of daily spend (growth, a weekly
rhythm, noise, spikes and outages), for several seeds, and the demo dataset's daily spend
(infraprism/dev/demo.py, 35 days ending 2025-12-02: its November). At the end of day 3, 7,
14, 21 and 28 of each month, the forecast of infraprism/core/budgets.py is made as the budget
status makes it the next morning; its absolute error is |forecast - actual| / actual.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infraprism.dev.spend_series import ForecastError, demo_daily, month_end_errors, synthetic_year  # noqa: E402

CHECKPOINTS = (3, 7, 14, 21, 28)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(name: str, errors: list[ForecastError]) -> None:
    print(f"\n{name}: {len(errors)} month-end forecasts")
    print(f"{'day':>4} {'n':>4} {'forecast median':>16} {'p90':>7} {'run-rate median':>16} {'p90':>7} {'ratio':>6}")
    for checkpoint in CHECKPOINTS:
        of_day = [e for e in errors if e.checkpoint == checkpoint]
        if not of_day:
            continue
        ours = [abs(e.forecast_error) * 100 for e in of_day]
        naive = [abs(e.run_rate_error) * 100 for e in of_day]
        median, naive_median = statistics.median(ours), statistics.median(naive)
        ratio = median / naive_median if naive_median else float("nan")
        print(
            f"{checkpoint:>4} {len(of_day):>4} {median:>15.1f}% {quantile(ours, 0.9):>6.1f}% "
            f"{naive_median:>15.1f}% {quantile(naive, 0.9):>6.1f}% {ratio:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="synthetic years to measure (default 5)")
    args = parser.parse_args()
    synthetic: list[ForecastError] = []
    for seed in range(1, args.seeds + 1):
        synthetic.extend(month_end_errors(synthetic_year(seed), CHECKPOINTS))
    report(f"synthetic year, {args.seeds} seeds", synthetic)
    report("demo data", month_end_errors(demo_daily(), CHECKPOINTS))


if __name__ == "__main__":
    main()

"""The detector's change feed (infraprism/core/deltas.py): hour labels and merging a backlog."""

from __future__ import annotations

import pytest

from infraprism.core.buckets import labels_for_hour
from infraprism.core.deltas import Delta, hour_of_label, merge

H = 3_600_000


@pytest.mark.parametrize("hour", [0, 480_000, 480_000 + 23, 500_123])
def test_hour_of_label_inverts_the_label(hour: int) -> None:
    assert hour_of_label(labels_for_hour(hour)[0]) == hour


@pytest.mark.parametrize("label", ["2024100", "2024101325", "20241301xx", ""])
def test_a_bad_label_raises(label: str) -> None:
    with pytest.raises(ValueError, match="."):
        hour_of_label(label)


@pytest.mark.parametrize(
    ("deltas", "merged"),
    [
        pytest.param([], [], id="nothing"),
        pytest.param(
            [
                Delta("a", 10 * H + 1, (("customer", "x", "2024100110"),)),
                Delta("b", 10 * H + 2, (("customer", "y", "2024100110"),)),
                Delta("a", 10 * H + 9, (("customer", "z", "2024100110"), ("customer", "x", "2024100110"))),
                Delta("a", 11 * H + 5, (("customer", "x", "2024100111"),)),
                Delta("a", 11 * H + 3, (("customer", "x", "2024100110"),)),
            ],
            [
                Delta("a", 10 * H + 9, (("customer", "x", "2024100110"), ("customer", "z", "2024100110"))),
                Delta("b", 10 * H + 2, (("customer", "y", "2024100110"),)),
                Delta("a", 11 * H + 5, (("customer", "x", "2024100110"), ("customer", "x", "2024100111"))),
            ],
            id="per project and event hour, the newest watermark, cells once",
        ),
        pytest.param(
            [Delta("a", 11 * H, (("t", "x", "2024100111"),)), Delta("a", 10 * H, (("t", "x", "2024100110"),))],
            [Delta("a", 11 * H, (("t", "x", "2024100111"),)), Delta("a", 10 * H, (("t", "x", "2024100110"),))],
            id="an earlier hour after a later one stays apart, in order",
        ),
    ],
)
def test_merge(deltas: list[Delta], merged: list[Delta]) -> None:
    assert merge(deltas) == merged

"""The anomaly record (infraprism/core/anomalies.py): severities, record times, the stored hash."""

from __future__ import annotations

import math

import pytest

from infraprism.core.anomalies import (
    AnomalyRecord,
    AnomalyType,
    Severity,
    record_time,
    severity,
    severity_rank,
)
from infraprism.core.baseline import Kind


@pytest.mark.parametrize(
    ("ratio", "level"),
    [
        (2.0, Severity.LOW),
        (2.99, Severity.LOW),
        (3.0, Severity.MEDIUM),
        (5.0, Severity.HIGH),
        (9.9, Severity.HIGH),
        (10.0, Severity.CRITICAL),
        (math.inf, Severity.CRITICAL),
    ],
)
def test_severity(ratio: float, level: Severity) -> None:
    assert severity(ratio) == level


@pytest.mark.parametrize(
    ("level", "rank"),
    [("low", 0), ("medium", 1), ("high", 2), ("critical", 3), (Severity.HIGH, 2), ("unheard-of", 0)],
)
def test_severity_rank(level: str, rank: int) -> None:
    assert severity_rank(level) == rank


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_736_940_599_999, "2025-01-15T11:29:59Z"),  # to the second, never rounded up
        (1_736_940_600_000, "2025-01-15T11:30:00Z"),
    ],
)
def test_record_time(ms: int, text: str) -> None:
    assert record_time(ms) == text


def test_every_kind_measured_is_an_anomaly_type() -> None:
    """The detector's kinds are the spike types; the budget types are the budget watcher's."""
    spikes = [t.value for t in AnomalyType if not t.value.startswith("budget_")]
    assert [kind.value for kind in Kind] == spikes
    assert len(AnomalyType) == len(spikes) + 3


RECORD = AnomalyRecord(
    id="anomaly_1",
    project="acme",
    detected_at="2025-01-15T10:30:00Z",
    detected_ms=1_736_937_000_000,
    entity_type="customer",
    entity_id="acme-corp",
    type="cost_spike",
    severity="high",
    description="Cost increased 340% compared to 7-day median hourly cost",
    expected_value=12.5,
    actual_value=55.0,
    status="active",
    updated_ms=1_736_937_000_001,
    version=3,
)


def test_the_hash_round_trips_as_text_and_as_bytes() -> None:
    stored = RECORD.to_hash()
    assert stored["expected_value"] == "12.5"
    assert stored["version"] == "3"
    assert AnomalyRecord.from_hash(stored) == RECORD
    assert AnomalyRecord.from_hash({k.encode(): v.encode() for k, v in stored.items()}) == RECORD


def test_a_record_from_before_alerts_has_version_1() -> None:
    stored = {k: v for k, v in RECORD.to_hash().items() if k not in ("updated_ms", "version")}
    old = AnomalyRecord.from_hash(stored)
    assert (old.updated_ms, old.version) == (0, 1)


def test_the_public_shape() -> None:
    assert list(RECORD.public()) == [
        "id",
        "detected_at",
        "entity_type",
        "entity_id",
        "type",
        "severity",
        "description",
        "expected_value",
        "actual_value",
        "status",
    ]

"""The anomaly record: its fields, statuses, types and severities. Pure.

The detector writes records (infraprism/core/episodes.py decides what, the
stores layer writes it), the API and the alerts read them. The enums' class
names are the names the API's OpenAPI schema shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from infraprism.core.text import as_text, rfc3339_ms


class AnomalyStatus(StrEnum):
    ACTIVE = "active"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


class AnomalyType(StrEnum):
    COST_SPIKE = "cost_spike"
    VOLUME_SPIKE = "volume_spike"
    LATENCY_SPIKE = "latency_spike"
    # A budget period's spend reached a threshold under 100%, or 100% and above (docs/budgets.md).
    BUDGET_THRESHOLD = "budget_threshold"
    BUDGET_EXCEEDED = "budget_exceeded"
    BUDGET_FORECAST = "budget_forecast"  # the period's forecast first passed 100%


class Severity(StrEnum):
    """In rising order: the order is what "the severity rose" compares."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


_SEVERITY_ORDER = tuple(Severity)


def severity(ratio: float) -> Severity:
    """By actual / expected: >= 10x critical, >= 5x high, >= 3x medium, else low."""
    if ratio >= 10:
        return Severity.CRITICAL
    if ratio >= 5:
        return Severity.HIGH
    if ratio >= 3:
        return Severity.MEDIUM
    return Severity.LOW


def severity_rank(level: str) -> int:
    """0 (low) to 3 (critical). Stored text this release does not know ranks lowest, so it never blocks an update."""
    try:
        return _SEVERITY_ORDER.index(Severity(level))
    except ValueError:
        return 0


def record_time(ms: int) -> str:
    """Epoch ms as a record shows it (detected_at, updated_at): RFC 3339 UTC to the second."""
    return rfc3339_ms(ms - ms % 1000)


@dataclass(slots=True)
class AnomalyRecord:
    """One anomaly in the reference's shape, plus what the store needs to index it.

    `entity_type`/`entity_id` are "project"/<project id> for a project-wide spike.
    `expected_value`/`actual_value` are USD for cost spikes, events for volume
    spikes, milliseconds for latency spikes.
    """

    id: str
    project: str
    detected_at: str  # RFC 3339 with Z, in event time
    detected_ms: int
    entity_type: str
    entity_id: str
    type: str
    severity: str
    description: str
    expected_value: float
    actual_value: float
    status: str
    updated_ms: int = 0  # event time of the last change, for alert de-duplication
    version: int = 1  # bumps on every change; a notification is sent once per version
    # A budget alert's budget and threshold (percent); "" and 0 for every other record.
    budget_id: str = ""
    threshold: int = 0

    def to_hash(self) -> dict[str, str]:
        """The record as the Redis hash (and outbox entry) holds it: every field as text."""
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> AnomalyRecord:
        text = {as_text(k): as_text(v) for k, v in raw.items()}
        return cls(
            id=text["id"],
            project=text["project"],
            detected_at=text["detected_at"],
            detected_ms=int(text["detected_ms"]),
            entity_type=text["entity_type"],
            entity_id=text["entity_id"],
            type=text["type"],
            severity=text["severity"],
            description=text["description"],
            expected_value=float(text["expected_value"]),
            actual_value=float(text["actual_value"]),
            status=text["status"],
            # Absent from records written before alerts existed.
            updated_ms=int(text.get("updated_ms", "0")),
            version=int(text.get("version", "1")),
            budget_id=text.get("budget_id", ""),
            threshold=int(text.get("threshold", "0")),
        )

    def public(self) -> dict[str, Any]:
        """The API's shape (analytics-api.txt, Anomalies), and a budget alert's budget_id and
        threshold."""
        budget = {"budget_id": self.budget_id, "threshold": self.threshold} if self.budget_id else {}
        return {
            "id": self.id,
            "detected_at": self.detected_at,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "type": self.type,
            "severity": self.severity,
            "description": self.description,
            "expected_value": self.expected_value,
            "actual_value": self.actual_value,
            "status": self.status,
            **budget,
        }

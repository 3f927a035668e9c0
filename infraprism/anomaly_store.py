"""Anomaly records in Redis: written by the detector, read (and dismissed) by the API and CLI.

One hash per anomaly (KeyLayout.anomaly) holding the reference's fields, an
index per project by detected_at (KeyLayout.anomaly_index), and an owner map
from id to project so `infraprism anomalies dismiss ID` needs no project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout


class AnomalyStatus(StrEnum):
    ACTIVE = "active"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


class AnomalyType(StrEnum):
    COST_SPIKE = "cost_spike"
    VOLUME_SPIKE = "volume_spike"
    LATENCY_SPIKE = "latency_spike"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


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

    def to_hash(self) -> dict[str, str]:
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> AnomalyRecord:
        text = {_s(k): _s(v) for k, v in raw.items()}
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
            updated_ms=int(text.get("updated_ms", "0")),
            version=int(text.get("version", "1")),
        )

    def public(self) -> dict[str, Any]:
        """The API's shape (analytics-api.txt, Anomalies)."""
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
        }


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def owners_key(layout: KeyLayout) -> str:
    return f"{layout.root}:anomaly-owner"


async def save(redis: aioredis.Redis, layout: KeyLayout, record: AnomalyRecord) -> None:
    """Write (or overwrite) a record and its indexes in one transaction."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(layout.anomaly(record.project, record.id), mapping=record.to_hash())
        pipe.zadd(layout.anomaly_index(record.project), {record.id: record.detected_ms})
        pipe.hset(owners_key(layout), record.id, record.project)
        await pipe.execute()


async def get(redis: aioredis.Redis, layout: KeyLayout, project: str, anomaly_id: str) -> AnomalyRecord | None:
    raw = await redis.hgetall(layout.anomaly(project, anomaly_id))
    return AnomalyRecord.from_hash(raw) if raw else None


async def list_range(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    start_ms: int,
    end_ms: int,
    *,
    entity_type: str | None = None,
    status: str | None = None,
) -> list[AnomalyRecord]:
    """Anomalies whose detected_at lies in [start_ms, end_ms), newest first."""
    ids = await redis.zrevrangebyscore(layout.anomaly_index(project), f"({end_ms}", start_ms)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for anomaly_id in ids:
            pipe.hgetall(layout.anomaly(project, _s(anomaly_id)))
        raws = await pipe.execute()
    records = [AnomalyRecord.from_hash(raw) for raw in raws if raw]
    return [
        r
        for r in records
        if (entity_type is None or r.entity_type == entity_type) and (status is None or r.status == status)
    ]


async def dismiss(
    redis: aioredis.Redis, layout: KeyLayout, anomaly_id: str, project: str | None = None
) -> AnomalyRecord | None:
    """Mark an anomaly dismissed; None when it does not exist (in `project`, when given).

    The detector never reopens a dismissed anomaly's episode: it reads the status.
    """
    owner = await redis.hget(owners_key(layout), anomaly_id)
    if owner is None or (project is not None and _s(owner) != project):
        return None
    key = layout.anomaly(_s(owner), anomaly_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, "status", AnomalyStatus.DISMISSED)
        pipe.hincrby(key, "version", 1)
        pipe.hgetall(key)
        *_, raw = await pipe.execute()
    return AnomalyRecord.from_hash(raw) if raw else None

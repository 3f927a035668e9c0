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
        pipe.hset(layout.anomaly(record.project, record.id), mapping=dict(record.to_hash()))  # type: ignore[arg-type]
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


def outbox_key(layout: KeyLayout, project: str) -> str:
    """Stream of record snapshots (one entry per new version) that alerting still has to deliver.

    Written in the same atomic call as the record, so a change is never lost
    between Redis and the alert channels; pipeline/alerts.py drains it.
    """
    return layout.detector_state(project, "outbox")


# KEYS: record, index, owners, outbox. ARGV: id, project, detected_ms, then the record's pairs.
# Creates the record only if that id was never written (the detector's ids are deterministic,
# so a replayed delta finds the same episode again instead of duplicating it).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))
return 1
"""

# KEYS: record, outbox. ARGV: allowed statuses (comma separated), then field/value pairs.
# Changes the record only while its status is one of the allowed ones, bumps its version
# and queues the new snapshot for alerting, all at once.
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == status then allowed = true end
end
if not allowed then return {'refused', unpack(redis.call('HGETALL', KEYS[1]))} end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
local record = redis.call('HGETALL', KEYS[1])
redis.call('XADD', KEYS[2], '*', unpack(record))
return {'ok', unpack(record)}
"""


async def create(redis: aioredis.Redis, layout: KeyLayout, record: AnomalyRecord) -> bool:
    """Write a new record, index it and queue its alert, atomically; False if the id exists."""
    pairs = [item for name, value in record.to_hash().items() for item in (name, value)]
    created = await redis.eval(
        _CREATE,
        4,
        layout.anomaly(record.project, record.id),
        layout.anomaly_index(record.project),
        owners_key(layout),
        outbox_key(layout, record.project),
        record.id,
        record.project,
        str(record.detected_ms),
        *pairs,
    )
    return bool(int(created))


async def transition(
    redis: aioredis.Redis,
    layout: KeyLayout,
    project: str,
    anomaly_id: str,
    allowed: tuple[AnomalyStatus, ...],
    changes: dict[str, str],
) -> tuple[bool, AnomalyRecord | None]:
    """Apply `changes` if the record's status is in `allowed`; (changed, record as it now is).

    The record is None when it does not exist. A change bumps `version` and
    queues the new snapshot on the project's alert outbox in the same call.
    """
    pairs = [item for name, value in changes.items() for item in (name, value)]
    reply = await redis.eval(
        _TRANSITION,
        2,
        layout.anomaly(project, anomaly_id),
        outbox_key(layout, project),
        ",".join(allowed),
        *pairs,
    )
    status = _s(reply[0])
    if status == "missing":
        return False, None
    flat = reply[1:]
    record = AnomalyRecord.from_hash({flat[i]: flat[i + 1] for i in range(0, len(flat), 2)})
    return status == "ok", record


async def dismiss(
    redis: aioredis.Redis, layout: KeyLayout, anomaly_id: str, project: str | None = None
) -> AnomalyRecord | None:
    """Mark an anomaly dismissed; None when it does not exist (in `project`, when given).

    Dismissing twice changes nothing the second time. The change is queued for
    alerting like any other. The detector never reopens a dismissed anomaly's
    episode: its update only applies while the status is active.
    """
    owner = await redis.hget(owners_key(layout), anomaly_id)
    if owner is None or (project is not None and _s(owner) != project):
        return None
    _, record = await transition(
        redis,
        layout,
        _s(owner),
        anomaly_id,
        (AnomalyStatus.ACTIVE, AnomalyStatus.RESOLVED),
        {"status": AnomalyStatus.DISMISSED},
    )
    return record

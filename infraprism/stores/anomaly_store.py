"""Anomaly records in Redis: written by the detector, read (and dismissed) by the API and CLI.

One hash per anomaly (KeyLayout.anomaly) holding the record's fields, an
index per project by detected_at (KeyLayout.anomaly_index), and an owner map
from id to project (KeyLayout.anomaly_owners) so `infraprism anomalies
dismiss ID` needs no project. Every write also queues the record's new
snapshot on the project's alert outbox (KeyLayout.anomaly_outbox), in the same
atomic call, for pipeline/alerts.py to deliver.

The record's type lives in the core (infraprism/core/anomalies.py); it is
re-exported here because the API and the detector reach records through this module.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from infraprism.core.anomalies import AnomalyRecord, AnomalyStatus, AnomalyType, Severity
from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text
from infraprism.settings import Settings

__all__ = [
    "AnomalyRecord",
    "AnomalyStatus",
    "AnomalyType",
    "Severity",
    "create",
    "dismiss",
    "dismiss_by_id",
    "get",
    "list_range",
    "transition",
]


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
    entity_id: str | None = None,
    status: str | None = None,
) -> list[AnomalyRecord]:
    """Anomalies whose detected_at lies in [start_ms, end_ms), newest first."""
    ids = await redis.zrevrangebyscore(layout.anomaly_index(project), f"({end_ms}", start_ms)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for anomaly_id in ids:
            pipe.hgetall(layout.anomaly(project, as_text(anomaly_id)))
        raws = await pipe.execute()
    records = [AnomalyRecord.from_hash(raw) for raw in raws if raw]
    return [
        r
        for r in records
        if (entity_type is None or r.entity_type == entity_type)
        and (entity_id is None or r.entity_id == entity_id)
        and (status is None or r.status == status)
    ]


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
        layout.anomaly_owners(),
        layout.anomaly_outbox(record.project),
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
        layout.anomaly_outbox(project),
        ",".join(allowed),
        *pairs,
    )
    status = as_text(reply[0])
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
    owner = await redis.hget(layout.anomaly_owners(), anomaly_id)
    if owner is None or (project is not None and as_text(owner) != project):
        return None
    _, record = await transition(
        redis,
        layout,
        as_text(owner),
        anomaly_id,
        (AnomalyStatus.ACTIVE, AnomalyStatus.RESOLVED),
        {"status": AnomalyStatus.DISMISSED},
    )
    return record


def dismiss_by_id(settings: Settings, anomaly_id: str) -> AnomalyRecord | None:
    """`infraprism anomalies dismiss ID`: `dismiss` with a client of its own; None when there is no such id.

    Synchronous, for the CLI (like the API key functions of stores/apikeys.py).
    """

    async def run() -> AnomalyRecord | None:
        redis = aioredis.Redis.from_url(settings.redis_dsn())
        try:
            return await dismiss(redis, KeyLayout(settings.key_prefix), anomaly_id)
        finally:
            await redis.aclose()

    return asyncio.run(run())

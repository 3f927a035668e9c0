"""A project's budgets in Redis: one hash, budget id -> the budget as JSON.

Written by the API (`PUT`/`DELETE /v1/budgets/{id}`), read by the API and by the budget
watcher that raises their alerts. A budget holds no state of its periods: what a period has
crossed is the alert records themselves (infraprism/core/budgets.py, stores/anomaly_store.py),
so replacing a budget keeps them.
"""

from __future__ import annotations

import dataclasses

import orjson
import redis.asyncio as aioredis

from infraprism.core.budgets import Budget, BudgetPeriod, BudgetScope
from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text, rfc3339_now


def _encode(budget: Budget) -> bytes:
    return orjson.dumps(
        {
            "id": budget.budget_id,
            "name": budget.name,
            "amount_nano": budget.amount_nano,
            "period": budget.period.value,
            "scope": budget.scope.public(),
            "thresholds": list(budget.thresholds),
            "created_at": budget.created_at,
            "updated_at": budget.updated_at,
        }
    )


def _decode(raw: str | bytes) -> Budget:
    obj = orjson.loads(raw)
    scope = obj.get("scope") or {}
    return Budget(
        budget_id=obj["id"],
        name=obj["name"],
        amount_nano=int(obj["amount_nano"]),
        period=BudgetPeriod(obj["period"]),
        scope=BudgetScope(
            entity_type=scope.get("entity_type"),
            entity_id=scope.get("entity_id"),
            model=scope.get("model"),
            tags=tuple(sorted((scope.get("tags") or {}).items())),
        ),
        thresholds=tuple(int(t) for t in obj["thresholds"]),
        created_at=obj.get("created_at", ""),
        updated_at=obj.get("updated_at", ""),
    )


async def put(redis: aioredis.Redis, layout: KeyLayout, project: str, budget: Budget) -> Budget:
    """Store `budget`, replacing any of its id (whose created_at it keeps)."""
    key = layout.budgets(project)
    previous = await redis.hget(key, budget.budget_id)
    now = rfc3339_now()
    created = _decode(previous).created_at if previous else now
    stored = dataclasses.replace(budget, created_at=created, updated_at=now)
    await redis.hset(key, budget.budget_id, _encode(stored))
    return stored


async def get(redis: aioredis.Redis, layout: KeyLayout, project: str, budget_id: str) -> Budget | None:
    raw = await redis.hget(layout.budgets(project), budget_id)
    return None if raw is None else _decode(raw)


async def list_all(redis: aioredis.Redis, layout: KeyLayout, project: str) -> list[Budget]:
    """The project's budgets, by id."""
    raws = await redis.hgetall(layout.budgets(project))
    return [_decode(raws[budget_id]) for budget_id in sorted(raws, key=as_text)]


async def count(redis: aioredis.Redis, layout: KeyLayout, project: str) -> int:
    return int(await redis.hlen(layout.budgets(project)))


async def delete(redis: aioredis.Redis, layout: KeyLayout, project: str, budget_id: str) -> bool:
    return bool(await redis.hdel(layout.budgets(project), budget_id))


__all__ = ["count", "delete", "get", "list_all", "put"]

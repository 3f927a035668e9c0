"""`/entities/top`: entities ranked by cost, from the leaderboards and the entity rollups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infraprism.api.cache import ResponseCache, cached_answer, range_scope
from infraprism.api.planner import Filters, Grouping, plan_costs, plan_leaderboard
from infraprism.api.repository import Repository
from infraprism.api.sums import grand_total, read_sums
from infraprism.core.cell import COST, EVENTS, Cell
from infraprism.core.keys import SEP, Dimension
from infraprism.core.money import nano_to_usd


@dataclass(frozen=True, slots=True)
class LeaderboardService:
    repository: Repository
    cache: ResponseCache | None = None

    @cached_answer(range_scope)
    async def top_entities(
        self, start: date, end: date, entity_type: str | None, limit: int, descending: bool, tz: str
    ) -> dict[str, Any]:
        # Scores are doubles, exact for sums below 2**53 nano-dollars ($9M) per entity: they
        # only choose the candidates, and the entity rollups give the exact numbers and order.
        plan = plan_leaderboard(start, end, entity_type, tz)
        await self.repository.require_cells(plan.boards + plan.rollups + plan.edges, Dimension.ENTITY)
        members, cells_by_rollup = await self.repository.top_entity_candidates(plan, limit, descending)
        totals = [Cell.zero() for _ in members]
        for read, cells in zip(plan.rollups, cells_by_rollup, strict=True):
            for total, packed in zip(totals, cells, strict=True):
                if packed is not None:
                    total.add(Cell.unpack(packed), read.sign)
        ranked = []
        for member, total in zip(members, totals, strict=True):
            if not total[EVENTS]:
                continue  # counted only in subtracted buckets: no events in the range
            member_type, member_id = member.split(SEP, 1)
            if entity_type is not None and member_type != entity_type:
                continue  # an edge candidate (any type: the entity rollup is not by type)
            ranked.append((total[COST], member_type, member_id, total[EVENTS]))
        ranked.sort(key=lambda row: (-row[0] if descending else row[0], row[1], row[2]))
        return {
            "data": [
                _row(member_type, member_id, cost_nano, events, rank)
                for rank, (cost_nano, member_type, member_id, events) in enumerate(ranked[:limit], start=1)
            ]
        }

    @cached_answer(range_scope)
    async def one_entity(self, start: date, end: date, entity_type: str, entity_id: str, tz: str) -> dict[str, Any]:
        """The board of a scoped key: its entity alone, ranked first, when it has events in
        the range. Read from its own cells, so no other entity's member is touched."""
        plan = plan_costs(start, end, Filters(entity_type=entity_type, entity_id=entity_id), Grouping(), tz)
        (sums,) = await read_sums(self.repository, [plan])
        total = grand_total(sums)
        rows = [_row(entity_type, entity_id, total[COST], total[EVENTS], 1)] if total[EVENTS] else []
        return {"data": rows}


def _row(entity_type: str, entity_id: str, cost_nano: int, events: int, rank: int) -> dict[str, Any]:
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "total_cost": nano_to_usd(cost_nano),
        "total_events": events,
        "rank": rank,
    }


__all__ = ["LeaderboardService"]

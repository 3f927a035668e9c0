"""`/sessions`: a page of the sessions started in a range, newest first, and a summary of them all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infraprism.api.cache import ResponseCache, cached_answer
from infraprism.api.planner import instant_range_ms
from infraprism.api.repository import Repository
from infraprism.api.shaping import ratio
from infraprism.core.money import NANO_PER_USD, nano_to_usd
from infraprism.core.text import rfc3339_ms


@dataclass(frozen=True, slots=True)
class SessionsService:
    repository: Repository
    cache: ResponseCache | None = None

    # Cached by the data version: the session records have no bucket versions.
    @cached_answer(None)
    async def sessions(
        self,
        start: date,
        end: date,
        entity_type: str | None,
        entity_id: str | None,
        limit: int,
        hide_shared: bool,
        tz: str,
    ) -> dict[str, Any]:
        """`hide_shared`, for a scoped key: leave out the sessions whose id turns of other
        entities also carry, whose totals include theirs (a cached answer's arguments hold it,
        so a project key's answer is never served to a scoped key)."""
        start_ms, end_ms = instant_range_ms(start, end, tz)
        ids, records = await self.repository.read_sessions(start_ms, end_ms, entity_type, entity_id)
        total_turns = 0
        total_cost_nano = 0
        rows: list[dict[str, Any]] = []
        count = 0
        for session_id, record in zip(ids, records, strict=True):
            *counted, shared = record
            if shared and hide_shared:
                continue
            session_type, session_entity, started_ms, ended_ms, turns, cost_nano, input_tokens, output_tokens = counted
            count += 1
            turn_count, session_cost_nano = int(turns or 0), int(cost_nano or 0)
            total_turns += turn_count
            total_cost_nano += session_cost_nano
            if len(rows) < limit:
                rows.append(
                    {
                        "session_id": session_id,
                        "entity_type": session_type,
                        "entity_id": session_entity,
                        "started_at": rfc3339_ms(int(started_ms or 0)),
                        "ended_at": rfc3339_ms(int(ended_ms or 0)),
                        "turn_count": turn_count,
                        "total_cost": nano_to_usd(session_cost_nano),
                        "total_tokens": int(input_tokens or 0) + int(output_tokens or 0),
                    }
                )
        return {
            "data": rows,
            "summary": {
                "total_sessions": count,
                "avg_turns_per_session": ratio(total_turns, count),
                "avg_cost_per_session": ratio(total_cost_nano, count * NANO_PER_USD, 6),
            },
        }


__all__ = ["SessionsService"]

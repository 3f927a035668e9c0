"""`/anomalies` and dismissing one: the detector's records of the key's project, as stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infraprism.api.planner import instant_range_ms
from infraprism.api.repository import Repository


@dataclass(frozen=True, slots=True)
class AnomaliesService:
    # Not cached: anomaly writes (the detector's, a dismissal) move no version the response cache reads.
    repository: Repository

    async def anomalies(
        self, start: date, end: date, entity_type: str | None, entity_id: str | None, status: str | None, tz: str
    ) -> dict[str, Any]:
        start_ms, end_ms = instant_range_ms(start, end, tz)
        records = await self.repository.anomalies(start_ms, end_ms, entity_type, entity_id, status)
        return {"data": [record.public() for record in records]}

    async def dismiss(self, anomaly_id: str) -> dict[str, Any] | None:
        record = await self.repository.dismiss_anomaly(anomaly_id)
        return None if record is None else {"data": record.public()}


__all__ = ["AnomaliesService"]

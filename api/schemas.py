"""Response shapes, for the OpenAPI document (/docs) only.

Handlers build plain dicts and serialise them with orjson (validating a
10,000-row response through pydantic would cost more than the query); these
models describe exactly what they build, and the schemathesis test checks
the two agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

USD = "US dollars, the exact sum rounded to 6 decimals"


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable code: invalid_parameter, unauthorized, not_found, ...")
    message: str = Field(description="what went wrong; names the parameter for a 422")


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"error": {"code": "invalid_parameter", "message": "end_date: before start_date"}}
        }
    )
    error: ErrorBody


class Period(BaseModel):
    start: str = Field(description="YYYY-MM-DD", examples=["2025-01-01"])
    end: str = Field(description="YYYY-MM-DD", examples=["2025-01-31"])


class CostRow(BaseModel):
    """One row of /costs. Which identifying fields appear depends on group_by."""

    entity_type: str | None = Field(None, description="group_by=entity")
    entity_id: str | None = Field(None, description="group_by=entity")
    model: str | None = Field(None, description="group_by=model")
    provider: str | None = Field(None, description="group_by=model")
    period: str | None = Field(None, description="group_by=day|week|month: first day of the bucket, YYYY-MM-DD")
    tag_key: str | None = Field(None, description="group_by=tags.{key}")
    tag_value: str | None = Field(None, description="group_by=tags.{key}; null for cost without that tag")
    total_cost: float = Field(description=USD)
    total_events: int
    total_input_tokens: int
    total_output_tokens: int
    avg_latency_ms: float | None = Field(description="mean over events that reported latency; null if none")


class CostSummary(BaseModel):
    total_cost: float = Field(description=USD)
    total_events: int
    period: Period


class CostsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {
                        "entity_type": "customer",
                        "entity_id": "acme-corp",
                        "total_cost": 523.45,
                        "total_events": 15234,
                        "total_input_tokens": 2500000,
                        "total_output_tokens": 8500000,
                        "avg_latency_ms": 1150.0,
                    }
                ],
                "summary": {
                    "total_cost": 523.45,
                    "total_events": 15234,
                    "period": {"start": "2025-01-01", "end": "2025-01-31"},
                },
            }
        }
    )
    data: list[CostRow]
    summary: CostSummary


class TimeseriesPoint(BaseModel):
    timestamp: str = Field(description="first instant of the bucket, RFC 3339 UTC", examples=["2025-01-01T00:00:00Z"])
    cost: float = Field(description=USD)
    events: int


class TimeseriesResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {"timestamp": "2025-01-01T00:00:00Z", "cost": 12.34, "events": 523},
                    {"timestamp": "2025-01-02T00:00:00Z", "cost": 15.67, "events": 612},
                ],
                "interval": "day",
            }
        }
    )
    data: list[TimeseriesPoint]
    interval: str


class ModelRow(BaseModel):
    model: str
    provider: str
    total_cost: float = Field(description=USD)
    total_events: int
    total_input_tokens: int
    total_output_tokens: int
    avg_latency_ms: float | None
    percentage_of_total: float = Field(description="share of the scope's total cost, 1 decimal")


class ModelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {
                        "model": "gpt-4o",
                        "provider": "openai",
                        "total_cost": 450.0,
                        "total_events": 10000,
                        "total_input_tokens": 2000000,
                        "total_output_tokens": 6000000,
                        "avg_latency_ms": 1200.0,
                        "percentage_of_total": 54.2,
                    }
                ]
            }
        }
    )
    data: list[ModelRow]


class TopEntity(BaseModel):
    entity_type: str
    entity_id: str
    total_cost: float = Field(description=USD)
    total_events: int
    rank: int = Field(ge=1)


class TopEntitiesResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {
                        "entity_type": "customer",
                        "entity_id": "acme-corp",
                        "total_cost": 523.45,
                        "total_events": 15234,
                        "rank": 1,
                    },
                    {
                        "entity_type": "customer",
                        "entity_id": "globex",
                        "total_cost": 312.2,
                        "total_events": 8921,
                        "rank": 2,
                    },
                ]
            }
        }
    )
    data: list[TopEntity]


class SessionRow(BaseModel):
    session_id: str
    entity_type: str
    entity_id: str
    started_at: str
    ended_at: str
    turn_count: int
    total_cost: float = Field(description=USD)
    total_tokens: int = Field(description="input plus output tokens")


class SessionSummary(BaseModel):
    total_sessions: int
    avg_turns_per_session: float | None = Field(description="1 decimal; null when no session matches")
    avg_cost_per_session: float | None = Field(description="USD, 6 decimals; null when no session matches")


class SessionsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {
                        "session_id": "550e8400-e29b-41d4-a716-446655440000",
                        "entity_type": "customer",
                        "entity_id": "acme-corp",
                        "started_at": "2025-01-15T10:00:00Z",
                        "ended_at": "2025-01-15T10:15:00Z",
                        "turn_count": 5,
                        "total_cost": 0.0234,
                        "total_tokens": 3500,
                    }
                ],
                "summary": {
                    "total_sessions": 1523,
                    "avg_turns_per_session": 4.2,
                    "avg_cost_per_session": 0.0185,
                },
            }
        }
    )
    data: list[SessionRow]
    summary: SessionSummary


class Anomaly(BaseModel):
    id: str
    detected_at: str
    entity_type: str
    entity_id: str
    type: str
    severity: str
    description: str
    expected_value: float
    actual_value: float
    status: str


ANOMALY_EXAMPLE: dict[str, Any] = {
    "id": "anomaly_123",
    "detected_at": "2025-01-15T10:30:00Z",
    "entity_type": "customer",
    "entity_id": "acme-corp",
    "type": "cost_spike",
    "severity": "high",
    "description": "Cost increased 340% compared to 7-day average",
    "expected_value": 12.5,
    "actual_value": 55.0,
    "status": "active",
}


class AnomaliesResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"data": [ANOMALY_EXAMPLE]}})
    data: list[Anomaly]


class DismissResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"data": {**ANOMALY_EXAMPLE, "status": "dismissed"}}})
    data: Anomaly


class ComparePeriod(BaseModel):
    start: str
    end: str
    total_cost: float = Field(description=USD)
    total_events: int


class Changes(BaseModel):
    cost_change: float = Field(description="period1 minus period2, USD")
    cost_change_percent: float | None = Field(description="relative to period2, 1 decimal; null when period2 is 0")
    events_change: int
    events_change_percent: float | None


class CompareResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "period1": {
                    "start": "2025-01-01",
                    "end": "2025-01-15",
                    "total_cost": 450.0,
                    "total_events": 12000,
                },
                "period2": {
                    "start": "2024-12-16",
                    "end": "2024-12-31",
                    "total_cost": 380.0,
                    "total_events": 10500,
                },
                "changes": {
                    "cost_change": 70.0,
                    "cost_change_percent": 18.4,
                    "events_change": 1500,
                    "events_change_percent": 14.3,
                },
            }
        }
    )
    period1: ComparePeriod
    period2: ComparePeriod
    changes: Changes


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    redis: str = Field(examples=["ok"])

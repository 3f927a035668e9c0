"""Response shapes, for the OpenAPI document (/docs) and the schemathesis test.

Handlers build plain dicts and serialise them with orjson (validating a
10,000-row response through pydantic would cost more than the query); these
models describe exactly what they build, and the schemathesis test checks
the two agree. So that a wrong answer fails that check, every field a
handler always writes is required, no model allows fields it does not name
(`additionalProperties: false`), and /costs has one row shape per grouping.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from infraprism.core.events import MAX_LENGTH as EVENT_TEXT_LENGTH
from infraprism.core.price_book import MAX_RATE_PER_MTOK, RATE_FIELDS, InvalidPrice, parse_discount, parse_rate
from infraprism.stores import apikeys
from infraprism.stores.anomaly_store import AnomalyStatus, AnomalyType, Severity

USD = "US dollars, the exact sum rounded to 6 decimals"
DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# RFC 3339 UTC as the API writes it (infraprism.core.text): seconds, milliseconds only when non-zero.
INSTANT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3})?Z$"
# A bucket's first instant in local time: whole minutes (Lord Howe's shortened hour starts
# at :30), with the zone's offset then, or Z in UTC.
BUCKET_START = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00(Z|[+-][0-9]{2}:[0-9]{2})$"
ZONE = Field(description="the IANA zone the days are local to", examples=["UTC", "America/Los_Angeles"], max_length=64)


class Strict(BaseModel):
    """A body or part of one with exactly the fields it names."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Strict):
    code: str = Field(description="machine-readable code: invalid_parameter, unauthorized, not_found, ...")
    message: str = Field(description="what went wrong; names the parameter for a 422")
    retry_after: int | None = Field(
        default=None, description="for a 429: seconds until the key may try again (also the Retry-After header)"
    )


class ErrorEnvelope(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"error": {"code": "invalid_parameter", "message": "end_date: before start_date"}}
        }
    )
    error: ErrorBody


class Period(Strict):
    start: str = Field(description="YYYY-MM-DD", examples=["2025-01-01"], pattern=DAY)
    end: str = Field(description="YYYY-MM-DD", examples=["2025-01-31"], pattern=DAY)
    tz: str = ZONE


class CostMetrics(Strict):
    """The five metric fields every /costs row ends with."""

    total_cost: float = Field(ge=0, description=USD)
    total_events: int = Field(ge=0)
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    avg_latency_ms: float | None = Field(ge=0, description="mean over events that reported latency; null if none")


class TotalsRow(CostMetrics):
    """No group_by: the one row of totals, no identifying field."""


class PeriodRow(CostMetrics):
    """group_by=day|week|month."""

    period: str = Field(pattern=DAY, description="first day of the bucket, YYYY-MM-DD (weeks start on Monday)")


class EntityRow(CostMetrics):
    """group_by=entity."""

    entity_type: str
    entity_id: str


class ModelCostRow(CostMetrics):
    """group_by=model."""

    model: str
    provider: str


class TagRow(CostMetrics):
    """group_by=tags.{key}."""

    tag_key: str = Field(description="the key of group_by=tags.{key}")
    tag_value: str | None = Field(description="null for the cost without that tag")


class CostSummary(Strict):
    total_cost: float = Field(ge=0, description=USD)
    total_events: int = Field(ge=0)
    period: Period


class CostsTotals(Strict):
    """/costs without group_by."""

    data: list[TotalsRow] = Field(min_length=1, max_length=1)
    summary: CostSummary


class CostsByPeriod(Strict):
    """/costs?group_by=day|week|month."""

    data: list[PeriodRow]
    summary: CostSummary


class CostsByEntity(Strict):
    """/costs?group_by=entity."""

    data: list[EntityRow]
    summary: CostSummary


class CostsByModel(Strict):
    """/costs?group_by=model."""

    data: list[ModelCostRow]
    summary: CostSummary


class CostsByTag(Strict):
    """/costs?group_by=tags.{key}."""

    data: list[TagRow]
    summary: CostSummary


class CostsResponse(RootModel[CostsTotals | CostsByPeriod | CostsByEntity | CostsByModel | CostsByTag]):
    """One of the groupings: every row of a response has the same shape, with the
    identifying fields of its group_by, and no other."""

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
                    "period": {"start": "2025-01-01", "end": "2025-01-31", "tz": "UTC"},
                },
            }
        }
    )


class TimeseriesPoint(Strict):
    timestamp: str = Field(
        pattern=BUCKET_START,
        description="first instant of the bucket, RFC 3339 with the zone's offset then (Z in UTC)",
        examples=["2025-01-01T00:00:00Z", "2025-03-10T00:00:00-07:00"],
    )
    cost: float = Field(ge=0, description=USD)
    events: int = Field(ge=0)


class TimeseriesResponse(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [
                    {"timestamp": "2025-01-01T00:00:00Z", "cost": 12.34, "events": 523},
                    {"timestamp": "2025-01-02T00:00:00Z", "cost": 15.67, "events": 612},
                ],
                "interval": "day",
                "tz": "UTC",
            }
        }
    )
    data: list[TimeseriesPoint]
    interval: Literal["hour", "day", "week", "month"]
    tz: str = ZONE


class ModelRow(Strict):
    model: str
    provider: str
    total_cost: float = Field(ge=0, description=USD)
    total_events: int = Field(ge=0)
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    avg_latency_ms: float | None = Field(ge=0)
    percentage_of_total: float = Field(ge=0, le=100, description="share of the scope's total cost, 1 decimal")
    price_source: Literal["catalog", "override", "supplied", "mixed"] | None = Field(
        description=(
            "where the costs of the project's events of this model in the range came from: the events' own "
            "`cost`, the genai-prices catalog, a price override, or more than one of those; null when the "
            "events were aggregated before price sources were recorded (`infraprism rebuild` records them)"
        )
    )


class ModelsResponse(Strict):
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
                        "price_source": "supplied",
                    }
                ]
            }
        }
    )
    data: list[ModelRow]


class TopEntity(Strict):
    entity_type: str
    entity_id: str
    total_cost: float = Field(ge=0, description=USD)
    total_events: int = Field(ge=0)
    rank: int = Field(ge=1)


class TopEntitiesResponse(Strict):
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
    data: list[TopEntity] = Field(max_length=100)


class SessionRow(Strict):
    session_id: str
    entity_type: str
    entity_id: str
    started_at: str = Field(pattern=INSTANT)
    ended_at: str = Field(pattern=INSTANT)
    turn_count: int = Field(ge=1)
    total_cost: float = Field(ge=0, description=USD)
    total_tokens: int = Field(ge=0, description="input plus output tokens")


class SessionSummary(Strict):
    total_sessions: int = Field(ge=0)
    avg_turns_per_session: float | None = Field(ge=0, description="1 decimal; null when no session matches")
    avg_cost_per_session: float | None = Field(ge=0, description="USD, 6 decimals; null when no session matches")


class SessionsResponse(Strict):
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
    data: list[SessionRow] = Field(max_length=1000)
    summary: SessionSummary


class Anomaly(Strict):
    id: str
    detected_at: str = Field(pattern=INSTANT)
    entity_type: str
    entity_id: str
    type: AnomalyType
    severity: Severity
    description: str
    expected_value: float
    actual_value: float
    status: AnomalyStatus
    budget_id: str | None = Field(default=None, description="budget alerts: the budget")
    threshold: int | None = Field(default=None, description="budget alerts: the percentage reached")


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


class AnomaliesResponse(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"data": [ANOMALY_EXAMPLE]}})
    data: list[Anomaly]


class DismissResponse(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"data": {**ANOMALY_EXAMPLE, "status": "dismissed"}}})
    data: Anomaly


class ComparePeriod(Strict):
    start: str = Field(pattern=DAY)
    end: str = Field(pattern=DAY)
    tz: str = ZONE
    total_cost: float = Field(ge=0, description=USD)
    total_events: int = Field(ge=0)


class Changes(Strict):
    cost_change: float = Field(description="period1 minus period2, USD")
    cost_change_percent: float | None = Field(description="relative to period2, 1 decimal; null when period2 is 0")
    events_change: int
    events_change_percent: float | None


class CompareResponse(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "period1": {
                    "start": "2025-01-01",
                    "end": "2025-01-15",
                    "tz": "UTC",
                    "total_cost": 450.0,
                    "total_events": 12000,
                },
                "period2": {
                    "start": "2024-12-16",
                    "end": "2024-12-31",
                    "tz": "UTC",
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


class Health(Strict):
    status: Literal["ok"] = Field(examples=["ok"])
    redis: Literal["ok"] = Field(examples=["ok"])


# --- /v1/keys ------------------------------------------------------------------------------------

ENTITY_TYPE = Field(
    min_length=1, max_length=apikeys.MAX_ENTITY_TYPE_LENGTH, examples=["customer"], description="the entity's type"
)
ENTITY_ID = Field(
    min_length=1, max_length=apikeys.MAX_ENTITY_ID_LENGTH, examples=["acme-corp"], description="the entity's id"
)


class KeyScope(Strict):
    entity_type: str = ENTITY_TYPE
    entity_id: str = ENTITY_ID


class KeyCreate(Strict):
    """The body of `POST /v1/keys`: the one entity the new key sees, how long it lives, a label."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "entity_type": "customer",
                "entity_id": "acme-corp",
                "expires_in_seconds": 86400,
                "name": "acme dashboard",
            }
        },
    )
    entity_type: str = ENTITY_TYPE
    entity_id: str = ENTITY_ID
    expires_in_seconds: int | None = Field(
        default=None,
        ge=1,
        le=apikeys.MAX_EXPIRES_IN_SECONDS,
        description="seconds the key lives (at most ten years); null: forever",
    )
    name: str | None = Field(
        default=None, max_length=apikeys.MAX_NAME_LENGTH, description="a label to recognise the key by"
    )


class MintedKey(Strict):
    id: str = Field(examples=["key_3f9a0c1d2e4b5a69"])
    key: str = Field(description="the secret: shown this once, only its hash is stored", examples=["ip-..."])
    scope: KeyScope
    expires_at: str | None = Field(pattern=INSTANT, description="RFC 3339 UTC; null: never")
    name: str | None


class KeyInfo(Strict):
    id: str
    name: str | None
    scope: KeyScope | None = Field(description="the entity a scoped key sees; null for a project key")
    created_at: str | None = Field(pattern=INSTANT)
    expires_at: str | None = Field(pattern=INSTANT, description="null: never")
    revoked_at: str | None = Field(pattern=INSTANT)
    status: Literal["active", "expired", "revoked"]


class KeysResponse(Strict):
    data: list[KeyInfo]
    total: int = Field(description="the keys the project holds, all pages together")


# --- /v1/budgets ---------------------------------------------------------------------------------

BUDGET_ID = r"^[A-Za-z0-9._-]{1,64}$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
# As the `tags` filter of /costs can write them (key:value,...), so that a budget's scope is
# always a query /costs answers too.
TagKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f,:]+$")]
TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f,]+$")]
Threshold = Annotated[int, Field(ge=1, le=1000, strict=True)]


class BudgetScopeBody(Strict):
    """Any of these, all of which an event must match; none: the whole project."""

    # As the event contract has them: no control characters, and no entity type `*`.
    entity_type: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=_NO_CONTROL, examples=["customer"]
    )
    entity_id: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=_NO_CONTROL, examples=["acme-corp"]
    )
    model: str | None = Field(default=None, min_length=1, max_length=128, pattern=_NO_CONTROL, examples=["gpt-4o"])
    tags: dict[TagKey, TagValue] | None = Field(
        default=None, max_length=32, description="tag key -> value, all must match", examples=[{"feature": "chatbot"}]
    )

    @field_validator("entity_type")
    @classmethod
    def _not_all_types(cls, value: str | None) -> str | None:
        if value == "*":
            raise ValueError("'*' is not an entity type: no event can have it")
        return value


class BudgetBody(Strict):
    """The body of `PUT /v1/budgets/{budget_id}`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "Acme monthly",
                "amount": 500.0,
                "period": "month",
                "scope": {"entity_type": "customer", "entity_id": "acme-corp"},
                "thresholds": [50, 80, 100],
            }
        },
    )
    name: str = Field(min_length=1, max_length=128)
    amount: float = Field(gt=0, le=1_000_000_000, strict=True, description="USD per period, at least $0.000000001")
    period: Literal["day", "week", "month"] = Field(description="local to the project's reporting zone")
    scope: BudgetScopeBody = Field(default_factory=BudgetScopeBody)
    thresholds: list[Threshold] = Field(
        default_factory=lambda: [80, 100],
        min_length=1,
        max_length=20,
        description="percentages of the amount, 1-1000; an alert is raised as each is reached",
    )


class BudgetOut(Strict):
    id: str = Field(pattern=BUDGET_ID)
    name: str
    amount: float
    period: Literal["day", "week", "month"]
    scope: BudgetScopeBody
    thresholds: list[int]
    created_at: str = Field(pattern=INSTANT)
    updated_at: str = Field(pattern=INSTANT)


class BudgetPeriodOut(Strict):
    start: str = Field(pattern=DAY)
    end: str = Field(pattern=DAY)
    tz: str = ZONE


class BudgetStatus(Strict):
    budget: BudgetOut
    period: BudgetPeriodOut
    spent: float = Field(description=USD)
    remaining: float = Field(description="amount - spent; negative once over")
    percent_used: float | None
    forecast: float = Field(description="the spend expected by the period's end (docs/budgets.md)")
    forecast_percent: float | None
    thresholds_crossed: list[int]


class BudgetsResponse(Strict):
    data: list[BudgetOut]


class BudgetStatusError(Strict):
    """A budget whose status could not be answered exactly, and why (the envelope's error)."""

    budget: BudgetOut
    error: ErrorBody


class BudgetStatusesResponse(Strict):
    data: list[BudgetStatus | BudgetStatusError]


# --- /v1/prices ----------------------------------------------------------------------------------

# As the event contract has `model` and `provider`: 1-128 characters, no control characters.
TEXT_PATTERN = _NO_CONTROL
MODEL_MAX_LENGTH = EVENT_TEXT_LENGTH["model"]
_RATE_DESCRIPTION = (
    "US dollars per million tokens: a JSON number from 0 to 1,000,000 with at most 18 decimals, read exactly"
)


def _number_or_null(**bounds: float) -> WithJsonSchema:
    # The fields are Decimals, read from the JSON text exactly (api/price_routes.py), but on the
    # wire they are plain JSON numbers; pydantic would document a Decimal as number-or-string.
    return WithJsonSchema({"anyOf": [{"type": "number", **bounds}, {"type": "null"}]})


RateIn = Annotated[Decimal | None, _number_or_null(minimum=0, maximum=float(MAX_RATE_PER_MTOK))]
DiscountIn = Annotated[Decimal | None, _number_or_null(exclusiveMinimum=0, maximum=100)]


class PriceBody(Strict):
    """The body of `PUT /v1/prices/{model}`: the project's own rates for the model, a discount
    on the catalog's price, or both (a discount on its own rates)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "provider": "openai",
                "input_per_mtok": 2.0,
                "output_per_mtok": 8.0,
                "cache_read_per_mtok": 0.5,
                "effective_from": "2025-03-01",
            }
        },
    )
    provider: str | None = Field(
        default=None,
        min_length=1,
        max_length=EVENT_TEXT_LENGTH["provider"],
        pattern=TEXT_PATTERN,
        description="only the model's events of this provider; null: any provider (one naming the event's wins)",
        examples=["openai"],
    )
    input_per_mtok: RateIn = Field(default=None, description=_RATE_DESCRIPTION)
    output_per_mtok: RateIn = Field(default=None, description=_RATE_DESCRIPTION)
    cache_read_per_mtok: RateIn = Field(default=None, description=f"{_RATE_DESCRIPTION}; null: the input rate")
    cache_write_per_mtok: RateIn = Field(default=None, description=f"{_RATE_DESCRIPTION}; null: the input rate")
    discount_percent: DiscountIn = Field(
        default=None,
        description="percent off: more than 0, at most 100, at most 6 decimals; alone it discounts the catalog's price",
    )
    effective_from: str | None = Field(
        default=None,
        pattern=DAY,
        description="YYYY-MM-DD, from local midnight in the project's reporting zone; null: the beginning of time",
        examples=["2025-03-01"],
    )

    @field_validator(*RATE_FIELDS, mode="plain")
    @classmethod
    def _rate(cls, value: Any, info: ValidationInfo) -> Decimal | None:
        name = info.field_name or "rate"
        return _exact(value, lambda checked: parse_rate(name, checked))

    @field_validator("discount_percent", mode="plain")
    @classmethod
    def _discount(cls, value: Any) -> Decimal | None:
        return _exact(value, parse_discount)


def _exact(value: Any, parse: Callable[[Any], Decimal | None]) -> Decimal | None:
    """A number of the body through the price book's own parser (the CLI's checks and
    messages); text is refused, as `amount` of a budget is, so one form means one thing."""
    if isinstance(value, str):
        raise PydanticCustomError("invalid_price", "must be a JSON number, not text: {value}", {"value": value[:40]})
    try:
        return parse(value)
    except InvalidPrice as exc:
        raise PydanticCustomError("invalid_price", "{message}", {"message": exc.message}) from None


class PriceOut(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "model": "gpt-4o",
                "provider": "openai",
                "effective_from": "2025-03-01",
                "effective_from_ms": 1740787200000,
                "input_per_mtok": 2.0,
                "output_per_mtok": 8.0,
                "cache_read_per_mtok": 0.5,
                "cache_write_per_mtok": None,
                "discount_percent": None,
                "set_at": "2025-02-20T09:00:00Z",
            }
        }
    )
    model: str
    provider: str | None = Field(description="null: any provider")
    effective_from: str | None = Field(pattern=DAY, description="the day as set; null: the beginning of time")
    effective_from_ms: int = Field(
        description="the first instant, epoch ms UTC: local midnight of `effective_from` in the project's zone "
        "when it was set; 0 for null"
    )
    input_per_mtok: float | None = Field(ge=0, description="the exact decimal as set; null: a discount on the catalog")
    output_per_mtok: float | None = Field(ge=0)
    cache_read_per_mtok: float | None = Field(ge=0, description="null: the input rate")
    cache_write_per_mtok: float | None = Field(ge=0, description="null: the input rate")
    discount_percent: float | None = Field(gt=0, le=100)
    set_at: str | None = Field(pattern=INSTANT)


class PricesResponse(Strict):
    data: list[PriceOut]

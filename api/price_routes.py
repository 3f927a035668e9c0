"""`/v1/prices`: a project key sets the project's own prices of models (docs/api.md#prices).

An override prices the project's events of its model that carry no `cost` and are
aggregated after the change (core/price_book.py says which price wins); `infraprism
reprice` re-prices what was aggregated before. A scoped key gets 403 `forbidden`: prices
are the project's business, not its customer's.

Rates are exact decimals of up to 18 places. A float keeps 17 significant digits, so a
body's JSON numbers are read straight into decimals (`ExactNumbersRoute`), and answers
write each rate back as a JSON number of the same digits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from infraprism.api.deps import ProjectKeyDep, RepositoryDep
from infraprism.api.errors import Conflict, InvalidParameter, NotFound
from infraprism.api.params import DATE_PATTERN, parse_date
from infraprism.api.routes import BODY_ERRORS, CSV_CONTENT, ERRORS, Format, FormatParam, respond
from infraprism.api.schemas import (
    MODEL_MAX_LENGTH,
    TEXT_PATTERN,
    ErrorEnvelope,
    PriceBody,
    PriceOut,
    PricesResponse,
)
from infraprism.core.events import MAX_LENGTH as EVENT_TEXT_LENGTH
from infraprism.core.price_book import RATE_FIELDS, InvalidPrice, PriceOverride
from infraprism.stores import StoreError, prices
from infraprism.stores.prices import NoSuchOverride, UnknownProject


class _ExactNumbersRequest(Request):
    """A request whose JSON body keeps its numbers' digits: `2.5` is Decimal("2.5"), not a
    float. Integers too, so a 5,000-digit one is a 422 naming its field, not Python's int
    parsing limit."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal, parse_int=Decimal)
        return self._json


class ExactNumbersRoute(APIRoute):
    """A route that reads its JSON body with `_ExactNumbersRequest` (FastAPI's hook for a
    custom request class). Broken JSON is still FastAPI's 422, as on every other route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_numbers_handler(request: Request) -> Response:
            return await handler(_ExactNumbersRequest(request.scope, request.receive))

        return exact_numbers_handler


router = APIRouter(prefix="/v1/prices", tags=["prices"], responses=ERRORS, route_class=ExactNumbersRoute)

PRICE_FIELDS = (*RATE_FIELDS, "discount_percent")
PRICE_COLUMNS = ["model", "provider", "effective_from", "effective_from_ms", *PRICE_FIELDS, "set_at"]
# `path`: a model name may hold `/` (`meta-llama/Llama-3-70b`); the whole rest of the path is it.
ModelParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MODEL_MAX_LENGTH,
        pattern=TEXT_PATTERN,
        description="the events' `model`, exactly; `/` and `:` need no escaping, `%`, `?` and `#` do",
        examples=["ft:gpt-4o:acme", "meta-llama/Llama-3-70b"],
    ),
]
ReplaceParam = Annotated[
    bool,
    Query(description="replace an override of the same model, provider and effective day (default: 409 `conflict`)"),
]
ProviderParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=EVENT_TEXT_LENGTH["provider"],
        pattern=TEXT_PATTERN,
        description="only the overrides naming this provider (default: every provider's and the general ones)",
        examples=["openai"],
    ),
]
EffectiveFromParam = Annotated[
    str | None,
    Query(
        pattern=DATE_PATTERN,
        description="only the override effective from this day, YYYY-MM-DD in the project's reporting zone",
        examples=["2025-03-01"],
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no override of the model matches"}
}


def _decimal_text(rate: Decimal) -> str:
    """Fixed-point digits, never an exponent: Decimal("1E+1") is `10`, 10**-18 is `0.000000000000000001`."""
    return format(rate, "f")


def _exact_number(value: Any) -> orjson.Fragment:
    # orjson writes no Decimal; a fragment is copied into the JSON as it is, digits and all.
    if isinstance(value, Decimal):
        return orjson.Fragment(_decimal_text(value))
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def public_price(override: PriceOverride) -> dict[str, Any]:
    """An override as answered; its rates stay Decimals until they are written."""
    return {
        "model": override.model,
        "provider": override.provider,
        "effective_from": override.effective_from,
        "effective_from_ms": override.effective_from_ms,
        **{name: getattr(override, name) for name in PRICE_FIELDS},
        "set_at": override.set_at,
    }


def price_cells(price: dict[str, Any]) -> dict[str, Any]:
    """A price as one CSV row: each rate its exact digits."""
    return {**price, **{name: None if price[name] is None else _decimal_text(price[name]) for name in PRICE_FIELDS}}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body, default=_exact_number), media_type="application/json")


@router.get(
    "",
    response_model=None,
    responses={
        200: {
            "model": PricesResponse,
            "description": "the overrides, by model, provider and effective day",
            "content": CSV_CONTENT,
        }
    },
)
async def list_prices(_key: ProjectKeyDep, repository: RepositoryDep, fmt: FormatParam = Format.JSON) -> Response:
    """The project's price overrides, by model, provider (the general one first) and effective day."""
    found = await prices.list_overrides(repository.redis, repository.layout, repository.project)
    body = {"data": [public_price(o) for o in found]}
    if fmt is Format.CSV:
        return respond({"data": [price_cells(row) for row in body["data"]]}, fmt, PRICE_COLUMNS)
    return _json(body)


@router.put(
    "/{model:path}",
    response_model=None,
    responses={
        200: {"model": PriceOut, "description": "the stored override"},
        404: {"model": ErrorEnvelope, "description": "the key's project is unknown to the price store"},
        409: {
            "model": ErrorEnvelope,
            "description": "an override of the same model, provider and effective day exists (`replace=true` "
            "replaces it), or the project holds 10,000 overrides",
        },
        **BODY_ERRORS,
    },
)
async def put_price(
    _key: ProjectKeyDep,
    repository: RepositoryDep,
    model: ModelParam,
    body: PriceBody,
    replace: ReplaceParam = False,
) -> Response:
    """Set the project's price of `model` from `effective_from` (local midnight in the
    project's reporting zone; absent: the beginning of time) until the next override of the
    same model and provider.

    Give `input_per_mtok` and `output_per_mtok` (cache rates default to the input rate), or
    `discount_percent` alone for a discount on the catalog's price, or both for a discount on
    your own rates. Events aggregated from now on are priced with it; `infraprism reprice`
    re-prices those aggregated before."""
    day = None if body.effective_from is None else parse_date("effective_from", body.effective_from)
    redis, layout, project = repository.redis, repository.layout, repository.project
    try:
        override = PriceOverride(
            model=model,
            provider=body.provider,
            effective_from=None if day is None else day.isoformat(),
            effective_from_ms=await prices.effective_from_ms(redis, layout, project, day),
            input_per_mtok=body.input_per_mtok,
            output_per_mtok=body.output_per_mtok,
            cache_read_per_mtok=body.cache_read_per_mtok,
            cache_write_per_mtok=body.cache_write_per_mtok,
            discount_percent=body.discount_percent,
        )
    except InvalidPrice as exc:  # a combination of fields no price is made of
        raise InvalidParameter(exc.field, exc.message) from None
    try:
        stored = await prices.set_override(redis, layout, project, override, replace=replace)
    except UnknownProject as exc:
        raise NotFound(str(exc)) from None
    except InvalidPrice as exc:
        # The override itself was checked above: what the store refuses clashes with what it
        # holds (an overlap, or a full project).
        hint = " with ?replace=true" if exc.field == "effective_from" else ""
        raise Conflict(f"{exc}{hint}") from None
    except prices.CorruptPriceBook:
        raise  # a 503 (api/errors.py): nothing can be answered until it is repaired
    except StoreError as exc:  # other writes kept landing first: nothing was stored
        raise Conflict(str(exc)) from None
    return _json(public_price(stored))


@router.delete(
    "/{model:path}",
    status_code=204,
    response_model=None,
    responses={204: {"description": "deleted"}, **NOT_FOUND},
)
async def delete_price(
    _key: ProjectKeyDep,
    repository: RepositoryDep,
    model: ModelParam,
    provider: ProviderParam = None,
    effective_from: EffectiveFromParam = None,
) -> Response:
    """Delete the model's overrides: every one, or those naming `provider`, or the one
    effective from `effective_from`. Its events are priced by what applies without it (an
    earlier override, or the catalog) from the next aggregated on."""
    redis, layout, project = repository.redis, repository.layout, repository.project
    day = None if effective_from is None else parse_date("effective_from", effective_from)
    try:
        await prices.delete_overrides(redis, layout, project, model, provider=provider, effective_from=day)
    except NoSuchOverride as exc:
        raise NotFound(str(exc)) from None
    return Response(status_code=204)

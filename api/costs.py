"""`/costs`, `/costs/timeseries`, `/models` and `/compare`: the planner's plans summed exactly, shaped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infraprism.api.cache import (
    AnswerScope,
    BucketCache,
    ResponseCache,
    cached_answer,
    range_scope,
    range_version_fields,
    utc_days,
)
from infraprism.api.dimension_scan import is_bulk_scan, scan_dimension
from infraprism.api.planner import Filters, GroupBy, Grouping, Interval, Plan, plan_costs, plan_timeseries
from infraprism.api.repository import Repository
from infraprism.api.shaping import DIMENSION_FIELDS, dimension_rows, metric_fields, ratio, sorted_groups
from infraprism.api.sums import by_group, by_period, grand_total, read_sums
from infraprism.core.cell import COST, EVENTS, Cell
from infraprism.core.keys import Dimension
from infraprism.core.money import nano_to_usd


def _costs_body(rows: list[dict[str, Any]], total: Cell, start: date, end: date, tz: str) -> dict[str, Any]:
    return {
        "data": rows,
        "summary": {
            "total_cost": nano_to_usd(total[COST]),
            "total_events": total[EVENTS],
            "period": {"start": start.isoformat(), "end": end.isoformat(), "tz": tz},
        },
    }


def _period_totals(period: tuple[date, date], cell: Cell, tz: str) -> dict[str, Any]:
    start, end = period
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "tz": tz,
        "total_cost": nano_to_usd(cell[COST]),
        "total_events": cell[EVENTS],
    }


@dataclass(frozen=True, slots=True)
class CostsService:
    repository: Repository
    cache: ResponseCache | None = None

    def _costs_scope(self, start: date, end: date, filters: Filters, grouping: Grouping, tz: str) -> AnswerScope:
        # Only the column path takes parsed buckets from the bucket cache.
        plan = plan_costs(start, end, filters, grouping, tz)
        keys = self.repository.rollup_keys(plan) if is_bulk_scan(plan) else []
        return AnswerScope(range_version_fields(utc_days(start, end, tz)), keys)

    def _compare_scope(
        self, period1: tuple[date, date], period2: tuple[date, date], _filters: Filters, tz: str
    ) -> AnswerScope:
        return AnswerScope(range_version_fields(utc_days(*period1, tz), utc_days(*period2, tz)))

    @cached_answer(_costs_scope)
    async def costs(self, start: date, end: date, filters: Filters, grouping: Grouping, tz: str) -> dict[str, Any]:
        plan = plan_costs(start, end, filters, grouping, tz)
        if is_bulk_scan(plan):
            await self.repository.require_cells(plan.buckets, plan.dimension)  # read_sums checks the other path
            body = await self._costs_by_columns(plan, start, end, tz)
            if body is not None:
                return body
        (sums,) = await read_sums(self.repository, [plan])
        total = grand_total(sums)
        kind = grouping.kind
        rows: list[dict[str, Any]]
        if kind is GroupBy.NONE:
            rows = [metric_fields(total)]
        elif kind in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH):
            periods: dict[Any, Cell] = by_period(sums)  # every bucket of a time grouping has a period
            rows = [metric_fields(periods[period], {"period": period}) for period in sorted(periods)]
        else:
            ordered = sorted_groups(by_group(sums))
            if kind is GroupBy.ENTITY:
                rows = [metric_fields(c, {"entity_type": g[0], "entity_id": g[1]}) for g, c in ordered]
            elif kind is GroupBy.MODEL:
                rows = [metric_fields(c, {"model": g[0], "provider": g[1]}) for g, c in ordered]
            else:
                rows = [metric_fields(c, {"tag_key": grouping.tag_key, "tag_value": g[0]}) for g, c in ordered]
        return _costs_body(rows, total, start, end, tz)

    async def _costs_by_columns(self, plan: Plan, start: date, end: date, tz: str) -> dict[str, Any] | None:
        """`/costs` by entity or model: thousands of rows, summed and shaped a column at a
        time, and only the changed rows shaped again. None when the sums must be ints."""
        buckets = self.cache.buckets if self.cache is not None else None
        scanned = await scan_dimension(self.repository, buckets if buckets is not None else BucketCache(), plan)
        if scanned is None:
            return None
        # Rows depend on their group and sums alone, so they stay right across a rebuild;
        # keyed by its generation all the same, so that a rebuild (or the bench's cold
        # column) starts from nothing.
        first_key = self.repository.rollup_keys(plan)[0]
        generation, _ = self.repository.bucket_tokens.get(first_key, (None, None))
        query = (self.repository.project, generation, start, end, plan.filters, plan.grouping, tz)
        previous = buckets.shaped(query) if buckets is not None else None
        rows, total, shaped = dimension_rows(*scanned, DIMENSION_FIELDS[plan.grouping.kind], previous)
        if buckets is not None:
            buckets.keep_shaped(query, shaped)
        return _costs_body(rows, total, start, end, tz)

    @cached_answer(range_scope)
    async def timeseries(self, start: date, end: date, filters: Filters, interval: Interval, tz: str) -> dict[str, Any]:
        plan = plan_timeseries(start, end, filters, interval, tz)
        (sums,) = await read_sums(self.repository, [plan])
        periods = by_period(sums)
        zero = Cell.zero()
        rows = []
        for label in plan.periods:  # each period is keyed by its RFC 3339 label
            cell = periods.get(label, zero)
            rows.append({"timestamp": label, "cost": nano_to_usd(cell[COST]), "events": cell[EVENTS]})
        return {"data": rows, "interval": interval.value, "tz": tz}

    @cached_answer(range_scope)
    async def models(self, start: date, end: date, filters: Filters, tz: str) -> dict[str, Any]:
        plan = plan_costs(start, end, filters, Grouping(GroupBy.MODEL), tz)
        # Which prices the project's events of each model used, over the same buckets. The
        # PRICE_SOURCE rollup is per model: with entity or tag filters it still speaks of the
        # project's events of the model, which is what a price list is about.
        sources_plan = Plan(Dimension.PRICE_SOURCE, plan.buckets, None, Filters(), Grouping(GroupBy.MODEL))
        sums, source_sums = await read_sums(self.repository, [plan, sources_plan])
        cells_by_model = by_group(sums)
        sources = _price_sources(by_group(source_sums))
        total_cost_nano = sum(cell[COST] for cell in cells_by_model.values())
        rows = []
        for (model, provider), cell in sorted_groups(cells_by_model):
            share = ratio(cell[COST] * 100, total_cost_nano)
            rows.append(
                {
                    "model": model,
                    "provider": provider,
                    **metric_fields(cell),
                    "percentage_of_total": 0.0 if share is None else share,
                    "price_source": _price_source(sources.get((model, provider), {})),
                }
            )
        return {"data": rows}

    @cached_answer(_compare_scope)
    async def compare(
        self, period1: tuple[date, date], period2: tuple[date, date], filters: Filters, tz: str
    ) -> dict[str, Any]:
        plans = [plan_costs(start, end, filters, Grouping(), tz) for start, end in (period1, period2)]
        sums1, sums2 = await read_sums(self.repository, plans)
        one, two = grand_total(sums1), grand_total(sums2)
        cost_change_nano = one[COST] - two[COST]
        events_change = one[EVENTS] - two[EVENTS]
        return {
            "period1": _period_totals(period1, one, tz),
            "period2": _period_totals(period2, two, tz),
            "changes": {
                "cost_change": nano_to_usd(cost_change_nano),
                "cost_change_percent": ratio(cost_change_nano * 100, two[COST]),
                "events_change": events_change,
                "events_change_percent": ratio(events_change * 100, two[EVENTS]),
            },
        }


def _price_sources(cells: dict[Any, Cell]) -> dict[tuple[str | None, ...], dict[str, int]]:
    """(model, provider) -> price source -> events priced so, from PRICE_SOURCE sums."""
    out: dict[tuple[str | None, ...], dict[str, int]] = {}
    for (model, provider, source), cell in cells.items():
        if cell[EVENTS] > 0:
            out.setdefault((model, provider), {})[source] = cell[EVENTS]
    return out


def _price_source(sources: dict[str, int]) -> str | None:
    """One source, "mixed" for several, None when none was recorded (aggregated by an earlier build)."""
    if not sources:
        return None
    if len(sources) > 1:
        return "mixed"
    return next(iter(sources))


__all__ = ["CostsService"]

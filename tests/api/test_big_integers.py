"""Sums past 64 bits: the API prints them exactly (orjson stops at 64 bits), never a 500.

The contract bounds an event's tokens at 10^12, so a bucket passes 2^64 only after
about 18 million maximal events; the rollup below holds such sums, applied through
the product's own RollupStore.
"""

from __future__ import annotations

import httpx

from infraprism.core.cell import Cell
from infraprism.core.keys import KeyLayout
from infraprism.core.rollup import BatchRollup
from infraprism.pipeline.store import Applied, RollupStore
from infraprism.settings import Settings

HOUR_2025_01_15_10 = 1_736_935_200_000 // 3_600_000
BIG = 2**70 + 12345


async def test_costs_prints_token_sums_past_64_bits_exactly(
    authed: httpx.AsyncClient, settings: Settings, project: str, redis_client
):
    rollup = BatchRollup()
    key = (project, "customer", "acme", "gpt-4o", "openai", (), HOUR_2025_01_15_10)
    rollup.groups[key] = Cell([18_000_000, 10**22, BIG, 2 * BIG, 0, 0])
    rollup.events = 18_000_000
    store = RollupStore(redis_client, KeyLayout(settings.key_prefix), topic="t", group="g", dedupe_window_days=7)
    assert await store.apply(rollup, []) == Applied()

    for params in ({}, {"group_by": "entity"}, {"group_by": "model"}):
        response = await authed.get(
            "/v1/analytics/costs", params={"start_date": "2025-01-01", "end_date": "2025-01-31", **params}
        )
        assert response.status_code == 200, response.text
        body = response.json()  # Python's json reads integers of any size exactly
        (row,) = body["data"]
        assert (row["total_input_tokens"], row["total_output_tokens"]) == (BIG, 2 * BIG)
        assert (body["summary"]["total_cost"], body["summary"]["total_events"]) == (10**13, 18_000_000)

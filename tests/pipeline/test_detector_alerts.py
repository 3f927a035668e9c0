"""The alert notifier on its own: outbox -> webhook, with the real Redis and a local HTTP receiver."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import free_port
from infraprism.pipeline.alerts import Notifier, WebhookChannel
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from infraprism.stores.anomaly_store import AnomalyRecord


def record(anomaly_id: str) -> AnomalyRecord:
    return AnomalyRecord(
        id=anomaly_id,
        project="acme",
        detected_at="2025-01-15T10:30:00Z",
        detected_ms=1_736_937_000_000,
        entity_type="customer",
        entity_id="acme-corp",
        type="cost_spike",
        severity="high",
        description="Cost increased 340% compared to 7-day median hourly cost",
        expected_value=12.5,
        actual_value=55.0,
        status="active",
        updated_ms=1_736_937_000_000,
    )


async def test_refused_body_is_not_retried_and_others_go_on(redis_client: aioredis.Redis, settings: Settings) -> None:
    layout = KeyLayout(settings.key_prefix)
    await redis_client.sadd(layout.projects(), "acme")
    for anomaly_id in ("a-refused", "a-ok"):
        assert await anomaly_store.create(redis_client, layout, record(anomaly_id))
    assert not await anomaly_store.create(redis_client, layout, record("a-ok"))  # ids are written once
    await anomaly_store.dismiss(redis_client, layout, "a-ok")

    seen: list[tuple[str, int]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((body["id"], body["version"]))
        return web.Response(status=422 if body["id"] == "a-refused" else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    webhook = WebhookChannel(f"http://127.0.0.1:{port}/hook", None)
    try:
        notifier = Notifier(redis_client, layout, [webhook])
        assert await notifier.drain() == 3
        assert await notifier.drain() == 0  # nothing is sent twice
    finally:
        await webhook.close()
        await runner.cleanup()
    assert seen == [("a-refused", 1), ("a-ok", 1), ("a-ok", 2)]
    last = (await redis_client.xrevrange(layout.anomaly_outbox("acme"), count=1))[0][0]
    assert (await redis_client.hgetall(layout.alert_cursors("acme"))) == {"webhook": last}
    # delivered entries are trimmed: only the cursor's own entry is left
    assert await redis_client.xlen(layout.anomaly_outbox("acme")) == 1

"""Webhook signing (docs/anomalies.md, "Verifying a delivery").

The receiver code the docs print is taken from the docs and run as a reader would paste
it, against deliveries that the webhook channel the detector builds from its settings
posts to a local HTTP receiver, with the real redis-server holding the outbox. Also: the
detector refuses, at start, a webhook that no receiver could verify.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from multidict import CIMultiDict
from pydantic import SecretStr

from infraprism.core.keys import KeyLayout
from infraprism.dev.local_services import free_port
from infraprism.pipeline.alerts import DELIVERY_HEADER, SIGNATURE_HEADER, Notifier, sign
from infraprism.pipeline.detector import Runtime, WebhookConfigError, webhook_secret
from infraprism.settings import Settings
from infraprism.stores import anomaly_store
from tests.pipeline.test_detector_alerts import record

DOCS = Path(__file__).resolve().parents[2] / "docs" / "anomalies.md"
SECRET = "whsec_test"
Verify = Callable[[bytes, Mapping[str, str], bytes], bool]
Delivery = tuple[CIMultiDict[str], bytes]


def docs_example() -> str:
    """The Python block between the webhook-verify markers of docs/anomalies.md."""
    found = re.search(
        r"<!-- webhook-verify:start -->\n```python\n(.*?)```\n<!-- webhook-verify:end -->", DOCS.read_text(), re.S
    )
    assert found, "docs/anomalies.md has lost its webhook-verify block"
    return found.group(1)


def docs_verify(now_s: float | None = None) -> Verify:
    """The docs' `verify`, exec'd as printed; on a receiver clock that reads `now_s` when given."""
    namespace: dict[str, Any] = {}
    exec(docs_example(), namespace)
    if now_s is not None:
        namespace["time"] = SimpleNamespace(time=lambda: now_s)
    return namespace["verify"]


class VerifyingReceiver:
    """A receiver as the docs describe one: 204 when the docs' `verify` accepts a delivery, else 401."""

    def __init__(self) -> None:
        self.verify = docs_verify()
        self.deliveries: list[tuple[Delivery, bool]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        accepted = self.verify(SECRET.encode(), request.headers, body)
        self.deliveries.append(((request.headers.copy(), body), accepted))
        return web.Response(status=204 if accepted else 401)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[VerifyingReceiver, str]]:
    hook = VerifyingReceiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hook, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def not_kafka(key: bytes, value: bytes) -> None:
    raise AssertionError("only the webhook channel is drained in these tests")


async def deliver_three(redis_client: aioredis.Redis, settings: Settings) -> int:
    """a-one v1, a-two v1 and v2 through the webhook channel that the detector's Runtime builds."""
    layout = KeyLayout(settings.key_prefix)
    await redis_client.sadd(layout.projects(), "acme")
    for anomaly_id in ("a-one", "a-two"):
        assert await anomaly_store.create(redis_client, layout, record(anomaly_id))
    await anomaly_store.dismiss(redis_client, layout, "a-two")
    runtime = Runtime(settings)
    await runtime.start(not_kafka)
    try:
        assert runtime.webhook is not None
        return await Notifier(redis_client, layout, [runtime.webhook]).drain()
    finally:
        await runtime.stop()


def webhook_settings(settings: Settings, url: str, **changes: object) -> Settings:
    return settings.model_copy(update={"alert_webhook_url": url, **changes})


@pytest.fixture
async def signed_delivery(
    redis_client: aioredis.Redis, settings: Settings, receiver: tuple[VerifyingReceiver, str]
) -> Delivery:
    """A real, signed delivery of a-one v1, as its receiver got it."""
    hook, url = receiver
    assert await deliver_three(redis_client, webhook_settings(settings, url, alert_webhook_secret=SecretStr(SECRET)))
    return hook.deliveries[0][0]


def timestamp_of(headers: Mapping[str, str]) -> int:
    return int(headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t="))


def test_the_example_is_ten_lines() -> None:
    assert len([line for line in docs_example().splitlines() if line.strip()]) <= 10


def test_sign_matches_an_independent_hmac() -> None:
    # printf '1736937000.anomaly_0123456789abcdef0123:2.{"id":"anomaly_0123456789abcdef0123"}' \
    #   | openssl dgst -sha256 -hmac whsec_test
    mac = "bf5b124b8fea184d82f09953b89e69753f98ad4f0b4e3c173221b7520988ce82"
    body = b'{"id":"anomaly_0123456789abcdef0123"}'
    assert sign(SECRET.encode(), "anomaly_0123456789abcdef0123:2", body, 1_736_937_000) == f"t=1736937000,v1={mac}"


async def test_the_docs_example_verifies_real_deliveries(
    redis_client: aioredis.Redis,
    settings: Settings,
    receiver: tuple[VerifyingReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, url = receiver
    with caplog.at_level(logging.WARNING, logger="infraprism.pipeline.detector"):
        signed = webhook_settings(settings, url, alert_webhook_secret=SecretStr(SECRET))
        assert await deliver_three(redis_client, signed) == 3
    assert not [r for r in caplog.records if "unsigned" in r.getMessage()]
    seen = [(headers[DELIVERY_HEADER], accepted) for (headers, _), accepted in hook.deliveries]
    assert seen == [("a-one:1", True), ("a-two:1", True), ("a-two:2", True)]
    for (headers, body), _ in hook.deliveries:
        message = orjson.loads(body)
        assert headers[DELIVERY_HEADER] == f"{message['id']}:{message['version']}"
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers[SIGNATURE_HEADER])


def _with(headers: CIMultiDict[str], name: str, value: str | None) -> CIMultiDict[str]:
    changed = headers.copy()
    changed.popall(name, None)
    if value is not None:
        changed[name] = value
    return changed


def _edited_t(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    t = timestamp_of(headers)
    return _with(headers, SIGNATURE_HEADER, headers[SIGNATURE_HEADER].replace(f"t={t}", f"t={t + 1}"))


def _other_secret(headers: CIMultiDict[str], body: bytes) -> CIMultiDict[str]:
    signature = sign(b"not the secret", headers[DELIVERY_HEADER], body, timestamp_of(headers))
    return _with(headers, SIGNATURE_HEADER, signature)


def _old_scheme(headers: CIMultiDict[str], body: bytes) -> CIMultiDict[str]:
    return _with(headers, SIGNATURE_HEADER, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())


TAMPERED: dict[str, Callable[[CIMultiDict[str], bytes], Delivery]] = {
    "body, a value changed": lambda h, b: (h, orjson.dumps({**orjson.loads(b), "actual_value": 1.0})),
    "body, a newline added": lambda h, b: (h, b + b"\n"),
    "delivery id, the next version": lambda h, b: (_with(h, DELIVERY_HEADER, "a-one:2"), b),
    "delivery id, another anomaly": lambda h, b: (_with(h, DELIVERY_HEADER, "a-two:1"), b),
    "delivery id, missing": lambda h, b: (_with(h, DELIVERY_HEADER, None), b),
    "timestamp, edited": lambda h, b: (_edited_t(h), b),
    "signature, missing": lambda h, b: (_with(h, SIGNATURE_HEADER, None), b),
    "signature, another secret": lambda h, b: (_other_secret(h, b), b),
    "signature, the old sha256= scheme": lambda h, b: (_old_scheme(h, b), b),
    "signature, not hex": lambda h, b: (_with(h, SIGNATURE_HEADER, f"t={timestamp_of(h)},v1=\u00e9"), b),
    "signature, no t": lambda h, b: (_with(h, SIGNATURE_HEADER, h[SIGNATURE_HEADER].split(",")[1]), b),
}


@pytest.mark.parametrize("change", TAMPERED, ids=str)
async def test_the_docs_example_refuses_a_tampered_delivery(signed_delivery: Delivery, change: str) -> None:
    headers, body = signed_delivery
    verify = docs_verify(now_s=timestamp_of(headers))
    assert verify(SECRET.encode(), headers, body)  # the genuine one, as a control
    assert not verify(SECRET.encode(), *TAMPERED[change](headers, body))


# Seconds between the signature's t and the receiver's clock -> accepted.
CLOCKS = [(0, True), (300, True), (301, False), (3600, False), (-300, True), (-301, False)]


@pytest.mark.parametrize(("late_s", "accepted"), CLOCKS)
async def test_the_docs_example_refuses_a_replay_after_five_minutes(
    signed_delivery: Delivery, late_s: int, accepted: bool
) -> None:
    headers, body = signed_delivery
    assert docs_verify(now_s=timestamp_of(headers) + late_s)(SECRET.encode(), headers, body) is accepted


URL = "http://127.0.0.1:9/hook"
SECRETS = [
    # (url, secret, allow_unsigned) -> the signing key; None: unsigned or no webhook
    ((None, None, False), None),
    ((URL, "s3cret", False), b"s3cret"),
    ((URL, "s3cret", True), b"s3cret"),
    ((URL, None, True), None),
]


@pytest.mark.parametrize(("config", "key"), SECRETS)
def test_webhook_secret(config: tuple[str | None, str | None, bool], key: bytes | None) -> None:
    url, secret, allow_unsigned = config
    settings = Settings(
        alert_webhook_url=url,
        alert_webhook_secret=None if secret is None else SecretStr(secret),
        alert_webhook_allow_unsigned=allow_unsigned,
    )
    assert webhook_secret(settings) == key


@pytest.mark.parametrize("secret", [None, ""])
def test_a_webhook_without_a_secret_is_refused(secret: str | None) -> None:
    settings = Settings(alert_webhook_url=URL, alert_webhook_secret=None if secret is None else SecretStr(secret))
    with pytest.raises(WebhookConfigError, match="INFRAPRISM_ALERT_WEBHOOK_SECRET") as refused:
        Runtime(settings)
    assert "INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true" in str(refused.value)


def test_the_detector_command_refuses_it_in_one_line(settings_env: dict[str, str]) -> None:
    env = {name: value for name, value in settings_env.items() if name != "INFRAPRISM_ALERT_WEBHOOK_SECRET"}
    env["INFRAPRISM_ALERT_WEBHOOK_URL"] = URL
    done = subprocess.run(
        [sys.executable, "-m", "infraprism.cli", "detector"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("infraprism: INFRAPRISM_ALERT_WEBHOOK_URL is set without "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true" in done.stderr


async def test_an_allowed_unsigned_webhook_warns_and_sends_no_signature(
    redis_client: aioredis.Redis,
    settings: Settings,
    receiver: tuple[VerifyingReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, url = receiver
    with caplog.at_level(logging.WARNING, logger="infraprism.pipeline.detector"):
        unsigned = webhook_settings(settings, url, alert_webhook_allow_unsigned=True)
        assert await deliver_three(redis_client, unsigned) == 3  # the receiver's 401s are not retried
    warnings = [r for r in caplog.records if r.name == "infraprism.pipeline.detector" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "INFRAPRISM_ALERT_WEBHOOK_ALLOW_UNSIGNED=true" in warnings[0].getMessage()
    assert [headers[DELIVERY_HEADER] for (headers, _), _ in hook.deliveries] == ["a-one:1", "a-two:1", "a-two:2"]
    assert all(SIGNATURE_HEADER not in headers for (headers, _), _ in hook.deliveries)
    assert not any(accepted for _, accepted in hook.deliveries)  # and the docs' receiver refuses them

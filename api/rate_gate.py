"""The cheap side of the rate limit: a key Redis has just refused is refused again here, in
process, until its bucket holds a token, and every refusal is held back before it is sent.

Redis keeps each key's token bucket (stores/authenticate.lua) and is the only judge of
whether a request may go. Once it says "not for another N ms", nothing but time can change
that (a bucket only fills with time), so the same answer can be given without asking it:
this middleware does, before routing, for the cost of a SHA-256 and a dict lookup.

Holding refusals is what keeps a flood from starving other keys. Every refusal is held a
random half to whole HOLD_S, and Redis's is remembered for HOLD_S (never extended by the
gate's). A client on HTTP/1.1 cannot send its next request on a connection before the
answer to the last, so each of a flooder's connections asks about once per hold, at its
own moment, and a held answer costs the server nothing while it waits: Redis sees each of
the flood's connections about once a second, spread over the second. Retry-After says what is
left to wait after the hold (mostly 0: a bucket refilling 20 tokens a second has one again
in 50 ms), so a client that honours it loses nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from infraprism.api.errors import RateLimited, error_response

# How long a refusal is held before it is sent: a random time up to HOLD_S, at least half of
# it, so that a flood's connections, refused together, do not all come back at one instant.
HOLD_S = 1.0
# Keys refused at once that the gate remembers; past it, ended refusals are forgotten first,
# then the soonest to end (Redis still refuses those: only the shortcut is lost).
MAX_REFUSED_KEYS = 10_000


class RefusedKeys:
    """Key hash -> the monotonic instant its bucket holds a token again."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def refuse(self, key_hash: str, retry_after_ms: int) -> None:
        if len(self._until) >= MAX_REFUSED_KEYS:
            self._forget_some()
        self._until[key_hash] = time.monotonic() + retry_after_ms / 1000

    def remaining_s(self, key_hash: str) -> float:
        """Seconds until the key may go again; 0 when it is not refused."""
        until = self._until.get(key_hash)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key_hash]
            return 0.0
        return left

    def _forget_some(self) -> None:
        now = time.monotonic()
        ended = [key for key, until in self._until.items() if until <= now]
        for key in ended:
            del self._until[key]
        if len(self._until) >= MAX_REFUSED_KEYS:
            for key in sorted(self._until, key=self._until.__getitem__)[: MAX_REFUSED_KEYS // 10]:
                del self._until[key]


async def hold_then_refuse(refused: RefusedKeys, key_hash: str, retry_after_ms: int) -> RateLimited:
    """Redis's refusal: remember it for the hold (or the wait, if longer), hold it, and return
    the 429 to send, telling the client how much of its wait is left (whole seconds)."""
    refused.refuse(key_hash, max(retry_after_ms, int(HOLD_S * 1000)))
    held_s = _hold_s()
    await asyncio.sleep(held_s)
    return RateLimited(max(0, math.ceil(retry_after_ms / 1000 - held_s)))


async def hold_remembered(left_s: float) -> RateLimited:
    """The gate's refusal of a key Redis refused, `left_s` before that refusal ends: held
    like Redis's own, and never extending the refusal, so that once it ends the key's next
    request is Redis's to judge again."""
    held_s = _hold_s()
    await asyncio.sleep(held_s)
    return RateLimited(max(0, math.ceil(left_s - held_s)))


def _hold_s() -> float:
    return HOLD_S * (0.5 + random.random() / 2)  # noqa: S311 - spreading retries, not a secret


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class RateGate:
    """Pure ASGI middleware: a request whose key is refused (RefusedKeys) is held and answered
    429 here, before routing, without a Redis call."""

    def __init__(self, app: ASGIApp, refused: RefusedKeys) -> None:
        self.app = app
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only the keyed API: /healthz and the docs never look at a key, so never refuse one.
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            token = _bearer_token(scope)
            if token:
                left_s = self.refused.remaining_s(hashlib.sha256(token.encode("utf-8")).hexdigest())
                if left_s > 0:
                    await error_response(await hold_remembered(left_s))(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> RefusedKeys:
    refused = RefusedKeys()
    app.add_middleware(RateGate, refused=refused)
    return refused


__all__ = ["HOLD_S", "RateGate", "RefusedKeys", "hold_remembered", "hold_then_refuse", "install"]

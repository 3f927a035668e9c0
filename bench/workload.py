"""A realistic synthetic mix of cost events, shared by the benchmarks.

Hundreds of customers with Zipf-like volumes, each preferring one or two of
several models, a few feature/env tag sets, a third of the calls in multi-turn
sessions, timestamps in near time order with some jitter (late events).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator

import orjson

MODELS = [
    ("gpt-4o", "openai", 2.5, 10.0),
    ("gpt-4o-mini", "openai", 0.15, 0.6),
    ("claude-3-5-sonnet", "anthropic", 3.0, 15.0),
    ("claude-3-5-haiku", "anthropic", 0.8, 4.0),
    ("gemini-1.5-pro", "google", 1.25, 5.0),
    ("gemini-1.5-flash", "google", 0.075, 0.3),
]
FEATURES = ["chatbot", "search", "summarize", "code-review", "extraction"]
ENVS = ["production", "staging"]


def events(count: int, *, entities: int = 400, start_ms: int = 1_736_899_200_000, span_ms: int = 86_400_000,
           seed: int = 7) -> Iterator[bytes]:
    """`count` JSON-encoded events spread over `span_ms` from `start_ms`."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(entities)))
    profiles = []
    for index in range(entities):
        models = rng.sample(MODELS, k=rng.choice((1, 2, 2, 3)))
        features = rng.sample(FEATURES, k=rng.choice((1, 2, 3)))
        profiles.append((f"customer-{index:04d}", models, features))
    open_sessions: dict[int, tuple[str, int]] = {}
    for i in range(count):
        entity_index = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
        entity_id, models, features = profiles[entity_index]
        model, provider, in_price, out_price = rng.choice(models)
        input_tokens = rng.randint(50, 4000)
        output_tokens = rng.randint(10, 1500)
        ts = start_ms + span_ms * i // count + rng.randint(-120_000, 5_000)
        event = {
            "event_id": f"bench-{seed}-{i}",
            "timestamp": ts,
            "entity_type": "customer",
            "entity_id": entity_id,
            "model": model,
            "provider": provider,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost": round((input_tokens * in_price + output_tokens * out_price) / 1e6, 9),
            "latency_ms": rng.randint(150, 6000),
            "tags": {"feature": rng.choice(features), "env": ENVS[rng.random() < 0.1]},
        }
        if rng.random() < 0.33:
            session = open_sessions.get(entity_index)
            if session is None or session[1] > 6 or rng.random() < 0.2:
                session = (f"sess-{seed}-{i}", 0)
            open_sessions[entity_index] = (session[0], session[1] + 1)
            event["session_id"] = session[0]
        yield orjson.dumps(event)

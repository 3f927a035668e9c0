"""A production-like synthetic mix of cost events, shared by the ingest benchmarks.

`calls(count)` draws the logical LLM calls; an order turns them into Kafka
messages (key = entity_id, as the event contract says), with timestamps and an
arrival order:

- `live`: arrival in near time order, each event stamped up to two minutes
  before it is sent, and 1% of them up to a day before (late events);
- `backfill`: the same calls with their timestamps spread over 45 days, sent
  in a uniformly random order.

Both add 2% producer retries: an event sent again, same bytes, half of them a
few messages later and half thousands of messages later.

What a call holds, in proportion of calls (`describe` prints the measured mix):
- three entity types (customer 50%, user 35%, team 15%), Zipf-like sizes
  within each type (400 customers, 2,000 users, 60 teams); every third
  entity by rank belongs to the second project, the others to `default`
  (half of those events say so, half omit `project_id`);
- six models the genai-prices catalog knows, one to three per entity;
  `provider` omitted on 10%;
- `cost` absent on 30% (the aggregator prices those from the catalog);
- `cache_read_tokens` on 25% (with `cache_write_tokens` on a third of
  them), `cache_write_tokens` alone on 5%; their sum never exceeds
  `input_tokens`;
- timestamps as epoch milliseconds (50%), RFC 3339 with `Z` (30%) and RFC
  3339 with a non-zero offset (20%);
- 40% of the calls carry a `session_id`: sessions of 2 to 10 turns a few
  seconds to two minutes apart (a small entity may leave one at a single
  turn), about 8,000 sessions per 100,000 calls, three quarters multi-turn;
- `tags` feature (one to three of five per entity) and env (10% staging);
- `latency_ms` on 95% (a fifth of them with a fraction).
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson

# (model, provider, USD per million input tokens, per million output tokens); each
# prices in the genai-prices catalog (infraprism.core.pricing.price_event_nano).
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
# (entity type, share of calls, number of entities)
ENTITY_TYPES = [("customer", 0.50, 400), ("user", 0.35, 2000), ("team", 0.15, 60)]
PROJECTS = ("default", "research")
OFFSETS = [
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=9)),
    timezone(timedelta(hours=-3)),
    timezone(timedelta(hours=1)),
]

DEFAULT_START_MS = 1_736_899_200_000  # 2025-01-15T00:00:00Z
DAY_MS = 86_400_000
BACKFILL_DAYS = 45
UNPRICED_SHARE = 0.30
SESSION_SHARE = 0.40
LATE_SHARE = 0.01
RETRY_SHARE = 0.02


class Call(NamedTuple):
    """One LLM call before it has a timestamp: `at` places it in the order's time span."""

    event: dict[str, Any]  # every field but `timestamp`
    at: float  # 0 <= at < 1: where the call (or its session's first turn) falls in the span
    offset_ms: int  # after its session's first turn; 0 outside sessions
    encoding: int  # 0 epoch ms, 1 RFC 3339 "Z", 2 + i: RFC 3339 at OFFSETS[i]


class Message(NamedTuple):
    key: bytes
    value: bytes


def _entities(rng: random.Random) -> list[tuple[list[float], list[tuple[str, str, list, list]]]]:
    """Per entity type: cumulative Zipf weights and (entity_id, project, models, features) by rank."""
    out = []
    for entity_type, _, count in ENTITY_TYPES:
        cumulative = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(count)))
        profiles = []
        for rank in range(count):
            models = rng.sample(MODELS, k=rng.choice((1, 2, 2, 3)))
            features = rng.sample(FEATURES, k=rng.choice((1, 2, 3)))
            profiles.append((f"{entity_type}-{rank:04d}", PROJECTS[rank % 3 == 2], models, features))
        out.append((cumulative, profiles))
    return out


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def calls(count: int, *, seed: int = 7) -> list[Call]:
    """`count` calls of the production-like mix (see the module docstring), reproducible by seed."""
    rng = random.Random(seed)
    populations = _entities(rng)
    type_cumulative = list(itertools.accumulate(share for _, share, _ in ENTITY_TYPES))
    # (type index, rank) -> [session_id, first turn's `at`, last offset_ms, turns left]
    open_sessions: dict[tuple[int, int], list[Any]] = {}
    out = []
    for i in range(count):
        at = i / count
        type_index = bisect.bisect_left(type_cumulative, rng.random() * type_cumulative[-1])
        cumulative, profiles = populations[type_index]
        rank = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
        entity_id, project, models, features = profiles[rank]
        model, provider, in_price, out_price = rng.choice(models)
        event: dict[str, Any] = {"event_id": _uuid(rng)}
        if project != "default" or rng.random() < 0.5:
            event["project_id"] = project
        event |= {"entity_type": ENTITY_TYPES[type_index][0], "entity_id": entity_id, "model": model}
        if rng.random() >= 0.1:
            event["provider"] = provider
        cache_read = cache_write = 0
        roll = rng.random()
        if roll < 0.25:
            input_tokens = rng.randint(1000, 30_000)
            cache_read = int(input_tokens * rng.uniform(0.3, 0.9))
            if roll < 0.25 / 3:
                cache_write = rng.randint(0, input_tokens - cache_read)
        elif roll < 0.30:
            input_tokens = rng.randint(1000, 30_000)
            cache_write = rng.randint(100, input_tokens)
        else:
            input_tokens = rng.randint(50, 4000)
        output_tokens = rng.randint(10, 1500)
        event["input_tokens"] = input_tokens
        event["output_tokens"] = output_tokens
        if cache_read:
            event["cache_read_tokens"] = cache_read
        if cache_write:
            event["cache_write_tokens"] = cache_write
        if rng.random() >= UNPRICED_SHARE:
            # The producer's own price list: cache reads at a tenth, writes at 1.25x.
            billed_input = input_tokens - cache_read - cache_write + 0.1 * cache_read + 1.25 * cache_write
            event["cost"] = round((billed_input * in_price + output_tokens * out_price) / 1e6, 9)
        if rng.random() < 0.95:
            latency_ms = min(86_400_000, rng.lognormvariate(7.0, 0.6))
            event["latency_ms"] = round(latency_ms, 1) if rng.random() < 0.2 else int(latency_ms)
        offset_ms = 0
        if rng.random() < SESSION_SHARE:
            session = open_sessions.get((type_index, rank))
            if session is None or session[3] == 0:
                session = [_uuid(rng), at, 0, rng.randint(2, 10)]
                open_sessions[(type_index, rank)] = session
            else:
                session[2] += rng.randint(5_000, 120_000)
            session[3] -= 1
            event["session_id"] = session[0]
            at, offset_ms = session[1], session[2]
        event["tags"] = {"feature": rng.choice(features), "env": ENVS[rng.random() < 0.1]}
        roll = rng.random()
        encoding = 0 if roll < 0.5 else 1 if roll < 0.8 else 2 + rng.randrange(len(OFFSETS))
        out.append(Call(event, at, offset_ms, encoding))
    return out


def timestamp(ts_ms: int, encoding: int) -> int | str:
    """The event's `timestamp` field in one of the contract's encodings (millisecond precision)."""
    if encoding == 0:
        return ts_ms
    zone = UTC if encoding == 1 else OFFSETS[encoding - 2]
    moment = datetime.fromtimestamp(ts_ms // 1000, tz=zone) + timedelta(milliseconds=ts_ms % 1000)
    text = moment.isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z" if encoding == 1 else text


def _encode(call: Call, ts_ms: int) -> Message:
    event = {"event_id": call.event["event_id"], "timestamp": timestamp(ts_ms, call.encoding)} | call.event
    return Message(event["entity_id"].encode(), orjson.dumps(event))


def _with_retries(messages: list[Message], rng: random.Random) -> list[Message]:
    """Send 2% of the messages again: half 1-50 messages later, half 1,000-50,000 later."""
    slots = [(float(i), message) for i, message in enumerate(messages)]
    for i in rng.sample(range(len(messages)), k=round(len(messages) * RETRY_SHARE)):
        later = rng.randint(1, 50) if rng.random() < 0.5 else rng.randint(1_000, 50_000)
        slots.append((min(i + later, len(messages)) + 0.5, messages[i]))
    slots.sort(key=lambda slot: slot[0])
    return [message for _, message in slots]


def live(
    calls: list[Call], *, start_ms: int = DEFAULT_START_MS, span_ms: int = DAY_MS, seed: int = 11
) -> list[Message]:
    """Near time order over `span_ms`: stamped up to 2 min before sending, 1% up to a day before."""
    rng = random.Random(seed)
    timed = []
    for call in calls:
        sent_ms = start_ms + int(call.at * span_ms) + call.offset_ms
        delay_ms = rng.randint(0, DAY_MS) if rng.random() < LATE_SHARE else rng.randint(0, 120_000)
        timed.append((sent_ms, _encode(call, sent_ms - delay_ms)))
    timed.sort(key=lambda item: item[0])
    return _with_retries([message for _, message in timed], rng)


def backfill(
    calls: list[Call], *, start_ms: int = DEFAULT_START_MS, days: int = BACKFILL_DAYS, seed: int = 13
) -> list[Message]:
    """The calls' timestamps spread over `days`, sent in a uniformly random order."""
    rng = random.Random(seed)
    span_ms = days * DAY_MS
    messages = [_encode(call, start_ms + int(call.at * span_ms) + call.offset_ms) for call in calls]
    rng.shuffle(messages)
    return _with_retries(messages, rng)


ORDERS: dict[str, Callable[..., list[Message]]] = {"live": live, "backfill": backfill}


def describe(calls: list[Call]) -> str:
    """The measured proportions of the mix, one paragraph."""
    n = len(calls)
    counts: Counter[str] = Counter()
    sessions: Counter[str] = Counter()
    for call in calls:
        event = call.event
        counts[event["entity_type"]] += 1
        counts[f"project {event.get('project_id', 'default')}"] += 1
        counts["no cost"] += "cost" not in event
        counts["cache tokens"] += "cache_read_tokens" in event or "cache_write_tokens" in event
        counts["no provider"] += "provider" not in event
        counts["latency"] += "latency_ms" in event
        counts[("epoch ms", "RFC 3339 Z", "RFC 3339 offset")[min(call.encoding, 2)]] += 1
        if "session_id" in event:
            counts["in sessions"] += 1
            sessions[event["session_id"]] += 1
    names = (
        [name for name, _, _ in ENTITY_TYPES]
        + [f"project {project}" for project in PROJECTS]
        + [
            "no cost",
            "cache tokens",
            "no provider",
            "latency",
            "epoch ms",
            "RFC 3339 Z",
            "RFC 3339 offset",
            "in sessions",
        ]
    )
    shares = ", ".join(f"{name} {counts[name] / n:.1%}" for name in names)
    multi_turn = sum(1 for turns in sessions.values() if turns > 1)
    return (
        f"{n:,} events + {round(n * RETRY_SHARE):,} retries; {shares}; "
        f"{len(sessions):,} sessions ({multi_turn:,} multi-turn)"
    )

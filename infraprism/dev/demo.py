"""A realistic, reproducible demo dataset for `infraprism dev --demo`.

Several weeks of LLM calls ending now: dozens of customers and users of very
different sizes (Zipf-like), each with its favourite models; a weekly and
daily rhythm and slow growth; multi-turn sessions; `feature` / `env` tags.
About a third of the events carry no `cost`, so the pipeline prices them with
the genai-prices catalog; the rest report a cost as a producer would. Time
stamps come in all the contract's forms (UTC `Z`, other offsets, epoch ms).

It also plants what a demo should show: a cost spike of one customer over the
last day and a half and a volume spike of one user ten days ago (for the
anomaly detector), a few producer retries (repeated event_ids, counted once),
and a handful of malformed messages that must end up in the dead-letter topic.

Pure apart from reading the price catalog once; the same seed and end time
give the same bytes.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import orjson

from infraprism.core.pricing import price_event_nano

# (model, provider, share of conversations, mean input tokens, mean output tokens, latency ms per
# 1k output tokens). All are known to the genai-prices catalog.
MODELS: tuple[tuple[str, str, float, int, int, int], ...] = (
    ("gpt-4o-mini", "openai", 0.30, 900, 350, 900),
    ("gpt-4o", "openai", 0.20, 1400, 600, 2200),
    ("claude-3-5-sonnet", "anthropic", 0.15, 2200, 700, 2600),
    ("claude-3-5-haiku-latest", "anthropic", 0.12, 1100, 400, 1100),
    ("gemini-2.0-flash", "google", 0.10, 1600, 450, 700),
    ("gpt-4.1", "openai", 0.08, 1800, 650, 2000),
    ("o3-mini", "openai", 0.05, 1200, 1500, 3500),
)

CUSTOMERS: tuple[str, ...] = (
    "acme-corp",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark-industries",
    "wayne-enterprises",
    "wonka-industries",
    "cyberdyne",
    "soylent",
    "tyrell",
    "massive-dynamic",
    "aperture-science",
    "black-mesa",
    "oscorp",
    "gringotts",
    "monsters-inc",
    "pied-piper",
    "dunder-mifflin",
    "vandelay-industries",
    "prestige-worldwide",
    "bluth-company",
    "sterling-cooper",
    "los-pollos",
    "krusty-krab",
    "planet-express",
    "nakatomi",
    "virtucon",
    "gekko-and-co",
    "duff-brewing",
    "wernham-hogg",
    "rekall",
    "weyland-yutani",
    "buy-n-large",
    "octan",
    "ollivanders",
    "paper-street-soap",
    "spacely-sprockets",
    "cogswell-cogs",
    "zorg-industries",
)
USERS: tuple[str, ...] = tuple(f"user-{n:03d}" for n in range(1, 61))
FEATURES: tuple[tuple[str, float], ...] = (
    ("chatbot", 0.40),
    ("summarizer", 0.20),
    ("search", 0.15),
    ("code-review", 0.15),
    ("support-agent", 0.10),
)
TEAMS: tuple[str, ...] = ("growth", "platform", "support", "research")

# Planted anomalies, named so the README and the tests can point at them.
SPIKE_CUSTOMER = "globex"
SPIKE_USER = "user-017"

BASE_CONVERSATIONS_PER_DAY = 1200
# Relative traffic by UTC hour: quiet nights, busy afternoons (Europe + US overlap).
HOURLY_SHAPE: tuple[float, ...] = (
    0.25,
    0.2,
    0.18,
    0.18,
    0.2,
    0.3,
    0.5,
    0.8,
    1.1,
    1.3,
    1.4,
    1.45,
    1.5,
    1.6,
    1.7,
    1.75,
    1.7,
    1.5,
    1.3,
    1.1,
    0.9,
    0.7,
    0.5,
    0.35,
)
_OFFSETS = (
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)


@dataclass(frozen=True, slots=True)
class Entity:
    entity_type: str
    entity_id: str
    weight: float
    models: tuple[int, ...]  # indexes into MODELS this entity uses
    features: tuple[str, ...]


def demo_range(days: int, end: datetime) -> tuple[str, str]:
    """(start_date, end_date) as YYYY-MM-DD covering the dataset."""
    first = (end - timedelta(days=days - 1)).date()
    return first.isoformat(), end.date().isoformat()


def _entities(rng: random.Random) -> list[Entity]:
    model_weights = [m[2] for m in MODELS]
    feature_names = [f for f, _ in FEATURES]
    feature_weights = [w for _, w in FEATURES]
    entities = []
    for entity_type, ids, scale in (("customer", CUSTOMERS, 1.0), ("user", USERS, 0.35)):
        order = list(ids)
        rng.shuffle(order)
        # The planted anomalies happen to steady, mid-sized accounts, where they stand out.
        for planted in (SPIKE_CUSTOMER, SPIKE_USER):
            if planted in order:
                order.remove(planted)
                order.insert(4, planted)
        for rank, entity_id in enumerate(order, start=1):
            # Zipf-like sizes with some noise: a few big accounts, a long tail.
            weight = scale * rng.uniform(0.7, 1.3) / rank**0.9
            count = rng.choice((1, 2, 2, 3))
            models = tuple(sorted(set(rng.choices(range(len(MODELS)), weights=model_weights, k=count))))
            features = tuple(sorted(set(rng.choices(feature_names, weights=feature_weights, k=2))))
            entities.append(Entity(entity_type, entity_id, weight, models, features))
    return entities


def _unit_prices_nano(at: datetime) -> dict[str, tuple[float, float]]:
    """Per-token (input, output) prices in nano-dollars, read once from the catalog."""
    at_ms = int(at.timestamp() * 1000)
    million = 1_000_000
    prices = {}
    for model, provider, *_ in MODELS:
        input_nano, _ = price_event_nano(model, provider, at_ms, million, 0)
        output_nano, _ = price_event_nano(model, provider, at_ms, 0, million)
        prices[model] = (input_nano / million, output_nano / million)
    return prices


def _timestamp(rng: random.Random, at: datetime) -> str | int:
    """The contract's time forms, mostly RFC 3339 UTC."""
    form = rng.random()
    if form < 0.75:
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    if form < 0.9:
        return at.astimezone(rng.choice(_OFFSETS)).isoformat(timespec="milliseconds")
    return int(at.timestamp() * 1000)


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _mean_conversations(hour_start: datetime, day_index: int, days: int) -> float:
    """Expected conversations in one hour, over all entities."""
    weekend = hour_start.weekday() >= 5
    growth = 1.0 + 0.012 * (day_index - days)  # about +1.2% a day towards today
    return BASE_CONVERSATIONS_PER_DAY / 24 * HOURLY_SHAPE[hour_start.hour] * (0.45 if weekend else 1.0) * growth


def _poisson(rng: random.Random, mean: float) -> int:
    if mean < 30:  # Knuth: exact and quick for small means
        limit, count, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def generate(*, days: int = 35, seed: int = 7, end: datetime | None = None) -> Iterator[bytes]:
    """The dataset as JSON lines (bytes, no newline) in time order, ending at `end` (or now)."""
    if days < 1:
        raise ValueError("days must be >= 1")
    end = (end or datetime.now(UTC)).astimezone(UTC)
    # The accounts depend on the seed only; the traffic (and so every event_id)
    # also on `end`, so a second demo replayed into the same Redis is new
    # traffic, not a replay that the dedupe would half swallow.
    entities = _entities(random.Random(seed))  # noqa: S311 - demo data, not a secret
    rng = random.Random(f"{seed}:{int(end.timestamp() * 1000)}")  # noqa: S311
    weights = [e.weight for e in entities]
    total_weight = sum(weights)
    prices = _unit_prices_nano(end)
    spike_customer = next(e for e in entities if e.entity_id == SPIKE_CUSTOMER)
    spike_user = next(e for e in entities if e.entity_id == SPIKE_USER)
    first_day = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=days - 1)
    spike_from = end - timedelta(hours=36)
    user_spike_day = (end - timedelta(days=10)).date()

    events: list[tuple[datetime, dict[str, object]]] = []
    for day_index in range(days):
        for hour in range(24):
            hour_start = first_day + timedelta(days=day_index, hours=hour)
            if hour_start > end:
                break
            mean = _mean_conversations(hour_start, day_index, days)
            picks = rng.choices(entities, weights=weights, k=_poisson(rng, mean))
            if hour_start >= spike_from - timedelta(hours=1):
                # Three times its usual traffic, moved to a bigger model: several times its spend.
                picks += [spike_customer] * _poisson(rng, 3 * mean * spike_customer.weight / total_weight)
            if hour_start.date() == user_spike_day and 8 <= hour <= 20:
                # Ten times its usual traffic, and at least 4 more conversations an hour:
                # on a weekend dip ten times little is still too little to be an anomaly.
                picks += [spike_user] * (4 + _poisson(rng, 10 * mean * spike_user.weight / total_weight))
            for entity in picks:
                start = hour_start + timedelta(seconds=rng.uniform(0, 3600))
                events.extend(
                    _conversation(
                        rng,
                        entity,
                        start,
                        prices,
                        spiked=entity is spike_customer and start >= spike_from,
                    )
                )
    events = [(at, event) for at, event in events if at <= end]
    events.sort(key=lambda pair: pair[0])
    lines = [orjson.dumps(event) for _, event in events]
    _plant_retries(rng, lines)
    _plant_malformed(rng, lines, end)
    yield from lines


def _conversation(
    rng: random.Random,
    entity: Entity,
    start: datetime,
    prices: dict[str, tuple[float, float]],
    *,
    spiked: bool,
) -> list[tuple[datetime, dict[str, object]]]:
    model, provider, _, mean_in, mean_out, latency_per_1k = MODELS[rng.choice(entity.models)]
    if spiked:
        model, provider, _, mean_in, mean_out, latency_per_1k = MODELS[2]  # moved to a bigger model
        mean_out *= 2
    feature = rng.choice(entity.features)
    env = "production" if rng.random() < 0.85 else "staging"
    tags: dict[str, str] = {"feature": feature, "env": env}
    if entity.entity_type == "user" and rng.random() < 0.5:
        tags["team"] = TEAMS[sum(entity.entity_id.encode()) % len(TEAMS)]
    turns = 1 if rng.random() < 0.45 else rng.randint(2, 8)
    session_id = _event_id(rng) if turns > 1 else None
    out = []
    at = start
    history = 0
    for _ in range(turns):
        # Each turn resends the conversation so far: input grows with the session.
        input_tokens = max(1, int(rng.lognormvariate(math.log(mean_in), 0.5))) + history
        output_tokens = max(1, int(rng.lognormvariate(math.log(mean_out), 0.6)))
        history += output_tokens + rng.randint(20, 200)
        cache_read = int(history * 0.6) if model.startswith(("gpt", "claude")) and history < input_tokens else 0
        event: dict[str, object] = {
            "event_id": _event_id(rng),
            "timestamp": _timestamp(rng, at),
            "project_id": "default",
            "entity_type": entity.entity_type,
            "entity_id": entity.entity_id,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "latency_ms": round(rng.lognormvariate(math.log(250 + latency_per_1k * output_tokens / 1000), 0.3)),
            "tags": tags,
        }
        if rng.random() < 0.8:
            event["provider"] = provider
        if cache_read:
            event["cache_read_tokens"] = cache_read
        if rng.random() < 0.67:
            # The producer reports what its provider billed (to 8 decimals, as many SDKs do).
            price_in, price_out = prices[model]
            event["cost"] = round((input_tokens * price_in + output_tokens * price_out) / 1e9, 8)
        if session_id:
            event["session_id"] = session_id
        out.append((at, event))
        at += timedelta(seconds=rng.uniform(5, 120))
    return out


def _plant_retries(rng: random.Random, lines: list[bytes]) -> None:
    """A few producer retries: the same event sent again a little later (counted once)."""
    for _ in range(5):
        index = rng.randrange(len(lines) - 10) if len(lines) > 10 else 0
        if lines:
            lines.insert(index + 3, lines[index])


def _plant_malformed(rng: random.Random, lines: list[bytes], end: datetime) -> None:
    """One of each kind of bad message; each must reach the dead-letter topic with its reason."""
    now = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    good = {
        "event_id": "demo-bad",
        "timestamp": now,
        "entity_type": "customer",
        "entity_id": "acme-corp",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": 0.0001,
    }
    bad: list[bytes] = [
        b"this is not json",
        b'{"event_id": "demo-bad-truncated", "timestamp": ',
        b"\xff\xfe not utf-8 \x00",
        b'["an", "array", "not", "an", "object"]',
        orjson.dumps({k: v for k, v in good.items() if k != "entity_id"} | {"event_id": "demo-bad-1"}),
        orjson.dumps(good | {"event_id": "demo-bad-2", "input_tokens": -5}),
        orjson.dumps(good | {"event_id": "demo-bad-3", "timestamp": "yesterday at noon"}),
        orjson.dumps(good | {"event_id": "demo-bad-4", "model": "my-private-finetune"} | {"cost": None}),
        orjson.dumps(good | {"event_id": "demo-bad-5", "tags": ["feature", "chatbot"]}),
        orjson.dumps(good | {"event_id": "demo-bad-6", "output_tokens": "many"}),
    ]
    for raw in bad:
        lines.insert(rng.randrange(len(lines) + 1), raw)


MALFORMED_COUNT = 10

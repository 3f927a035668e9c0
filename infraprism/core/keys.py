"""The Redis key layout: the one module that names keys, for the write and the read side.

Every key starts with `{prefix}:v2:`; the version changes when a layout does,
so a new release never misreads an old layout (v2: a rollup cell is one field
holding all six counters, where v1 had a field per counter). docs/redis-keys.md documents
each key: its fields, who writes it, who reads it, its size.

Members of rollup hashes join identifiers with ASCII separators, which the
event contract refuses inside identifiers, so a member splits back unambiguously.
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum

from infraprism.core.buckets import Granularity, day_label, days, month_end, month_label

SEP = "\x1f"  # between the identifiers of a member
TAG_KV_SEP = "\x1e"  # between a tag's key and value inside a tag set
TAG_PAIR_SEP = "\x1d"  # between the pairs of a tag set


class Dimension(StrEnum):
    """What a rollup hash groups by. The member of each field says which group."""

    TOTAL = "t"  # member "" : the project's total
    ENTITY = "e"  # member entity_type SEP entity_id
    MODEL = "m"  # member model SEP provider
    TAG = "g"  # member tag_key SEP tag_value
    ENTITY_MODEL = "em"  # member entity_type SEP entity_id SEP model SEP provider
    CUBE = "x"  # member entity_type SEP entity_id SEP model SEP provider SEP tag_set
    # member model SEP provider SEP price source ("supplied", "catalog" or "override"):
    # which prices a model's events came from, for /models' price_source.
    PRICE_SOURCE = "ps"


# Granularities each dimension is kept at. Every dimension has hours, the cube too,
# and each hour hash also holds the cells of its last three quarter hours
# (`quarter_member`), so that a range in any zone (core/zones.py) is a sum of whole
# cells: every local midnight since 1972 falls on a UTC quarter hour. The cube's
# hours are the largest set of keys by far; docs/query-planner.md weighs them.
DIMENSION_GRANULARITIES: dict[Dimension, tuple[Granularity, ...]] = {
    dimension: (Granularity.HOUR, Granularity.DAY, Granularity.MONTH) for dimension in Dimension
}
QUARTER_LAYOUT = "quarter-hours"  # the value of KeyLayout.layout_marker
QUARTER_SEP = "\x1c"  # between a member and the quarter (1-3) of its hour a field holds


def quarter_member(member: str, quarter: int) -> str:
    """The field of an hour hash holding `member`'s events of quarter `quarter` (1, 2 or 3) of
    the hour. The first quarter has no field: it is the hour's cell minus the other three."""
    return f"{member}{QUARTER_SEP}{quarter}"


# Leaderboards (sorted sets of entities by cost) are kept per day, month and year: a
# year's top entities read one year board (minus what lies outside the range), not
# twelve month boards, and the union of boards is the cost of /entities/top.
LEADERBOARD_GRANULARITIES: tuple[Granularity, ...] = (Granularity.DAY, Granularity.MONTH, Granularity.YEAR)
ALL_ENTITY_TYPES = "*"  # the leaderboard across every entity type


def entity_member(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}{SEP}{entity_id}"


def price_mark_field(partition: int | str, offset: int | str) -> str:
    """The `KeyLayout.price_marks` field of the version that priced a partition from `offset` on."""
    return f"{partition}:{offset}"


def kept_dead_field(partition: int | str, offset: int | str) -> str:
    """The `KeyLayout.price_marks` field of a message kept a dead letter on a re-decode."""
    return f"{partition}@{offset}"


def redriven_member(partition: int, offset: int) -> str:
    """The `KeyLayout.redriven_sources` member of a message re-driven from the DLQ."""
    return f"{partition}:{offset}"


def tag_member(key: str, value: str) -> str:
    return f"{key}{SEP}{value}"


def tag_set_text(tags: tuple[tuple[str, str], ...]) -> str:
    """A canonical text of a sorted tag set, for the cube member."""
    return TAG_PAIR_SEP.join(f"{key}{TAG_KV_SEP}{value}" for key, value in tags)


def parse_tag_set(text: str) -> dict[str, str]:
    if not text:
        return {}
    return dict(pair.split(TAG_KV_SEP, 1) for pair in text.split(TAG_PAIR_SEP))


class KeyLayout:
    """Builds every InfraPrism Redis key under one prefix (`ip` unless configured)."""

    def __init__(self, prefix: str = "ip") -> None:
        self.prefix = prefix
        self.root = f"{prefix}:v2"

    # --- aggregates (written by the aggregator, read by the API and detector) ---
    def rollup(self, project: str, dimension: Dimension, granularity: Granularity, bucket: str) -> str:
        """Hash: field member -> packed cell (`Cell.pack`)."""
        return f"{self.root}:{project}:r:{dimension}:{granularity}:{bucket}"

    def leaderboard(self, project: str, granularity: Granularity, bucket: str, entity_type: str) -> str:
        """Sorted set: member entity_type SEP entity_id, score cost in nano-dollars.

        Scores are doubles and serve ranking only; exact totals come from the
        entity rollup. `entity_type` is ALL_ENTITY_TYPES for the board of all types.
        """
        return f"{self.root}:{project}:lb:{granularity}:{bucket}:{entity_type}"

    def session(self, project: str, session_id: str) -> str:
        """Hash: entity_type, entity_id, started_ms, ended_ms, turns, cost, input, output."""
        return f"{self.root}:{project}:s:{session_id}"

    def session_index(self, project: str) -> str:
        """Sorted set: member session_id, score started_ms."""
        return f"{self.root}:{project}:si"

    def session_entity_index(self, project: str, entity_type: str, entity_id: str) -> str:
        """Sorted set of one entity's sessions: member session_id, score started_ms."""
        return self.session_entity_index_prefix(project) + entity_member(entity_type, entity_id)

    def session_entity_index_prefix(self, project: str) -> str:
        """`session_entity_index` without its entity member. The apply script appends the
        member itself: a late earlier turn can move a session to another entity."""
        return f"{self.root}:{project}:si:"

    def session_type_index(self, project: str, entity_type: str) -> str:
        """Sorted set of one entity type's sessions: member session_id, score started_ms."""
        return self.session_type_index_prefix(project) + entity_type

    def session_type_index_prefix(self, project: str) -> str:
        """`session_type_index` without its entity type, for the apply script likewise."""
        return f"{self.root}:{project}:sit:"

    def dedupe(self, project: str, slot_ms: int, slot: int) -> str:
        """Set of event_ids counted whose Kafka record time falls in `slot` (core/dedupe.py).

        The slot length is in the name, so a changed window never reads a slot of another length."""
        return f"{self.root}:{project}:dd:{slot_ms}:{slot}"

    def projects(self) -> str:
        """Set of every project that has data."""
        return f"{self.root}:projects"

    def layout_marker(self) -> str:
        """String QUARTER_LAYOUT when every hour hash holds its quarter-hour fields and the cube
        its hours: set by the first batch applied to an empty store, or by `infraprism rebuild`.
        Absent on a store an earlier build wrote: the API then refuses the answers that need
        those cells (docs/query-planner.md, "Time zones"). Not derived: a rebuild sets it."""
        return f"{self.root}:layout"

    def project_settings(self, project: str) -> str:
        """Hash: the project's settings, set by `infraprism projects` (stores/projects.py). Not derived."""
        return f"{self.root}:{project}:settings"

    def data_version(self, project: str) -> str:
        """Counter bumped by every batch that changes the project's aggregates (API cache validation)."""
        return f"{self.root}:{project}:ver"

    def bucket_versions(self, project: str) -> str:
        """Hash of counters bumped by every batch, in the same atomic call, for the API's caches:

        * the rest of a rollup or leaderboard key after `{root}:{project}:` -> bumped when
          the batch changes that key. The API keeps a parsed copy of a hash while its
          version stands;
        * `day:YYYYMMDD` and `month:YYYYMM` (`event_day_version_fields`) -> bumped when the
          batch has an event of that UTC day, or month. The API keeps an answer while the
          versions of its range's days stand (`range_version_fields`: whole months by
          their own field): ingest into today leaves answers over earlier days cached,
          even those read as this month minus its days outside the range.
        """
        return f"{self.root}:{project}:bv"

    def bucket_version_field(self, project: str, key: str) -> str:
        """The `bucket_versions` field of a rollup or leaderboard key of `project`."""
        return key[len(self.root) + len(project) + 2 :]

    @staticmethod
    def event_day_version_fields(day: str) -> tuple[str, str]:
        """The `bucket_versions` fields a batch bumps for an event of the UTC day `day`
        (YYYYMMDD): that day's and its month's. Every bucket counting that day's events,
        of any dimension or granularity, changes only when they move."""
        return f"day:{day}", f"month:{day[:6]}"

    @staticmethod
    def range_version_fields(start: date, end: date) -> list[str]:
        """The `bucket_versions` fields that move whenever an event of [start, end] (UTC
        days, inclusive) is applied: a month's own field where the range covers the whole
        month, else a field per day (a year is about 12 fields plus the edge days, not 365)."""
        fields = []
        first = start
        while first <= end:
            last_of_month = month_end(first)
            if first.day == 1 and last_of_month <= end:
                fields.append(f"month:{month_label(first)}")
            else:
                fields.extend(f"day:{day_label(day)}" for day in days(first, min(last_of_month, end)))
            first = last_of_month + timedelta(days=1)
        return fields

    def generation(self) -> str:
        """Counter bumped by `infraprism rebuild` before and after it deletes the derived keys:
        bucket versions restart after a rebuild, and cached answers must not outlive it."""
        return f"{self.root}:generation"

    def entity_types(self, project: str) -> str:
        """Set of the entity types a project has seen."""
        return f"{self.root}:{project}:etypes"

    def tag_keys(self, project: str) -> str:
        """Set of the tag keys a project has seen."""
        return f"{self.root}:{project}:tagkeys"

    def derived_patterns(self, topic: str, group: str) -> list[str]:
        """Glob patterns of every key the aggregator derives from the events topic.

        `infraprism rebuild` deletes exactly these and recomputes them (it
        handles the offsets key apart, as a fence); API keys, anomaly records
        and detector state are not derived and stay.
        """
        r = self.root
        return [
            f"{r}:*:r:*",
            f"{r}:*:lb:*",
            f"{r}:*:s:*",
            f"{r}:*:si",
            f"{r}:*:si:*",
            f"{r}:*:sit:*",
            f"{r}:*:dd:*",
            f"{r}:*:etypes",
            f"{r}:*:tagkeys",
            f"{r}:*:bv",
            f"{r}:*:reprice",
            f"{r}:*:reprice:*",
            self.projects(),
            self.halted_partitions(topic, group),
            self.price_marks(topic, group),
        ]

    # --- exactly-once bookkeeping (aggregator only) ---
    def offsets(self, topic: str, group: str) -> str:
        """Hash: partition -> next offset to apply. Written in the same atomic call as the batch."""
        return f"{self.root}:offsets:{group}:{topic}"

    def price_marks(self, topic: str, group: str) -> str:
        """Hash: which price-book version priced each stretch of a partition, written by the
        apply script with the batches it applies: `P` -> the version of partition P's last
        batch with priced events, and `P:OFFSET` -> the version from OFFSET on (pipeline/reprice.py
        reads them to know what each event was priced at)."""
        return f"{self.root}:pricemarks:{group}:{topic}"

    def halted_partitions(self, topic: str, group: str) -> str:
        """Hash: partition -> why the aggregator stopped applying it (offset beyond the log)."""
        return f"{self.root}:halted:{group}:{topic}"

    # --- API keys (written by `infraprism keys`, read by the API) ---
    def api_key(self, key_hash: str) -> str:
        """Hash: id, project, name, key_hash, created_at, created_ms, revoked_at, and for a
        scoped key entity_type and entity_id, for an expiring one expires_ms."""
        return f"{self.root}:apikey:{key_hash}"

    def api_key_ids(self) -> str:
        """Hash: key id -> key hash, for `keys list` and `keys revoke ID`."""
        return f"{self.root}:apikeys"

    def project_api_keys(self, project: str) -> str:
        """Sorted set: the project's key ids, scored by creation (ms), for `GET /v1/keys`."""
        return f"{self.root}:{project}:apikeys"

    def project_api_key_ends(self, project: str) -> str:
        """Sorted set: the ids of the project's keys that expire or were revoked, scored by
        that instant (ms): which keys are live, and which to forget once their records go."""
        return f"{self.root}:{project}:apikey-ends"

    # --- price overrides (written by `infraprism prices` and the API, read by the aggregator) ---
    def prices_version(self) -> str:
        """Counter: the price book's version, bumped by every change of any project's overrides.
        The apply script refuses a batch priced with a version older than a change of one of its
        projects (`prices_changed`). Not derived."""
        return f"{self.root}:prices:version"

    def price_books(self) -> str:
        """Hash: `project SEP version` -> the project's overrides after its change at that
        version, as JSON (stores/prices.py). Every change kept, so a re-price knows what an
        event was priced at. Not derived."""
        return f"{self.root}:prices:books"

    def price_changes(self) -> str:
        """Hash: project -> the versions its overrides changed at, ascending ("3,7,12"). Not derived."""
        return f"{self.root}:prices:changes"

    def prices_changed(self) -> str:
        """Hash: project -> the version of its last change: the apply script's per-project price fence."""
        return f"{self.root}:prices:changed"

    def reprice_job(self, project: str) -> str:
        """Hash: the project's re-price in progress, or the last one (pipeline/reprice.py)."""
        return f"{self.root}:{project}:reprice"

    def reprice_progress(self, project: str) -> str:
        """Hash: partition -> next offset the re-price in progress applies; its fence."""
        return f"{self.root}:{project}:reprice:progress"

    def reprice_history(self, project: str) -> str:
        """List: every finished re-price of the project as JSON (range, version, offsets)."""
        return f"{self.root}:{project}:reprice:done"

    def dlq_redriven(self, topic: str) -> str:
        """Set: `partition:offset` of every dead letter `infraprism dlq redrive` re-submitted."""
        return f"{self.root}:dlq-redriven:{topic}"

    def redriven_sources(self, topic: str) -> str:
        """Set: `partition:offset` in the events topic of every message whose dead letter
        `infraprism dlq redrive` re-submitted. Its copy counts it: `rebuild` and `reprice`
        leave the original out, even where today's prices would pass it. Never deleted."""
        return f"{self.root}:redriven-sources:{topic}"

    def budgets(self, project: str) -> str:
        """Hash: budget id -> the budget as JSON (stores/budgets.py)."""
        return f"{self.root}:{project}:budgets"

    def api_keys_indexed(self) -> str:
        """String: set once the keys of an earlier build are in their projects' indexes."""
        return f"{self.root}:apikeys-indexed"

    def api_key_rate(self, key_hash: str) -> str:
        """Hash: tokens, ms: the key's rate-limit token bucket (stores/authenticate.lua)."""
        return f"{self.root}:ratelimit:{key_hash}"

    # --- anomalies (written by the detector, read by the API and alerts; dismissed by the API and CLI) ---
    def anomaly(self, project: str, anomaly_id: str) -> str:
        """Hash: the anomaly record in the reference's shape (core/anomalies.py)."""
        return f"{self.root}:{project}:an:{anomaly_id}"

    def anomaly_index(self, project: str) -> str:
        """Sorted set: member anomaly id, score detected_at epoch ms."""
        return f"{self.root}:{project}:ai"

    def anomaly_owners(self) -> str:
        """Hash: anomaly id -> project, so a dismissal by id alone finds the record."""
        return f"{self.root}:anomaly-owner"

    def anomaly_outbox(self, project: str) -> str:
        """Stream: one entry per record version (the record's fields) that alerting has to deliver."""
        return f"{self.root}:{project}:det:outbox"

    def alert_cursors(self, project: str) -> str:
        """Hash: alert channel name -> id of the last outbox entry it delivered."""
        return f"{self.root}:{project}:det:outbox-cursor"

    def alert_delivered(self, project: str, channel: str) -> str:
        """Hash: anomaly id -> the last version this alert channel delivered."""
        return f"{self.root}:{project}:det:delivered:{channel}"

    # --- detector state (written and read by the detector only) ---
    def detector_history(self, project: str, member: str) -> str:
        """Hash: one subject's rolling hourly history (pipeline/detector_state.py); member "" is the total."""
        return f"{self.root}:{project}:det:ht" if not member else f"{self.root}:{project}:det:h:{member}"

    def detector_episodes(self, project: str) -> str:
        """Hash: episode field (type SEP member) -> JSON of the project's open episode."""
        return f"{self.root}:{project}:det:episodes"

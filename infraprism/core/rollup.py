"""Which rollup cells a batch of events touches, combined in memory. Pure.

The aggregator's cost is dominated by Python work per Redis command, so a
batch is combined twice before it reaches Redis:

1. events fold into *groups*, one per distinct (project, entity, model, tag set,
   hour): a few integer additions per event;
2. each group expands into the cells of every rollup (total, entity, model,
   tag, entity x model, cube) at every granularity, summed per cell.

The result is one increment per (key, field) for the whole batch, which the
write side applies in one atomic Redis call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from infraprism.core.buckets import (
    MS_PER_HOUR,
    MS_PER_QUARTER,
    Granularity,
    labels_for_hour,
    next_month,
    parse_day_label,
)
from infraprism.core.cell import COST, EVENTS, INPUT, LATENCY_COUNT, LATENCY_SUM, OUTPUT, Cell, pack_lanes
from infraprism.core.events import CostEvent
from infraprism.core.keys import (
    ALL_ENTITY_TYPES,
    DIMENSION_GRANULARITIES,
    LEADERBOARD_GRANULARITIES,
    SEP,
    Dimension,
    quarter_member,
    tag_set_text,
)

GroupKey = tuple[str, str, str, str, str, tuple[tuple[str, str], ...], int]

# The dimensions in the order `cell_lanes` lists a group's members: TOTAL, ENTITY, MODEL,
# ENTITY_MODEL, CUBE, then TAG (one member per tag, so apart).
_DIMENSIONS = (
    Dimension.TOTAL,
    Dimension.ENTITY,
    Dimension.MODEL,
    Dimension.ENTITY_MODEL,
    Dimension.CUBE,
    Dimension.TAG,
)
# Every (dimension, granularity) an hour's group adds to, in that order.
_CELL_BUCKETS: tuple[tuple[Dimension, Granularity], ...] = tuple(
    (dimension, granularity) for dimension in _DIMENSIONS for granularity in DIMENSION_GRANULARITIES[dimension]
)

# How `_add_members` walks a list of buckets in _CELL_BUCKETS order: the index of each non-tag
# bucket's member (in _DIMENSIONS order), and where the tag buckets start.
_MEMBER_OF = tuple(_DIMENSIONS.index(dimension) for dimension, _ in _CELL_BUCKETS if dimension is not Dimension.TAG)
_FIRST_TAG = len(_MEMBER_OF)
# The same for the hour buckets alone, which also hold the quarter-hour fields.
_HOUR_BUCKETS = tuple(index for index, (_, granularity) in enumerate(_CELL_BUCKETS) if granularity is Granularity.HOUR)
_HOUR_MEMBER_OF = tuple(
    _DIMENSIONS.index(dimension)
    for dimension in (_CELL_BUCKETS[index][0] for index in _HOUR_BUCKETS)
    if dimension is not Dimension.TAG
)
_QUARTER_SUFFIX = ("",) + tuple(quarter_member("", quarter) for quarter in (1, 2, 3))


@dataclass(slots=True)
class SessionDelta:
    """What one batch adds to one session record."""

    entity_type: str
    entity_id: str
    started_ms: int
    ended_ms: int
    turns: int = 0
    cost_nano: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # Whether turns of more than one entity carry this session id: its totals then mix them,
    # so a key scoped to one entity is not shown the session (api/sessions.py).
    shared: bool = False


@dataclass(slots=True)
class BatchRollup:
    """The combined effect of a batch of (already de-duplicated) events."""

    groups: dict[GroupKey, Cell] = field(default_factory=dict)
    # The same for the last three quarters of each hour, the key ending in the quarter's index.
    quarter_groups: dict[GroupKey, Cell] = field(default_factory=dict)
    sessions: dict[tuple[str, str], SessionDelta] = field(default_factory=dict)
    # (project, model, provider, price source, quarter index) -> the events' cells, for the
    # PRICE_SOURCE rollup (its hour, quarter, day and month cells).
    source_groups: dict[tuple[str, str, str, str, int], Cell] = field(default_factory=dict)
    # (project, dedupe slot) -> event ids, for the dedupe sets (pipeline/dedupe.py).
    event_ids: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    events: int = 0

    def add(self, event: CostEvent, dedupe_slot: int = 0) -> None:
        """Fold one event in. `dedupe_slot` is the slot of its Kafka record time (pipeline/dedupe.py)."""
        hour_index = event.ts_ms // MS_PER_HOUR
        # The one step that could raise runs before anything is changed, so a
        # failing event leaves the rollup as it was.
        labels_for_hour(hour_index)
        key = (
            event.project_id,
            event.entity_type,
            event.entity_id,
            event.model,
            event.provider,
            event.tags,
            hour_index,
        )
        cells = [self.groups.get(key) or self.groups.setdefault(key, Cell.zero())]
        quarter_index = event.ts_ms // MS_PER_QUARTER
        source_key = (event.project_id, event.model, event.provider, event.price_source, quarter_index)
        cells.append(self.source_groups.get(source_key) or self.source_groups.setdefault(source_key, Cell.zero()))
        if quarter_index & 3:
            quarter_key = (*key[:6], quarter_index)
            cells.append(
                self.quarter_groups.get(quarter_key) or self.quarter_groups.setdefault(quarter_key, Cell.zero())
            )
        for cell in cells:
            cell[EVENTS] += 1
            cell[COST] += event.cost_nano
            cell[INPUT] += event.input_tokens
            cell[OUTPUT] += event.output_tokens
            if event.latency_us is not None:
                cell[LATENCY_SUM] += event.latency_us
                cell[LATENCY_COUNT] += 1

        ids_key = (event.project_id, dedupe_slot)
        ids = self.event_ids.get(ids_key)
        if ids is None:
            ids = self.event_ids[ids_key] = []
        ids.append(event.event_id)

        if event.session_id is not None:
            session_key = (event.project_id, event.session_id)
            session = self.sessions.get(session_key)
            if session is None:
                session = self.sessions[session_key] = SessionDelta(
                    event.entity_type, event.entity_id, event.ts_ms, event.ts_ms
                )
            if (event.entity_type, event.entity_id) != (session.entity_type, session.entity_id):
                session.shared = True
            if event.ts_ms < session.started_ms:
                # The earliest turn names the session's entity, whatever order turns arrive in.
                session.started_ms = event.ts_ms
                session.entity_type = event.entity_type
                session.entity_id = event.entity_id
            session.ended_ms = max(session.ended_ms, event.ts_ms)
            session.turns += 1
            session.cost_nano += event.cost_nano
            session.input_tokens += event.input_tokens
            session.output_tokens += event.output_tokens
        self.events += 1

    def cells(self) -> dict[tuple[str, Dimension, Granularity, str], dict[str, Cell]]:
        """(project, dimension, granularity, bucket) -> member -> the six summed counters."""
        return {
            where: {member: Cell.from_lanes(lanes) for member, lanes in members.items()}
            for where, members in self.cell_lanes().items()
        }

    def cell_lanes(self) -> dict[tuple[str, Dimension, Granularity, str], dict[str, int]]:
        """`cells`, each cell's six counters summed as one integer of lanes (`Cell.lanes`).

        The hot loop of the decoder: a backfill batch has about one group per
        event and each group adds to 18 cells (and most to 6 quarter cells; its price source to
        3 and a quarter cell more), so a
        cell's sum is one integer addition rather than six, and the bucket dicts
        of a (project, hour) are looked up once for all the groups of that hour.
        """
        out: dict[tuple[str, Dimension, Granularity, str], dict[str, int]] = {}
        buckets_of: dict[tuple[str, int], list[dict[str, int]]] = {}
        for group, cell in self.groups.items():
            project, hour_index = group[0], group[6]
            buckets = buckets_of.get((project, hour_index))
            if buckets is None:
                labels = dict(
                    zip(
                        (Granularity.HOUR, Granularity.DAY, Granularity.MONTH), labels_for_hour(hour_index), strict=True
                    )
                )
                buckets = buckets_of[(project, hour_index)] = [
                    out.setdefault((project, dimension, granularity, labels[granularity]), {})
                    for dimension, granularity in _CELL_BUCKETS
                ]
            _add_members(buckets, cell.lanes(), group)
        # A quarter's cells are fields of its hour's hashes (keys.quarter_member).
        hour_buckets_of = {where: [buckets[index] for index in _HOUR_BUCKETS] for where, buckets in buckets_of.items()}
        for group, cell in self.quarter_groups.items():
            quarter_index = group[6]
            # Every quarter's event is in its hour's group too, so its buckets exist.
            buckets = hour_buckets_of[(group[0], quarter_index >> 2)]
            _add_members(
                buckets, cell.lanes(), group, _HOUR_MEMBER_OF, len(_HOUR_MEMBER_OF), _QUARTER_SUFFIX[quarter_index & 3]
            )
        self._add_source_cells(out)
        return out

    def _add_source_cells(self, out: dict[tuple[str, Dimension, Granularity, str], dict[str, int]]) -> None:
        """The PRICE_SOURCE cells: each quarter's group adds to its hour, day and month, and the
        last three quarters of an hour to their quarter field too."""
        labels_of: dict[int, tuple[str, str, str]] = {}
        for (project, model, provider, source, quarter_index), cell in self.source_groups.items():
            lanes = cell.lanes()
            member = f"{model}{SEP}{provider}{SEP}{source}"
            labels = labels_of.get(quarter_index >> 2)
            if labels is None:
                labels = labels_of[quarter_index >> 2] = labels_for_hour(quarter_index >> 2)
            for granularity, label in zip((Granularity.HOUR, Granularity.DAY, Granularity.MONTH), labels, strict=True):
                bucket = out.setdefault((project, Dimension.PRICE_SOURCE, granularity, label), {})
                bucket[member] = bucket.get(member, 0) + lanes
            if quarter_index & 3:
                bucket = out[(project, Dimension.PRICE_SOURCE, Granularity.HOUR, labels[0])]
                field_name = member + _QUARTER_SUFFIX[quarter_index & 3]
                bucket[field_name] = bucket.get(field_name, 0) + lanes

    def leaderboard(self) -> dict[tuple[str, Granularity, str, str], dict[str, int]]:
        """(project, granularity, bucket, entity type or ALL) -> entity member -> cost nano."""
        out: dict[tuple[str, Granularity, str, str], dict[str, int]] = {}
        boards_of: dict[tuple[str, int, str], list[dict[str, int]]] = {}
        for (project, etype, eid, _model, _provider, _tags, hour_index), cell in self.groups.items():
            boards = boards_of.get((project, hour_index, etype))
            if boards is None:
                _, day, month = labels_for_hour(hour_index)
                boards = boards_of[(project, hour_index, etype)] = [
                    out.setdefault((project, granularity, bucket, board_type), {})
                    for granularity, bucket in zip(LEADERBOARD_GRANULARITIES, (day, month, month[:4]), strict=True)
                    for board_type in (etype, ALL_ENTITY_TYPES)
                ]
            entity = f"{etype}{SEP}{eid}"
            cost = cell[COST]
            for board in boards:
                board[entity] = board.get(entity, 0) + cost
        return out

    def event_days(self) -> set[tuple[str, str]]:
        """(project, UTC day label) of every day the batch has events of."""
        return {(project, labels_for_hour(hour_index)[1]) for project, *_, hour_index in self.groups}

    def entity_types(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for project, etype, *_ in self.groups:
            out.setdefault(project, set()).add(etype)
        return out

    def tag_keys(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for project, _e, _i, _m, _p, tags, _h in self.groups:
            keys = out.setdefault(project, set())
            keys.update(key for key, _ in tags)
        return out


def _add_members(
    buckets: list[dict[str, int]],
    lanes: int,
    group: GroupKey,
    member_of: tuple[int, ...] = _MEMBER_OF,
    first_tag: int = _FIRST_TAG,
    suffix: str = "",
) -> None:
    """Add a group's lanes to its member of each bucket: buckets[:first_tag] are of the
    dimensions `member_of` names, the rest of TAG, one member per tag."""
    _, etype, eid, model, provider, tags, _ = group
    entity = f"{etype}{SEP}{eid}"
    model_provider = f"{model}{SEP}{provider}"
    entity_model = f"{entity}{SEP}{model_provider}"
    cube = f"{entity_model}{SEP}{tag_set_text(tags)}"
    if suffix:
        members = (suffix, entity + suffix, model_provider + suffix, entity_model + suffix, cube + suffix)
    else:
        members = ("", entity, model_provider, entity_model, cube)
    for bucket, which in zip(buckets, member_of, strict=False):
        member = members[which]
        bucket[member] = bucket.get(member, 0) + lanes
    for key, value in tags:
        member = f"{key}{SEP}{value}{suffix}"
        for bucket in buckets[first_tag:]:
            bucket[member] = bucket.get(member, 0) + lanes


def cell_increments(members: dict[str, int]) -> list[str]:
    """Flat [member, packed increment, ...]: what a batch adds to each cell of one hash (`cell_lanes`)."""
    flat: list[str] = []
    for member, lanes in members.items():
        flat.append(member)
        flat.append(pack_lanes(lanes))
    return flat


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each granularity's buckets are kept after they end; None keeps them forever.

    Year buckets (leaderboards only) follow the month retention.
    """

    hour_days: int | None = None
    day_days: int | None = None
    month_days: int | None = None

    def days_for(self, granularity: Granularity) -> int | None:
        return {
            Granularity.HOUR: self.hour_days,
            Granularity.DAY: self.day_days,
            Granularity.MONTH: self.month_days,
            Granularity.YEAR: self.month_days,
        }[granularity]


def bucket_end(granularity: Granularity, bucket: str) -> datetime:
    """The first instant after a bucket, UTC."""
    if granularity is Granularity.HOUR:
        start = datetime(int(bucket[:4]), int(bucket[4:6]), int(bucket[6:8]), int(bucket[8:10]), tzinfo=UTC)
        return start + timedelta(hours=1)
    if granularity is Granularity.DAY:
        day = parse_day_label(bucket)
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    if granularity is Granularity.YEAR:
        return datetime(int(bucket) + 1, 1, 1, tzinfo=UTC)
    first = next_month(parse_day_label(bucket + "01"))
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def expire_at(granularity: Granularity, bucket: str, retention_days: int | None) -> int:
    """Epoch seconds when a bucket's keys may go, or 0 to keep them forever (the default)."""
    if retention_days is None:
        return 0
    # In integers: the last buckets the contract allows end in 9999, and a datetime
    # step past them would overflow.
    return int(bucket_end(granularity, bucket).timestamp()) + retention_days * 86_400


__all__ = ["BatchRollup", "Retention", "SessionDelta", "bucket_end", "cell_increments", "expire_at", "is_kept"]


def is_kept(granularity: Granularity, bucket: str, retention: Retention, now_s: int) -> bool:
    """Whether a bucket's keys are still there at `now_s` under `retention` (they expire at
    `expire_at`): a read of one that is not would sum to less than its events."""
    days = retention.days_for(granularity)
    return days is None or now_s < expire_at(granularity, bucket, days)

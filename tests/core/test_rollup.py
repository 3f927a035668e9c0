"""BatchRollup tables: which cells, leaderboards, sessions and dedupe ids a small batch produces."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infraprism.core.buckets import Granularity
from infraprism.core.cell import Cell
from infraprism.core.events import validate_event
from infraprism.core.keys import QUARTER_SEP, Dimension, parse_tag_set, quarter_member
from infraprism.core.rollup import BatchRollup, bucket_end, cell_increments, expire_at

H, D, M, Y = Granularity.HOUR, Granularity.DAY, Granularity.MONTH, Granularity.YEAR
US = "\x1f"


def event(event_id: str = "e1", **over):
    raw = {
        "event_id": event_id,
        "timestamp": "2024-02-29T23:59:59.999Z",
        "entity_type": "customer",
        "entity_id": "acme",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost": 0.0125,
        "latency_ms": 250.5,
    }
    raw.update(over)
    return validate_event({k: v for k, v in raw.items() if v is not None})


def rollup_of(*events) -> BatchRollup:
    rollup = BatchRollup()
    for e in events:
        rollup.add(e)
    return rollup


def test_one_event_touches_every_dimension_at_its_granularities():
    cells = rollup_of(event(tags={"env": "prod", "feature": "chat"})).cells()
    counters = [1, 12_500_000, 100, 20, 250_500, 1]
    entity, model = f"customer{US}acme", f"gpt-4o{US}openai"
    cube = f"{entity}{US}{model}{US}env\x1eprod\x1dfeature\x1echat"
    buckets = {H: "2024022923", D: "20240229", M: "202402"}
    expected = {}
    for granularity, bucket in buckets.items():
        expected[("default", Dimension.TOTAL, granularity, bucket)] = {"": counters}
        expected[("default", Dimension.ENTITY, granularity, bucket)] = {entity: counters}
        expected[("default", Dimension.MODEL, granularity, bucket)] = {model: counters}
        expected[("default", Dimension.TAG, granularity, bucket)] = {
            f"env{US}prod": counters,
            f"feature{US}chat": counters,
        }
        expected[("default", Dimension.ENTITY_MODEL, granularity, bucket)] = {f"{entity}{US}{model}": counters}
        expected[("default", Dimension.CUBE, granularity, bucket)] = {cube: counters}
        expected[("default", Dimension.PRICE_SOURCE, granularity, bucket)] = {f"{model}{US}supplied": counters}
    # 23:59:59.999 is in the hour's last quarter: each hour hash holds that quarter's cell too.
    for dimension in Dimension:
        hour = expected[("default", dimension, H, "2024022923")]
        hour.update({quarter_member(member, 3): counters for member in list(hour)})
    assert cells == expected
    assert parse_tag_set(cube.split(US)[4]) == {"env": "prod", "feature": "chat"}


def test_events_sum_per_cell_and_split_by_hour():
    cells = rollup_of(
        event("a", timestamp="2024-02-29T22:10:00Z", latency_ms=None),
        event("b", timestamp="2024-02-29T23:59:59.999Z", cost=1.5e-9),  # 1.5 nano rounds half-even to 2
        event("c", timestamp="2024-03-01T00:00:00Z", project_id="other"),
    ).cells()
    assert cells[("default", Dimension.TOTAL, H, "2024022922")] == {"": [1, 12_500_000, 100, 20, 0, 0]}
    assert cells[("default", Dimension.TOTAL, H, "2024022923")] == {
        "": [1, 2, 100, 20, 250_500, 1],
        quarter_member("", 3): [1, 2, 100, 20, 250_500, 1],  # 23:59 is in the last quarter
    }
    assert cells[("default", Dimension.TOTAL, D, "20240229")] == {"": [2, 12_500_002, 200, 40, 250_500, 1]}
    assert cells[("default", Dimension.TOTAL, M, "202402")] == {"": [2, 12_500_002, 200, 40, 250_500, 1]}
    assert cells[("other", Dimension.TOTAL, M, "202403")] == {"": [1, 12_500_000, 100, 20, 250_500, 1]}
    assert ("default", Dimension.TOTAL, M, "202403") not in cells


def test_untagged_events_have_no_tag_members():
    cells = rollup_of(event()).cells()
    assert cells.get(("default", Dimension.TAG, D, "20240229"), {}) == {}
    assert cells[("default", Dimension.CUBE, D, "20240229")] == {
        f"customer{US}acme{US}gpt-4o{US}openai{US}": [1, 12_500_000, 100, 20, 250_500, 1]
    }


def test_leaderboard_per_type_and_across_types():
    boards = rollup_of(
        event("a"),
        event("b", cost=0.5),
        event("c", entity_type="team", entity_id="ml", cost=2),
        event("d", timestamp="2024-03-01T00:00:00Z", cost=1),
    ).leaderboard()
    acme, ml = f"customer{US}acme", f"team{US}ml"
    assert boards == {
        ("default", D, "20240229", "customer"): {acme: 512_500_000},
        ("default", D, "20240229", "*"): {acme: 512_500_000, ml: 2_000_000_000},
        ("default", D, "20240229", "team"): {ml: 2_000_000_000},
        ("default", M, "202402", "customer"): {acme: 512_500_000},
        ("default", M, "202402", "*"): {acme: 512_500_000, ml: 2_000_000_000},
        ("default", M, "202402", "team"): {ml: 2_000_000_000},
        ("default", Y, "2024", "customer"): {acme: 1_512_500_000},
        ("default", Y, "2024", "*"): {acme: 1_512_500_000, ml: 2_000_000_000},
        ("default", Y, "2024", "team"): {ml: 2_000_000_000},
        ("default", D, "20240301", "customer"): {acme: 1_000_000_000},
        ("default", D, "20240301", "*"): {acme: 1_000_000_000},
        ("default", M, "202403", "customer"): {acme: 1_000_000_000},
        ("default", M, "202403", "*"): {acme: 1_000_000_000},
    }


@pytest.mark.parametrize(
    ("turns", "entity", "started", "ended"),
    [
        # (event_id, timestamp, entity_id) in arrival order
        ([("1", "2024-02-29T10:00:00Z", "a"), ("2", "2024-02-29T11:00:00Z", "b")], "a", "10:00", "11:00"),
        ([("2", "2024-02-29T11:00:00Z", "b"), ("1", "2024-02-29T10:00:00Z", "a")], "a", "10:00", "11:00"),
        (
            [
                ("3", "2024-02-29T12:00:00Z", "c"),
                ("1", "2024-02-29T10:00:00Z", "a"),
                ("2", "2024-02-29T11:00:00Z", "b"),
            ],
            "a",
            "10:00",
            "12:00",
        ),
        # A tie on the earliest instant keeps the first arrival.
        ([("1", "2024-02-29T10:00:00Z", "a"), ("2", "2024-02-29T10:00:00Z", "b")], "a", "10:00", "10:00"),
    ],
)
def test_sessions_take_the_earliest_turn_whatever_the_order(turns, entity, started, ended):
    rollup = rollup_of(*(event(eid, timestamp=ts, entity_id=who, session_id="s") for eid, ts, who in turns))
    session = rollup.sessions[("default", "s")]

    def at(hhmm: str) -> int:
        return int(datetime.fromisoformat(f"2024-02-29T{hhmm}:00+00:00").timestamp() * 1000)

    assert (session.entity_type, session.entity_id) == ("customer", entity)
    assert (session.started_ms, session.ended_ms) == (at(started), at(ended))
    assert session.turns == len(turns)
    assert session.cost_nano == 12_500_000 * len(turns)
    assert (session.input_tokens, session.output_tokens) == (100 * len(turns), 20 * len(turns))


def test_events_without_session_make_no_session_and_ids_group_by_dedupe_slot_not_event_day():
    rollup = BatchRollup()
    rollup.add(event("a"), dedupe_slot=5)
    rollup.add(event("b", timestamp="2024-03-01T00:00:00Z"), dedupe_slot=5)
    rollup.add(event("c"), dedupe_slot=6)
    rollup.add(event("a", project_id="other"), dedupe_slot=5)
    assert rollup.sessions == {}
    assert rollup.event_ids == {("default", 5): ["a", "b"], ("default", 6): ["c"], ("other", 5): ["a"]}
    assert rollup.event_days() == {("default", "20240229"), ("default", "20240301"), ("other", "20240229")}
    assert rollup.events == 4
    assert rollup.entity_types() == {"default": {"customer"}, "other": {"customer"}}


def test_tag_keys_per_project():
    rollup = rollup_of(
        event("a", tags={"env": "p"}), event("b", tags={"feature": "x", "env": "q"}), event("c", project_id="o")
    )
    assert rollup.tag_keys() == {"default": {"env", "feature"}, "o": set()}


def test_cell_increments_pack_six_counters_per_member():
    assert cell_increments({"": Cell([1, 5, 0, 7, 0, 0]).lanes(), f"a{US}b": Cell([2, 0, 3, 0, 9, 1]).lanes()}) == [
        "", "1 5 0 7 0 0",
        f"a{US}b", "2 0 3 0 9 1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("granularity", "bucket", "end"),
    [
        (H, "2024022923", datetime(2024, 3, 1, tzinfo=UTC)),
        (D, "20240229", datetime(2024, 3, 1, tzinfo=UTC)),
        (D, "20241231", datetime(2025, 1, 1, tzinfo=UTC)),
        (M, "202402", datetime(2024, 3, 1, tzinfo=UTC)),
        (M, "202412", datetime(2025, 1, 1, tzinfo=UTC)),
        (Y, "2024", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_bucket_end_and_retention(granularity, bucket, end):
    assert bucket_end(granularity, bucket) == end
    assert expire_at(granularity, bucket, None) == 0  # kept forever by default
    assert expire_at(granularity, bucket, 3) == int(end.timestamp()) + 3 * 86_400


def test_a_packed_cell_reads_back_from_text_or_bytes():
    packed = Cell([3, 18_580_000, 1500, 420, 2_400_000, 2]).pack()
    assert packed == "3 18580000 1500 420 2400000 2"
    assert Cell.unpack(packed) == Cell.unpack(packed.encode()) == [3, 18_580_000, 1500, 420, 2_400_000, 2]


def test_lanes_add_six_counters_at_once_exactly_at_their_largest():
    biggest = [200_000, 200_000 * 10**15, 200_000 * 10**12, 200_000 * 10**12, 200_000 * 86_400_000_000, 200_000]
    total = Cell(biggest).lanes() + Cell(biggest).lanes() + Cell([1, 2, 3, 4, 5, 6]).lanes()
    assert Cell.from_lanes(total) == [2 * b + extra for b, extra in zip(biggest, [1, 2, 3, 4, 5, 6], strict=True)]


def test_an_hours_first_quarter_has_no_field_of_its_own():
    # The first quarter is its hour minus the other three (keys.quarter_member).
    cells = rollup_of(event(timestamp="2024-02-29T23:14:59.999Z")).cells()
    assert all(QUARTER_SEP not in member for members in cells.values() for member in members)
    assert ("default", Dimension.CUBE, H, "2024022923") in cells


def test_quarter_fields_sum_what_each_quarter_holds():
    events = [
        event("a", timestamp="2024-02-29T23:15:00Z"),
        event("b", timestamp="2024-02-29T23:29:59.999Z"),
        event("c", timestamp="2024-02-29T23:30:00Z"),
        event("d", timestamp="2024-02-29T23:00:00Z"),
    ]
    cells = rollup_of(*events).cells()
    total = cells[("default", Dimension.TOTAL, H, "2024022923")]
    assert {member: cell[0] for member, cell in total.items()} == {
        "": 4,
        quarter_member("", 1): 2,
        quarter_member("", 2): 1,
    }
    entity = cells[("default", Dimension.ENTITY, H, "2024022923")]
    assert entity[quarter_member(f"customer{US}acme", 1)][1] == 2 * 12_500_000
    assert QUARTER_SEP not in "".join(cells[("default", Dimension.ENTITY, D, "20240229")])

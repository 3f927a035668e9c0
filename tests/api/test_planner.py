"""The planner's choices, as tables. Pure: no Redis."""

from __future__ import annotations

from datetime import date

import pytest

from infraprism.api.planner import (
    Filters,
    GroupBy,
    Grouping,
    Interval,
    MemberInfo,
    choose_dimension,
    group_of,
    instant_range_ms,
    local_periods,
    matches,
    member_info,
    plan_costs,
    plan_leaderboard,
    plan_timeseries,
)
from infraprism.core.buckets import Granularity
from infraprism.core.keys import ALL_ENTITY_TYPES, SEP, Dimension, tag_set_text

E, M, T = "customer", "gpt-4o", (("env", "prod"),)


@pytest.mark.parametrize(
    ("filters", "grouping", "dimension", "member", "with_total"),
    [
        (Filters(), Grouping(), Dimension.TOTAL, "", False),
        (Filters(entity_type=E), Grouping(), Dimension.ENTITY, None, False),
        (Filters(entity_id="acme"), Grouping(), Dimension.ENTITY, None, False),
        (
            Filters(entity_type=E, entity_id="acme"),
            Grouping(),
            Dimension.ENTITY,
            f"{E}{SEP}acme",
            False,
        ),
        (Filters(), Grouping(GroupBy.ENTITY), Dimension.ENTITY, None, False),
        (Filters(model=M), Grouping(), Dimension.MODEL, None, False),
        (Filters(), Grouping(GroupBy.MODEL), Dimension.MODEL, None, False),
        (Filters(tags=T), Grouping(), Dimension.TAG, f"env{SEP}prod", False),
        (Filters(tags=T), Grouping(GroupBy.MONTH), Dimension.TAG, f"env{SEP}prod", False),
        (Filters(), Grouping(GroupBy.TAG, "env"), Dimension.TAG, None, True),
        (Filters(entity_type=E, model=M), Grouping(), Dimension.ENTITY_MODEL, None, False),
        (Filters(entity_type=E), Grouping(GroupBy.MODEL), Dimension.ENTITY_MODEL, None, False),
        (Filters(model=M), Grouping(GroupBy.ENTITY), Dimension.ENTITY_MODEL, None, False),
        (Filters(tags=(("a", "1"), ("b", "2"))), Grouping(), Dimension.CUBE, None, False),
        (Filters(tags=T, entity_type=E), Grouping(), Dimension.CUBE, None, False),
        (Filters(tags=T, model=M), Grouping(), Dimension.CUBE, None, False),
        (Filters(tags=T), Grouping(GroupBy.ENTITY), Dimension.CUBE, None, False),
        (Filters(entity_type=E), Grouping(GroupBy.TAG, "env"), Dimension.CUBE, None, False),
        (Filters(tags=T), Grouping(GroupBy.TAG, "env"), Dimension.CUBE, None, False),
        (Filters(), Grouping(GroupBy.DAY), Dimension.TOTAL, "", False),
        (Filters(entity_type=E), Grouping(GroupBy.WEEK), Dimension.ENTITY, None, False),
    ],
)
def test_smallest_dimension(filters, grouping, dimension, member, with_total):
    assert choose_dimension(filters, grouping) == (dimension, member, with_total)


def _labels(plan):
    return [(b.granularity, b.label) for b in plan.buckets]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # A whole year: 12 month buckets.
        (
            date(2025, 1, 1),
            date(2025, 12, 31),
            [(Granularity.MONTH, f"2025{m:02d}") for m in range(1, 13)],
        ),
        # Edges as days, whole months inside as months, across a year end.
        (
            date(2024, 12, 30),
            date(2025, 2, 2),
            [
                (Granularity.DAY, "20241230"),
                (Granularity.DAY, "20241231"),
                (Granularity.MONTH, "202501"),
                (Granularity.DAY, "20250201"),
                (Granularity.DAY, "20250202"),
            ],
        ),
        (date(2025, 3, 5), date(2025, 3, 5), [(Granularity.DAY, "20250305")]),
    ],
)
def test_range_is_covered_by_months_and_edge_days(start, end, expected):
    assert _labels(plan_costs(start, end, Filters(), Grouping())) == expected


def test_the_last_365_days_read_months_and_subtract_a_partial_months_outside_days():
    plan = plan_costs(date(2024, 11, 25), date(2025, 11, 24), Filters(), Grouping())
    assert [(b.label, b.sign) for b in plan.buckets] == (
        [(f"202411{d}", 1) for d in range(25, 31)]
        + [("202412", 1)]
        + [(f"2025{m:02d}", 1) for m in range(1, 12)]
        + [(f"202511{d}", -1) for d in range(25, 31)]
    )


def test_the_last_31_days_read_eight_days_and_a_month_minus_seven():
    plan = plan_costs(date(2026, 10, 24), date(2026, 11, 23), Filters(), Grouping(GroupBy.ENTITY))
    assert [(b.label, b.sign) for b in plan.buckets] == (
        [(f"202610{d}", 1) for d in range(24, 32)] + [("202611", 1)] + [(f"202611{d}", -1) for d in range(24, 31)]
    )


def test_group_by_month_maps_subtracted_days_to_their_month():
    plan = plan_costs(date(2025, 1, 1), date(2025, 1, 29), Filters(), Grouping(GroupBy.MONTH))
    assert [(b.label, b.period, b.sign) for b in plan.buckets] == [
        ("202501", "2025-01-01", 1),
        ("20250130", "2025-01-01", -1),
        ("20250131", "2025-01-01", -1),
    ]


def test_group_by_week_reads_days_labelled_by_monday():
    plan = plan_costs(date(2024, 12, 30), date(2025, 1, 6), Filters(), Grouping(GroupBy.WEEK))
    assert {b.granularity for b in plan.buckets} == {Granularity.DAY}
    assert [b.period for b in plan.buckets] == ["2024-12-30"] * 7 + ["2025-01-06"]


def test_group_by_month_maps_edge_days_to_their_month():
    plan = plan_costs(date(2024, 12, 31), date(2025, 1, 31), Filters(), Grouping(GroupBy.MONTH))
    assert [(b.label, b.period) for b in plan.buckets] == [
        ("20241231", "2024-12-01"),
        ("202501", "2025-01-01"),
    ]


def test_hourly_series_reads_hours_and_zero_fills_every_hour():
    plan = plan_timeseries(date(2025, 1, 1), date(2025, 1, 2), Filters(entity_type=E), Interval.HOUR)
    assert plan.dimension is Dimension.ENTITY
    assert {b.granularity for b in plan.buckets} == {Granularity.HOUR}
    assert len(plan.buckets) == 48
    assert len(plan.periods) == 48
    assert plan.periods[0] == "2025-01-01T00:00:00Z"
    assert plan.periods[-1] == "2025-01-02T23:00:00Z"


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (Interval.DAY, ["2025-01-30", "2025-01-31", "2025-02-01"]),
        (Interval.WEEK, ["2025-01-27"]),
        (Interval.MONTH, ["2025-01-01", "2025-02-01"]),
    ],
)
def test_periods(interval, expected):
    assert [period.key for period in local_periods(date(2025, 1, 30), date(2025, 2, 1), interval, "UTC")] == expected


def test_leaderboard_plan_uses_the_all_types_board_without_a_filter():
    plan = plan_leaderboard(date(2025, 1, 1), date(2025, 1, 31), None)
    assert plan.board_type == ALL_ENTITY_TYPES
    assert [(r.granularity, r.label) for r in plan.boards] == [(Granularity.MONTH, "202501")]
    assert plan_leaderboard(date(2025, 1, 1), date(2025, 1, 31), "team").board_type == "team"


def test_a_365_day_leaderboard_reads_a_year_board_and_exact_totals_from_months():
    plan = plan_leaderboard(date(2025, 11, 24), date(2026, 11, 23), None)
    assert [(r.granularity, r.label, r.sign) for r in plan.boards] == (
        [(Granularity.DAY, f"202511{d}", 1) for d in range(24, 31)]
        + [(Granularity.MONTH, "202512", 1), (Granularity.YEAR, "2026", 1)]
        + [(Granularity.DAY, f"202611{d}", -1) for d in range(24, 31)]
        + [(Granularity.MONTH, "202612", -1)]
    )
    # The entity rollup has no year buckets: months, and days added or subtracted.
    assert {r.granularity for r in plan.rollups} == {Granularity.DAY, Granularity.MONTH}
    assert sum(r.granularity is Granularity.MONTH for r in plan.rollups) == 12


def test_instant_range_is_end_exclusive_local_midnight():
    assert instant_range_ms(date(1970, 1, 1), date(1970, 1, 1)) == (0, 86_400_000)
    # Los Angeles: 08:00 UTC in winter; the day clocks go forward is 23 hours.
    assert instant_range_ms(date(2025, 3, 9), date(2025, 3, 9), "America/Los_Angeles") == (
        1_741_507_200_000,
        1_741_507_200_000 + 23 * 3_600_000,
    )


CUBE_MEMBER = SEP.join(["team", "a:b", "gpt-4o", "azure", tag_set_text((("env", "prod"), ("feature", "x:y")))])


@pytest.mark.parametrize(
    ("dimension", "member", "info"),
    [
        (Dimension.TOTAL, "", MemberInfo()),
        (Dimension.ENTITY, f"team{SEP}a:b", MemberInfo(entity_type="team", entity_id="a:b")),
        (Dimension.MODEL, f"gpt-4o{SEP}azure", MemberInfo(model="gpt-4o", provider="azure")),
        (Dimension.TAG, f"feature{SEP}x:y", MemberInfo(tags={"feature": "x:y"})),
        (
            Dimension.ENTITY_MODEL,
            f"team{SEP}a:b{SEP}gpt-4o{SEP}azure",
            MemberInfo("team", "a:b", "gpt-4o", "azure"),
        ),
        (Dimension.CUBE, CUBE_MEMBER, MemberInfo("team", "a:b", "gpt-4o", "azure", {"env": "prod", "feature": "x:y"})),
    ],
)
def test_member_info_splits_each_dimensions_members(dimension, member, info):
    assert member_info(dimension, member) == info


CUBE_INFO = member_info(Dimension.CUBE, CUBE_MEMBER)


@pytest.mark.parametrize(
    ("filters", "accepted"),
    [
        (Filters(), True),
        (Filters(entity_type="team", entity_id="a:b"), True),
        (Filters(entity_type="customer"), False),
        (Filters(entity_id="a"), False),
        (Filters(model="gpt-4o", tags=(("env", "prod"), ("feature", "x:y"))), True),
        (Filters(model="claude-3"), False),
        (Filters(tags=(("env", "prod"), ("feature", "x"))), False),  # every tag must match
        (Filters(tags=(("region", "eu"),)), False),
    ],
)
def test_matches_ands_every_filter(filters, accepted):
    assert matches(filters, CUBE_INFO) is accepted


@pytest.mark.parametrize(
    ("grouping", "group"),
    [
        (Grouping(), ()),
        (Grouping(GroupBy.ENTITY), ("team", "a:b")),
        (Grouping(GroupBy.MODEL), ("gpt-4o", "azure")),
        (Grouping(GroupBy.TAG, "feature"), ("x:y",)),
        (Grouping(GroupBy.TAG, "absent"), (None,)),
        (Grouping(GroupBy.DAY), ()),
    ],
)
def test_group_of_a_member(grouping, group):
    assert group_of(grouping, CUBE_INFO) == group

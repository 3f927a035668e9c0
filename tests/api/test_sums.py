"""Exact sums of a plan's replies: signs, filters, groups without events, the untagged row."""

from __future__ import annotations

from datetime import date

from infraprism.api.planner import BucketRead, Filters, GroupBy, Grouping, Plan, plan_costs
from infraprism.api.repository import Repository
from infraprism.api.sums import add_untagged, by_group, by_period, grand_total, read_sums, sum_replies
from infraprism.core.buckets import Granularity
from infraprism.core.cell import Cell
from infraprism.core.keys import SEP, Dimension, tag_set_text
from infraprism.settings import Settings
from tests.api.helpers import load_events

JANUARY_MINUS_31 = (
    BucketRead(Granularity.MONTH, "202501", "2025-01-01", 1),
    BucketRead(Granularity.DAY, "20250131", "2025-01-01", -1),
)


def packed(events: int, cost_nano: int) -> str:
    return Cell([events, cost_nano, 10 * events, 5 * events, 0, 0]).pack()


def test_a_scan_adds_and_subtracts_buckets_and_drops_groups_without_events():
    plan = Plan(Dimension.ENTITY, JANUARY_MINUS_31, None, Filters(entity_type="customer"), Grouping(GroupBy.ENTITY))
    acme, gone, team = f"customer{SEP}acme", f"customer{SEP}gone", f"team{SEP}acme"
    month = {acme: packed(3, 300), gone: packed(1, 100), team: packed(9, 900)}
    day_31 = {acme: packed(1, 100), gone: packed(1, 100)}  # gone's only event was on the 31st
    sums = sum_replies(plan, [month, day_31])
    assert sums == {("2025-01-01", ("customer", "acme")): Cell([2, 200, 20, 10, 0, 0])}


def test_a_member_read_sums_one_member_over_its_buckets():
    plan = Plan(Dimension.ENTITY, JANUARY_MINUS_31, f"team{SEP}a", Filters("team", "a"), Grouping(GroupBy.ENTITY))
    sums = sum_replies(plan, [[[packed(4, 40)], [None]]])  # absent from the subtracted day
    assert sums == {("2025-01-01", ("team", "a")): Cell([4, 40, 40, 20, 0, 0])}
    assert sum_replies(plan, [[[packed(1, 10)], [packed(1, 10)]]]) == {}  # every event on the 31st


def test_a_cube_scan_keeps_the_members_every_filter_accepts():
    plan = Plan(
        Dimension.CUBE,
        JANUARY_MINUS_31[:1],
        None,
        Filters(model="gpt-4o", tags=(("env", "prod"),)),
        Grouping(GroupBy.MODEL),
    )

    def member(model: str, env: str) -> str:
        return SEP.join(["customer", "acme", model, "openai", tag_set_text((("env", env), ("team", "x")))])

    bucket = {
        member("gpt-4o", "prod"): packed(1, 10),
        member("gpt-4o", "dev"): packed(2, 20),
        member("o3", "prod"): packed(4, 40),
    }
    assert sum_replies(plan, [bucket]) == {("2025-01-01", ("gpt-4o", "openai")): Cell([1, 10, 10, 5, 0, 0])}


def test_the_untagged_row_is_the_total_minus_every_tagged_row():
    tagged = {
        ("2025-01-01", ("chat",)): Cell([2, 20, 0, 0, 0, 0]),
        ("2025-01-01", ("search",)): Cell([1, 5, 0, 0, 0, 0]),
    }
    totals = {("2025-01-01", ()): Cell([5, 40, 0, 0, 0, 0]), ("2025-02-01", ()): Cell([1, 1, 0, 0, 0, 0])}
    add_untagged(tagged, totals)
    assert tagged[("2025-01-01", (None,))] == [2, 15, 0, 0, 0, 0]
    assert tagged[("2025-02-01", (None,))] == [1, 1, 0, 0, 0, 0]
    everything_tagged = {("2025-01-01", ("chat",)): Cell([5, 40, 0, 0, 0, 0])}
    add_untagged(everything_tagged, {("2025-01-01", ()): Cell([5, 40, 0, 0, 0, 0])})
    assert list(everything_tagged) == [("2025-01-01", ("chat",))]


def test_sums_over_periods_groups_and_everything():
    sums = {
        ("2025-01-06", ("a",)): Cell([1, 10, 0, 0, 0, 0]),
        ("2025-01-13", ("a",)): Cell([2, 20, 0, 0, 0, 0]),
        ("2025-01-13", ("b",)): Cell([4, 40, 0, 0, 0, 0]),
    }
    assert by_group(sums) == {("a",): [3, 30, 0, 0, 0, 0], ("b",): [4, 40, 0, 0, 0, 0]}
    assert by_period(sums) == {"2025-01-06": [1, 10, 0, 0, 0, 0], "2025-01-13": [6, 60, 0, 0, 0, 0]}
    assert grand_total(sums) == [7, 70, 0, 0, 0, 0]
    assert grand_total({}) == Cell.zero()
    by_group(sums)[("a",)].add(Cell([100, 0, 0, 0, 0, 0]))
    assert sums[("2025-01-06", ("a",))][0] == 1  # the sums are copies


def _event(project: str, n: int, day: str, cost: float, tags: dict[str, str]) -> dict[str, object]:
    return {
        "event_id": f"sum-{n}",
        "timestamp": f"{day}T10:00:00Z",
        "project_id": project,
        "entity_type": "customer",
        "entity_id": "acme",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 1,
        "output_tokens": 1,
        "cost": cost,
        "tags": tags,
    }


async def test_read_sums_reads_every_plan_at_once_and_adds_the_untagged_row(
    repository: Repository, redis_client, settings: Settings, project: str
):
    events = [
        _event(project, 1, "2025-01-05", 1.0, {"feature": "chat"}),
        _event(project, 2, "2025-01-06", 2.0, {}),
        _event(project, 3, "2025-01-31", 4.0, {"feature": "chat"}),  # outside January 1-30
    ]
    await load_events(redis_client, settings, events)
    start, end = date(2025, 1, 1), date(2025, 1, 30)
    by_tag = plan_costs(start, end, Filters(), Grouping(GroupBy.TAG, "feature"))
    one_entity = plan_costs(start, end, Filters("customer", "acme"), Grouping())
    assert by_tag.with_total
    assert one_entity.member is not None  # read through the HMGET script
    tags, entity = await read_sums(repository, [by_tag, one_entity])
    assert {group: cell[:2] for group, cell in by_group(tags).items()} == {
        ("chat",): [1, 1_000_000_000],
        (None,): [1, 2_000_000_000],
    }
    assert grand_total(entity)[:2] == [2, 3_000_000_000]

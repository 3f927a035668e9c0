"""The episode state machine (infraprism/core/episodes.py), as tables: episode before, what was seen,
what is written and the episode after; then how the store's answers settle a step."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from infraprism.core.anomalies import AnomalyRecord
from infraprism.core.baseline import MS_PER_HOUR, Finding, Kind, Window
from infraprism.core.episodes import (
    PROJECT_ENTITY_TYPE,
    TOTAL,
    Change,
    Episode,
    Sighting,
    Step,
    anomaly_id,
    describe,
    event_time_of,
    new_record,
    on_created,
    on_sighting,
    on_updated,
    recover,
    resolution,
)
from infraprism.core.keys import entity_member

NANO = 1_000_000_000
HOUR = 480_000 + 8 * 24 + 14  # 14:00 UTC of a day
SEEN = HOUR * MS_PER_HOUR + 30 * 60_000  # half past
RECOVERY = 3 * MS_PER_HOUR
MEMBER = entity_member("customer", "big")
OPEN_ID = "anomaly_open"
NEW_ID = anomaly_id("acme", Kind.COST, "customer", "big", HOUR)


def cost(actual_usd: float, expected_usd: float = 20.0, window: Window = Window.HOUR) -> Finding:
    return Finding(Kind.COST, window, expected_usd * NANO, actual_usd * NANO, 0.0, 7)


def episode(actual_usd: float = 60.0, level: str = "medium", window: str = "hour", last: int = SEEN) -> Episode:
    return Episode(OPEN_ID, window, actual_usd * NANO, level, last)


def opened(finding: Finding, level: str) -> Episode:
    return Episode(NEW_ID, finding.window.value, finding.actual, level, SEEN)


def grown(actual_usd: float, level: str, description: str) -> dict[str, str]:
    return {
        "severity": level,
        "description": description,
        "expected_value": "20.0",
        "actual_value": str(actual_usd),
        "updated_ms": str(SEEN),
    }


EARLIER = SEEN - MS_PER_HOUR
QUIET = SEEN - RECOVERY  # quiet for exactly the recovery window: over
DAY_START_MS = (HOUR - HOUR % 24) * MS_PER_HOUR


@pytest.mark.parametrize(
    ("before", "finding", "resolves", "after", "update"),
    [
        pytest.param(None, cost(60), False, opened(cost(60), "medium"), None, id="nothing open: opens"),
        pytest.param(
            episode(last=EARLIER),
            cost(67),
            False,
            episode(67, last=SEEN),
            grown(67.0, "medium", "Cost increased 235% compared to 7-day median hourly cost"),
            id="grew by over 10%: updated",
        ),
        pytest.param(episode(last=EARLIER), cost(65.9), False, episode(last=SEEN), None, id="grew less: only seen"),
        pytest.param(episode(last=EARLIER), cost(50), False, episode(last=SEEN), None, id="fell: only seen"),
        pytest.param(
            episode(58, "low", last=EARLIER),
            cost(60),
            False,
            episode(60, "medium", last=SEEN),
            grown(60.0, "medium", "Cost increased 200% compared to 7-day median hourly cost"),
            id="severity rose without 10% growth: updated",
        ),
        pytest.param(
            episode(last=EARLIER),
            cost(200),
            False,
            episode(200, "critical", last=SEEN),
            grown(200.0, "critical", "Cost increased 900% compared to 7-day median hourly cost"),
            id="rose to critical: updated",
        ),
        pytest.param(
            episode(window="day", last=EARLIER),
            cost(500),
            False,
            episode(window="day", last=SEEN),
            None,
            id="another window: only seen, never grown",
        ),
        pytest.param(
            episode(last=SEEN + MS_PER_HOUR),
            cost(60),
            False,
            episode(last=SEEN + MS_PER_HOUR),
            None,
            id="an earlier hour of the delta: last seen stays",
        ),
        pytest.param(
            episode(last=QUIET + 1), cost(60), False, episode(last=SEEN), None, id="quiet just under recovery: goes on"
        ),
        pytest.param(
            episode(last=QUIET),
            cost(60),
            True,
            opened(cost(60), "medium"),
            None,
            id="quiet for the recovery window: resolved, a new one opens",
        ),
        pytest.param(
            episode(600, window="day", last=DAY_START_MS),
            cost(600, 200, Window.DAY),
            False,
            episode(600, window="day", last=SEEN),
            None,
            id="day window, same UTC day: goes on past the recovery window",
        ),
        pytest.param(
            episode(window="day", last=DAY_START_MS - 1),
            cost(600, 200, Window.DAY),
            True,
            opened(cost(600, 200, Window.DAY), "medium"),
            None,
            id="day window, the day before: resolved, a new one opens",
        ),
        pytest.param(
            episode(window="hour", last=DAY_START_MS),
            cost(600, 200, Window.DAY),
            True,
            opened(cost(600, 200, Window.DAY), "medium"),
            None,
            id="an hour episode is not kept open by a day finding",
        ),
    ],
)
def test_on_sighting(
    before: Episode | None, finding: Finding, resolves: bool, after: Episode, update: dict[str, str] | None
) -> None:
    step = on_sighting(before, Sighting("acme", MEMBER, HOUR, SEEN, finding), RECOVERY)
    assert step.before == before
    assert step.after == after
    assert step.resolve == (Change(OPEN_ID, resolution(SEEN)) if resolves else None)
    opens = before is None or resolves
    assert step.create == (new_record(Sighting("acme", MEMBER, HOUR, SEEN, finding)) if opens else None)
    assert step.update == (None if update is None else Change(OPEN_ID, update))


@pytest.mark.parametrize(
    ("member", "finding", "entity", "values", "level", "description"),
    [
        pytest.param(
            MEMBER,
            cost(60.1234567),
            ("customer", "big"),
            (20.0, 60.123457),
            "medium",
            "Cost increased 201% compared to 7-day median hourly cost",
            id="cost in USD, 6 decimals",
        ),
        pytest.param(
            TOTAL,
            cost(60),
            (PROJECT_ENTITY_TYPE, "acme"),
            (20.0, 60.0),
            "medium",
            "Cost increased 200% compared to 7-day median hourly cost",
            id="the project's total",
        ),
        pytest.param(
            entity_member("team", "a\x1fb"),
            Finding(Kind.VOLUME, Window.DAY, 200.4, 1000.6, 0.0, 5),
            ("team", "a\x1fb"),
            (200.0, 1001.0),
            "medium",
            "Request volume increased 399% compared to 5-day median daily requests (day so far)",
            id="volume in events; an id split once",
        ),
        pytest.param(
            MEMBER,
            Finding(Kind.LATENCY, Window.HOUR, 500.04, 2600.06, 0.0, 7),
            ("customer", "big"),
            (500.0, 2600.1),
            "high",
            "Average latency increased 420% compared to 7-day median hourly average latency",
            id="latency in ms, 1 decimal",
        ),
        pytest.param(
            MEMBER,
            Finding(Kind.COST, Window.HOUR, 0.0, 5 * NANO, 0.0, 3),
            ("customer", "big"),
            (0.0, 5.0),
            "critical",
            "Cost rose from nothing compared to 3-day median hourly cost",
            id="from nothing",
        ),
    ],
)
def test_new_record(
    member: str, finding: Finding, entity: tuple[str, str], values: tuple[float, float], level: str, description: str
) -> None:
    record = new_record(Sighting("acme", member, HOUR, SEEN, finding))
    assert record == AnomalyRecord(
        id=anomaly_id("acme", finding.kind, *entity, HOUR),
        project="acme",
        detected_at="2024-10-12T14:30:00Z",
        detected_ms=SEEN,
        entity_type=entity[0],
        entity_id=entity[1],
        type=finding.kind.value,
        severity=level,
        description=description,
        expected_value=values[0],
        actual_value=values[1],
        status="active",
        updated_ms=SEEN,
        version=1,
    )
    assert describe(finding) == description


def _create_step() -> Step:
    return on_sighting(None, Sighting("acme", MEMBER, HOUR, SEEN, cost(60)), RECOVERY)


def _stored(status: str, level: str = "medium") -> AnomalyRecord:
    record = _create_step().create
    assert record is not None
    return replace(record, status=status, severity=level, version=3)


@pytest.mark.parametrize(
    ("stored", "after"),
    [
        pytest.param(_create_step().create, opened(cost(60), "medium"), id="created"),
        pytest.param(_stored("active", "high"), opened(cost(60), "high"), id="recorded already: adopted as stored"),
        pytest.param(_stored("dismissed"), opened(cost(60), "medium"), id="dismissed: kept open, not raised again"),
        pytest.param(_stored("resolved"), None, id="resolved already: no episode"),
        pytest.param(None, None, id="gone: no episode"),
    ],
)
def test_on_created(stored: AnomalyRecord | None, after: Episode | None) -> None:
    assert on_created(_create_step(), stored) == after


@pytest.mark.parametrize(
    ("applied", "after"),
    [
        pytest.param(True, episode(200, "critical", last=SEEN), id="applied: the new severity"),
        pytest.param(False, episode(200, "medium", last=SEEN), id="refused (dismissed): the old severity stays"),
    ],
)
def test_on_updated(applied: bool, after: Episode) -> None:
    step = on_sighting(episode(last=EARLIER), Sighting("acme", MEMBER, HOUR, SEEN, cost(200)), RECOVERY)
    assert step.update is not None
    assert on_updated(step, applied) == after


@pytest.mark.parametrize(
    ("last", "change"),
    [
        pytest.param(SEEN - RECOVERY, Change(OPEN_ID, {"status": "resolved", "updated_ms": str(SEEN)}), id="over"),
        pytest.param(SEEN - RECOVERY + 1, None, id="not yet"),
        pytest.param(SEEN + 1, None, id="seen after the watermark"),
    ],
)
def test_recover(last: int, change: Change | None) -> None:
    assert recover(episode(last=last), SEEN, RECOVERY) == change


def test_ids_are_deterministic_and_event_time_is_kept_inside_the_hour() -> None:
    assert anomaly_id("p", Kind.COST, "customer", "a", 5) == anomaly_id("p", Kind.COST, "customer", "a", 5)
    assert anomaly_id("p", Kind.COST, "customer", "a", 5) != anomaly_id("p", Kind.COST, "customer", "a", 6)
    # Pinned: an id is how a replayed delta finds its record again, across releases.
    assert anomaly_id("p", Kind.COST, "customer", "a", 5) == "anomaly_" + _sha("p\x1fcost_spike\x1fcustomer\x1fa\x1f5")
    assert event_time_of(10 * 3_600_000 + 5, 10) == 10 * 3_600_000 + 5
    assert event_time_of(99 * 3_600_000, 10) == 11 * 3_600_000 - 1
    assert event_time_of(0, 10) == 10 * 3_600_000


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]

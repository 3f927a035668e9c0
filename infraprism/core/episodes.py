"""Episodes: what the findings on one (subject, type) mean for its anomaly record. Pure.

Per (project, subject, type) there is at most one open episode. Its first
finding opens it with a new record; a later one grows the record in place
when the value grew by GROWTH_STEP or the severity rose. The episode ends
once the subject has not been anomalous for the recovery window (event time,
driven by the watermark), and its record is resolved.

The record store changes a record only while it is active, so a dismissed
record is never touched again by its episode, and the episode stays open
until it ends: the same spike is not raised again.

A transition is `on_sighting(episode before, what was seen)`: the `Step`
says what to write and which episode follows if the writes apply; the
store's answer settles it (`on_created`, `on_updated`). `recover` ends an
episode as the watermark moves. The detector (infraprism/pipeline/detection.py)
does the reading and writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from infraprism.core.anomalies import AnomalyRecord, AnomalyStatus, record_time, severity, severity_rank
from infraprism.core.baseline import HOURS_PER_DAY, MS_PER_HOUR, Finding, Kind, Window
from infraprism.core.keys import SEP
from infraprism.core.money import nano_to_usd

TOTAL = ""  # the member of the project's total in the rollups; the subject of project-wide spikes
PROJECT_ENTITY_TYPE = "project"  # entity_type of a project-wide anomaly; entity_id is the project
GROWTH_STEP = 0.10  # an open anomaly is updated when its value grows by 10% or its severity rises
MS_PER_DAY = HOURS_PER_DAY * MS_PER_HOUR


@dataclass(frozen=True, slots=True)
class Episode:
    """The open anomaly of one (subject, type): what was last written, when it was last seen."""

    anomaly_id: str
    window: str  # the Window of the finding that opened it
    actual: float  # metric units, the largest value written to the record
    severity: str
    last_anomalous_ms: int


def episode_field(kind: Kind, member: str) -> str:
    """The name of a subject's episode of one kind among its project's episodes."""
    return f"{kind.value}{SEP}{member}"


@dataclass(frozen=True, slots=True)
class Sighting:
    """A finding on one subject's hour, seen at event time `seen_ms` (see `event_time_of`)."""

    project: str
    member: str  # TOTAL or the entity's rollup member
    hour: int  # epoch hours
    seen_ms: int
    finding: Finding


@dataclass(frozen=True, slots=True)
class Change:
    """Changes to one record, for the store to apply only while the record is active."""

    anomaly_id: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Step:
    """What one sighting asks of the record store, and the episode that follows if it is done."""

    before: Episode | None
    after: Episode | None
    resolve: Change | None = None  # the record of an episode that ended before the sighting
    create: AnomalyRecord | None = None  # a new episode's record, written only if its id is new
    update: Change | None = None  # the open episode's record, grown


def on_sighting(before: Episode | None, sighting: Sighting, recovery_ms: int) -> Step:
    """Open an episode, go on with it (growing its record), or end it and open the next one."""
    seen_ms, finding = sighting.seen_ms, sighting.finding
    resolve = None
    current = before
    if current is not None and _ended_before(current, finding, seen_ms, recovery_ms):
        # A delta of a bulk replay can span weeks: the episode ended before this hour,
        # so this is a new spike, not the old one growing.
        resolve, current = Change(current.anomaly_id, resolution(seen_ms)), None
    if current is None:
        record = new_record(sighting)
        opened = Episode(record.id, finding.window.value, finding.actual, record.severity, seen_ms)
        return Step(before, opened, resolve=resolve, create=record)
    seen = replace(current, last_anomalous_ms=max(current.last_anomalous_ms, seen_ms))
    level = severity(finding.ratio)
    grew = finding.actual >= current.actual * (1 + GROWTH_STEP)
    rose = severity_rank(level) > severity_rank(current.severity)
    if finding.window != current.window or not (grew or rose):
        return Step(before, seen)
    kind = finding.kind
    fields = {
        "severity": level.value,
        "description": describe(finding),
        "expected_value": str(to_units(kind, finding.expected)),
        "actual_value": str(to_units(kind, finding.actual)),
        "updated_ms": str(seen_ms),
    }
    grown = replace(seen, actual=max(current.actual, finding.actual), severity=level.value)
    return Step(before, grown, update=Change(current.anomaly_id, fields))


def on_created(step: Step, stored: AnomalyRecord | None) -> Episode | None:
    """The episode once `step.create` was tried: `stored` holds its id now, the new record or an older one.

    An older one is a replayed delta finding an episode already recorded: it is
    adopted, unless it has ended (a later delta resolved it, and replaying
    that delta will resolve it again). None: no episode is open.
    """
    assert step.after is not None, "a step that creates a record opens an episode"
    if stored is None or stored.status == AnomalyStatus.RESOLVED:
        return None
    return replace(step.after, anomaly_id=stored.id, severity=stored.severity)


def on_updated(step: Step, applied: bool) -> Episode:
    """The episode once `step.update` was tried; `applied` is False when the record was not active."""
    assert step.before is not None, "a step that updates goes on with an episode"
    assert step.after is not None, "a step that updates goes on with an episode"
    if applied:
        return step.after
    # Dismissed (or gone): the episode stays open, so the spike is not raised again.
    return replace(step.after, severity=step.before.severity)


def recover(episode: Episode, watermark_ms: int, recovery_ms: int) -> Change | None:
    """The change that resolves `episode`'s record once the subject has not been anomalous
    for the recovery window as of `watermark_ms`; None while the episode goes on."""
    if watermark_ms - episode.last_anomalous_ms < recovery_ms:
        return None
    return Change(episode.anomaly_id, resolution(watermark_ms))


def resolution(at_ms: int) -> dict[str, str]:
    """The fields that resolve an ended episode's record at event time `at_ms`."""
    return {"status": AnomalyStatus.RESOLVED.value, "updated_ms": str(at_ms)}


def _ended_before(episode: Episode, finding: Finding, seen_ms: int, recovery_ms: int) -> bool:
    """Whether `episode` had recovered before `seen_ms` (event time within one delta).

    A day-window episode lasts its whole UTC day: the day so far never falls
    back, and a sparse subject's hours with events can be hours apart.
    """
    if seen_ms - episode.last_anomalous_ms < recovery_ms:
        return False
    same_day = seen_ms // MS_PER_DAY == episode.last_anomalous_ms // MS_PER_DAY
    return not (finding.window is Window.DAY and episode.window == Window.DAY.value and same_day)


def new_record(sighting: Sighting) -> AnomalyRecord:
    """The record that opens an episode on this sighting."""
    project, finding, seen_ms = sighting.project, sighting.finding, sighting.seen_ms
    if sighting.member == TOTAL:
        entity_type, entity_id = PROJECT_ENTITY_TYPE, project
    else:
        entity_type, entity_id = sighting.member.split(SEP, 1)
    kind = finding.kind
    return AnomalyRecord(
        id=anomaly_id(project, kind, entity_type, entity_id, sighting.hour),
        project=project,
        detected_at=record_time(seen_ms),
        detected_ms=seen_ms,
        entity_type=entity_type,
        entity_id=entity_id,
        type=kind.value,
        severity=severity(finding.ratio).value,
        description=describe(finding),
        expected_value=to_units(kind, finding.expected),
        actual_value=to_units(kind, finding.actual),
        status=AnomalyStatus.ACTIVE.value,
        updated_ms=seen_ms,
        version=1,
    )


def to_units(kind: Kind, value: float) -> float:
    """Metric units -> the record's: USD (6 decimals) for cost, events, ms (1 decimal)."""
    if kind is Kind.COST:
        return nano_to_usd(round(value))
    if kind is Kind.VOLUME:
        return float(round(value))
    return round(value, 1)


_LABELS = {Kind.COST: "Cost", Kind.VOLUME: "Request volume", Kind.LATENCY: "Average latency"}
_UNITS = {
    (Kind.COST, Window.HOUR): "median hourly cost",
    (Kind.COST, Window.DAY): "median daily cost (day so far)",
    (Kind.VOLUME, Window.HOUR): "median hourly requests",
    (Kind.VOLUME, Window.DAY): "median daily requests (day so far)",
    (Kind.LATENCY, Window.HOUR): "median hourly average latency",
    (Kind.LATENCY, Window.DAY): "median daily average latency",
}


def describe(finding: Finding) -> str:
    """E.g. "Cost increased 340% compared to 7-day median hourly cost"."""
    label = _LABELS[finding.kind]
    unit = _UNITS[(finding.kind, finding.window)]
    if finding.expected <= 0:
        return f"{label} rose from nothing compared to {finding.days}-day {unit}"
    pct = round((finding.actual / finding.expected - 1.0) * 100)
    return f"{label} increased {pct}% compared to {finding.days}-day {unit}"


def anomaly_id(project: str, kind: Kind, entity_type: str, entity_id: str, first_hour: int) -> str:
    """Deterministic: the same episode found again (a replayed delta) gets the same id."""
    text = SEP.join((project, kind.value, entity_type, entity_id, str(first_hour)))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"anomaly_{digest[:20]}"


def event_time_of(watermark_ms: int, hour: int) -> int:
    """When (event time) a cell of `hour` was seen: the watermark, kept inside the hour."""
    return min(max(watermark_ms, hour * MS_PER_HOUR), (hour + 1) * MS_PER_HOUR - 1)


class EpisodeStore(Protocol):
    """Where the detector keeps its projects' open episodes between deltas."""

    async def load(self, project: str) -> dict[str, Episode]:
        """The project's open episodes by `episode_field`.

        The caller changes the dict it gets in place and passes every change it
        makes to `save`.
        """
        ...

    async def save(self, project: str, changes: Mapping[str, Episode | None]) -> None:
        """Persist these episodes at once; None for an episode that has ended."""
        ...

    def forget(self) -> None:
        """Drop what is held in memory: another worker may have changed the stored state."""
        ...

"""The compact change feed the aggregator writes once per applied batch, for the detector.

One message per (batch, project) on the deltas topic, key = project id, value:

    {"project": "default",
     "watermark_ms": 1736935203120,          # newest event time in the batch
     "cells": [["customer", "acme-corp", "2025011510"], ...]}   # entity hours that changed

The detector reads the current values of those cells from the Redis rollups
(the source of truth); the message only says where to look. Delivery is
at-least-once, so a consumer must be idempotent: re-reading a cell is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from infraprism.core.buckets import MS_PER_HOUR, labels_for_hour


@dataclass(frozen=True, slots=True)
class Delta:
    project: str
    watermark_ms: int
    cells: tuple[tuple[str, str, str], ...]  # (entity_type, entity_id, hour label)

    def encode(self) -> bytes:
        return orjson.dumps({"project": self.project, "watermark_ms": self.watermark_ms, "cells": self.cells})

    @classmethod
    def decode(cls, raw: bytes) -> Delta:
        obj = orjson.loads(raw)
        return cls(obj["project"], int(obj["watermark_ms"]), tuple(tuple(cell) for cell in obj["cells"]))


def deltas_of_groups(groups: dict, max_ts_ms: dict[str, int]) -> list[Delta]:
    """One Delta per project from a BatchRollup's groups and each project's newest event time."""
    cells: dict[str, set[tuple[str, str, str]]] = {}
    for project, etype, eid, _model, _provider, _tags, hour_index in groups:
        cells.setdefault(project, set()).add((etype, eid, labels_for_hour(hour_index)[0]))
    return [Delta(project, max_ts_ms[project], tuple(sorted(cells_of))) for project, cells_of in cells.items()]


def hour_of_label(label: str) -> int:
    """Epoch hours of a cell's hour label YYYYMMDDHH; ValueError when it is not one."""
    moment = datetime(int(label[:4]), int(label[4:6]), int(label[6:8]), int(label[8:10]), tzinfo=UTC)
    return int(moment.timestamp()) // 3600


class BadDelta(ValueError):
    """A message of the deltas topic that is not a delta (only the aggregator writes it, so
    it is a bug to see, not a reason for a consumer to stop)."""


def decode_checked(raw: bytes) -> Delta:
    """A message of the feed as a Delta whose every cell names a real hour; BadDelta if not."""
    try:
        delta = Delta.decode(raw)
        for _, _, label in delta.cells:
            hour_of_label(label)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadDelta(repr(exc)) from None
    return delta


def merge(deltas: list[Delta]) -> list[Delta]:
    """Merge a project's consecutive deltas whose watermarks lie in the same event hour.

    The union of their cells with the newest watermark: each cell is read and
    judged once. Deltas of different hours stay apart, so event-time decisions
    (detected_at, recovery) keep their hourly resolution during a replay.
    """
    out: list[Delta] = []
    open_groups: dict[str, tuple[int, int, set[tuple[str, str, str]]]] = {}  # project -> (hour, wm, cells)

    def flush(project: str) -> None:
        _, watermark, cells = open_groups.pop(project)
        out.append(Delta(project, watermark, tuple(sorted(cells))))

    for delta in deltas:
        hour = delta.watermark_ms // MS_PER_HOUR
        group = open_groups.get(delta.project)
        if group is not None and group[0] != hour:
            flush(delta.project)
            group = None
        if group is None:
            open_groups[delta.project] = (hour, delta.watermark_ms, set(delta.cells))
        else:
            group[2].update(delta.cells)
            open_groups[delta.project] = (hour, max(group[1], delta.watermark_ms), group[2])
    for project in list(open_groups):
        flush(project)
    return out

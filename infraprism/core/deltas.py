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

import orjson

from infraprism.core.buckets import labels_for_hour


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

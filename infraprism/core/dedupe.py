"""Which copy of an event_id counts: the dedupe window, measured in Kafka record time. Pure.

A copy of (project, event_id) is a duplicate when a copy already counted has
a Kafka record timestamp in a nearby *slot*: the window is cut into
`SLOTS_PER_WINDOW` slots, and "nearby" is at most that many slots away, before
or after (producer clocks differ, so a retry may carry an earlier time). Copies
less than one window apart are therefore always one event; copies eight slots
apart or more (8/7 of a window) count again.

The rule reads only what the log holds (each record's position and timestamp),
never the wall clock, the event's own `timestamp` or how the log was cut into
batches, so a replay or a rebuild counts exactly what the live worker counted.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOTS_PER_WINDOW = 7
MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class DedupeWindow:
    window_ms: int

    @classmethod
    def of_days(cls, days: float) -> DedupeWindow:
        return cls(max(SLOTS_PER_WINDOW, round(days * MS_PER_DAY)))

    @property
    def slot_ms(self) -> int:
        """One day for the default window of seven; rounded up, so seven slots hold the window."""
        return -(-self.window_ms // SLOTS_PER_WINDOW)

    def slot_of(self, record_ts_ms: int) -> int:
        return record_ts_ms // self.slot_ms

    def nearby(self, slot: int) -> range:
        """The slots whose counted copies make a copy in `slot` a duplicate."""
        return range(slot - SLOTS_PER_WINDOW, slot + SLOTS_PER_WINDOW + 1)

    @staticmethod
    def are_near(slot: int, other: int) -> bool:
        return abs(slot - other) <= SLOTS_PER_WINDOW

    def expire_at_s(self, slot: int, now_s: int) -> int:
        """When a slot's set of ids may go: once no copy that it could match can still arrive.

        A record in the slot `SLOTS_PER_WINDOW` later is checked against it, so the
        set lives a window past the slot's end, and a window past the last write
        (a backfill of old record times is de-duplicated too), plus a slot of margin.
        """
        slot_end_s = (slot + 1) * self.slot_ms // 1000
        return max(slot_end_s, now_s) + (self.window_ms + self.slot_ms) // 1000 + 1


__all__ = ["SLOTS_PER_WINDOW", "DedupeWindow"]

"""What priced each message the aggregator applied: the price marks the apply script writes.

`KeyLayout.price_marks(topic, group)` is one hash, written with the batches
(pipeline/apply_batch.lua, section 1b):

* `P` -> the version of partition P's last batch that priced events;
* `P:OFFSET` -> the book version that priced P's messages from OFFSET on, up to the
  next mark (`keys.price_mark_field`);
* `P@OFFSET` -> "dead": a message an earlier decode of its batch sent to the DLQ, kept
  a dead letter though the version it was applied with would price it (`keys.kept_dead_field`).

With the positions of re-driven originals (`KeyLayout.redriven_sources`), that says for
any applied message whether the aggregates count it, and at which book's price: the
re-price (pipeline/reprice.py) and the re-drive (pipeline/dlq.py) rest on it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import redis.asyncio as aioredis

from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text


@dataclass(frozen=True, slots=True)
class PriceMarks:
    """The marks of one events topic and aggregator group, read at one moment."""

    marks: dict[int, tuple[list[int], list[int]]]  # partition -> (offsets, versions), ascending
    # Messages the aggregates do not count whatever their book says: kept dead letters and
    # the originals of re-driven dead letters (their copies count them).
    left_out: frozenset[tuple[int, int]]

    @classmethod
    async def load(cls, redis: aioredis.Redis, layout: KeyLayout, topic: str, group: str) -> PriceMarks:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(layout.price_marks(topic, group))
            pipe.smembers(layout.redriven_sources(topic))
            raw_marks, redriven = await pipe.execute()
        left_out = {_position(member) for member in redriven}
        marks: dict[int, list[tuple[int, int]]] = {}
        for raw_name, raw_value in raw_marks.items():
            name = as_text(raw_name)
            if "@" in name:
                dead_partition, _, dead_offset = name.partition("@")
                left_out.add((int(dead_partition), int(dead_offset)))
            elif ":" in name:
                mark_partition, _, mark_offset = name.partition(":")
                marks.setdefault(int(mark_partition), []).append((int(mark_offset), int(as_text(raw_value))))
        ordered: dict[int, tuple[list[int], list[int]]] = {}
        for marked, entries in marks.items():
            entries.sort()
            ordered[marked] = ([o for o, _ in entries], [v for _, v in entries])
        return cls(ordered, frozenset(left_out))

    def marked_version(self, partition: int, offset: int) -> int:
        """The version that priced the message when it was applied (0: before any override)."""
        offsets, versions = self.marks.get(partition, ([], []))
        index = bisect_right(offsets, offset)
        return versions[index - 1] if index else 0

    def versions(self) -> set[int]:
        return {0} | {v for _, versions in self.marks.values() for v in versions}


async def redriven_positions(redis: aioredis.Redis, layout: KeyLayout, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every message of `topic` whose dead letter was re-driven."""
    return {_position(member) for member in await redis.smembers(layout.redriven_sources(topic))}


def _position(member: bytes | str) -> tuple[int, int]:
    """A `KeyLayout.redriven_sources` member, `partition:offset` (`keys.redriven_member`)."""
    partition, _, offset = as_text(member).partition(":")
    return int(partition), int(offset)


__all__ = ["PriceMarks", "redriven_positions"]

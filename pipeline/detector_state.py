"""The detector's state in Redis: each subject's rolling history, each project's open episodes.

`RedisHistories` is the HistoryStore (infraprism/core/baseline.py) and
`RedisEpisodes` the EpisodeStore (infraprism/core/episodes.py). Both keep a
cache in front of Redis: a project's deltas reach one worker at a time, so
what it wrote is what Redis holds until its partitions move (`forget`).

A history hash (KeyLayout.detector_history), one per subject:

    "<epoch hour>"   "events,cost_nano,latency_sum_us,latency_count"
    "x<epoch hour>"  "1": the hour was found anomalous
    "first"          the subject's first hour
    "covered"        every hour from this one on is held (or had no traffic)

The episodes hash (KeyLayout.detector_episodes), one per project: episode
field (`episode_field`) -> JSON of the Episode.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict
from typing import Any

import orjson
import redis.asyncio as aioredis

from infraprism.core.baseline import History, HistoryWrite, HourValues
from infraprism.core.episodes import Episode
from infraprism.core.keys import KeyLayout
from infraprism.core.text import as_text

MAX_CACHED_SUBJECTS = 200_000  # histories kept in memory (about 5 kB each when dense)


class RedisHistories:
    """Histories in Redis behind a least-recently-used cache of `max_cached` subjects."""

    def __init__(self, redis: aioredis.Redis, layout: KeyLayout, *, max_cached: int = MAX_CACHED_SUBJECTS) -> None:
        self._redis = redis
        self._layout = layout
        self._max_cached = max_cached
        self._cache: dict[tuple[str, str], History] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def load(self, project: str, members: Collection[str]) -> dict[str, History]:
        missing = [m for m in members if (project, m) not in self._cache]
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for member in missing:
                    pipe.hgetall(self._layout.detector_history(project, member))
                raws = await pipe.execute()
            for member, raw in zip(missing, raws, strict=True):
                self._cache[(project, member)] = parse_history(raw)
        found = {}
        for member in members:
            # Re-insert: the dict's order is then least recently used first.
            found[member] = self._cache[(project, member)] = self._cache.pop((project, member))
        # Redis holds every history (written through), so forgetting the coldest ones is safe.
        while len(self._cache) > self._max_cached:
            del self._cache[next(iter(self._cache))]
        return found

    async def write(self, project: str, changes: Iterable[HistoryWrite]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for change in changes:
                key = self._layout.detector_history(project, change.member)
                if change.dropped or change.unflagged:
                    pipe.hdel(key, *map(str, change.dropped), *(f"x{hour}" for hour in change.unflagged))
                mapping: dict[Any, Any] = {str(hour): encode_hour(cell) for hour, cell in change.hours.items()}
                mapping.update({f"x{hour}": "1" for hour in change.flagged})
                if change.first_hour is not None:
                    mapping["first"] = str(change.first_hour)
                if change.covered_from is not None:
                    mapping["covered"] = str(change.covered_from)
                if mapping:
                    pipe.hset(key, mapping=mapping)
            await pipe.execute()


def encode_hour(cell: HourValues) -> str:
    return ",".join(map(str, cell))


def parse_history(raw: Mapping[Any, Any]) -> History:
    """A history hash (bytes or text) as a History; an empty hash is a subject never seen."""
    text = {as_text(k): as_text(v) for k, v in raw.items()}
    history = History(first_hour=int(text.pop("first", "-1")))
    covered = text.pop("covered", None)
    for name, cell in text.items():
        if name.startswith("x"):
            history.flagged.add(int(name[1:]))
        else:
            history.hours[int(name)] = HourValues(*map(int, cell.split(",")))
    if covered is not None:
        history.covered_from = int(covered)
    elif history.hours:
        # Written before the field existed: what is held is what is known.
        history.covered_from = min(history.hours)
    return history


class RedisEpisodes:
    """Open episodes in Redis, one hash per project, each project's cached once read."""

    def __init__(self, redis: aioredis.Redis, layout: KeyLayout) -> None:
        self._redis = redis
        self._layout = layout
        self._cache: dict[str, dict[str, Episode]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def load(self, project: str) -> dict[str, Episode]:
        episodes = self._cache.get(project)
        if episodes is None:
            raw = await self._redis.hgetall(self._layout.detector_episodes(project))
            episodes = self._cache[project] = {as_text(k): decode_episode(v) for k, v in raw.items()}
        return episodes

    async def save(self, project: str, changes: Mapping[str, Episode | None]) -> None:
        if not changes:
            return
        key = self._layout.detector_episodes(project)
        # One transaction: a crash never leaves half of a delta's episodes written.
        async with self._redis.pipeline(transaction=True) as pipe:
            for field, episode in changes.items():
                if episode is None:
                    pipe.hdel(key, field)
                else:
                    pipe.hset(key, field, encode_episode(episode))
            await pipe.execute()


def encode_episode(episode: Episode) -> bytes:
    return orjson.dumps(asdict(episode))


def decode_episode(raw: bytes | str) -> Episode:
    return Episode(**orjson.loads(raw))

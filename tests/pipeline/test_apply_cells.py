"""apply_batch.lua's packed-cell arithmetic, through a real redis-server.

Counters of any size must add exactly: below 10^15 the script adds in Lua
doubles, above it digit by digit; both paths, and the border between them,
are compared with Python's integers. A stored cell that is not six counters
refuses the batch before anything is written.
"""

from __future__ import annotations

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from infraprism.pipeline.store import APPLY_SCRIPT

# Around the fast path's border (10^15, 2^53) and far past int64 (HINCRBY's limit).
BORDERS = [0, 1, 9, 10**15 - 1, 10**15, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 10**30 - 1]
counter = st.one_of(st.sampled_from(BORDERS), st.integers(min_value=0, max_value=10**32))
cell = st.lists(counter, min_size=6, max_size=6)


def payload(hashes: list[list[object]], offsets_key: str) -> bytes:
    document = {
        "offsets_key": offsets_key,
        "ranges": [],
        "dedupe": [],
        "hashes": hashes,
        "zsets": [],
        "sessions": [],
        "sets": [],
        "versions": [],
        "bucket_versions": [],
    }
    return orjson.dumps(document)


def packed(counters: list[int]) -> str:
    return " ".join(str(c) for c in counters)


@pytest.fixture
def sync_redis(settings):
    client = redis.Redis.from_url(settings.redis_dsn(), decode_responses=True)
    yield client, settings.key_prefix
    for key in client.scan_iter(match=f"{settings.key_prefix}:*"):
        client.delete(key)
    client.close()


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=cell, second=cell, third=cell)
def test_cells_add_exactly_at_any_size(sync_redis, first, second, third):
    client, prefix = sync_redis
    apply = client.register_script(APPLY_SCRIPT)
    key = f"{prefix}:v2:p:r:e:d:20250101"
    client.delete(key)
    for increment in (first, second, third):
        assert apply(keys=[], args=[payload([[key, "0", ["customer\x1facme", packed(increment)]]], f"{prefix}:o")]) == [
            "ok"
        ]
    expected = [a + b + c for a, b, c in zip(first, second, third, strict=True)]
    assert client.hget(key, "customer\x1facme") == packed(expected)


def test_many_members_in_one_hash_cross_the_chunk_size(sync_redis):
    """More members than one HMGET/HSET chunk (2,000) in a batch, twice: every one summed."""
    client, prefix = sync_redis
    apply = client.register_script(APPLY_SCRIPT)
    key = f"{prefix}:v2:p:r:e:m:202501"
    members = [f"customer\x1fc{i}" for i in range(4_500)]
    flat = [text for i, m in enumerate(members) for text in (m, packed([1, i, 2, 3, 4, 1]))]
    for _ in range(2):
        assert apply(keys=[], args=[payload([[key, "0", flat]], f"{prefix}:o")]) == ["ok"]
    stored = client.hgetall(key)
    assert len(stored) == len(members)
    assert all(stored[m] == packed([2, 2 * i, 4, 6, 8, 2]) for i, m in enumerate(members))


def test_a_corrupt_stored_cell_refuses_the_batch_whole(sync_redis):
    client, prefix = sync_redis
    apply = client.register_script(APPLY_SCRIPT)
    good, bad = f"{prefix}:v2:p:r:t:d:20250101", f"{prefix}:v2:p:r:t:d:20250102"
    client.hset(good, "", packed([1, 2, 3, 4, 5, 6]))
    client.hset(bad, "", "12")  # a v1-style single counter
    one = packed([1] * 6)
    document = payload([[good, "0", ["", one]], [bad, "0", ["", one]]], f"{prefix}:o")
    with pytest.raises(ResponseError, match="is not six counters"):
        apply(keys=[], args=[document])
    assert client.hget(good, "") == packed([1, 2, 3, 4, 5, 6])  # the good hash was not touched either
    assert client.hget(bad, "") == "12"


@st.composite
def stored_and_change(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """A stored cell and a signed change to it: mostly one that keeps every counter at or
    above zero (down to exactly zero too), sometimes one that takes a counter below it."""
    stored = draw(cell)
    below = draw(st.booleans()) and draw(st.booleans())
    change = [draw(st.integers(min_value=-value, max_value=10**32)) for value in stored]
    if below:
        index = draw(st.integers(0, 5))
        change[index] = -stored[index] - draw(st.integers(1, 10**20))
    return stored, change


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=stored_and_change())
def test_a_signed_increment_subtracts_exactly_or_refuses_a_counter_below_zero(sync_redis, case):
    """A re-price's corrections are signed: exact at any size, and never below zero."""
    stored, change = case
    client, prefix = sync_redis
    apply = client.register_script(APPLY_SCRIPT)
    key = f"{prefix}:v2:p:r:m:d:20250101"
    client.delete(key)
    member = "gpt-4o\x1fopenai"
    client.hset(key, member, packed(stored))
    expected = [a + b for a, b in zip(stored, change, strict=True)]
    document = payload([[key, "0", [member, packed(change)]]], f"{prefix}:o")
    if min(expected) < 0:
        with pytest.raises(ResponseError, match="would go below zero"):
            apply(keys=[], args=[document])
        assert client.hget(key, member) == packed(stored)  # nothing written
    else:
        assert apply(keys=[], args=[document]) == ["ok"]
        assert client.hget(key, member) == packed(expected)


def test_a_new_cell_cannot_start_below_zero(sync_redis):
    client, prefix = sync_redis
    apply = client.register_script(APPLY_SCRIPT)
    key = f"{prefix}:v2:p:r:m:d:20250102"
    with pytest.raises(ResponseError, match="would start below zero"):
        apply(keys=[], args=[payload([[key, "0", ["m\x1fp", packed([0, -5, 0, 0, 0, 0])]]], f"{prefix}:o")])
    assert not client.exists(key)

"""The aggregator's decoder child process never outlives the aggregator, even after kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.helpers import produce, wait_caught_up


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(120)
async def test_decoder_exits_when_the_aggregator_is_killed(settings, settings_env, redis_client):
    await produce(
        settings,
        [
            {
                "event_id": "d-1",
                "timestamp": 1_736_935_203_120,
                "entity_type": "customer",
                "entity_id": "c",
                "model": "gpt-4o",
                "input_tokens": 1,
                "output_tokens": 1,
                "cost": 0.5,
            }
        ],
    )
    code = "from infraprism.pipeline.aggregator import main; from infraprism.settings import Settings; main(Settings())"
    worker = subprocess.Popen(
        [sys.executable, "-c", code], env=settings_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_caught_up(redis_client, settings, timeout_s=60)
        decoders = [pid for pid in children_of(worker.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert decoders, "the aggregator runs a decoder child process"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    async with asyncio.timeout(20):
        while any(alive(pid) for pid in decoders):
            await asyncio.sleep(0.2)

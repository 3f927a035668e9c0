"""Where the aggregator's CPU goes: CPU seconds per event of each process in one ingest.

    .venv/bin/python bench/ingest_cpu.py [--events 200000] [--order live]

Fills a topic with bench/workload.py's mix in one order (`--order live` or
`backfill`, retries included), runs the Aggregator in this
process, and reads the CPU time of this process (fetching), of its decoder
child process, of redis-server (INFO cpu) and of the Tansu broker (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402
from ingest import fill_topic  # noqa: E402

from infraprism.dev.local_services import start_broker, start_redis  # noqa: E402
from infraprism.pipeline.aggregator import Aggregator  # noqa: E402
from infraprism.settings import Settings  # noqa: E402


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(settings: Settings, count: int, broker_pid: int) -> None:
    client = redis.Redis.from_url(settings.redis_dsn())

    def redis_cpu_s() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    aggregator = Aggregator(settings)
    await aggregator.start()
    try:
        await asyncio.sleep(3)  # group join
        decoder_pid = next(iter(aggregator._decoder._processes))  # type: ignore[union-attr]
        before = (own_cpu_s(), process_cpu_s(decoder_pid), redis_cpu_s(), process_cpu_s(broker_pid))
        started, applied = time.perf_counter(), 0
        while applied < count:
            applied += await aggregator.step()
        await aggregator._flush()
        elapsed = time.perf_counter() - started
        after = (own_cpu_s(), process_cpu_s(decoder_pid), redis_cpu_s(), process_cpu_s(broker_pid))
        per_event = [(b - a) / count * 1e6 for a, b in zip(before, after, strict=True)]
        print(
            f"{count / elapsed:,.0f} events/s; CPU per event: main {per_event[0]:.1f} us, "
            f"decoder {per_event[1]:.1f} us, redis {per_event[2]:.1f} us, broker {per_event[3]:.1f} us"
        )
    finally:
        await aggregator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--order", choices=sorted(workload.ORDERS), default="live")
    args = parser.parse_args()
    messages = workload.ORDERS[args.order](workload.calls(args.events))
    broker, store = start_broker(), start_redis()
    try:
        asyncio.run(fill_topic(broker.address, "cpu-bench", messages))
        settings = Settings(
            kafka_bootstrap=broker.address,
            redis_url=store.address,
            events_topic="cpu-bench",
            key_prefix="cpu",
            aggregator_group="cpu-bench",
        )
        asyncio.run(measure(settings, len(messages), broker.process.pid))
    finally:
        broker.stop()
        store.stop()


if __name__ == "__main__":
    main()

"""The baseline of bench/ingest.py: a plain faust-streaming agent that only decodes.

Run by bench/ingest.py as `python bench/faust_decode.py worker`; it reads
BENCH_* variables, decodes BENCH_COUNT messages in `stream.take()` batches,
writes the elapsed seconds (first message to last) to BENCH_RESULT and exits.
"""

from __future__ import annotations

import os
import time

import faust
import orjson

TOPIC = os.environ["BENCH_TOPIC"]
COUNT = int(os.environ["BENCH_COUNT"])
RESULT = os.environ["BENCH_RESULT"]

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    value_serializer="raw",
    store="memory://",
    web_enabled=False,
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
    consumer_auto_offset_reset="earliest",
    # As the aggregator's consumer (and the detector's app): the broker holds a first
    # join for about half the session timeout, 30 s with faust's defaults. Startup only:
    # the measured time starts at the first message.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    broker_rebalance_timeout=10.0,
)
events = app.topic(TOPIC, key_serializer="raw", value_serializer="raw")
state = {"count": 0, "first": 0.0}


@app.agent(events)
async def decode(stream):  # type: ignore[no-untyped-def]
    async for values in stream.take(5000, within=0.2):
        if not state["first"]:
            state["first"] = time.perf_counter()
        for value in values:
            orjson.loads(value)
        state["count"] += len(values)
        if state["count"] >= COUNT:
            with open(RESULT, "w") as out:
                out.write(f"{time.perf_counter() - state['first']}\n")
            os._exit(0)


if __name__ == "__main__":
    app.main()

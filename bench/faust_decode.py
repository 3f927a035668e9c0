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
)
events = app.topic(TOPIC, value_serializer="raw")
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

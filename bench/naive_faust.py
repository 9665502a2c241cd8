"""The obvious Faust implementation, as a baseline for the worker (issue 8, case 2).

One agent over the seven input topics; per event it parses the value with the product's models
(``parse_value``) and writes one table entry per record (a changelog write each), with no batching.
It prints ``PROGRESS <records> <unix time>`` every 500 records so the benchmark can time it from the
outside. Run: ``MONITOR_BROKER=kafka://… BENCH_APP_ID=… python -m bench.naive_faust``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust

from monitor.records import InvalidRecord, parse_value
from monitor.streams.topics import INPUTS, STREAM_OF_TOPIC


def build() -> faust.App:
    app = faust.App(
        os.environ.get("BENCH_APP_ID", "bench-naive"),
        broker=os.environ["MONITOR_BROKER"],
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_partitions=int(os.environ.get("MONITOR_PARTITIONS", "4")),
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        broker_rebalance_timeout=6.0,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(*(spec.name for spec in INPUTS.values()), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    counts = app.Table("bench-naive-counts", default=int)
    seen = [0]

    async def naive(stream: Any) -> None:
        async for event in stream.events():
            name = STREAM_OF_TOPIC[event.message.topic]
            for rec in parse_value(name, event.value):
                if isinstance(rec, InvalidRecord):
                    continue
                key = getattr(rec, "fixmedins_code", None) or name
                counts[key] += 1  # one table write (changelog record) per record
                seen[0] += 1
                if seen[0] % 500 == 0:
                    print(f"PROGRESS {seen[0]} {time.time():.3f}", flush=True)

    app.agent(topic, name="bench-naive-agent")(naive)
    return app


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warning"]
    worker = faust.Worker(build(), loglevel="warning", quiet=True)
    worker.execute_from_commandline()

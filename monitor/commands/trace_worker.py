"""``monitor trace-worker``: the national trace-code tier (Faust agents + rocksdict tables, one group)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trace-worker",
        help="run a national trace-code worker: medins.tracecodes of every city → monitor.trace_findings",
        description="Any number of processes form one consumer group (<MONITOR_APP_ID>-trace); run several "
                    "side by side with only MONITOR_DATA_DIR (the RocksDB tables) and MONITOR_METRICS_PORT "
                    "(Faust web server) set apart. Thresholds come from MONITOR_POLICY's trace.* rules.",
    )
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def source_partitions(settings: Any, topic: str = "medins.tracecodes") -> int:
    """Partition count of the source topic from the cluster metadata."""
    from kafka import KafkaConsumer

    from monitor.streams.topics import kafka_python_security

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), **kafka_python_security(settings))
    try:
        parts = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not parts:
        raise SystemExit(f"monitor trace-worker: topic {topic} has no partitions")
    return len(parts)


def run(args: argparse.Namespace) -> int:
    import logging

    import faust

    from monitor.settings import Settings
    from monitor.sinks.config import SinkSettings
    from monitor.streams.topics import ALL_TOPICS, TRACE_TOPICS, ensure_topics
    from monitor.trace.app import create_trace_app

    settings = Settings()
    web_port = SinkSettings().metrics_port or 6067
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    created = ensure_topics(settings, (*ALL_TOPICS, *TRACE_TOPICS))
    if created:
        logging.getLogger("monitor.trace").info("created topics: %s", ", ".join(created))
    app = create_trace_app(settings, source_partitions(settings), web_port)
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0

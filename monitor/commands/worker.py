"""``monitor worker``: run the Kafka shell (Faust) against ``MONITOR_BROKER``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run the Faust worker: input topics → engine → monitor.alerts / monitor.tickets / monitor.dlq",
        description="Settings come from MONITOR_* environment variables (see README 'Kafka shell'): "
                    "MONITOR_BROKER, MONITOR_DATA_DIR (checkpoints), MONITOR_POLICY, MONITOR_PARTITIONS, "
                    "MONITOR_STORE, MONITOR_CASE_WEBHOOK_URL, MONITOR_METRICS_PORT (web: /metrics and the "
                    "inspector pages, default 6066), MONITOR_UI_TOKEN, MONITOR_TRACE_TIER (also read "
                    "monitor.trace_findings), …",
    )
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import faust

    from monitor.settings import Settings
    from monitor.streams.app import create_app
    from monitor.streams.topics import ALL_TOPICS, ensure_topics, input_topics

    settings = Settings()
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    created = ensure_topics(settings, (*ALL_TOPICS, *input_topics(settings)))
    if created:
        logging.getLogger("monitor.worker").info("created topics: %s", ", ".join(created))
    app, shell = create_app(settings)
    import gc

    from monitor.intake import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)  # this process is the worker's own
    gc.freeze()  # what start-up built (modules, the restored engine) is never collected: skip it
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    shell.start()
    try:
        worker.execute_from_commandline()
    finally:
        shell.close()
    return 0

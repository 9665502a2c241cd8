"""``monitor consume TOPIC [--until-idle SECONDS]``: print a topic's records as JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("consume", help="print a topic's records from the beginning as JSON lines")
    p.add_argument("topic", help="e.g. monitor.alerts, monitor.tickets, monitor.dlq")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once nothing new arrived for this long (default: run until interrupted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.settings import Settings
    from monitor.streams.io import consume_topic

    try:
        consume_topic(args.topic, Settings(), until_idle=args.until_idle)
    except LookupError as exc:
        print(f"monitor consume: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0

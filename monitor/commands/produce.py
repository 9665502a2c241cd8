"""``monitor produce INPUT_DIR [--rate N] [--arrays N]``: load design §3 JSONL files into the input topics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("produce", help="send INPUT_DIR's JSONL files to the input topics in arrival order")
    p.add_argument("input_dir", type=Path, help="folder with settlements.jsonl, inventory.jsonl, …")
    p.add_argument("--rate", type=float, default=None, help="records per second (default: as fast as possible)")
    p.add_argument("--arrays", "--batch", dest="arrays", type=int, default=1, metavar="N",
                   help="send runs of up to N records of the same topic and key as one JSON-array value")
    p.add_argument("--timestamp", choices=["arrival", "now"], default="arrival",
                   help="Kafka timestamp: the record's arrival (inf_time; default) or the send time")
    p.add_argument("--format", choices=["flat", "nhsa"], default="flat",
                   help="nhsa: send platform envelopes to medins.uploads (one topic, routed by infno)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.replay import input_files
    from monitor.settings import Settings
    from monitor.streams.io import produce_dir

    if not args.input_dir.is_dir() or not input_files(args.input_dir):
        print(f"monitor produce: no input files (*.jsonl of design §3) in {args.input_dir}", file=sys.stderr)
        return 2
    if args.arrays < 1:
        print("monitor produce: --arrays must be at least 1", file=sys.stderr)
        return 2
    stats = produce_dir(args.input_dir, Settings(), rate=args.rate, arrays=args.arrays, timestamp=args.timestamp,
                        nhsa=args.format == "nhsa")
    rate = stats.records / stats.seconds if stats.seconds else 0.0
    print(json.dumps({"messages": stats.messages, "records": stats.records, "by_topic": stats.by_topic,
                      "seconds": round(stats.seconds, 3), "records_per_second": round(rate)}))
    return 0

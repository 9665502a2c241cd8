"""``monitor replay INPUT_DIR --out OUT_DIR [--policy ezhou] [--as-of TIME] [--state FILE]``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.clock import parse_time


def as_of_time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'yyyy-MM-dd HH:mm:ss' (Asia/Shanghai) or ISO-8601 with offset"
        ) from exc


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay JSONL input files through the monitor (embedded default)")
    p.add_argument("input_dir", type=Path, help="folder with settlements.jsonl, inventory.jsonl, …")
    p.add_argument("--out", type=Path, required=True, help="folder for alerts/tickets/dlq.jsonl, summary.json")
    p.add_argument("--policy", default="ezhou", help="built-in pack name or a pack .toml file (default ezhou)")
    p.add_argument("--as-of", type=as_of_time, default=None,
                   help="advance event time to this instant after the last record, firing due deadlines")
    p.add_argument("--state", type=Path, default=None,
                   help="checkpoint file: resume from it if present, save to it at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.policy.pack import PolicyError, load_pack
    from monitor.replay import input_files, replay_dir
    from monitor.settings import Settings

    if not args.input_dir.is_dir():
        print(f"monitor replay: input folder not found: {args.input_dir}", file=sys.stderr)
        return 2
    if not input_files(args.input_dir):
        print(f"monitor replay: no input files (*.jsonl of design §3) in {args.input_dir}", file=sys.stderr)
        return 2
    try:
        pack = load_pack(args.policy)
    except PolicyError as exc:
        print(f"monitor replay: {exc}", file=sys.stderr)
        return 2
    settings = Settings()
    result = replay_dir(args.input_dir, args.out, pack, as_of=args.as_of, state=args.state,
                        progress=sys.stderr.isatty(), pseudo=settings.pseudonymizer())
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("records", "dead_letters", "alerts_by_rule", "tickets_by_action")},
                     ensure_ascii=False))
    return 0

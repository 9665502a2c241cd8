"""``monitor inspect FIXMEDINS_CODE [--store DSN] [--registry FILE] [--as-of TIME] [--json]`` — print an
institution's case file; ``monitor inspect --list`` prints the flagged institutions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from monitor.commands.replay import as_of_time


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None,
                   help="chdb://PATH, http(s)://host:port[/db], or a replay output folder "
                        "(default: MONITOR_STORE, else the embedded store under MONITOR_DATA_DIR)")
    p.add_argument("--registry", type=Path, default=None,
                   help="institutions.jsonl to read the registry from (for a replay output folder)")
    p.add_argument("--policy", default=None, help="policy pack (default: MONITOR_POLICY, else ezhou)")
    p.add_argument("--as-of", type=as_of_time, default=None,
                   help="judge state and deadlines at this event time (default: the store's latest event)")


def register(sub: Any) -> None:
    p = sub.add_parser("inspect", help="print an institution's case file (inspectors)")
    p.add_argument("code", nargs="?", help="fixmedins_code of the institution")
    p.add_argument("--list", action="store_true", help="list the flagged institutions instead")
    p.add_argument("--json", action="store_true", help="print JSON (the API's format) instead of text")
    add_store_arguments(p)
    p.set_defaults(func=run)


def open_from_args(args: argparse.Namespace, prog: str) -> tuple[Any, Any] | None:
    """(store, pack) from the common arguments, or ``None`` after printing why not."""
    from monitor.inspect import InspectSettings, default_store
    from monitor.inspect.store import open_store
    from monitor.policy.pack import PolicyError, load_pack

    settings = InspectSettings()
    try:
        pack = load_pack(args.policy or settings.policy)
    except PolicyError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    dsn, password = default_store()
    dsn = args.store or dsn
    if dsn is None:
        print(f"{prog}: no store (MONITOR_STORE=none); give --store", file=sys.stderr)
        return None
    try:
        store = open_store(dsn, registry=args.registry, password=password)
    except (ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    return store, pack


def run(args: argparse.Namespace) -> int:
    from monitor.inspect.model import build_case_file, list_cases
    from monitor.inspect.text import render_case_file, render_list

    if not args.code and not args.list:
        print("monitor inspect: give a FIXMEDINS_CODE or --list", file=sys.stderr)
        return 2
    opened = open_from_args(args, "monitor inspect")
    if opened is None:
        return 2
    store, pack = opened
    if args.list:
        rows = list_cases(store, pack, as_of=args.as_of)
        if args.json:
            print(json.dumps([r.model_dump(mode="json") for r in rows], ensure_ascii=False, indent=2))
        else:
            sys.stdout.write(render_list(rows))
        return 0
    cf = build_case_file(store, args.code, pack, args.as_of)
    if cf is None:
        print(f"monitor inspect: no alerts, tickets or registry entry for {args.code}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(cf.model_dump(mode="json"), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(render_case_file(cf))
    return 0

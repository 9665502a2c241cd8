"""``monitor inspect FIXMEDINS_CODE [--store DSN] [--registry FILE] [--as-of TIME] [--json | --pdf FILE]`` —
print an institution's case file (or write it as a printable PDF, CJK font embedded);
``monitor inspect --list [--csv FILE]`` prints (or exports) the flagged institutions."""

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
    p.add_argument("--pdf", type=Path, default=None, metavar="FILE",
                   help="write the case file as a printable PDF (Chinese, CJK font embedded) to FILE")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE",
                   help="with --list: write the list as CSV (the web page's export) to FILE")
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
    from monitor.inspect.model import PAGE_SIZE, build_case_file, list_cases
    from monitor.inspect.text import render_case_file, render_list
    from monitor.inspect.web import PDF_EVENTS

    if not args.code and not args.list:
        print("monitor inspect: give a FIXMEDINS_CODE or --list", file=sys.stderr)
        return 2
    opened = open_from_args(args, "monitor inspect")
    if opened is None:
        return 2
    store, pack = opened
    if args.list:
        rows = list_cases(store, pack, as_of=args.as_of)
        if args.csv is not None:
            import csv

            from monitor.inspect.model import mask_text
            from monitor.inspect.web import CSV_COLUMNS, csv_row

            with args.csv.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\r\n")
                writer.writerow(CSV_COLUMNS)
                for r in rows:
                    writer.writerow([mask_text(v) for v in csv_row(r)])
            print(f"monitor inspect: {len(rows)} institutions → {args.csv}", file=sys.stderr)
        elif args.json:
            print(json.dumps([r.model_dump(mode="json") for r in rows], ensure_ascii=False, indent=2))
        else:
            sys.stdout.write(render_list(rows))
        return 0
    page_size = PDF_EVENTS if args.pdf is not None else PAGE_SIZE
    cf = build_case_file(store, args.code, pack, args.as_of, page_size=page_size)
    if cf is None:
        print(f"monitor inspect: no alerts, tickets or registry entry for {args.code}", file=sys.stderr)
        return 1
    if args.pdf is not None:
        from monitor.inspect.pdf import FontMissing, write_pdf

        try:
            size = write_pdf(cf, args.pdf)
        except (FontMissing, OSError) as exc:
            print(f"monitor inspect: {exc}", file=sys.stderr)
            return 2
        print(f"monitor inspect: case file of {args.code} → {args.pdf} ({size} bytes)", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(cf.model_dump(mode="json"), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(render_case_file(cf))
    return 0

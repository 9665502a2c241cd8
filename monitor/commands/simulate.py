"""``monitor simulate``, ``monitor score`` and ``monitor demo`` (the synthetic city, issue #3)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a yyyy-MM-dd date") from exc


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def register(sub: Any) -> None:
    sim = sub.add_parser("simulate",
                         help="write a synthetic city (7 input files + labels.jsonl) with planted violations")
    sim.add_argument("--out", type=Path, required=True, help="folder for the JSONL files")
    sim.add_argument("--profile", default="ezhou", help="city profile (default ezhou)")
    sim.add_argument("--days", type=_positive, default=60, help="days to simulate (default 60)")
    sim.add_argument("--seed", type=int, default=7, help="random seed; the same seed gives byte-identical files")
    sim.add_argument("--institutions", type=_positive, default=None, help="number of institutions (profile default)")
    sim.add_argument("--start", type=_date, default=date(2026, 1, 1), help="first day, yyyy-MM-dd (default 2026-01-01)")
    sim.add_argument("--scale", type=float, default=1.0, help="background volume multiplier (default 1)")
    sim.add_argument("--no-plants", action="store_true", help="clean traffic only (no violations, no labels)")
    sim.add_argument("--format", choices=["flat", "nhsa"], default="flat",
                     help="flat records of design §3 (default) or the platform's own messages (issue #13)")
    sim.set_defaults(func=run_simulate)

    sc = sub.add_parser("score", help="precision/recall per rule of a replay's outputs against simulator labels")
    sc.add_argument("out_dir", type=Path, help="replay output folder (alerts.jsonl, tickets.jsonl)")
    sc.add_argument("--labels", type=Path, required=True, help="labels.jsonl written by monitor simulate")
    sc.add_argument("--min-recall", type=float, default=0.95,
                    help="exit 1 if an implemented planted rule's recall is below this (default 0.95)")
    sc.add_argument("--min-precision", type=float, default=None, help="also require this precision per rule")
    sc.add_argument("--policy", default="ezhou",
                    help="pack whose ladders make findings-driven rules count as implemented")
    sc.add_argument("--json", action="store_true", help="print the report as JSON")
    sc.set_defaults(func=run_score)

    demo = sub.add_parser("demo", help="simulate a city month, replay it, print what the monitor found")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything (default ./demo-out)")
    demo.add_argument("--days", type=_positive, default=30)
    demo.add_argument("--institutions", type=_positive, default=100)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--scale", type=float, default=0.2, help="background volume multiplier (default 0.2)")
    demo.add_argument("--policy", default="ezhou")
    demo.add_argument("--store", default=None, metavar="DSN",
                      help="ClickHouse store to fill (default: embedded chDB under MONITOR_DATA_DIR; 'none' skips)")
    demo.set_defaults(func=run_demo_cmd)


def run_simulate(args: argparse.Namespace) -> int:
    from monitor.simulate import SimConfig, simulate
    from monitor.simulate.generator import PROFILES

    if args.profile not in PROFILES:
        print(f"monitor simulate: unknown profile {args.profile!r} (have: {', '.join(PROFILES)})", file=sys.stderr)
        return 2
    cfg = SimConfig(out=args.out, profile=args.profile, days=args.days, seed=args.seed,
                    institutions=args.institutions, start=args.start, scale=args.scale, plants=not args.no_plants)
    began = time.perf_counter()
    result = simulate(cfg)
    if args.format == "nhsa":
        from monitor.simulate.nhsa_writer import write_nhsa

        write_nhsa(args.out, args.out, args.seed)  # the same city, as platform messages (in place)
    took = time.perf_counter() - began
    rate = result.records / took if took > 0 else 0.0
    print(json.dumps({"out": str(args.out), "records": result.counts, "labels": result.labels,
                      "seconds": round(took, 2), "records_per_s": round(rate),
                      "peak_records_in_flight": result.peak_in_flight}, ensure_ascii=False))
    return 0


def run_score(args: argparse.Namespace) -> int:
    from monitor.policy.pack import PolicyError
    from monitor.simulate.score import pack_triggers, render, score

    if not args.labels.exists():
        print(f"monitor score: labels not found: {args.labels}", file=sys.stderr)
        return 2
    if not (args.out_dir / "alerts.jsonl").exists():
        print(f"monitor score: no alerts.jsonl in {args.out_dir} (run monitor replay first)", file=sys.stderr)
        return 2
    try:
        triggers = pack_triggers(args.policy)
    except PolicyError as exc:
        print(f"monitor score: {exc}", file=sys.stderr)
        return 2
    report = score(args.out_dir, args.labels, ladder_triggers=triggers, policy=args.policy)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(render(report))
    failures = report.failures(args.min_recall, args.min_precision)
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if failures else 0


def run_demo_cmd(args: argparse.Namespace) -> int:
    from monitor.simulate.demo import run_demo
    from monitor.sinks.clickhouse import ClickHouseSink, redact
    from monitor.sinks.config import SinkSettings

    # The embedded store: the same one `monitor replay`, `monitor inspect` and `monitor serve` use by
    # default (chDB under MONITOR_DATA_DIR), so an inspector can open what the demo found.
    settings = SinkSettings()
    if args.store is not None:
        settings = settings.model_copy(update={"store": args.store})
    dsn = settings.store_dsn()
    sinks = [ClickHouseSink(dsn, settings.data_dir)] if dsn is not None else []
    code = run_demo(args.out, days=args.days, institutions=args.institutions, seed=args.seed, scale=args.scale,
                    policy=args.policy, extra_sinks=sinks)
    if dsn is not None:
        print(f"Store: {redact(dsn)} — open a case file with `monitor inspect CODE` or the pages with "
              "`monitor serve` (http://127.0.0.1:8080)")
    return code

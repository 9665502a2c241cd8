"""``monitor replay INPUT_DIR --out OUT_DIR [--policy ezhou] [--as-of TIME] [--state PATH] [--store DSN]
[--metrics-port PORT]``."""

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
    p.add_argument("input_dir", type=Path, help="folder with settlements.jsonl, inventory.jsonl, … — or one "
                   "such folder per city: then the national trace tier runs over all of them "
                   "(trace_findings.jsonl) and each city is replayed into OUT/<city>/")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for alerts/tickets/dlq/institution_daily.jsonl, summary.json")
    p.add_argument("--policy", default="ezhou", help="built-in pack name or a pack .toml file (default ezhou)")
    p.add_argument("--as-of", type=as_of_time, default=None,
                   help="advance event time to this instant after the last record, firing due deadlines")
    p.add_argument("--state", type=Path, default=None, metavar="PATH",
                   help="checkpoint folder: resume from it if it holds one, save what changed at the end")
    p.add_argument("--state-backend", choices=("memory", "rocksdb"), default=None,
                   help="where a new --state keeps its tables: memory (default; base + delta files) or "
                        "rocksdb (PATH/db: large replays); an existing folder keeps its own")
    p.add_argument("--store", default=None, metavar="DSN",
                   help="ClickHouse store: chdb://PATH (embedded) or http://host:8123; 'none' disables "
                        "(default MONITOR_STORE, else chdb://$MONITOR_DATA_DIR/clickhouse)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus /metrics on 127.0.0.1:PORT while replaying (MONITOR_METRICS_PORT)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="several cities (one folder each): replay them in N processes after the national "
                        "trace tier (same outputs as --jobs 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.policy.pack import PolicyError, load_pack
    from monitor.replay import input_files, replay_dir
    from monitor.settings import Settings

    if not args.input_dir.is_dir():
        print(f"monitor replay: input folder not found: {args.input_dir}", file=sys.stderr)
        return 2
    if not input_files(args.input_dir) and _cities(args.input_dir):
        return _run_cities(args)
    if not input_files(args.input_dir):
        print(f"monitor replay: no input files (*.jsonl of design §3) in {args.input_dir}", file=sys.stderr)
        return 2
    try:
        pack = load_pack(args.policy)
    except PolicyError as exc:
        print(f"monitor replay: {exc}", file=sys.stderr)
        return 2
    settings = Settings()
    sinks = _operational_sinks(args)
    result = replay_dir(args.input_dir, args.out, pack, as_of=args.as_of, state=args.state,
                        progress=sys.stderr.isatty(), pseudo=settings.pseudonymizer(), extra_sinks=sinks,
                        state_backend=args.state_backend)
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("records", "dead_letters", "alerts_by_rule", "tickets_by_action")},
                     ensure_ascii=False))
    return 0


def _operational_sinks(args: argparse.Namespace) -> list[Any]:
    """ClickHouse store, case-system webhook and /metrics for an embedded run (monitor.sinks.config)."""
    from prometheus_client import CollectorRegistry

    from monitor.metrics import serve_metrics
    from monitor.sinks.casesystem import CaseSystemSink
    from monitor.sinks.clickhouse import redact
    from monitor.sinks.config import SinkSettings, build_sinks

    over: dict[str, Any] = {}
    if args.store is not None:
        over["store"] = args.store
    if args.metrics_port is not None:
        over["metrics_port"] = args.metrics_port
    conf = SinkSettings(**over)
    registry = CollectorRegistry() if conf.metrics_port is not None else None
    sinks = build_sinks(conf, registry)
    for sink in sinks:
        if isinstance(sink, CaseSystemSink):
            sink.close_drain_s = 30.0  # an embedded run delivers before it exits; the rest stays queued
    if registry is not None and conf.metrics_port is not None:
        serve_metrics(registry, conf.metrics_port)
    dsn = conf.store_dsn()
    if dsn is not None:
        print(f"monitor replay: store {redact(dsn)}", file=sys.stderr)
    return sinks


def _cities(root: Any) -> list[Any]:
    from monitor.trace.multicity import city_dirs

    return city_dirs(root)


def _run_cities(args: argparse.Namespace) -> int:
    """INPUT_DIR holds one folder per city: the national trace tier and each city engine in-process."""
    from monitor.policy.pack import PolicyError, load_pack
    from monitor.settings import Settings
    from monitor.trace.multicity import replay_cities

    try:
        pack = load_pack(args.policy)
    except PolicyError as exc:
        print(f"monitor replay: {exc}", file=sys.stderr)
        return 2
    if args.state is not None:
        print("monitor replay: --state applies to one city folder, not to several", file=sys.stderr)
        return 2
    summary = replay_cities(args.input_dir, args.out, pack, as_of=args.as_of, jobs=max(1, args.jobs),
                            pseudo=Settings().pseudonymizer(), progress=sys.stderr.isatty())
    print(json.dumps({"trace_findings": summary["trace_findings"],
                      "cities": {c: s["alerts_by_rule"] for c, s in summary["cities"].items()}},
                     ensure_ascii=False))
    return 0

"""``monitor query flagged [--since DATE] [--region ADMDVS] [--store DSN] [--json]``: the inspectors'
worklist from the ClickHouse store — institutions with alerts or tickets, most critical first, with the
rules they hit and the actions issued. No personal data is stored, so none is printed."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import Any


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (yyyy-MM-dd)") from exc


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="read the ClickHouse store (inspectors' views)")
    views = p.add_subparsers(dest="view", required=True, metavar="VIEW")
    f = views.add_parser("flagged", help="institutions with alerts or tickets, most critical first")
    f.add_argument("--since", type=_day, default=None, help="alerts/tickets on or after this day (yyyy-MM-dd)")
    f.add_argument("--region", default=None, help="only this admdvs (region code)")
    f.add_argument("--store", default=None, metavar="DSN",
                   help="ClickHouse DSN (default MONITOR_STORE, else chdb://$MONITOR_DATA_DIR/clickhouse)")
    f.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    f.set_defaults(func=run_flagged)


def run_flagged(args: argparse.Namespace) -> int:
    from monitor.sinks.clickhouse import connect, query_flagged, redact
    from monitor.sinks.config import SinkSettings

    conf = SinkSettings(**({"store": args.store} if args.store else {}))
    dsn = conf.store_dsn()
    if dsn is None:
        print("monitor query: the store is disabled (MONITOR_STORE=none)", file=sys.stderr)
        return 2
    password = conf.store_password.get_secret_value() if conf.store_password else None
    try:
        client, database = connect(dsn, password)
    except Exception as exc:  # report and exit: an inspector's command, not a pipeline
        print(f"monitor query: cannot open store {redact(dsn)}: {type(exc).__name__}", file=sys.stderr)
        return 1
    try:
        exists = client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'alerts'",
                              parameters={"db": database}).result_rows[0][0]
        found = query_flagged(client, database, args.since, args.region) if exists else []
    finally:
        client.close()
    if args.json:
        for row in found:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    print(f"{'fixmedins_code':<16} {'admdvs':<8} {'alerts':>6} {'crit':>5} {'tickets':>7}  rules / actions")
    for r in found:
        print(f"{r['fixmedins_code']:<16} {r['admdvs']:<8} {r['alerts']:>6} {r['critical']:>5} {r['tickets']:>7}  "
              f"{', '.join(r['rules'])}" + (f" → {', '.join(r['actions'])}" if r["actions"] else ""))
    if not found:
        print("(no flagged institutions)")
    return 0

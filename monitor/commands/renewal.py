"""``monitor renewal-report OUT_DIR --year 2026`` — institutions with AR-AGR 二(二) non-renewal grounds.

OUT_DIR is the output folder of ``monitor replay`` (or of the Kafka shell's file sink) run with a pack
that enables ``renewal.grounds`` (``--policy autonomous-region``). The report lists, per institution:

* (3) no settlement in the year, and (8) trace-code scanning not implemented (sale-scan coverage of insured
  whole packs below the pack's ``trace_coverage_min``) — both judged by the ``renewal.grounds`` rule once
  event time has passed 31 December (replay with ``--as-of "YEAR+1-01-02 00:00:00"``);
* (13) serious dual pricing — every ``price.dual_serious`` alert of the year, known as soon as it happens.

It writes ``renewal-YEAR.jsonl`` (one institution a line) and ``renewal-YEAR.md`` into OUT_DIR and prints
the table. When the outputs do not reach the end of the year, it says so: grounds (3) and (8) cannot be
known before the year is over.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

GROUNDS_ZH = {
    "3": "上年度协议期内未发生医保结算费用",
    "8": "未落实追溯码扫码上传（依码结算）",
    "13": "“阴阳价格”情节严重",
}


def register(sub: Any) -> None:
    p = sub.add_parser("renewal-report", help="institutions with AR-AGR 二(二) non-renewal grounds in a year")
    p.add_argument("out_dir", type=Path, help="output folder of `monitor replay` (alerts.jsonl, tickets.jsonl)")
    p.add_argument("--year", type=int, required=True, help="the agreement (calendar) year to report on")
    p.set_defaults(func=run)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def build_report(out_dir: Path, year: int) -> tuple[list[dict[str, Any]], bool]:
    """Rows of the report (sorted by institution) and whether the outputs cover the whole year."""
    alerts = _read(out_dir / "alerts.jsonl")
    tickets = _read(out_dir / "tickets.jsonl")
    rows: dict[str, dict[str, Any]] = {}

    def row(alert: dict[str, Any]) -> dict[str, Any]:
        code = alert["fixmedins_code"]
        return rows.setdefault(code, {"fixmedins_code": code, "admdvs": alert.get("admdvs"), "year": year,
                                      "grounds": [], "evidence": {}, "alert_ids": [], "ticket_ids": []})

    closed = False
    for a in alerts:
        if a["rule_id"] == "renewal.grounds" and a["evidence"].get("year") == year:
            closed = True
            r = row(a)
            for g in a["evidence"]["grounds"]:
                num = g.rsplit(")", 1)[-1]
                if num not in r["grounds"]:
                    r["grounds"].append(num)
            r["evidence"].update({k: a["evidence"][k] for k in ("settlements", "insured_whole_packs",
                                                                 "sale_trace_codes", "trace_coverage")})
            r["alert_ids"].append(a["alert_id"])
        elif a["rule_id"] == "price.dual_serious" and a["window_end"][:4] == str(year):
            r = row(a)
            if "13" not in r["grounds"]:
                r["grounds"].append("13")
            r["evidence"].setdefault("dual_pricing_overcharge", [])
            r["evidence"]["dual_pricing_overcharge"].append(a["evidence"]["overcharge"])
            r["alert_ids"].append(a["alert_id"])
    for t in tickets:
        if t["action"] == "NO_RENEWAL" and t["fixmedins_code"] in rows and t["effective_from"][:4] in (
                str(year), str(year + 1)):
            rows[t["fixmedins_code"]]["ticket_ids"].append(t["ticket_id"])
    summary_path = out_dir / "summary.json"
    if not closed and summary_path.exists():
        wm = json.loads(summary_path.read_text(encoding="utf-8")).get("watermark")
        closed = bool(wm) and date.fromisoformat(wm[:10]) > date(year, 12, 31)
    out = sorted(rows.values(), key=lambda r: r["fixmedins_code"])
    for r in out:
        r["grounds"] = sorted(r["grounds"], key=int)
    return out, closed


def run(args: argparse.Namespace) -> int:
    out_dir: Path = args.out_dir
    if not (out_dir / "alerts.jsonl").exists():
        print(f"monitor renewal-report: no alerts.jsonl in {out_dir} (run `monitor replay` first)", file=sys.stderr)
        return 2
    rows, closed = build_report(out_dir, args.year)
    jsonl = out_dir / f"renewal-{args.year}.jsonl"
    with jsonl.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    lines = [f"# {args.year} 年度不再续签情形 (AR-AGR 二(二)) — non-renewal grounds", "",
             "| 机构 institution | 区划 admdvs | 情形 grounds | 依据 evidence |", "|---|---|---|---|"]
    for r in rows:
        grounds = "；".join(f"({g}) {GROUNDS_ZH[g]}" for g in r["grounds"])
        ev = ", ".join(f"{k}={v}" for k, v in r["evidence"].items())
        lines.append(f"| {r['fixmedins_code']} | {r['admdvs'] or ''} | {grounds} | {ev} |")
    if not closed:
        lines += ["", f"注意 / note: the outputs do not reach the end of {args.year}: grounds (3) and (8) are "
                      f"judged after 31 December (replay with --as-of \"{args.year + 1}-01-02 00:00:00\" and a "
                      "pack enabling renewal.grounds, e.g. --policy autonomous-region); only (13) is listed."]
    md = out_dir / f"renewal-{args.year}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\n{len(rows)} institution(s); written {jsonl} and {md}")
    return 0

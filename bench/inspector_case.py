"""Inspector server latency at 20 000 alerts (issue 17 "Inspector server"; design §6 has no figure, the
issue sets p99 ≤ 1 s): an embedded chDB store filled with 20 000 alerts over 200 pharmacies (one of them
holding 4 000, the heavy case file) and their tickets; ``monitor serve`` in its own process; 50 client
threads issue ``requests`` requests each to the list (``/api/institutions``, then ``/`` pages) and to case
files (``/institutions/{code}``, the heavy one and others); per-request wall latency, p50 and p99."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bench.report import Row

ALERTS = 20_000
INSTITUTIONS = 200
HEAVY = "P42070400000"
TARGET_P99_S = 1.0


def fill_store(dsn: str, alerts: int = ALERTS) -> None:
    """Write ``alerts`` alerts, a suspension per 10 institutions and the registry into ``dsn``."""
    from monitor.clock import CST
    from monitor.outputs import Alert, Summary, Ticket
    from monitor.records import Institution
    from monitor.sinks.clickhouse import (
        ALERTS as ALERTS_TABLE,
    )
    from monitor.sinks.clickhouse import (
        INSTITUTIONS as INSTITUTIONS_TABLE,
    )
    from monitor.sinks.clickhouse import (
        TICKETS,
        alert_row,
        connect,
        ensure_schema,
        institution_row,
        ticket_row,
    )

    client, db = connect(dsn)
    ensure_schema(client, db)
    codes = [f"P420704{i:05d}" for i in range(INSTITUTIONS)]
    start = datetime(2026, 1, 1, tzinfo=CST)
    rows = []
    for i in range(alerts):
        code = HEAVY if i % 5 == 0 else codes[i % INSTITUTIONS]
        at = start + timedelta(minutes=7 * i)
        rows.append(alert_row(Alert(
            alert_id=f"AL-{i:08d}", rule_id=("price.dual", "upload.late", "trace.missing")[i % 3],
            fixmedins_code=code, admdvs="420704", severity=("info", "warning", "critical")[i % 3],
            window_start=at, window_end=at + timedelta(days=1), detected_at=at,
            evidence={"business_date": at.date().isoformat(), "med_list_codg": "XA01", "overcharge": "3.00",
                      "sample_records": [f"setl_id=S{i}-{k}" for k in range(5)]},
            basis="EZ-DM 二(一)", policy="ezhou@bench", jr_id=f"AL-{i:08d}", rule_name="规则", vola_cont="内容",
            vola_amt=Decimal("3.00"), sev_deg="1", vola_evid="", vola_bhvr_type="T")))
    client.insert(f"{db}.{ALERTS_TABLE.name}", rows, column_names=ALERTS_TABLE.column_names)
    tickets = []
    for n, code in enumerate(codes[::10]):
        issued = start + timedelta(days=n % 30)
        tickets.append(ticket_row(Ticket(
            ticket_id=f"TK-{n:06d}", fixmedins_code=code, admdvs="420704", action="SUSPEND_OUTPATIENT_POOLING",
            issued_at=issued, effective_from=issued.date() + timedelta(days=1),
            effective_until=issued.date() + timedelta(days=32), ladder="realtime", rule_ids=["upload.not_realtime"],
            alert_ids=[], basis=["EZ-DM 二(一)"], policy="ezhou@bench", summary=Summary(zh="中止", en="suspend"))))
    client.insert(f"{db}.{TICKETS.name}", tickets, column_names=TICKETS.column_names)
    insts = [institution_row(Institution(
        fixmedins_code=c, fixmedins_name=f"药房{c[-5:]}", fixmedins_type="2", admdvs="420704",
        outpatient_pooling=True, agreement_start=date(2026, 1, 1), agreement_end=date(2026, 12, 31),
        designated_since=date(2020, 1, 1), valid_from=datetime(2026, 1, 1, tzinfo=CST))) for c in [*codes, HEAVY]]
    client.insert(f"{db}.{INSTITUTIONS_TABLE.name}", insts, column_names=INSTITUTIONS_TABLE.column_names)
    client.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load(url: str, paths: list[str], clients: int) -> list[float]:
    def one(path: str) -> float:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + path, timeout=120) as resp:
            resp.read()
            assert resp.status == 200
        return time.perf_counter() - t0

    with cf.ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, paths))


def run(runs: int, requests: int, log: Callable[[str], None], clients: int = 50, alerts: int = ALERTS) -> list[Row]:
    """Rows: list and case-file latency p50/p99 (warm), and p99 when every request misses the cache."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-inspector-") as tmp:
        dsn = f"chdb://{Path(tmp) / 'ch'}"
        log(f"inspector: filling the store with {alerts:,} alerts")
        fill_store(dsn, alerts)
        env = {k: v for k, v in os.environ.items() if k != "MONITOR_UI_TOKEN"}
        env["MONITOR_DATA_DIR"] = str(Path(tmp) / "var")
        env.setdefault("MONITOR_UI_CACHE_SECONDS", "30")  # longer than one run: the warm rows stay warm
        proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--store", dsn, "--policy", "ezhou",
                                 "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert proc.stdout is not None
            match = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
            assert match, "monitor serve did not start"
            url = match.group(0).rstrip("/")
            lists = ["/api/institutions", "/", "/?sort=amount", "/api/institutions?page=2"]
            cases = [f"/institutions/{HEAVY}", f"/api/institutions/{HEAVY}", f"/institutions/{HEAVY}?page=7",
                     "/institutions/P42070400010", "/institutions/P42070400033"]
            # steady state of a shared server: each page rendered once (the response cache then serves the
            # crowd until it expires, MONITOR_UI_CACHE_SECONDS); the cold row below measures misses
            _load(url, lists + cases, 2)
            p50s: dict[str, list[float]] = {"list": [], "case file": []}
            p99s: dict[str, list[float]] = {"list": [], "case file": []}
            sizes: dict[str, int] = {}
            for i in range(runs):
                for name, paths in (("list", lists), ("case file", cases)):
                    log(f"inspector: {name} × {requests} at {clients} clients, run {i + 1}/{runs}")
                    lat = _load(url, [paths[k % len(paths)] for k in range(requests)], clients)
                    p50s[name].append(_percentile(lat, 0.5))
                    p99s[name].append(_percentile(lat, 0.99))
            cold: list[float] = []
            for i in range(runs):
                log(f"inspector: cold case-file pages × {clients} at {clients} clients, run {i + 1}/{runs}")
                lat = _load(url, [f"/institutions/{HEAVY}?page={2 + (k + i * clients) % 38}&r={i}"
                                  for k in range(clients)], clients)
                cold.append(_percentile(lat, 0.99))
            for path in (lists[0], cases[0]):
                with urllib.request.urlopen(url + path, timeout=120) as resp:
                    sizes[path] = len(resp.read())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    note = f"{alerts:,} alerts, {clients} clients, {requests} requests/run"
    for name, size_path in (("list", "/api/institutions"), ("case file", f"/institutions/{HEAVY}")):
        rows.append(Row("inspector", f"{name} latency p50", "s", p50s[name], note=note))
        rows.append(Row("inspector", f"{name} latency p99", "s", p99s[name], target=TARGET_P99_S,
                        higher_is_better=False,
                        note=f"{note}; response {sizes[size_path] / 1024:.0f} KiB"
                             + (f" (heavy institution: {alerts // 5:,} alerts, paged)" if name == "case file" else ""),
                        extra={"p50": statistics.median(p50s[name])}))
    rows.append(Row("inspector", "case file latency p99, every request a cache miss", "s", cold,
                    note=f"{alerts:,} alerts, {clients} clients each opening another timeline page at once"))
    return rows


if __name__ == "__main__":
    for row in run(1, 200, lambda m: print(m, file=sys.stderr)):
        print(row.name, row.values, row.note)

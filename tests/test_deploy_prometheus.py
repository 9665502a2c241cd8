"""The real ``prometheus`` binary scrapes an embedded run's /metrics on loopback; every PromQL expression of
the Operations dashboard and of the alert rules is evaluated against it (each parses; each returns data
where the scenario makes data expected), and every SQL query of the Inspection dashboard runs against
the run's chDB store and returns rows.

Scenario (two replay parts with a checkpoint, so counters move between scrapes):
* part 1 — pharmacies A and B (admdvs 420702); A uploads all 6 settlements of 2026-01-05 30 h late
  (EZ-DM 二(一): ≥ 10 % and ≥ 5 late → SUSPEND_OUTPATIENT_POOLING); one dead letter, one duplicate;
* part 2 — B does the same on 2026-01-10 (a second suspension in the region); two dead letters.
A second store, a ClickHouse server on a closed loopback port, fails every write (write-failure alert).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import institution, settlement, write_jsonl
from prometheus_client import CollectorRegistry

from monitor.clock import CST
from monitor.metrics import Metrics, MetricsSink, serve_metrics
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.sinks.clickhouse import ClickHouseSink, connect

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
A, B = "P42070200001", "P42070200003"

#: Expressions that cannot have data in an embedded run: Faust's sensor exists only in the worker, the
#: target is up, and no case-system sink is configured.
NO_DATA_RULES = {"MonitorDown", "MonitorConsumerLag", "MonitorPipelineStalled", "MonitorCaseSystemDeliveryFailing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def late_day(code: str, day: str, upload: str, prefix: str) -> list[dict[str, Any]]:
    """6 settlements uploaded 30 h late, and the first one resent (a duplicate, counted once)."""
    late = [settlement(f"{prefix}{i}", f"{day} 10:0{i}:00", f"{upload} 16:00:00", code=code) for i in range(6)]
    return [*late, late[0]]


@dataclass
class Scenario:
    prom_url: str
    store_dsn: str
    registry: CollectorRegistry

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 = the expression does not parse
            body = json.loads(exc.read())
        return body


def _scrapes(prom_url: str) -> int:
    url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": 'count_over_time(up{job="monitor"}[1h])'})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
    except OSError:
        return 0
    return int(float(result[0]["value"][1])) if result else 0


def _wait_scrapes(prom_url: str, proc: subprocess.Popen[bytes], more: int) -> None:
    """Wait until ``more`` further scrapes happened (progress-based, with a generous safety limit)."""
    start = _scrapes(prom_url)
    for _ in range(600):
        assert proc.poll() is None, "prometheus exited"
        if _scrapes(prom_url) >= start + more:
            return
        time.sleep(0.1)
    raise AssertionError("prometheus did not scrape the embedded run")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: run `bash deploy/ensure-tools.sh` (make test does)"
    tmp = tmp_path_factory.mktemp("prom")
    part1, part2 = tmp / "part1", tmp / "part2"
    write_jsonl(part1, "institutions", [institution(A), institution(B)])
    write_jsonl(part1, "settlements", [*late_day(A, "2026-01-05", "2026-01-06", "SA"), b"{broken"])
    write_jsonl(part2, "settlements", [*late_day(B, "2026-01-10", "2026-01-11", "SB"), b"{broken", b"[1"])

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics_port, prom_port = free_port(), free_port()
    server = serve_metrics(registry, metrics_port)
    conf = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus/rules/monitor.rules.yml")],
        "scrape_configs": [{"job_name": "monitor", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(conf))
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
    )
    prom_url = f"http://127.0.0.1:{prom_port}"
    store_dsn = f"chdb://{tmp / 'ch'}"
    try:
        _wait_scrapes(prom_url, proc, 2)
        pack = load_pack("ezhou")
        for part, as_of in ((part1, datetime(2026, 1, 8, tzinfo=CST)), (part2, datetime(2026, 1, 13, tzinfo=CST))):
            sinks = [MetricsSink(metrics),
                     ClickHouseSink(store_dsn, tmp / "buf-ok", metrics=metrics),
                     ClickHouseSink(f"http://127.0.0.1:{free_port()}", tmp / "buf-down", metrics=metrics)]
            replay_dir(part, tmp / "out", pack, as_of=as_of, state=tmp / "state.ckpt", extra_sinks=sinks)
            _wait_scrapes(prom_url, proc, 3)
        yield Scenario(prom_url, store_dsn, registry)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


def _dashboard(name: str) -> dict[str, Any]:
    return dict(json.loads((DEPLOY / f"grafana/dashboards/{name}.json").read_text(encoding="utf-8")))


def _grafana_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$region", ".*")


def test_the_scenario_issued_two_suspensions_in_one_region(scenario: Scenario) -> None:
    sample = scenario.registry.get_sample_value
    assert sample("monitor_tickets_total", {"action": "SUSPEND_OUTPATIENT_POOLING", "region": "420702"}) == 2.0
    assert sample("monitor_dead_letters_total", {"stream": "settlements"}) == 3.0
    assert sample("monitor_records_duplicate_total", {"stream": "settlements"}) == 2.0
    assert (sample("monitor_sink_failures_total", {"sink": "clickhouse"}) or 0) >= 2.0


def test_every_alert_rule_expression_parses_and_fires_where_expected(scenario: Scenario) -> None:
    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus/rules/monitor.rules.yml").read_text())["groups"]
             for r in g["rules"]]
    outcome = {}
    for rule in rules:
        body = scenario.query(rule["expr"])
        assert body["status"] == "success", (rule["alert"], body)
        outcome[rule["alert"]] = bool(body["data"]["result"])
    assert outcome == {r["alert"]: r["alert"] not in NO_DATA_RULES for r in rules}
    fired = scenario.query(next(r["expr"] for r in rules if r["alert"] == "MonitorSuspensionIssued"))
    assert [s["metric"] for s in fired["data"]["result"]] == [
        {"action": "SUSPEND_OUTPATIENT_POOLING", "region": "420702"}]
    lag = scenario.query(next(r["expr"] for r in rules if r["alert"] == "MonitorUploadLagDegrading"))
    assert [s["metric"]["region"] for s in lag["data"]["result"]] == ["420702"]


def test_every_operations_dashboard_query_parses_and_returns_data(scenario: Scenario) -> None:
    dash = _dashboard("operations")
    exprs = [(p["title"], _grafana_promql(t["expr"])) for p in dash["panels"] for t in p["targets"]]
    exprs.append(("variable", "group by (region) (monitor_records_total)"))  # label_values() of the variable
    assert len(exprs) >= 12
    for title, expr in exprs:
        body = scenario.query(expr)
        assert body["status"] == "success", (title, expr, body)
        has_data = bool(body["data"]["result"])
        assert has_data is ("faust_" not in expr), (title, expr, body["data"])


def _grafana_sql(sql: str) -> str:
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 r"(\1 >= toDateTime64('2000-01-01 00:00:00', 3) AND \1 <= toDateTime64('2100-01-01 00:00:00', 3))",
                 sql)
    return (sql.replace("$__fromTime", "toDateTime('2000-01-01 00:00:00')")
               .replace("$__toTime", "toDateTime('2100-01-01 00:00:00')").replace("${region}", ""))


def test_every_inspection_dashboard_query_runs_on_the_store_and_returns_rows(scenario: Scenario) -> None:
    dash = _dashboard("inspection")
    queries = [(p["title"], _grafana_sql(t["rawSql"])) for p in dash["panels"] for t in p["targets"]]
    queries.append(("variable", dash["templating"]["list"][0]["query"]))
    client, _ = connect(scenario.store_dsn)
    try:
        for title, sql in queries:
            rows = client.query(sql).result_rows
            assert rows, (title, sql)
        flagged = client.query(_grafana_sql(dash["panels"][0]["targets"][0]["rawSql"])).result_rows
    finally:
        client.close()
    assert {r[0] for r in flagged} >= {A, B}

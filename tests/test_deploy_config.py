"""deploy/ and docker-compose.yml: checked by the real tools (promtool, amtool — installed by
deploy/ensure-tools.sh) and for consistency with the code (service names, ports, env vars, metric names)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from monitor.cli import build_parser
from monitor.metrics import METRIC_SPECS
from monitor.settings import Settings
from monitor.sinks.clickhouse import TABLES, schema_sql
from monitor.sinks.config import SinkSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} missing: run `bash deploy/ensure-tools.sh` (make test does)"
    return path


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_promtool_checks_config_and_rules_and_runs_rule_unit_tests(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # the config names the in-container rule path; point it at the repository's rules for the check
    conf = load(DEPLOY / "prometheus/prometheus.yml")
    assert conf["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    conf["rule_files"] = [str(DEPLOY / "prometheus/rules/*.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(conf))
    out = run(promtool, "check", "config", str(local))
    assert "8 rules found" in out
    run(promtool, "check", "rules", str(DEPLOY / "prometheus/rules/monitor.rules.yml"))
    out = run(promtool, "test", "rules", str(DEPLOY / "prometheus/tests/monitor.test.yml"))
    assert "SUCCESS" in out


def test_every_alert_rule_has_a_unit_test_and_routes_to_a_team() -> None:
    rules = [r for g in load(DEPLOY / "prometheus/rules/monitor.rules.yml")["groups"] for r in g["rules"]]
    tests = load(DEPLOY / "prometheus/tests/monitor.test.yml")["tests"]
    tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert {r["alert"] for r in rules} - {"MonitorCaseSystemDeliveryFailing"} <= tested
    assert {r["labels"]["team"] for r in rules} == {"ops", "compliance"}
    assert [r["alert"] for r in rules if r["labels"]["team"] == "compliance"] == ["MonitorSuspensionIssued"]


def test_alertmanager_config_routes_compliance_to_the_case_system() -> None:
    run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager/alertmanager.yml"))
    am = load(DEPLOY / "alertmanager/alertmanager.yml")
    routes = {tuple(r["matchers"]): r["receiver"] for r in am["route"]["routes"]}
    assert routes[('team="compliance"',)] == "case-system"
    assert routes[('team="ops"',)] == "ops"
    assert am["route"]["receiver"] == "ops"


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(monitor_[a-z_]+|faust_[a-z_]+)\b", expr))


def _known(name: str) -> bool:
    base = re.sub(r"_(total|bucket|sum|count)$", "", name)
    return name.startswith("faust_") or base in METRIC_SPECS or name in METRIC_SPECS


def test_dashboards_and_rules_use_only_declared_metrics() -> None:
    exprs = [r["expr"] for g in load(DEPLOY / "prometheus/rules/monitor.rules.yml")["groups"] for r in g["rules"]]
    ops = json.loads((DEPLOY / "grafana/dashboards/operations.json").read_text(encoding="utf-8"))
    exprs += [t["expr"] for p in ops["panels"] for t in p["targets"]]
    names = set().union(*(_metric_names(e) for e in exprs))
    assert names and all(_known(n) for n in names), sorted(n for n in names if not _known(n))
    # faust_* series are those of Faust's sensor with name_prefix "faust" (monitor.metrics.FAUST_PREFIX)
    assert {n for n in names if n.startswith("faust_")} == {
        "faust_topic_partition_end_offset", "faust_topic_partition_offset_commited"}


def test_dashboards_are_provisioned_with_the_right_datasources() -> None:
    ds = {d["uid"]: d for d in load(DEPLOY / "grafana/provisioning/datasources/datasources.yml")["datasources"]}
    assert ds["clickhouse"]["type"] == "grafana-clickhouse-datasource"
    assert ds["prometheus"]["type"] == "prometheus"
    for name, uid in (("operations", "prometheus"), ("inspection", "clickhouse")):
        dash = json.loads((DEPLOY / f"grafana/dashboards/{name}.json").read_text(encoding="utf-8"))
        assert dash["uid"] == f"medins-{name}"
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dash["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
                assert ("expr" if uid == "prometheus" else "rawSql") in target
    prov = load(DEPLOY / "grafana/provisioning/dashboards/dashboards.yml")
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_clickhouse_schema_file_matches_the_code() -> None:
    text = (DEPLOY / "clickhouse/schema.sql").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    assert [s.strip() for s in body.split(";") if s.strip()] == schema_sql()
    assert [t.name for t in TABLES] == ["alerts", "tickets", "institution_daily", "institutions"]


def test_docker_compose_is_consistent_with_the_code() -> None:
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", "monitor", "producer", "prometheus", "alertmanager", "grafana",
                             "trace-worker-1", "trace-worker-2"}
    env = services["monitor"]["environment"]
    assert services["producer"]["environment"] == env
    # every MONITOR_* variable is a setting the code reads
    known = {f"MONITOR_{f.upper()}" for f in (*Settings.model_fields, *SinkSettings.model_fields)}
    assert set(env) <= known, sorted(set(env) - known)
    # trace-workers run, so the city worker reads their findings (and leaves cross-institution repeats to them)
    assert env["MONITOR_TRACE_TIER"] == "true"
    # the broker is the kafka service's advertised listener (KRaft mode)
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]
    assert urlparse(env["MONITOR_BROKER"]).netloc == urlparse(kafka["KAFKA_ADVERTISED_LISTENERS"]).netloc
    # the store is the clickhouse service over HTTP, database and user as created there
    store = urlparse(env["MONITOR_STORE"])
    ch = services["clickhouse"]["environment"]
    assert (store.scheme, store.hostname, store.port, store.path.strip("/"), store.username) == (
        "http", "clickhouse", 8123, ch["CLICKHOUSE_DB"], ch["CLICKHOUSE_USER"])
    assert env["MONITOR_STORE_PASSWORD"] == ch["CLICKHOUSE_PASSWORD"]
    assert "8123:8123" in services["clickhouse"]["ports"]
    # Prometheus scrapes the worker's metrics port; it alerts through the alertmanager service
    prom = load(DEPLOY / "prometheus/prometheus.yml")
    scrape = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert scrape["monitor"] == [f"monitor:{env['MONITOR_METRICS_PORT']}"]
    assert f"{env['MONITOR_METRICS_PORT']}:{env['MONITOR_METRICS_PORT']}" in services["monitor"]["ports"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    # Grafana reads ClickHouse natively (9000) with the same user, and Prometheus by service name
    ds = {d["uid"]: d for d in load(DEPLOY / "grafana/provisioning/datasources/datasources.yml")["datasources"]}
    assert (ds["clickhouse"]["jsonData"]["host"], ds["clickhouse"]["jsonData"]["port"]) == ("clickhouse", 9000)
    assert ds["clickhouse"]["jsonData"]["username"] == ch["CLICKHOUSE_USER"]
    assert "9000:9000" in services["clickhouse"]["ports"]
    assert ds["prometheus"]["url"] == "http://prometheus:9090"
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    # mounted files exist
    for svc in services.values():
        for vol in svc.get("volumes", []):
            if vol.startswith("./"):
                assert (ROOT / vol.split(":")[0]).exists(), vol
    # the commands the services run are sub-commands of `monitor`
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert services["monitor"]["command"][0] in commands
    # two trace-workers, the same settings but their data dir and web port
    tw = [services[f"trace-worker-{i}"] for i in (1, 2)]
    assert [t["command"] for t in tw] == [["trace-worker"], ["trace-worker"]] and "trace-worker" in commands
    differ = {k for k in (*tw[0]["environment"], *tw[1]["environment"])
              if tw[0]["environment"].get(k) != tw[1]["environment"].get(k)}
    assert differ == {"MONITOR_DATA_DIR", "MONITOR_METRICS_PORT"}
    used = re.findall(r"monitor (\w+)", services["producer"]["command"][0])
    assert used == ["simulate", "produce"] and set(used) <= commands | {"simulate"}

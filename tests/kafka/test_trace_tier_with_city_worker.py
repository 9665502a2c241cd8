"""The whole national path on tansu (issue #15, acceptance points 1 and 3 together): a trace-worker and
Ezhou's city worker (``MONITOR_TRACE_TIER=true``) on one broker, two cities' uploads produced with
``monitor produce``. A box sold in Wuhan and sold again in Ezhou (no return, LN-TIER 三(一)3) ends as
exactly one alert and one ticket at the Ezhou worker — the trace tier's ``trace.resold``, not also the
city engine's ``trace.duplicate`` (which judges same-institution repeats only where the tier runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import institution
from kafka_helpers import Broker, Worker, free_port, kafka_env, wait_for
from test_worker_kafka import consume

sys.path.insert(0, str(Path(__file__).parent.parent / "trace"))
from cases import BASE, E1, E2, E3, W1, W2, _scan

pytestmark = pytest.mark.kafka

CODE = "70000000000000000042"


def _cities(root: Path) -> None:
    """Wuhan stocks in and sells CODE; Ezhou's E1 sells it again 2 h later. A day on, every institution
    uploads again (event time moves on, corroborated), so the resale's 24 h settle deadline passes."""
    wuhan = [_scan(CODE, W1, "stock_in", BASE), _scan(CODE, W1, "sale", BASE + timedelta(hours=1), n=1)]
    ezhou = [_scan(CODE, E1, "sale", BASE + timedelta(hours=3), n=2)]
    later = BASE + timedelta(hours=30)
    for j, inst in enumerate((E1, E2, E3, W1, W2)):
        (ezhou if inst.startswith("P420702") else wuhan).append(_scan(f"6999999999999999990{j}", inst,
                                                                      "stock_in", later))
    for name, recs, insts in (("wuhan", wuhan, ()), ("ezhou", ezhou, (E1, E2, E3))):
        d = root / name
        d.mkdir(parents=True)
        (d / "tracecodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        if insts:
            (d / "institutions.jsonl").write_text("".join(json.dumps(institution(i)) + "\n" for i in insts))


def test_a_cross_city_resale_is_one_alert_and_one_ticket_at_the_charged_city(
        broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    root = tmp_path / "in"
    _cities(root)
    city = make_worker(kafka_env(broker, tmp_path / "ezhou-worker", MONITOR_TRACE_TIER="true",
                                 MONITOR_PARTITIONS="4"))
    trace = Worker(kafka_env(broker, tmp_path / "trace-worker", MONITOR_PARTITIONS="4",
                             MONITOR_METRICS_PORT=str(free_port())), tmp_path / "tw")
    (tmp_path / "tw").mkdir()
    try:
        trace.runs += 1
        with trace.log.open("wb") as fh:
            trace.proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "trace-worker"], env=trace.env,
                                          stdout=fh, stderr=subprocess.STDOUT, cwd=trace.workdir,
                                          start_new_session=True)
        city.start()
        for name in ("ezhou", "wuhan"):
            subprocess.run([sys.executable, "-m", "monitor.cli", "produce", str(root / name)], env=city.env,
                           check=True, capture_output=True)
        settings = city.settings

        def resold_alerts() -> list[dict[str, Any]]:
            assert city.alive(), city.tail()
            assert trace.alive(), trace.tail()
            return [a for a in consume(settings, "monitor.alerts") if a["rule_id"].startswith("trace.")]

        alerts = wait_for(resold_alerts, "the trace tier's alert at the Ezhou worker", deadline=60, every=1.0)
        findings = consume(settings, "monitor.trace_findings")
        assert [(f["rule_id"], f["fixmedins_code"], f["drug_trac_codg"]) for f in findings] == \
            [("trace.resold", E1, CODE)]
        assert [(a["rule_id"], a["fixmedins_code"]) for a in alerts] == [("trace.resold", E1)]  # no trace.duplicate
        assert alerts[0]["evidence"]["finding_id"] == findings[0]["finding_id"]
        assert alerts[0]["evidence"]["other"] == {"fixmedins_code": W1, "region": "420102"}
        tickets = wait_for(lambda: consume(settings, "monitor.tickets"), "the ticket")
        assert Counter((t["action"], t["fixmedins_code"]) for t in tickets) == {("REVIEW", E1): 1}
        assert tickets[0]["alert_ids"] == [alerts[0]["alert_id"]]
    finally:
        trace.stop()

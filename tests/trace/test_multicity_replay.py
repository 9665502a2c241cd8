"""``monitor replay ROOT`` with one folder per city: the trace tier in-process, its findings raised in
each city's engine (alerts + the pack's ladder), no double alert with trace.duplicate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from monitor.cli import main
from monitor.policy.pack import load_pack
from monitor.trace.multicity import trace_findings
from monitor.trace.rules import TraceParams

sys.path.insert(0, str(Path(__file__).parent))
from cases import AS_OF, E2, W1, build


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def test_replay_of_two_cities(tmp_path: Path) -> None:
    root = tmp_path / "in"
    expected = build(root)
    out = tmp_path / "out"
    assert main(["replay", str(root), "--out", str(out), "--as-of", f"{AS_OF:%Y-%m-%d %H:%M:%S}",
                 "--store", "none"]) == 0
    findings = _lines(out / "trace_findings.jsonl")
    assert {(f["rule_id"], f["fixmedins_code"], f["drug_trac_codg"]) for f in findings} == expected
    # identical to the tier run on its own
    direct = trace_findings([root / "ezhou", root / "wuhan"], TraceParams.from_pack(load_pack("ezhou")), AS_OF)
    assert findings == json.loads(json.dumps(direct))
    wuhan = _lines(out / "wuhan" / "alerts.jsonl")
    resold = [a for a in wuhan if a["rule_id"] == "trace.resold"]
    assert [a["fixmedins_code"] for a in resold] == [W1]
    assert resold[0]["severity"] == "critical" and resold[0]["basis"] == "LN-TIER 三(一)3"
    # the cross-city resale is not also a trace.duplicate (the city never saw the first sale anyway);
    # the same-institution repeat in Ezhou stays with the city engine
    ezhou = _lines(out / "ezhou" / "alerts.jsonl")
    assert not [a for a in wuhan if a["rule_id"] == "trace.duplicate"]
    assert [a["fixmedins_code"] for a in ezhou if a["rule_id"] == "trace.duplicate"] == [E2]
    tickets = _lines(out / "wuhan" / "tickets.jsonl")
    assert any(t["action"] == "REVIEW" and "trace.resold" in t["rule_ids"] for t in tickets)
    assert not (out / "ezhou" / "alerts.jsonl").read_text().count("trace.resold")


def test_cross_institution_repeat_in_one_city_alerts_once(tmp_path: Path) -> None:
    """Both sellers in one city: the city engine alone would say trace.duplicate; with the tier it is
    trace.resold only."""
    city = tmp_path / "in" / "ezhou"
    city.mkdir(parents=True)
    recs = [
        {"drug_trac_codg": "70000000000000000001", "fixmedins_code": "P42070200001", "med_list_codg": "XA01",
         "scan_kind": "sale", "trdn_flag": "0", "scan_time": "2026-03-02 09:00:00", "rtal_docno": "D1",
         "inf_time": "2026-03-02 09:01:00"},
        {"drug_trac_codg": "70000000000000000001", "fixmedins_code": "P42070200002", "med_list_codg": "XA01",
         "scan_kind": "sale", "trdn_flag": "0", "scan_time": "2026-03-03 09:00:00", "rtal_docno": "D2",
         "inf_time": "2026-03-03 09:01:00"},
    ]
    (city / "tracecodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "in"), "--out", str(out), "--as-of", "2026-03-10 00:00:00",
                 "--store", "none"]) == 0
    rules = sorted(a["rule_id"] for a in _lines(out / "ezhou" / "alerts.jsonl") if a["rule_id"].startswith("trace."))
    assert rules == ["trace.resold"]  # the 90-day never-stocked windows are still open

"""The scorer's matching rules on hand-made labels, alerts and tickets (expected values by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.simulate.score import score

P1, P2 = "P42070200001", "P42070200002"


def _label(rule: str, code: str, start: str, end: str | None = None, kind: str = "violation",
           **extra: Any) -> dict[str, Any]:
    row = {"kind": kind, "rule_id": rule, "fixmedins_code": code, "window_start": start,
           "window_end": end or start, "depends_on": [], "aliases": [], "expected_tickets": [], "note": ""}
    row.update(extra)
    return row


def _alert(rule: str, code: str, ws: str, we: str) -> dict[str, Any]:
    return {"alert_id": f"AL-{rule}-{code}-{ws}", "rule_id": rule, "fixmedins_code": code,
            "window_start": ws, "window_end": we}


def _ticket(code: str, action: str, eff: str, rules: list[str]) -> dict[str, Any]:
    return {"ticket_id": f"TK-{code}-{action}-{eff}", "fixmedins_code": code, "action": action,
            "effective_from": eff, "rule_ids": rules}


def _write(folder: Path, labels: list[dict[str, Any]], alerts: list[dict[str, Any]],
           tickets: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "meta", "start": "2026-01-01", "end": "2026-01-20", "as_of": "2026-01-20 00:00:00"}
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [meta, *labels]))
    (folder / "alerts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alerts))
    (folder / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tickets))
    return folder


DAY5 = ("2026-01-05T00:00:00+08:00", "2026-01-06T00:00:00+08:00")


@pytest.mark.parametrize(
    ("alert", "true"),
    [
        (_alert("x.rule", P1, *DAY5), True),  # the label's own day
        (_alert("x.rule", P1, "2026-01-05T10:00:00+08:00", "2026-01-05T10:00:00+08:00"), True),  # a point
        (_alert("x.rule", P1, "2026-01-01T00:00:00+08:00", "2026-01-31T00:00:00+08:00"), True),  # a month
        (_alert("x.rule", P1, "2026-01-06T00:00:00+08:00", "2026-01-07T00:00:00+08:00"), False),  # next day
        (_alert("x.rule", P1, "2026-01-04T00:00:00+08:00", "2026-01-05T00:00:00+08:00"), False),  # ends at start
        (_alert("x.rule", P2, *DAY5), False),  # another institution
    ],
)
def test_alert_matches_label_on_rule_institution_and_window_overlap(tmp_path: Path, alert: dict[str, Any],
                                                                     true: bool) -> None:
    folder = _write(tmp_path, [_label("x.rule", P1, "2026-01-05")], [alert], [])
    report = score(folder, folder / "labels.jsonl", implemented={"x.rule"}, ladder_triggers=set())
    rs = report.rules["x.rule"]
    assert (rs.planted, rs.alerts) == (1, 1)
    assert rs.detected == (1 if true else 0)
    assert rs.precision == (1.0 if true else 0.0)
    assert rs.recall == (1.0 if true else 0.0)


def test_lookalikes_pending_labels_and_unlabelled_rules(tmp_path: Path) -> None:
    labels = [
        _label("x.rule", P1, "2026-01-05"),
        _label("x.rule", P2, "2026-01-05", kind="lookalike"),
        _label("x.rule", P1, "2026-01-09", depends_on=["y.rule"]),  # y.rule not implemented: not scored
        _label("z.rule", P1, "2026-01-05"),  # not implemented at all
    ]
    alerts = [
        _alert("x.rule", P1, *DAY5),
        _alert("x.rule", P2, *DAY5),  # flags the look-alike: a false positive
        _alert("x.rule", P1, "2026-01-09T00:00:00+08:00", "2026-01-10T00:00:00+08:00"),  # pending: ignored
        _alert("w.rule", P1, *DAY5),  # a rule with no label at all
    ]
    folder = _write(tmp_path, labels, alerts, [])
    report = score(folder, folder / "labels.jsonl", implemented={"x.rule", "w.rule"}, ladder_triggers=set())
    x = report.rules["x.rule"]
    assert (x.planted, x.detected, x.pending, x.alerts, x.true_alerts) == (1, 1, 1, 2, 1)
    assert (x.lookalikes, x.lookalikes_flagged) == (1, 1)
    assert x.precision == 0.5
    z = report.rules["z.rule"]
    assert not z.implemented and z.planted == 1
    assert report.unlabelled_rules == {"w.rule": 1}
    assert report.failures(0.95) == []  # z.rule is listed, not failed


def test_tickets_match_on_institution_action_and_slack(tmp_path: Path) -> None:
    labels = [
        _label("x.rule", P1, "2026-01-05", expected_tickets=[
            {"action": "SUSPEND_OUTPATIENT_POOLING", "effective_from": "2026-01-08", "slack_days": 0},
            {"action": "REVIEW", "effective_from": "2026-01-06", "slack_days": 3},
            {"action": "INTERVIEW", "effective_from": "2026-01-10", "slack_days": 3},
            {"action": "REINSTATE", "effective_from": "2026-02-08", "slack_days": 0},  # beyond the horizon
        ]),
    ]
    tickets = [
        _ticket(P1, "SUSPEND_OUTPATIENT_POOLING", "2026-01-08", ["x.rule"]),  # exact
        _ticket(P1, "REVIEW", "2026-01-09", ["x.rule"]),  # 3 days late: within slack
        _ticket(P1, "INTERVIEW", "2026-01-14", ["x.rule"]),  # 4 days: outside slack → missing + unexpected
        _ticket(P2, "REVIEW", "2026-01-07", ["x.rule"]),  # nobody expected it
        _ticket(P1, "REVIEW", "2026-01-18", ["x.rule"]),  # after end − 1 − margin (2026-01-16): not scored
    ]
    folder = _write(tmp_path, labels, [_alert("x.rule", P1, *DAY5)], tickets)
    t = score(folder, folder / "labels.jsonl", implemented={"x.rule"}, ladder_triggers=set()).tickets
    assert dict(t.expected) == {"SUSPEND_OUTPATIENT_POOLING": 1, "REVIEW": 1, "INTERVIEW": 1}
    assert dict(t.matched) == {"SUSPEND_OUTPATIENT_POOLING": 1, "REVIEW": 1}
    assert dict(t.issued) == {"SUSPEND_OUTPATIENT_POOLING": 1, "REVIEW": 2, "INTERVIEW": 1}
    assert t.missing == [f"{P1} INTERVIEW 2026-01-10"]
    assert len(t.unexpected) == 2


def test_findings_rule_detected_by_a_ticket_carrying_its_alias(tmp_path: Path) -> None:
    labels = [_label("findings.infostd_substandard", P1, "2026-01-09", aliases=["finding:infostd_substandard"],
                     expected_tickets=[{"action": "SUSPEND_OUTPATIENT_POOLING", "effective_from": "2026-01-10",
                                        "slack_days": 3}])]
    tickets = [_ticket(P1, "SUSPEND_OUTPATIENT_POOLING", "2026-01-10", ["finding:infostd_substandard"])]
    folder = _write(tmp_path, labels, [], tickets)
    implemented = score(folder, folder / "labels.jsonl", implemented=set(),
                        ladder_triggers={"finding:infostd_substandard"})
    rs = implemented.rules["findings.infostd_substandard"]
    assert rs.implemented and (rs.planted, rs.detected) == (1, 1)
    missing_ladder = score(folder, folder / "labels.jsonl", implemented=set(), ladder_triggers=set())
    assert not missing_ladder.rules["findings.infostd_substandard"].implemented


def test_monitor_score_exit_code_follows_min_recall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = [_label("upload.late", P1, "2026-01-05"), _label("upload.late", P1, "2026-01-07")]
    folder = _write(tmp_path, labels, [_alert("upload.late", P1, *DAY5)], [])
    args = ["score", str(folder), "--labels", str(folder / "labels.jsonl")]
    assert main(args) == 1  # recall 0.5 < 0.95
    assert "upload.late" in capsys.readouterr().out
    assert main([*args, "--min-recall", "0.5"]) == 0

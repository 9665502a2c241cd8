"""#12 acceptance: ``monitor simulate --profile P`` for the three regions other than Ezhou plants that
region's own cases and look-alikes (plants in ``monitor.simulate.regions``, expected tickets worked out
there from the clauses and the shipped pack); replayed under the region's own pack they score ≥ 0.95
precision and recall per rule and per ticket action. A small city and 24 days keep each test short
(the 60-day runs, with the later steps of the ladders, are in README's measurements)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from monitor.clock import CST
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate
from monitor.simulate.score import score

pytestmark = pytest.mark.slow

DAYS = 24


def run(profile: str, tmp_path: Path, institutions: int) -> tuple[object, list[dict[str, object]]]:
    cfg = SimConfig(out=tmp_path / "in", profile=profile, days=DAYS, institutions=institutions, scale=0.05, seed=7)
    simulate(cfg)
    end = datetime.combine(cfg.start + timedelta(days=DAYS), datetime.min.time(), CST)
    replay_dir(cfg.out, tmp_path / "out", load_pack(profile), as_of=end)
    labels = [json.loads(line) for line in (cfg.out / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    return score(tmp_path / "out", cfg.out / "labels.jsonl", policy=profile), labels


def check(report: object, labels: list[dict[str, object]], must_plant: set[str], must_expect: set[str]) -> None:
    from monitor.simulate.score import Report

    assert isinstance(report, Report)
    assert must_plant <= {r for r, s in report.rules.items() if s.planted}, report.rules.keys()
    assert must_expect <= set(report.tickets.expected)
    assert report.failures(0.95, 0.95) == []
    assert report.ticket_failures(0.95) == [], (report.tickets.missing, report.tickets.unexpected[:5])
    assert any(lb.get("kind") == "lookalike" for lb in labels)


def test_simulate_profile_xianyang_scores_its_own_rules(tmp_path: Path) -> None:
    report, labels = run("xianyang", tmp_path, 24)
    check(report, labels, {"upload.not_realtime", "upload.silent_stream", "upload.time_unknown",
                           "data.incomplete", "tier.not_entitled", "tier.downgrade", "trace.duplicate",
                           "findings.agreement_terminated"},
          {"REVIEW", "DOWNGRADE_TIER", "TERMINATE_AGREEMENT"})


def test_simulate_profile_liaoning_scores_its_own_rules(tmp_path: Path) -> None:
    report, labels = run("liaoning", tmp_path, 24)
    check(report, labels, {"trace.missing", "tier.not_entitled", "tier.downgrade", "trace.duplicate",
                           "findings.agreement_terminated"},
          {"REVIEW", "DOWNGRADE_TIER", "TERMINATE_AGREEMENT"})


def test_simulate_profile_autonomous_region_scores_its_own_rules(tmp_path: Path) -> None:
    report, labels = run("autonomous-region", tmp_path, 20)
    check(report, labels, {"price.dual", "price.dual_serious", "suspensions.repeated", "trace.duplicate",
                           "status.settled_while_suspended", "findings.agreement_terminated"},
          {"INTERVIEW", "SUSPEND_SETTLEMENT", "REVIEW", "NO_RENEWAL", "TERMINATE_AGREEMENT"})

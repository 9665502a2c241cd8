"""The synthetic city: determinism, parseable arrival-ordered files, and simulate → replay → score.

The end-to-end test scores every rule the engine implements *today* (``implemented_rules()``), so it
covers each new detector as it lands; rules not implemented yet are reported by the scorer, not
dropped (``test_score_lists_unimplemented_rules``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.clock import parse_time
from monitor.detectors import implemented_rules
from monitor.policy.pack import load_pack
from monitor.records import STREAMS, InvalidRecord, parse_value
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate
from monitor.simulate.score import pack_triggers, render, score

FILES = [f"{s}.jsonl" for s in STREAMS] + ["labels.jsonl"]

#: Every rule of design §5 (plus the findings-driven sanctions) must have a planted violation.
DESIGN_RULES = {
    "upload.late", "upload.not_realtime", "data.incomplete", "inventory.negative_stock", "trace.missing",
    "trace.duplicate", "rx.not_uploaded", "rx.over_12_weeks", "price.dual", "price.above_listed",
    "price.above_mode", "benefit.overpaid", "tier.not_entitled", "status.settled_while_suspended",
    "complaints.repeated", "cloud_monitor.repeated", "findings.infostd_substandard",
    "findings.data_falsified_verified", "findings.agreement_terminated",
}


def _labels(folder: Path) -> list[dict[str, object]]:
    rows = [json.loads(x) for x in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["kind"] != "meta"]


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for raw in fh:
            yield raw.rstrip(b"\n")


# ------------------------------------------------------------------------------------------ determinism
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    out = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        simulate(SimConfig(out=root / name, days=8, seed=seed, institutions=30, scale=0.1))
        out.append(root / name)
    return out[0], out[1], out[2]


def test_same_seed_gives_byte_identical_files(tiny: tuple[Path, Path, Path]) -> None:
    a, b, _ = tiny
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_same_seed_is_byte_identical_across_processes(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """No dependence on per-process hash salts or set order: the CLI in another process, with another
    PYTHONHASHSEED, writes the same bytes."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "monitor.cli", "simulate", "--out", str(tmp_path / "x"), "--days", "8",
                    "--seed", "7", "--institutions", "30", "--scale", "0.1"], check=True, env=env,
                   capture_output=True)
    for name in FILES:
        assert (tiny[0] / name).read_bytes() == (tmp_path / "x" / name).read_bytes(), name


def test_different_seeds_differ(tiny: tuple[Path, Path, Path]) -> None:
    a, _, c = tiny
    differing = [n for n in FILES if (a / n).read_bytes() != (c / n).read_bytes()]
    assert {"settlements.jsonl", "inventory.jsonl", "tracecodes.jsonl"} <= set(differing)


# ----------------------------------------------------------------------------------------- the files
@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small city over 18 days: every plant fits (the last plant day is 15 = days − 3)."""
    out = tmp_path_factory.mktemp("city")
    simulate(SimConfig(out=out, days=18, seed=7, institutions=50, scale=0.05))
    return out


def test_every_generated_line_parses_and_files_are_in_arrival_order(city: Path) -> None:
    for stream in STREAMS:
        previous = None
        n = 0
        for raw in _lines(city / f"{stream}.jsonl"):
            parsed = parse_value(stream, raw)
            bad = [p for p in parsed if isinstance(p, InvalidRecord)]
            assert not bad, (stream, bad[0].reason, raw[:200])
            for rec in parsed:
                arrival = rec.arrival_time
                if arrival is not None and stream not in ("institutions", "drugs"):
                    assert previous is None or arrival >= previous, (stream, raw[:200])
                    previous = arrival
            n += 1
        assert n > 0, stream


def test_plants_cover_every_design_rule_and_lookalikes(city: Path) -> None:
    labels = _labels(city)
    planted = {str(lb["rule_id"]) for lb in labels if lb["kind"] == "violation"}
    assert DESIGN_RULES <= planted, DESIGN_RULES - planted
    lookalikes = {str(lb["rule_id"]) for lb in labels if lb["kind"] == "lookalike"}
    # the look-alikes of the issue: under-threshold late uploads, split packs, sold→returned→sold,
    # self-pay dearer, revoked settlements, resent findings, benefit at the cap, tier-allowed service
    assert {"upload.not_realtime", "trace.missing", "trace.duplicate", "price.dual", "data.incomplete",
            "complaints.repeated", "benefit.overpaid", "tier.not_entitled", "rx.over_12_weeks"} <= lookalikes


def test_trace_codes_are_20_digits_and_sold_once_outside_plants(city: Path) -> None:
    planted_dups = {str(lb["fixmedins_code"]) for lb in _labels(city)
                    if lb["rule_id"] == "trace.duplicate" and lb["kind"] == "violation"}
    state: dict[str, str] = {}
    for raw in _lines(city / "tracecodes.jsonl"):
        scan = json.loads(raw)
        code = scan["drug_trac_codg"]
        assert len(code) == 20 and code.isdigit()
        if scan["scan_kind"] == "sale":
            if state.get(code) == "sale":
                assert scan["fixmedins_code"] in planted_dups, scan
            state[code] = "sale"
        elif scan["scan_kind"] == "sale_return":
            state[code] = "returned"


def test_no_upload_is_late_outside_the_planted_days(city: Path) -> None:
    late_days = {(str(lb["fixmedins_code"]), str(lb["window_start"])) for lb in _labels(city)
                 if lb["rule_id"] == "upload.late" and lb["kind"] == "violation"}
    for stream, field in (("settlements", "setl_time"), ("tracecodes", "scan_time")):
        for raw in _lines(city / f"{stream}.jsonl"):
            rec = json.loads(raw)
            lag = parse_time(rec["inf_time"]) - parse_time(rec[field])
            if lag.total_seconds() > 24 * 3600:
                assert (rec["fixmedins_code"], rec[field][:10]) in late_days, rec


# ---------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def replayed(city: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city-out")
    meta = json.loads((city / "labels.jsonl").read_text(encoding="utf-8").splitlines()[0])
    replay_dir(city, out, load_pack("ezhou"), as_of=parse_time(meta["as_of"]))
    return out


def test_simulate_replay_score_precision_and_recall_per_implemented_rule(city: Path, replayed: Path) -> None:
    report = score(replayed, city / "labels.jsonl")
    have = implemented_rules() | pack_triggers("ezhou")
    scored = {r for r, s in report.rules.items() if s.implemented and s.planted}
    # every implemented rule of design §5 is planted and scored (upload.* at least, since the foundation)
    assert {"upload.late", "upload.not_realtime"} <= scored
    assert {r for r in DESIGN_RULES if r in have} <= scored
    table = render(report)
    for rule in sorted(scored):
        s = report.rules[rule]
        assert s.recall is not None and s.recall >= 0.95, f"{rule} recall\n{table}"
        assert s.precision is not None and s.precision >= 0.95, f"{rule} precision\n{table}"
        assert s.lookalikes_flagged == 0, f"{rule} flags a look-alike\n{table}"
    assert report.failures(0.95, 0.95) == []


def test_realtime_ladder_tickets_are_issued_as_expected(city: Path, replayed: Path) -> None:
    """EZ-DM 二(一): a not-real-time day D suspends outpatient pooling from D+3 (judged at D+2)."""
    report = score(replayed, city / "labels.jsonl")
    expected = report.tickets.expected["SUSPEND_OUTPATIENT_POOLING"]
    assert expected >= 2
    assert report.tickets.matched["SUSPEND_OUTPATIENT_POOLING"] == expected, render(report)
    tickets = [json.loads(x) for x in (replayed / "tickets.jsonl").read_text(encoding="utf-8").splitlines()]
    realtime = {(t["fixmedins_code"], t["effective_from"]) for t in tickets
                if t["action"] == "SUSPEND_OUTPATIENT_POOLING" and t["rule_ids"] == ["upload.not_realtime"]}
    labels = [lb for lb in _labels(city) if lb["rule_id"] == "upload.not_realtime" and lb["expected_tickets"]]
    assert labels
    for lb in labels:
        # plants sit on day 4 (2026-01-05): judged 2026-01-07, suspended from 2026-01-08
        assert lb["window_start"] == "2026-01-05"
        assert (lb["fixmedins_code"], "2026-01-08") in realtime


def test_score_lists_unimplemented_rules(city: Path, replayed: Path) -> None:
    report = score(replayed, city / "labels.jsonl", implemented={"upload.late"}, ladder_triggers=set())
    assert report.rules["upload.late"].implemented
    assert not report.rules["price.dual"].implemented
    assert report.rules["price.dual"].planted >= 1
    assert "not implemented" in render(report)
    # an implemented rule that detects nothing fails the threshold; unimplemented ones never do
    assert report.failures(0.95) == []


# ------------------------------------------------------------------------------------ province slice
def test_province_day_slice_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A small-scale province-day slice: many institutions, one day. Lines are written as soon as no
    later record can arrive before them, so the records held at once stay a small part of the run."""
    result = simulate(SimConfig(out=tmp_path, days=1, seed=3, institutions=1500, scale=0.05))
    assert result.counts["institutions"] == 1500
    assert result.records > 20 * result.peak_in_flight
    codes = [json.loads(x)["fixmedins_code"] for x in _lines(tmp_path / "institutions.jsonl")]
    assert len(set(codes)) == 1500
    assert all(len(c) == 12 and c[0] in "PH" and c[1:].isdigit() for c in codes)
    assert _labels(tmp_path) == []  # no plant fits a one-day period (windows must close first)
    for stream in ("settlements", "tracecodes", "prescriptions"):
        for raw in _lines(tmp_path / f"{stream}.jsonl"):
            assert not any(isinstance(p, InvalidRecord) for p in parse_value(stream, raw))

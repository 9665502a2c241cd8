"""The national trace rules (monitor.trace.rules), pure: planted cross-city cases and look-alikes."""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta
from pathlib import Path

from monitor.policy.pack import load_pack
from monitor.trace.multicity import trace_findings
from monitor.trace.rules import (
    CodeStage,
    DictKV,
    Scan,
    TraceParams,
    decode_history,
    encode_history,
)

sys.path.insert(0, str(Path(__file__).parent))
from cases import AS_OF, BASE, E1, W1, build

PARAMS = TraceParams.from_pack(load_pack("ezhou"))


def found(findings: list[dict]) -> set[tuple[str, str, str]]:
    return {(f["rule_id"], f["fixmedins_code"], f["drug_trac_codg"]) for f in findings}


def test_every_planted_case_once_and_no_look_alike(tmp_path: Path) -> None:
    expected = build(tmp_path)
    findings = trace_findings([tmp_path / "ezhou", tmp_path / "wuhan"], PARAMS, AS_OF)
    assert found(findings) == expected
    assert len(findings) == len(expected)  # one id per case


def test_resold_finding_has_both_sides_other_masked(tmp_path: Path) -> None:
    build(tmp_path)
    findings = trace_findings([tmp_path / "ezhou", tmp_path / "wuhan"], PARAMS, AS_OF)
    resold = next(f for f in findings if f["rule_id"] == "trace.resold")
    assert resold["fixmedins_code"] == W1 and resold["region"] == "420102"
    assert resold["charged"]["scan_kind"] == "sale" and resold["charged"]["rtal_docno"]
    assert resold["other"] == {"fixmedins_code": E1, "region": "420702"}
    assert resold["basis"] == "LN-TIER 三(一)3"
    assert resold["evidence"]["cross_region"] is True


def test_never_stocked_waits_for_its_window(tmp_path: Path) -> None:
    """Event time a week on: resales are judged (24 h settle), the 90-day never-stocked windows are open."""
    build(tmp_path)
    for city in ("ezhou", "wuhan"):
        path = tmp_path / city / "tracecodes.jsonl"
        lines = [ln for ln in path.read_text().splitlines() if '"2026-06' not in ln]
        path.write_text("\n".join(lines) + "\n")
    week = trace_findings([tmp_path / "ezhou", tmp_path / "wuhan"], PARAMS, BASE + timedelta(days=7))
    assert {r for r, _, _ in found(week)} == {"trace.resold", "trace.reentered", "trace.product_mismatch"}
    late = trace_findings([tmp_path / "ezhou", tmp_path / "wuhan"], PARAMS, BASE + timedelta(days=93))
    assert "trace.never_stocked" in {r for r, _, _ in found(late)}


def test_same_findings_whatever_the_interleaving_of_sources(tmp_path: Path) -> None:
    """Two sources (as two Kafka partitions) forwarded in any interleaving, each in its own order,
    give the replay's findings."""
    build(tmp_path)
    reference = trace_findings([tmp_path / "ezhou", tmp_path / "wuhan"], PARAMS, None)
    streams = []
    for city in ("ezhou", "wuhan"):
        from monitor.records import parse_value
        from monitor.trace.rules import scan_from_record
        recs = [parse_value("tracecodes", ln.encode())[0] for ln in (tmp_path / city / "tracecodes.jsonl")
                .read_text().splitlines()]
        streams.append([(r.drug_trac_codg, scan_from_record(r)) for r in recs])  # type: ignore[union-attr]
    for seed in range(3):
        rng = random.Random(seed)
        stage = CodeStage(PARAMS, DictKV(), sources=2)
        from monitor.trace.rules import ProductStage
        prod = ProductStage(PARAMS, DictKV(), sources=2)
        pos = [0, 0]
        out = []
        while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
            src = rng.choice([i for i in (0, 1) if pos[i] < len(streams[i])])
            code, scan = streams[src][pos[src]]
            pos[src] += 1
            out += stage.on_scan(code, scan, str(src))
            out += prod.on_scan(code, scan, str(src))
        for src in (0, 1):  # both read to their end
            out += stage.on_tick(str(src), streams[src][-1][1].arrival, idle=True)
            out += prod.on_tick(str(src), streams[src][-1][1].arrival, idle=True)
        ids = {f["finding_id"]: f for f in out}
        assert sorted(ids) == [f["finding_id"] for f in reference]
        assert [json.dumps(ids[f["finding_id"]], sort_keys=True) for f in reference] == \
            [json.dumps(f, sort_keys=True) for f in reference]


def test_redelivered_scan_changes_nothing() -> None:
    stage = CodeStage(PARAMS, DictKV())
    a = Scan(0, E1, 1000, 1000)
    b = Scan(0, W1, 5000, 5000)
    out = stage.on_scan("C", a, "s") + stage.on_scan("C", b, "s") + stage.on_scan("C", b, "s")
    out += stage.advance_to(5000 + PARAMS.settle)
    assert [f["rule_id"] for f in out] == ["trace.resold"]
    assert stage.counts["trace.scan_resent"] == 1


def test_codes_are_forgotten_after_the_retention() -> None:
    stage = CodeStage(PARAMS, DictKV())
    stage.on_scan("OLD", Scan(2, E1, 1000, 1000), "s")
    stage.on_scan("NEW", Scan(2, E1, 1000 + PARAMS.retention, 1000 + PARAMS.retention), "s")
    stage.advance_to(1000 + PARAMS.retention + 2 * PARAMS.sweep_every)
    assert stage.history("OLD") == [] and stage.history("NEW") != []
    assert stage.counts["trace.codes_expired"] == 1


def test_history_codec_round_trips() -> None:
    scans = [Scan(2, E1, 10, 20, False, "XA01", ""), Scan(0, W1, 30, 40, True, "XB02", "D001"),
             Scan(1, W1, 50, 60, False, "", "")]
    assert decode_history(encode_history(scans)) == scans


def test_an_idle_claim_older_than_newer_data_holds_the_watermark() -> None:
    """A source whose owner died after claiming "read to the end" must not let the survivors' newer
    scans judge: its partition may hold uploads nobody forwarded (the kill -9 case of the trace-worker)."""
    from monitor.trace.rules import StageClock

    clock = StageClock(2)
    clock.observe("0", 100, idle=True, sent=10.0)  # source 0 read to its end at t=10, then its owner died
    clock.observe("1", 100, sent=9.0)
    assert clock.value() == 100
    clock.observe("1", 5000, sent=12.0)  # the survivor forwards newer uploads of source 1
    assert clock.value() == 100  # source 0's claim predates them: it holds the watermark
    clock.observe("1", 5000, idle=True, sent=13.0)  # survivor idle too: still held by the stale claim
    assert clock.value() == 100
    clock.observe("0", 100, idle=True, sent=14.0)  # a live owner re-claims source 0 after the data
    assert clock.value() == 5000
    restored = StageClock(2, json.loads(json.dumps(clock.src)))
    assert restored.value() == 5000

"""The city worker's intake of the national trace tier (issue #15 acceptance point 3), without a broker:
``monitor.trace_findings`` through ``ShellCore`` (the worker's merge, positions and checkpoints) into a
real Ezhou engine. A finding is raised once per ``finding_id`` — also when produced twice, and after a
restart from a checkpoint — only for the pack's own region, and a bad one is dead-lettered."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import institution

from monitor.clock import CST
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.privacy import DEV_KEY, Pseudonymizer
from monitor.settings import Settings
from monitor.streams.app import build_core
from monitor.streams.checkpoint import CheckpointStore
from monitor.streams.core import Inbound, ShellCore
from monitor.streams.topics import TRACE_FINDINGS, input_topics
from monitor.trace.city import without_cross_duplicates

TF = "monitor.trace_findings"
INST = "medins.institutions"
TC = "medins.tracecodes"
HOME = "P42070200017"  # an Ezhou pharmacy (admdvs 420702)
AWAY = "P61040200003"  # a Xianyang pharmacy (admdvs 610402)


def finding(fid: str = "TF-1", inst: str = HOME, region: str | None = "420702", **over: Any) -> dict[str, Any]:
    """A trace finding as the trace-worker writes it (``monitor.trace.rules.make_finding``), by hand."""
    f: dict[str, Any] = {
        "finding_id": fid, "rule_id": "trace.resold", "fixmedins_code": inst, "region": region,
        "drug_trac_codg": "81234560000000000001", "business_date": "2026-01-12",
        "window_start": "2026-01-12T00:00:00+08:00", "window_end": "2026-01-13T00:00:00+08:00",
        "detected_at": "2026-01-13T10:15:00+08:00",
        "charged": {"fixmedins_code": inst, "region": region, "kind": "sale", "time": "2026-01-12T10:15:00+08:00"},
        "other": {"fixmedins_code": AWAY, "region": "610402"},
        "evidence": {"cross_region": True}, "basis": "LN-TIER 三(一)3",
    }
    f.update(over)
    return f


def msg(topic: str, offset: int, value: Any, partition: int = 0) -> Inbound:
    return Inbound(topic, partition, offset, None, json.dumps(value, ensure_ascii=False).encode())


def new_core(trace_tier: bool = True) -> ShellCore:
    pack = load_pack("ezhou")
    return ShellCore(Engine(without_cross_duplicates(pack) if trace_tier else pack, Pseudonymizer(b"k" * 32)))


def run(core: ShellCore, messages: list[Inbound]) -> tuple[list[Any], list[Any]]:
    letters = [letter for m in messages for letter in core.receive(m)]
    assigned = {m.tp for m in messages}
    out = core.release(assigned, lambda tp: False)
    return out, letters + core.take_letters()


def test_a_trace_finding_gives_one_alert_and_one_review_ticket_even_when_produced_twice() -> None:
    core = new_core()
    out, letters = run(core, [msg(INST, 0, institution(HOME)), msg(TF, 0, finding()), msg(TF, 1, finding())])
    assert letters == []
    alerts = [o for o in out if isinstance(o, Alert)]
    tickets = [o for o in out if isinstance(o, Ticket)]
    assert [(a.rule_id, a.fixmedins_code) for a in alerts] == [("trace.resold", HOME)]
    assert alerts[0].evidence["finding_id"] == "TF-1"
    assert alerts[0].evidence["other"] == {"fixmedins_code": AWAY, "region": "610402"}
    assert [(t.action, t.fixmedins_code) for t in tickets] == [("REVIEW", HOME)]  # EZ-DM 二(二) ladder
    assert core.positions[(TF, 0)] == (2, 0)


def test_a_restart_from_the_checkpoint_applies_no_finding_again() -> None:
    core = new_core()
    first, _ = run(core, [msg(INST, 0, institution(HOME)), msg(TF, 0, finding())])
    assert len([o for o in first if isinstance(o, Alert)]) == 1
    ckpt, _ = core.checkpoint()
    again = ShellCore.from_checkpoint(ckpt, Pseudonymizer(b"k" * 32))
    # the broker redelivers what the group had not committed, then a trace-worker resends the finding
    out, letters = run(again, [msg(TF, 0, finding()), msg(TF, 1, finding()), msg(TF, 2, finding("TF-2"))])
    assert letters == []
    assert [o.evidence["finding_id"] for o in out if isinstance(o, Alert)] == ["TF-2"]


def test_only_findings_of_the_packs_region_are_raised() -> None:
    core = new_core()
    out, letters = run(core, [msg(INST, 0, institution(HOME)),
                              msg(TF, 0, [finding("TF-away", inst=AWAY, region="610402"),
                                          finding("TF-home")]),
                              # no region: raised when the institution is in this city's registry
                              msg(TF, 1, finding("TF-noregion", region=None)),
                              msg(TF, 2, finding("TF-stranger", inst="X99", region=None))])
    assert letters == []
    assert sorted(o.evidence["finding_id"] for o in out if isinstance(o, Alert)) == ["TF-home", "TF-noregion"]
    assert core.engine.stats.quality["trace_findings.other_region"] == 2
    assert core.positions[(TF, 0)] == (3, 0)


def test_a_bad_finding_is_dead_lettered_and_the_next_one_raised() -> None:
    core = new_core()
    bad = finding("TF-bad")
    del bad["drug_trac_codg"]
    out, letters = run(core, [msg(INST, 0, institution(HOME)), msg(TF, 0, bad),
                              msg(TF, 1, finding("TF-x", rule_id="trace.nonsense")),
                              Inbound(TF, 0, 2, None, b"{not json"), msg(TF, 3, finding("TF-ok"))])
    errors = [letter.error for letter in letters]
    assert len(errors) == 3
    assert "drug_trac_codg" in errors[0] and "trace.nonsense" in errors[1] and "not JSON" in errors[2]
    assert [o.evidence["finding_id"] for o in out if isinstance(o, Alert)] == ["TF-ok"]


def test_with_the_trace_tier_the_workers_trace_duplicate_leaves_other_institutions_to_it(tmp_path: Path) -> None:
    def params(trace_tier: bool) -> dict[str, Any]:
        settings = Settings(data_dir=tmp_path / str(trace_tier), trace_tier=trace_tier, pii_key=DEV_KEY.decode())
        core = build_core(settings, CheckpointStore(settings.data_dir, settings.app_id, settings.pseudonymizer()))
        return dict(core.engine.pack.rules["trace.duplicate"].params)

    assert params(True)["cross_institution"] is False
    assert params(False).get("cross_institution", True) is True
    assert input_topics(Settings(trace_tier=True)) == (TRACE_FINDINGS,)
    assert input_topics(Settings()) == ()


def sale_scan(hours: float, inst: str, code: str) -> dict[str, Any]:
    when = datetime(2026, 1, 12, 10, 0, tzinfo=CST) + timedelta(hours=hours)
    return {"drug_trac_codg": code, "fixmedins_code": inst, "med_list_codg": "XA01AAA001", "scan_kind": "sale",
            "trdn_flag": "0", "scan_time": f"{when:%Y-%m-%d %H:%M:%S}",
            "inf_time": f"{when + timedelta(minutes=1):%Y-%m-%d %H:%M:%S}", "rtal_docno": f"R{inst[-2:]}{hours:g}"}


def test_one_resale_across_institutions_gives_one_alert_not_two() -> None:
    """A code sold at HOME after NEIGHBOUR (same city): the trace tier's trace.resold is the one alert;
    the worker's trace.duplicate, which would charge it too without the tier, stays silent on it and
    still charges a repeat at the same institution (LN-TIER 三(一)3)."""
    neighbour = "P42070200009"
    cross, same = "81234560000000000001", "81234560000000000002"
    inputs = [msg(INST, 0, institution(HOME)), msg(INST, 1, institution(neighbour)),
              msg(TC, 0, sale_scan(0, neighbour, cross)), msg(TC, 1, sale_scan(2, HOME, cross)),
              msg(TC, 2, sale_scan(3, HOME, same)), msg(TC, 3, sale_scan(4, HOME, same)),
              # event time moves past both judgments: both institutions vouch for the later time (a jump
              # claimed by one institution alone is held by the worker's EventClock, monitor/watermark.py)
              msg(TC, 4, sale_scan(60, HOME, "81234560000000000003")),
              msg(TC, 5, sale_scan(60, neighbour, "81234560000000000004"))]
    resold = finding("TF-cross", drug_trac_codg=cross, detected_at="2026-01-13T12:01:00+08:00",
                     other={"fixmedins_code": neighbour, "region": "420702"})

    def rules(trace_tier: bool) -> list[tuple[str, str]]:
        core = new_core(trace_tier)
        out, letters = run(core, [*inputs, *([msg(TF, 0, resold)] if trace_tier else [])])
        assert letters == []
        return sorted((a.rule_id, a.evidence["drug_trac_codg"]) for a in out if isinstance(a, Alert)
                      and a.rule_id.startswith("trace.") and a.rule_id != "trace.missing")

    assert rules(trace_tier=False) == [("trace.duplicate", cross), ("trace.duplicate", same)]
    assert rules(trace_tier=True) == [("trace.duplicate", same), ("trace.resold", cross)]


def test_a_checkpoint_of_the_other_mode_is_refused(tmp_path: Path) -> None:
    """Switching MONITOR_TRACE_TIER on a city with a checkpoint would keep the old trace.duplicate."""
    def start(trace_tier: bool) -> ShellCore:
        settings = Settings(data_dir=tmp_path, trace_tier=trace_tier, pii_key=DEV_KEY.decode())
        store = CheckpointStore(settings.data_dir, settings.app_id, settings.pseudonymizer())
        core = build_core(settings, store)
        store.save(core.checkpoint(full=False)[0], core.engine)
        return core

    start(trace_tier=False)
    start(trace_tier=False)  # the same mode restores
    with pytest.raises(ValueError, match=r"without the national trace tier.*MONITOR_TRACE_TIER=true"):
        start(trace_tier=True)

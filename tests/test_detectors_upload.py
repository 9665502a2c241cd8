"""Silence is not compliance — EZ-DM 二(一) "未实现医保结算数据、进销存、药品耗材追溯码数据实时上传".

Worked out by hand from the clause and the ezhou pack: 24 h upload limit, 10 % / 5 late records per
institution-day, ``upload.time_unknown`` above 5 % of a day, ``upload.silent_stream`` on ≥ 5 settlements
with drugs and no 3505 sale / no sale scan, one-month suspension reviewed on positive evidence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from builders import PHARMACY, institution, run_engine, sale, settlement

from monitor.clock import CST
from monitor.engine import Engine
from monitor.policy.pack import load_pack
from monitor.records import Settlement, parse_value

FMT = "%Y-%m-%d %H:%M:%S"
DAY = datetime(2026, 1, 10, 9, 0, tzinfo=CST)


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def settlements(n: int, lag: timedelta | None, prefix: str, day: datetime = DAY) -> list[dict[str, Any]]:
    """``n`` settlements on ``day`` one minute apart, uploaded ``lag`` later (None: no inf_time)."""
    out = []
    for i in range(n):
        t = day + timedelta(minutes=i)
        out.append(settlement(f"{prefix}{i}", ts(t), ts(t + lag) if lag is not None else None))
    return out


def with_sales(recs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each settlement followed by its 3505 sale and its sale scan (so no other rule fires)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for rec in recs:
        up = rec.get("inf_time")
        out.append(("settlements", rec))
        out.append(("inventory", sale(f"B{rec['setl_id']}", rec["setl_time"], up, setl_id=rec["setl_id"],
                                      mdtrt_setl_type="1")))
        scan = {"drug_trac_codg": f"8{abs(hash(rec['setl_id'])) % 10**19:019d}", "fixmedins_code": PHARMACY,
                "med_list_codg": "XA01AAA001", "scan_kind": "sale", "trdn_flag": "0",
                "scan_time": rec["setl_time"], "rtal_docno": f"RB{rec['setl_id']}", "setl_id": rec["setl_id"]}
        if up is not None:
            scan["inf_time"] = up
        out.append(("tracecodes", scan))
    return out


def _arrival(item: tuple[str, dict[str, Any]]) -> str:
    rec = item[1]
    return str(rec.get("inf_time") or rec.get("setl_time") or rec.get("sel_retn_time") or rec["scan_time"])


def by_arrival(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [("institutions", institution(PHARMACY)), *sorted(items, key=_arrival)]


# ------------------------------------------------------------------------------ upload time unknown
def test_ez_dm_2_1_record_without_inf_time_is_never_on_time() -> None:
    """5 late + 45 on time + 20 without inf_time: the unknown ones no longer dilute the late share —
    5/50 = 10 % is a not-real-time day (main read them as on time: 5/70 = 7 %, nothing)."""
    recs = (settlements(5, timedelta(hours=30), "L") + settlements(45, timedelta(minutes=1), "K")
            + settlements(20, None, "U"))
    alerts, tickets = run_engine(by_arrival(with_sales(recs)), as_of="2026-01-20 00:00:00")
    nr = [a for a in alerts if a["rule_id"] == "upload.not_realtime"]
    assert len(nr) == 1
    assert (nr[0]["evidence"]["records"], nr[0]["evidence"]["late"]) == (50 * 3, 5 * 3)
    assert nr[0]["evidence"]["upload_time_unknown"] == 20 * 3
    unknown = [a for a in alerts if a["rule_id"] == "upload.time_unknown"]
    assert len(unknown) == 1 and unknown[0]["evidence"]["upload_time_unknown"] == 60
    assert unknown[0]["evidence"]["unknown_share"] == "0.2857"
    assert [t["action"] for t in tickets if t["ladder"] == "realtime"] == ["SUSPEND_OUTPATIENT_POOLING"]


def test_upload_time_unknown_is_a_quality_figure_and_alerts_only_above_the_share() -> None:
    """2 of 50 without inf_time (4 % ≤ 5 %): counted, no alert; 3 of 50 (6 %): alert."""
    for missing, alerted in ((2, False), (3, True)):
        recs = settlements(50 - missing, timedelta(minutes=1), "K") + settlements(missing, None, "U")
        engine = Engine(load_pack("ezhou"))
        out = []
        for stream, raw in by_arrival([("settlements", r) for r in recs]):
            for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode()):
                out.extend(engine.process(rec))  # type: ignore[arg-type]
        out.extend(engine.advance(datetime(2026, 1, 20, tzinfo=CST)))
        rules = [getattr(o, "rule_id", None) for o in out]
        assert ("upload.time_unknown" in rules) is alerted
        assert engine.stats.quality["settlements.upload_time_unknown"] == missing


def test_worker_arrival_override_is_a_known_upload_time() -> None:
    """The worker passes the Kafka timestamp as arrival for a record without inf_time (design §3): the
    engine judges lateness on it — 30 h after the sale is late."""
    engine = Engine(load_pack("ezhou"))
    inst = parse_value("institutions", json.dumps(institution(PHARMACY)).encode())[0]
    engine.process(inst)  # type: ignore[arg-type]
    out = []
    for i in range(6):
        raw = settlement(f"W{i}", ts(DAY + timedelta(minutes=i)), None)
        rec = parse_value("settlements", json.dumps(raw, ensure_ascii=False).encode())[0]
        assert isinstance(rec, Settlement) and rec.inf_time is None
        out.extend(engine.process(rec, arrival=DAY + timedelta(hours=30, minutes=i)))
    out.extend(engine.advance(datetime(2026, 1, 20, tzinfo=CST)))
    rules = {getattr(o, "rule_id", None) for o in out}
    assert "upload.not_realtime" in rules and "upload.time_unknown" not in rules
    assert engine.stats.quality["settlements.upload_time_unknown"] == 0


# --------------------------------------------------------------------------------- silent streams
def test_ez_dm_2_1_settling_while_inventory_is_silent_feeds_the_realtime_ladder() -> None:
    """10 settlements with drugs uploaded in time, their trace scans too, but no 3505 sale at all for
    the day: 进销存 not uploaded in real time → SUSPEND_OUTPATIENT_POOLING from the day after the
    judgment (01-10 judged 01-12 00:00 → 01-13)."""
    items = [it for it in with_sales(settlements(10, timedelta(minutes=1), "S")) if it[0] != "inventory"]
    alerts, tickets = run_engine(by_arrival(items), as_of="2026-01-20 00:00:00")
    silent = [a for a in alerts if a["rule_id"] == "upload.silent_stream"]
    assert len(silent) == 1 and silent[0]["evidence"]["silent_streams"] == ["inventory"]
    assert silent[0]["basis"] == "EZ-DM 二(一)" and silent[0]["severity"] == "critical"
    real = [(t["action"], t["effective_from"]) for t in tickets if t["ladder"] == "realtime"]
    assert real == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-13")]


def test_silent_trace_stream_and_look_alikes() -> None:
    """No sale scan for 10 insured whole packs → tracecodes silent; 4 settlements without sales (under
    min_settlements) or a day with its sales and scans → nothing silent."""
    no_scans = [it for it in with_sales(settlements(10, timedelta(minutes=1), "S")) if it[0] != "tracecodes"]
    alerts, _ = run_engine(by_arrival(no_scans), as_of="2026-01-20 00:00:00")
    silent = [a["evidence"]["silent_streams"] for a in alerts if a["rule_id"] == "upload.silent_stream"]
    assert silent == [["tracecodes"]]
    few = [("settlements", r) for r in settlements(4, timedelta(minutes=1), "F")]
    full = with_sales(settlements(10, timedelta(minutes=1), "G"))
    for items in (few, full):
        alerts, _ = run_engine(by_arrival(items), as_of="2026-01-20 00:00:00")
        assert not [a for a in alerts if a["rule_id"] == "upload.silent_stream"]


# ----------------------------------------------------------------------- review on positive evidence
def test_ez_dm_2_1_quiet_institution_is_not_reinstated() -> None:
    """Suspended 01-13 .. 02-13 after a not-real-time 01-10, then silent: "1个月后仍未实现实时上传" cannot be
    ruled out by silence — REVIEW requiring verification (ezhou's review_evidence.on_missing), not
    REINSTATE. With on-time uploads at its usual volume in the window (02-06 .. 02-12) → REINSTATE."""
    bad = settlements(10, timedelta(hours=30), "L")
    _, tickets = run_engine(by_arrival(with_sales(bad)), as_of="2026-03-01 00:00:00")
    got = [(t["action"], t["effective_from"], t["requires_verification"]) for t in tickets
           if t["ladder"] == "realtime"]
    assert got == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-13", False), ("REVIEW", "2026-02-13", True)]
    # 10 records on 01-10 in 28 baseline days (×3 streams): usual ≈ 1.07/day; 0.3 × that over 7 days
    # needs ≥ 2.25 on-time records: 3 settlements with their sales and scans on 02-09
    good = settlements(3, timedelta(minutes=1), "G", day=datetime(2026, 2, 9, 9, 0, tzinfo=CST))
    _, tickets = run_engine(by_arrival(with_sales(bad) + with_sales(good)), as_of="2026-03-01 00:00:00")
    got = [(t["action"], t["effective_from"], t["requires_verification"]) for t in tickets
           if t["ladder"] == "realtime"]
    assert got == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-13", False), ("REINSTATE", "2026-02-13", False)]


def test_review_without_evidence_on_one_stream_is_not_clean() -> None:
    """Settlements keep coming on time in the window but the 3505 stream the pharmacy used before went
    quiet (3 settlements: under upload.silent_stream's minimum): each used stream must show uploads
    (realtime.review_evidence.each_stream) → REVIEW."""
    bad = settlements(10, timedelta(hours=30), "L")
    good = [it for it in with_sales(settlements(3, timedelta(minutes=1), "G",
                                                day=datetime(2026, 2, 9, 9, 0, tzinfo=CST)))
            if it[0] != "inventory"]
    _, tickets = run_engine(by_arrival(with_sales(bad) + good), as_of="2026-03-01 00:00:00")
    got = [t["action"] for t in tickets if t["ladder"] == "realtime"]
    assert got == ["SUSPEND_OUTPATIENT_POOLING", "REVIEW"]


# --------------------------------------------------------------------------------- xianyang
def test_xy_tier_5_3_silence_is_not_real_time_in_xianyang() -> None:
    """XY-TIER 第五条3 承诺将追溯码信息和"进销存"台账实时、准确归集: a day of 10 settlements with drugs and no 3505
    sale is a silent 进销存 stream (an alert; the one review of the day is data.incomplete's, 第十一条); 3505
    sales without any upload time are time unknown (an alert, no ladder). Late settlements alone are not
    XY's matter."""
    items = [it for it in with_sales(settlements(10, timedelta(minutes=1), "S")) if it[0] != "inventory"]
    alerts, tickets = run_engine(by_arrival(items), policy="xianyang", as_of="2026-01-20 00:00:00")
    silent = [a for a in alerts if a["rule_id"] == "upload.silent_stream"]
    assert len(silent) == 1 and silent[0]["evidence"]["silent_streams"] == ["inventory"]
    assert silent[0]["basis"] == "XY-TIER 第五条3"
    assert [(t["ladder"], t["action"], t["rule_ids"]) for t in tickets] == [
        ("data_review", "REVIEW", ["data.incomplete"])]
    unknown_sales = [("settlements", r) for r in settlements(10, timedelta(minutes=1), "K")] + [
        ("inventory", sale(f"B{i}", ts(DAY + timedelta(minutes=i)), None, setl_id=f"K{i}", mdtrt_setl_type="1"))
        for i in range(10)]
    alerts, _ = run_engine(by_arrival(unknown_sales), policy="xianyang", as_of="2026-01-20 00:00:00")
    unknown = [a for a in alerts if a["rule_id"] == "upload.time_unknown"]
    assert len(unknown) == 1 and unknown[0]["evidence"]["upload_time_unknown"] == 10
    late_settlements = with_sales(settlements(10, timedelta(minutes=1), "L"))
    for rec in late_settlements:
        if rec[0] == "settlements":
            rec[1]["inf_time"] = ts(datetime.strptime(rec[1]["setl_time"], FMT) + timedelta(hours=30))
    alerts, _ = run_engine(by_arrival(late_settlements), policy="xianyang", as_of="2026-01-20 00:00:00")
    assert not [a for a in alerts if a["rule_id"].startswith("upload.")]

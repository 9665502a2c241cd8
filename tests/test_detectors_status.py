"""status.settled_while_suspended — EZ-DM 二: 门诊统筹 settled on a day a suspension, termination or
cancellation of this monitor is in force (the ledger is the source of truth). Sanctions here come from
verified findings, whose dates are fixed by the pack: infostd_substandard on 03-01 → suspended
[03-02, 09-02); data_falsified_verified → cancelled from the next day, for good."""

from __future__ import annotations

from typing import Any

import pytest
from builders import PHARMACY, finding, institution, run_engine, settlement


def pooled(setl_id: str, day: str, **over: Any) -> tuple[str, dict[str, Any]]:
    base = {"hifp_pay": "18.00", "acct_pay": "12.00"}
    base.update(over)
    return ("settlements", settlement(setl_id, f"{day} 10:00:00", f"{day} 10:01:00", **base))


def hits(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule_id"] == "status.settled_while_suspended"]


REG = ("institutions", institution(PHARMACY, agreement_end="2027-12-31"))
SUSPEND = ("findings", finding("F1", "infostd_substandard", "2026-03-01 09:00:00"))


@pytest.mark.parametrize(
    ("day", "over", "flagged"),
    [
        ("2026-03-01", {}, False),  # the suspension starts the next day
        ("2026-03-02", {}, True),
        ("2026-09-01", {}, True),  # last day of the 6 months
        ("2026-09-02", {}, False),  # [from, until): over
        ("2026-04-01", {"hifp_pay": "0.00", "acct_pay": "30.00"}, False),  # personal account only
        ("2026-04-01", {"med_type": "14"}, True),  # 门诊慢特病 is part of 门诊统筹 in EZ-DM
        ("2026-04-01", {"setl_status": "revoked"}, False),
    ],
)
def test_settled_while_suspended(day: str, over: dict[str, Any], flagged: bool) -> None:
    alerts, tickets = run_engine([REG, SUSPEND, pooled("S1", day, **over)])
    # the 6-month suspension ends with REINSTATE on 09-02 once event time reaches it (#12 point 7)
    assert [(t["action"], t["effective_from"], t["effective_until"]) for t in tickets] == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-03-02", "2026-09-02")] + (
        [("REINSTATE", "2026-09-02", None)] if day >= "2026-09-02" else [])
    found = hits(alerts)
    assert bool(found) is flagged
    if flagged:
        assert found[0]["severity"] == "critical"
        assert found[0]["evidence"]["state"] == "suspended"
        assert found[0]["evidence"]["in_force"][0]["ticket_id"] == tickets[0]["ticket_id"]


def test_after_cancellation_every_pooling_settlement_day_is_flagged_once() -> None:
    recs = [REG, ("findings", finding("F1", "data_falsified_verified", "2026-03-01 09:00:00")),
            pooled("S1", "2027-05-01"), pooled("S2", "2027-05-01"), pooled("S3", "2027-05-02")]
    alerts, tickets = run_engine(recs)
    assert [(t["action"], t["reapply_after"]) for t in tickets] == [("CANCEL_OUTPATIENT_POOLING", "2029-03-02")]
    found = hits(alerts)
    assert [a["evidence"]["business_date"] for a in found] == ["2027-05-01", "2027-05-02"]
    assert {a["evidence"]["state"] for a in found} == {"terminated"}


def test_no_sanction_no_alert() -> None:
    alerts, _ = run_engine([REG, pooled("S1", "2026-03-02")])
    assert hits(alerts) == []


# ----------------------------------------------------------------------------- renewal.grounds + report
def _renewal_input(folder: Any) -> None:
    from builders import sale, write_jsonl

    none, low, ok, dual = "P42070200021", "P42070200022", "P42070200023", "P42070200024"
    write_jsonl(folder, "institutions", [institution(c) for c in (none, low, ok, dual)])
    setl, scans, inv = [], [], []
    for code, codes in ((low, 8), (ok, 9)):  # 10 insured whole packs; 8 (80 %) vs 9 (90 %) scanned
        setl.append(settlement(f"S{code}", "2026-05-01 10:00:00", "2026-05-01 10:01:00", code=code,
                               drugdetail=[{"med_list_codg": "XA01AAA001", "cnt": "10", "pric": "3.00",
                                            "trdn_flag": "0"}]))
        scans += [{"drug_trac_codg": f"8{code[-2:]}{i:017d}", "fixmedins_code": code,
                   "med_list_codg": "XA01AAA001", "scan_kind": "sale", "trdn_flag": "0",
                   "scan_time": "2026-05-01 10:00:30", "inf_time": "2026-05-01 10:01:00",
                   "setl_id": f"S{code}", "rtal_docno": f"R{code}"} for i in range(codes)]
    # 3 dual-pricing days (split packs), 涉及药品金额 3 × 600 × ¥2 = ¥3 600 (serious: amount and gravity)
    for n, day in enumerate(("2026-06-01", "2026-06-02", "2026-06-03")):
        setl.append(settlement(f"D{n}", f"{day} 10:00:00", f"{day} 10:01:00", code=dual,
                               drugdetail=[{"med_list_codg": "XA01AAA001", "cnt": "600", "pric": "2.00",
                                            "trdn_flag": "1"}]))
        inv.append(sale(f"B{n}", f"{day} 11:00:00", f"{day} 11:01:00", code=dual, finl_trns_pric="1.00",
                        trdn_flag="1"))
    write_jsonl(folder, "settlements", sorted(setl, key=lambda r: r["inf_time"]))
    write_jsonl(folder, "tracecodes", scans)
    write_jsonl(folder, "inventory", inv)


def test_renewal_grounds_at_year_end_and_the_report(tmp_path: Any, capsys: Any) -> None:
    from datetime import datetime

    from builders import read_jsonl

    from monitor.cli import main
    from monitor.clock import CST
    from monitor.policy.pack import load_pack
    from monitor.replay import replay_dir

    _renewal_input(tmp_path / "in")
    out = tmp_path / "out"
    # before the year is over only (13) is known
    replay_dir(tmp_path / "in", out, load_pack("autonomous-region"), as_of=datetime(2026, 12, 31, tzinfo=CST))
    assert [a for a in read_jsonl(out / "alerts.jsonl") if a["rule_id"] == "renewal.grounds"] == []
    assert main(["renewal-report", str(out), "--year", "2026"]) == 0
    assert "do not reach the end of 2026" in capsys.readouterr().out
    assert [(r["fixmedins_code"], r["grounds"]) for r in read_jsonl(out / "renewal-2026.jsonl")] == [
        ("P42070200024", ["13"])]

    out2 = tmp_path / "out2"
    replay_dir(tmp_path / "in", out2, load_pack("autonomous-region"), as_of=datetime(2027, 1, 2, tzinfo=CST))
    grounds = {a["fixmedins_code"]: a["evidence"]["grounds"] for a in read_jsonl(out2 / "alerts.jsonl")
               if a["rule_id"] == "renewal.grounds"}
    assert grounds == {"P42070200021": ["AR-AGR 二(二)3"], "P42070200022": ["AR-AGR 二(二)8"],
                       "P42070200024": ["AR-AGR 二(二)13"]}
    no_renewal = sorted((t["fixmedins_code"], t["ladder"]) for t in read_jsonl(out2 / "tickets.jsonl")
                        if t["action"] == "NO_RENEWAL")
    assert no_renewal == [("P42070200021", "renewal"), ("P42070200022", "renewal"),
                          ("P42070200024", "dual_price_no_renewal")]
    assert main(["renewal-report", str(out2), "--year", "2026"]) == 0
    text = capsys.readouterr().out
    assert "do not reach" not in text
    rows = read_jsonl(out2 / "renewal-2026.jsonl")
    assert [(r["fixmedins_code"], r["grounds"]) for r in rows] == [
        ("P42070200021", ["3"]), ("P42070200022", ["8"]), ("P42070200024", ["13"])]
    assert rows[1]["evidence"]["trace_coverage"] == "0.8000"


# ------------------------------------------------------------- settling without the right (issue 12.5)
def acct_only(setl_id: str, day: str) -> tuple[str, dict[str, Any]]:
    return pooled(setl_id, day, hifp_pay="0.00", acct_pay="30.00", med_type="11")


def grounds(alerts: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(a["evidence"]["business_date"], sorted(g["ground"] for g in a["evidence"]["grounds"]))
            for a in hits(alerts)]


def test_ez_dm_2_pooling_settled_without_the_registry_designation() -> None:
    """门诊统筹 settled by a pharmacy whose registry says outpatient_pooling = false (no ticket of ours):
    settling without the right; its personal-account settlements are allowed; 门诊慢特病 is another
    designation and not judged on this flag."""
    reg = ("institutions", institution(PHARMACY, outpatient_pooling=False, agreement_end="2027-12-31"))
    items = [reg, pooled("S1", "2026-03-02"), acct_only("S2", "2026-03-03"),
             pooled("S3", "2026-03-04", med_type="14")]
    alerts, _ = run_engine(items)
    assert grounds(alerts) == [("2026-03-02", ["registry"])]


def test_ez_dm_2_insured_settlement_after_agreement_end() -> None:
    """After agreement_end (2026-03-01) there is no agreement: every insured settlement counts,
    personal account included; the last day of the agreement does not."""
    reg = ("institutions", institution(PHARMACY, agreement_end="2026-03-01"))
    alerts, _ = run_engine([reg, acct_only("S1", "2026-03-01"), acct_only("S2", "2026-03-02")])
    assert grounds(alerts) == [("2026-03-02", ["registry"])]


@pytest.mark.parametrize(("kind"), ["agreement_suspended", "payment_suspended"])
def test_ar_agr_3_2_agency_suspension_in_force_stops_every_insured_settlement(kind: str) -> None:
    """An agency finding (暂停协议 / 暂停结算, AR-AGR 三(二)) on 03-05: in force from that day for one
    calendar month (ezhou: agency_in_force_months = 1) or until a `rectified` finding — a
    personal-account settlement on 03-06 counts; after `rectified` on 03-10 nothing counts."""
    items = [REG, ("findings", finding("A1", kind, "2026-03-05 09:00:00")), acct_only("S1", "2026-03-06"),
             ("findings", finding("A2", "rectified", "2026-03-10 09:00:00")), acct_only("S2", "2026-03-11")]
    alerts, _ = run_engine(items)
    assert grounds(alerts) == [("2026-03-06", ["finding"])]
    items = [REG, ("findings", finding("A1", kind, "2026-03-05 09:00:00")), acct_only("S1", "2026-04-04"),
             acct_only("S2", "2026-04-05")]
    alerts, _ = run_engine(items)
    assert grounds(alerts) == [("2026-04-04", ["finding"])]  # [03-05, 04-05)


def test_xy_tier_4_a_lost_right_applies_from_its_valid_from_not_its_arrival() -> None:
    """A registry entry uploaded on 03-01 that takes pooling away from 03-10 (valid_from): 门诊统筹 on
    03-05 is still within the right, on 03-10 it is not."""
    later = institution(PHARMACY, outpatient_pooling=False, agreement_end="2027-12-31",
                        valid_from="2026-03-10 00:00:00", inf_time="2026-03-01 08:00:00")
    items = [REG, ("institutions", later), pooled("S1", "2026-03-05"), pooled("S2", "2026-03-10")]
    alerts, _ = run_engine(items)
    assert grounds(alerts) == [("2026-03-10", ["registry"])]

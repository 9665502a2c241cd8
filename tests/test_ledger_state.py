"""The ledger's state model (#12 points 2 and 7), one test per clause. Expected tickets are worked out
by hand from the clauses and the pack defaults; each test failed on main before this change."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from builders import PHARMACY, finding, institution, run_engine, settlement

from monitor.clock import CST
from monitor.engine import Engine
from monitor.policy.pack import load_pack
from monitor.records import parse_value

Rec = tuple[str, dict[str, Any]]


def inst(start: str = "2026-01-01", end: str = "2026-12-31", **over: Any) -> Rec:
    return ("institutions", institution(PHARMACY, agreement_start=start, agreement_end=end, **over))


def f(fid: str, kind: str, day: str, time: str = "10:00:00", **over: Any) -> Rec:
    return ("findings", finding(fid, kind, f"{day} {time}", inf_time=f"{day} {time}", **over))


def brief(tickets: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["action"], t["effective_from"], t["effective_until"], t["reapply_after"]) for t in tickets]


def custom(tmp_path: Path, body: str, includes: str = "ezhou") -> str:
    path = tmp_path / "custom.toml"
    path.write_text(f'[pack]\nname = "custom"\nversion = "1"\ntitle = "t"\nregion = ""\nincludes = ["{includes}"]\n'
                    + body, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------ scopes: pooling vs agreement
def test_ez_dm_2_2_ban_after_falsified_data_is_kept_when_pooling_was_already_cancelled() -> None:
    """EZ-DM 二(四) cancels pooling (no ban); a later 二(二) 虚假 finding still bans reapplying for 3 years."""
    recs = [inst(), f("T1", "agreement_terminated", "2026-03-01"), f("F1", "data_falsified_verified", "2026-04-01")]
    assert brief(run_engine(recs)[1]) == [
        ("CANCEL_OUTPATIENT_POOLING", "2026-03-02", None, None),
        ("CANCEL_OUTPATIENT_POOLING", "2026-04-02", None, "2029-04-02"),
    ]


def test_xy_tier_14_4_agency_termination_after_a_pooling_termination_ends_the_agreement(tmp_path: Path) -> None:
    """Ending the pooling designation does not end the agreement: 解除协议 and its 3-year ban still issue."""
    pack = custom(tmp_path, '[ladders.agreement_terminated]\naction = "TERMINATE_AGREEMENT"\n'
                            'reapply_after_years = 3\n')
    recs = [inst(), f("F1", "data_falsified_verified", "2026-03-01"), f("T1", "agreement_terminated", "2026-04-01"),
            f("I1", "infostd_substandard", "2026-05-01")]  # nothing left to suspend after the termination
    assert brief(run_engine(recs, policy=pack)[1]) == [
        ("CANCEL_OUTPATIENT_POOLING", "2026-03-02", None, "2029-03-02"),
        ("TERMINATE_AGREEMENT", "2026-04-02", None, "2029-04-02"),
    ]


def _late_day(day: date, n: int = 20, late: int = 10) -> list[Rec]:
    out: list[Rec] = []
    for i in range(n):
        t = datetime(day.year, day.month, day.day, 10, 0, tzinfo=CST) + timedelta(minutes=i)
        up = t + (timedelta(hours=30) if i < late else timedelta(minutes=1))
        out.append(("settlements", settlement(f"S{day:%m%d}-{i}", f"{t:%Y-%m-%d %H:%M:%S}",
                                              f"{up:%Y-%m-%d %H:%M:%S}")))
    return out


def test_ez_dm_2_4_no_reinstate_after_the_pooling_designation_was_cancelled() -> None:
    """Suspended 01-13 .. 02-12 (EZ-DM 二(一)); 二(四) cancels the designation on 01-21: the review at the end
    of the month must not REINSTATE (nor terminate what is already cancelled)."""
    recs = sorted(_late_day(date(2026, 1, 10)), key=lambda r: r[1]["inf_time"])
    recs = [inst(), *recs, f("T1", "agreement_terminated", "2026-01-20")]
    _, tickets = run_engine(recs, as_of="2026-03-01 00:00:00")
    assert [t["action"] for t in tickets if t["ladder"] in ("realtime", "agreement_terminated")] == [
        "SUSPEND_OUTPATIENT_POOLING", "CANCEL_OUTPATIENT_POOLING"]


# ------------------------------------------------------------------------------ AR-AGR 三(三)
AR_SUSPEND = ('[ladders.test_suspend]\nkind = "immediate"\ntriggers = ["finding:payment_suspended"]\n'
              'basis = ["AR-AGR 三(二)2"]\naction = "SUSPEND_AGREEMENT"\nduration_months = 1\n')


def test_ar_agr_3_3_termination_is_dated_on_the_second_suspension_and_it_is_never_reinstated(tmp_path: Path) -> None:
    pack = custom(tmp_path, AR_SUSPEND, includes="autonomous-region")
    recs = [inst(), f("P1", "payment_suspended", "2026-02-01"), f("P2", "payment_suspended", "2026-05-01")]
    _, tickets = run_engine(recs, policy=pack, as_of="2026-08-01 00:00:00")
    assert brief(tickets) == [
        ("SUSPEND_AGREEMENT", "2026-02-02", "2026-03-02", None),
        ("REINSTATE", "2026-03-02", None, None),  # the first, fixed-term suspension ends (#12 point 7)
        ("SUSPEND_AGREEMENT", "2026-05-02", "2026-06-02", None),
        ("TERMINATE_AGREEMENT", "2026-05-02", None, "2029-05-02"),  # 即时解除: the day the 2nd takes effect
    ]


def test_ar_agr_3_3_a_rejected_suspension_does_not_count(tmp_path: Path) -> None:
    pack = custom(tmp_path, AR_SUSPEND, includes="autonomous-region")
    first = run_engine([inst(), f("P1", "payment_suspended", "2026-02-01")], policy=pack)[1][0]["ticket_id"]
    recs = [inst(), f("P1", "payment_suspended", "2026-02-01"),
            f("R1", "ticket_rejected", "2026-02-03", ref_ticket_id=first),
            f("P2", "payment_suspended", "2026-05-01")]
    _, tickets = run_engine(recs, policy=pack, as_of="2026-08-01 00:00:00")
    # the rejected ticket restricts nothing (no REINSTATE for it, a VOID says so) and counts toward nothing
    assert brief(tickets) == [
        ("SUSPEND_AGREEMENT", "2026-02-02", "2026-03-02", None),
        ("VOID", "2026-02-03", None, None),
        ("SUSPEND_AGREEMENT", "2026-05-02", "2026-06-02", None),
        ("REINSTATE", "2026-06-02", None, None),
    ]


# ------------------------------------------------------------------------------ EZ-DM 二(二) counts
def test_ez_dm_2_2_cloud_monitor_notices_of_one_term_add_up_across_a_renewal_upload() -> None:
    """协议期内 two notices: the renewal (next term's registry entry) arrives between them."""
    renewal = inst("2027-01-01", "2027-12-31", valid_from="2026-09-01 00:00:00")
    recs = [inst(), f("N1", "cloud_monitor_notice", "2026-03-01"), renewal,
            f("N2", "cloud_monitor_notice", "2026-10-01")]
    assert brief(run_engine(recs)[1]) == [("CANCEL_OUTPATIENT_POOLING", "2026-10-02", None, None)]


def test_ez_dm_2_2_a_verified_incompleteness_during_the_suspension_is_kept() -> None:
    """F1 suspends 01-11 .. 07-10; F2 (verified 03-01, inside it) is not "6个月后" but is its own 经查实不完整:
    judged when the first ends — a new 6 months from 07-11, not a REINSTATE."""
    recs = [inst(end="2027-12-31"), f("F1", "data_incomplete_verified", "2026-01-10"),
            f("F2", "data_incomplete_verified", "2026-03-01")]
    _, tickets = run_engine(recs, as_of="2027-02-01 00:00:00")
    assert brief(tickets) == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-01-11", "2026-07-11", None),
        ("SUSPEND_OUTPATIENT_POOLING", "2026-07-11", "2027-01-11", None),
        ("REINSTATE", "2027-01-11", None, None),
    ]


# ------------------------------------------------------------------------------ XY-TIER 第十四条
def test_xy_tier_14_downgrade_counts_findings_that_arrive_out_of_event_order() -> None:
    recs = [inst(end="2027-12-31", tier="C", tier_scheme="XY"),
            f("I1", "interview", "2026-06-01"), f("I2", "interview", "2026-03-01", time="11:00:00")]
    recs[2][1]["inf_time"] = "2026-06-02 09:00:00"  # the older interview is reported last
    _, tickets = run_engine(recs, policy="xianyang")
    assert [(t["action"], t["new_tier"]) for t in tickets] == [("DOWNGRADE_TIER", "B")]


# ------------------------------------------------------------------------------ approved / rectified
def test_ez_dm_2_2_an_approved_review_is_the_verification_and_counts_once() -> None:
    """A data.incomplete REVIEW approved by the agency = 经查实不完整 → suspend 6 months; the agency's own
    data_incomplete_verified about the same review is the same case (no second count, no cancellation)."""
    recs: list[Rec] = [inst(end="2027-12-31"),
                       ("settlements", settlement("S1", "2026-01-05 10:00:00", "2026-01-05 10:01:00"))]
    _, tickets = run_engine(recs, as_of="2026-01-10 00:00:00")
    review = next(t for t in tickets if t["action"] == "REVIEW")
    recs += [f("A1", "ticket_approved", "2026-01-20", ref_ticket_id=review["ticket_id"]),
             f("V1", "data_incomplete_verified", "2026-08-01", ref_ticket_id=review["ticket_id"])]
    _, tickets = run_engine(recs, as_of="2026-09-01 00:00:00")
    assert brief([t for t in tickets if t["ladder"] == "completeness"]) == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-01-21", "2026-07-21", None),
        ("REINSTATE", "2026-07-21", None, None),
    ]


def test_ez_dm_2_3_rectified_ends_the_agreement_suspension_early(tmp_path: Path) -> None:
    """二(三) 中止协议，限期 1 个月内整改: the suspension waits for the rectification, so a `rectified` finding
    on the ticket reinstates from the next day and the deadline's review is void."""
    pack = custom(tmp_path, '[ladders.prescriptions]\ntriggers = ["rx.not_uploaded", "finding:agreement_suspended"]\n')
    first = run_engine([inst(), f("A1", "agreement_suspended", "2026-03-01")], policy=pack)[1][0]
    assert (first["action"], first["rectify_by"]) == ("SUSPEND_AGREEMENT", "2026-04-02")
    recs = [inst(), f("A1", "agreement_suspended", "2026-03-01"),
            f("R1", "rectified", "2026-03-10", ref_ticket_id=first["ticket_id"])]
    _, tickets = run_engine(recs, policy=pack, as_of="2026-05-01 00:00:00")
    assert brief(tickets) == [("SUSPEND_AGREEMENT", "2026-03-02", None, None), ("REINSTATE", "2026-03-11", None, None)]


# ------------------------------------------------------------------------------ EZ-DM 二(一)
def test_ez_dm_2_1_a_third_and_fourth_complaint_are_kept_and_suspend_again_when_the_first_ends() -> None:
    recs = [inst(end="2027-12-31")] + [f(f"C{i}", "complaint_verified", d)
                                       for i, d in enumerate(["2026-03-01", "2026-03-10", "2026-03-20", "2026-03-25"])]
    _, tickets = run_engine(recs, as_of="2026-06-01 00:00:00")
    assert brief(tickets) == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-03-11", "2026-04-11", None),
        ("SUSPEND_OUTPATIENT_POOLING", "2026-04-11", "2026-05-11", None),
        ("REINSTATE", "2026-05-11", None, None),
    ]


def test_ez_dm_2_1_every_fixed_term_suspension_ends_with_reinstate() -> None:
    recs = [inst(end="2027-12-31"), f("I1", "infostd_substandard", "2026-01-10")]
    _, tickets = run_engine(recs, as_of="2026-12-01 00:00:00")
    assert brief(tickets) == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-11", "2026-07-11", None),
                              ("REINSTATE", "2026-07-11", None, None)]
    assert tickets[1]["ladder"] == "infostd" and tickets[1]["basis"] == ["EZ-DM 二(一)"]


def test_ez_dm_2_1_major_negative_impact_is_a_finding_kind_that_suspends_six_months() -> None:
    """二(一) "因服务能力等原因导致重大负面影响的，中止门诊统筹服务 6 个月"."""
    _, tickets = run_engine([inst(), f("M1", "major_negative_impact", "2026-02-01")])
    assert brief(tickets) == [("SUSPEND_OUTPATIENT_POOLING", "2026-02-02", "2026-08-02", None)]


# ------------------------------------------------------------------------------ #12 point 7: dates and texts
def test_effective_until_is_exclusive_and_the_text_names_the_last_day_in_force() -> None:
    """A month from 01-31 ends 02-28 (exclusive): the text says "至2026-02-27止", and REINSTATE is dated 02-28."""
    recs = [inst(), f("I1", "complaint_verified", "2026-01-29"), f("I2", "complaint_verified", "2026-01-30")]
    _, tickets = run_engine(recs, as_of="2026-03-01 00:00:00")
    assert brief(tickets) == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-31", "2026-02-28", None),
                              ("REINSTATE", "2026-02-28", None, None)]
    assert "自2026-01-31起至2026-02-27止" in tickets[0]["summary"]["zh"]
    assert "through 2026-02-27" in tickets[0]["summary"]["en"]


# ------------------------------------------------------------------------------ #12 point 1: dates per rule
def test_jurisdiction_a_rule_does_not_fire_before_its_effective_date(tmp_path: Path) -> None:
    pack = custom(tmp_path, '[rules."complaints.repeated"]\neffective_from = 2026-03-01\n')
    early = [inst(), f("C1", "complaint_verified", "2026-02-01"), f("C2", "complaint_verified", "2026-02-10")]
    alerts, tickets = run_engine(early, policy=pack)
    assert tickets == [] and not [a for a in alerts if a["rule_id"] == "complaints.repeated"]
    straddling = [*early, f("C3", "complaint_verified", "2026-03-05")]  # one applicable complaint only
    assert run_engine(straddling, policy=pack)[1] == []
    late = [inst(), f("C1", "complaint_verified", "2026-03-01"), f("C2", "complaint_verified", "2026-03-10")]
    assert brief(run_engine(late, policy=pack)[1]) == [("SUSPEND_OUTPATIENT_POOLING", "2026-03-11", "2026-04-11", None)]


def test_jurisdiction_a_borrowed_ladders_ticket_says_it_is_borrowed() -> None:
    engine = Engine(load_pack("ezhou"))
    assert engine.pack.ladders["dual_price_no_renewal"].borrow == ["autonomous-region"]
    from monitor.policy.ledger import Trigger

    recs = list(parse_value("institutions", __import__("json").dumps(institution()).encode()))
    for rec in recs:
        engine.process(rec)  # type: ignore[arg-type]
    trig = Trigger("price.dual_serious", PHARMACY, date(2026, 3, 1), datetime(2026, 3, 2, tzinfo=CST), "c")
    engine.watermark.observe(datetime(2026, 3, 2, tzinfo=CST))
    tickets = engine.ledger.on_trigger(trig, engine.ctx)
    no_renewal = next(t for t in tickets if t.action == "NO_RENEWAL")
    assert no_renewal.basis == ["AR-AGR 二(二)13"]
    assert "借用 autonomous-region 的规则" in no_renewal.summary.zh
    assert "rule borrowed from autonomous-region" in no_renewal.summary.en


# ------------------------------------------------------------------------------ LN-TIER 四(三)1
def test_ln_tier_4_3_1_rectification_notice_then_termination_or_closed_by_rectified(tmp_path: Path) -> None:
    """限期整改通知 (REVIEW, rectify within 1 month); still failing in its last 7 days → 解除医保协议 requiring
    verification; a `rectified` finding closes the notice and the deadline issues nothing. (The trigger is
    fed by a finding here so the ladder's mechanics are seen alone.)"""
    pack = custom(tmp_path, '[ladders.trace_rectify]\ntriggers = ["trace.missing", "finding:payment_refused"]\n',
                  includes="liaoning")
    recs = [inst(), f("P1", "payment_refused", "2026-03-01")]
    notice = run_engine(recs, policy=pack)[1][0]
    assert (notice["action"], notice["effective_from"], notice["rectify_by"]) == ("REVIEW", "2026-03-02", "2026-04-02")
    assert notice["basis"] == ["LN-TIER 四(三)1", "LN-TIER 三(一)3"]
    failing = [*recs, f("P2", "payment_refused", "2026-03-30")]
    _, tickets = run_engine(failing, policy=pack, as_of="2026-05-01 00:00:00")
    assert [(t["action"], t["effective_from"], t["requires_verification"]) for t in tickets] == [
        ("REVIEW", "2026-03-02", False), ("TERMINATE_AGREEMENT", "2026-04-02", True)]
    closed = [*recs, f("R1", "rectified", "2026-03-20", ref_ticket_id=notice["ticket_id"])]
    _, tickets = run_engine(closed, policy=pack, as_of="2026-05-01 00:00:00")
    assert [t["action"] for t in tickets] == ["REVIEW"]


def test_ticket_texts_name_every_action_as_the_inspector_pages_do() -> None:
    """Every action of the ticket contract is defined once (``monitor.policy.sanctions``), and the
    inspector's display names are that definition, SUSPEND_SETTLEMENT (AR-AGR 三(二)2 暂停医保结算) and
    VOID included."""
    from monitor.inspect.names import action_name
    from monitor.outputs import ACTIONS
    from monitor.policy.sanctions import ACTIONS as DEFINED
    from monitor.policy.sanctions import text

    assert {"SUSPEND_SETTLEMENT", "VOID"} <= set(ACTIONS) and set(DEFINED) == set(ACTIONS)
    for action in ACTIONS:
        name = action_name(action)
        assert name.known and text(action) == (name.zh, name.en), action

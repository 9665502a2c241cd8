"""AR-AGR 三(二)2 dual pricing "视情节严重程度和整改情况": 约谈主要负责人 → 暂停医保结算 → 解除医保服务协议, and
AR-AGR 二(二)13 NO_RENEWAL once per agreement term (the term in force on the business date). Expected tickets
are worked out by hand from the clauses and the autonomous-region pack (rectify within 7 days, window 12
months, 暂停医保结算 1 month, 解除 with a 3-year ban; a day is judged at its end + 24 h and a ladder's
ticket takes effect the next day). Each test failed on main before this change."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from builders import PHARMACY, drug, finding, institution, run_engine, sale, settlement

Rec = tuple[str, dict[str, Any]]
DRUG = "XA01AAA001"


def dual_day(day: date, n: int, packs: int = 1, over: str = "1.00", upload: date | None = None) -> list[Rec]:
    """One insured sale dearer than the day's self-pay price (¥10 + over vs ¥10): price.dual on ``day``."""
    price = str(Decimal("10.00") + Decimal(over))
    amount = str(Decimal(price) * packs)
    up = upload or day
    rec = settlement(f"S{n}", f"{day} 10:00:00", f"{up} 10:05:00", medfee_sumamt=amount, inscp_scp_amt=amount,
                     acct_pay=amount, drugdetail=[{"feedetl_sn": "1", "med_list_codg": DRUG, "cnt": str(packs),
                                                   "pric": price, "det_item_fee_sumamt": amount,
                                                   "rx_flag": "0", "trdn_flag": "0"}])
    own = sale(f"R{n}", f"{day} 11:00:00", f"{up} 11:05:00", finl_trns_pric="10.00", mdtrt_setl_type="2")
    return [("settlements", rec), ("inventory", own)]


def registry(**over: Any) -> list[Rec]:
    return [("institutions", institution(PHARMACY, **over)), ("drugs", drug(DRUG, "30.00"))]


def steps(tickets: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["action"], t["effective_from"], t["effective_until"], t["rectify_by"], t["reapply_after"],
             t["requires_verification"]) for t in tickets if t["ladder"] == "dual_price_escalation"]


def days(*pairs: tuple[date, int]) -> list[Rec]:
    out: list[Rec] = []
    for day, n in pairs:
        out += dual_day(day, n)
    return out


D = date(2026, 3, 1)  # judged 03-03 00:00 → INTERVIEW from 03-04, rectify by 03-11


def test_ar_agr_3_2_2_dual_pricing_again_after_the_interview_suspends_settlement_then_terminates() -> None:
    recs = [*registry(), *days((D, 1), (date(2026, 3, 6), 2),  # 03-06: before rectify_by, the same case
                                (date(2026, 3, 20), 3),  # after it: 暂停医保结算 from 03-23, 1 month
                                (date(2026, 5, 4), 4),  # after the suspension and its rectify_by: 解除
                                (date(2026, 5, 20), 5))]  # nothing left to escalate
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2026-06-10 00:00:00")
    assert steps(tickets) == [
        ("INTERVIEW", "2026-03-04", None, "2026-03-11", None, False),
        ("SUSPEND_SETTLEMENT", "2026-03-23", "2026-04-23", "2026-03-30", None, False),
        ("REINSTATE", "2026-04-23", None, None, None, False),
        ("TERMINATE_AGREEMENT", "2026-05-07", None, None, "2029-05-07", True),
    ]
    suspend = next(t for t in tickets if t["action"] == "SUSPEND_SETTLEMENT")
    assert suspend["basis"] == ["AR-AGR 三(二)2"]
    assert suspend["summary"]["zh"].count("暂停医保结算") == 1 and "至2026-04-22止" in suspend["summary"]["zh"]
    assert "suspend medical-insurance settlement" in suspend["summary"]["en"]
    assert "借用" not in suspend["summary"]["zh"]


def test_ar_agr_3_2_2_ezhou_borrows_the_escalation_and_its_tickets_say_so() -> None:
    recs = [*registry(), *days((D, 1), (date(2026, 3, 20), 3))]
    _, tickets = run_engine(recs, policy="ezhou", as_of="2026-04-01 00:00:00")
    got = [t for t in tickets if t["ladder"] == "dual_price_escalation"]
    assert [t["action"] for t in got] == ["INTERVIEW", "SUSPEND_SETTLEMENT"]
    for t in got:
        assert t["basis"] == ["AR-AGR 三(二)2"]
        assert "借用 autonomous-region 的规则：AR-AGR 三(二)2" in t["summary"]["zh"]
        assert "rule borrowed from autonomous-region (AR-AGR 三(二)2)" in t["summary"]["en"]


def test_ar_agr_3_3_a_settlement_suspension_is_not_an_agreement_suspension(tmp_path: Path) -> None:
    """三(三) counts "被中止医保服务协议": one agreement suspension plus one 暂停医保结算 terminate nothing."""
    pack = tmp_path / "custom.toml"
    pack.write_text('[pack]\nname = "custom"\nversion = "1"\ntitle = "t"\nregion = ""\n'
                    'includes = ["autonomous-region"]\n'
                    '[ladders.test_suspend]\nkind = "immediate"\ntriggers = ["finding:payment_suspended"]\n'
                    'basis = ["AR-AGR 三(三)"]\naction = "SUSPEND_AGREEMENT"\nduration_months = 1\n',
                    encoding="utf-8")
    recs = [*registry(), ("findings", finding("P1", "payment_suspended", "2026-01-10 10:00:00")),
            *days((D, 1), (date(2026, 3, 20), 3))]
    _, tickets = run_engine(recs, policy=str(pack), as_of="2026-06-01 00:00:00")
    assert [t["action"] for t in tickets] == [
        "SUSPEND_AGREEMENT", "REINSTATE", "INTERVIEW", "SUSPEND_SETTLEMENT", "REINSTATE"]


def test_ar_agr_3_2_2_found_again_only_after_the_window_starts_again_with_an_interview() -> None:
    recs = [*registry(agreement_end="2027-12-31"), *days((D, 1), (date(2027, 3, 10), 2))]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2027-03-20 00:00:00")
    assert [s[:2] for s in steps(tickets)] == [("INTERVIEW", "2026-03-04"), ("INTERVIEW", "2027-03-13")]


def test_ar_agr_3_2_2_a_rejected_interview_is_not_a_step() -> None:
    first = run_engine([*registry(), *days((D, 1))], policy="autonomous-region",
                       as_of="2026-03-05 00:00:00")[1][0]["ticket_id"]
    recs = [*registry(), *days((D, 1)),
            ("findings", finding("R1", "ticket_rejected", "2026-03-05 10:00:00", ref_ticket_id=first)),
            *days((date(2026, 3, 20), 3))]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2026-04-01 00:00:00")
    assert [s[:2] for s in steps(tickets)] == [("INTERVIEW", "2026-03-04"), ("VOID", "2026-03-05"),
                                               ("INTERVIEW", "2026-03-23")]


def test_ar_agr_3_2_2_a_day_before_the_interview_arriving_late_is_the_same_case() -> None:
    """Out of order: 03-02's uploads arrive on 03-12 (within the re-judging horizon), after the interview."""
    recs = [*registry(), *days((D, 1)),
            *dual_day(date(2026, 3, 2), 2, upload=date(2026, 3, 12))]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2026-04-01 00:00:00")
    assert [s[:2] for s in steps(tickets)] == [("INTERVIEW", "2026-03-04")]


def test_ar_agr_3_2_2_rectified_ends_the_settlement_suspension_early() -> None:
    base = [*registry(), *days((D, 1), (date(2026, 3, 20), 3))]
    suspend = next(t for t in run_engine(base, policy="autonomous-region", as_of="2026-03-25 00:00:00")[1]
                   if t["action"] == "SUSPEND_SETTLEMENT")
    recs = [*base, ("findings", finding("F1", "rectified", "2026-03-27 10:00:00",
                                        ref_ticket_id=suspend["ticket_id"]))]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2026-05-01 00:00:00")
    assert [s[:2] for s in steps(tickets)] == [
        ("INTERVIEW", "2026-03-04"), ("SUSPEND_SETTLEMENT", "2026-03-23"), ("REINSTATE", "2026-03-28")]


def test_ar_agr_3_2_2_personal_account_settlement_during_the_settlement_suspension_is_flagged() -> None:
    """暂停医保结算 stops every insured settlement, personal-account ones included."""
    during = settlement("S99", "2026-03-25 10:00:00", "2026-03-25 10:05:00")  # acct_pay only, med_type 41
    recs = [*registry(), *days((D, 1), (date(2026, 3, 20), 3)), ("settlements", during)]
    alerts, _ = run_engine(recs, policy="autonomous-region", as_of="2026-04-01 00:00:00")
    hits = [a for a in alerts if a["rule_id"] == "status.settled_while_suspended"]
    assert [a["evidence"].get("business_date", a["window_start"][:10]) for a in hits] == ["2026-03-25"]


# ------------------------------------------------------------------------------ AR-AGR 二(二)13 NO_RENEWAL
def serious_episode(first: date, n: int) -> list[Rec]:
    """3 dual-pricing days of ¥1 × 40 packs: 涉及药品金额 3 × 40 × ¥11 = ¥1 320 ≥ ¥1 000 and 3 days."""
    out: list[Rec] = []
    for i in range(3):
        out += dual_day(first + timedelta(days=i), n * 10 + i, packs=40)
    return out


def test_ar_agr_2_2_13_no_renewal_once_per_agreement_term_in_force_on_the_business_date() -> None:
    """The renewal for 2027 is uploaded in June 2026: a second serious case in 2026 is the same term
    (no second NO_RENEWAL); one in 2027 is the next term (a NO_RENEWAL again)."""
    renewal = ("institutions", institution(PHARMACY, agreement_start="2027-01-01", agreement_end="2027-12-31",
                                           valid_from="2026-06-01 00:00:00"))
    may = ("settlements", settlement("S-MAY", "2026-05-10 10:00:00", "2026-05-10 10:05:00"))  # March is judged
    recs = [*registry(), *serious_episode(date(2026, 3, 1), 1), may, renewal,
            *serious_episode(date(2026, 7, 1), 2), *serious_episode(date(2027, 2, 1), 3)]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2027-02-10 00:00:00")
    assert [t["effective_from"] for t in tickets if t["ladder"] == "dual_price_no_renewal"] == [
        "2026-03-06", "2027-02-06"]


def test_ar_agr_3_2_2_dual_pricing_during_the_settlement_suspension_terminates_and_nothing_is_reinstated() -> None:
    """Found again on 04-02, after the suspension's rectify_by (03-30) while it still runs (to 04-22): 解除
    from 04-05; the suspension's end (04-23) issues no REINSTATE — the agreement has ended."""
    recs = [*registry(), *days((D, 1), (date(2026, 3, 20), 3), (date(2026, 4, 2), 4))]
    _, tickets = run_engine(recs, policy="autonomous-region", as_of="2026-05-10 00:00:00")
    assert [s[:2] for s in steps(tickets)] == [
        ("INTERVIEW", "2026-03-04"), ("SUSPEND_SETTLEMENT", "2026-03-23"), ("TERMINATE_AGREEMENT", "2026-04-05")]

"""tier.not_entitled (XY-TIER 第四条, LN-TIER 二) for every tier × service of both schemes, and
tier.downgrade (XY-TIER 第十四条, LN-TIER 四(三)) at its window boundaries. The allowed sets below are
copied by hand from the clauses, not from the pack."""

from __future__ import annotations

from typing import Any

import pytest
from builders import CLINIC, PHARMACY, drug, finding, institution, run_engine, settlement

HIGH = "XL01XXX999"

#: What each tier may settle, read off the clauses (XY 第四条: C adds 两病 "零售药店除外").
XY_PHARMACY = {"A": {"acct"}, "B": {"acct", "chronic"}, "C": {"acct", "chronic", "pooling", "remote"},
               "D": {"acct", "chronic", "pooling", "remote", "special"}}
XY_CLINIC = {"A": {"acct"}, "B": {"acct", "chronic"},
             "C": {"acct", "chronic", "pooling", "two_diseases", "remote"},
             "D": {"acct", "chronic", "pooling", "two_diseases", "remote", "special"}}
#: LN 二: I 个人账户; II +门诊统筹; III +门诊慢特病、两病、双通道. 异地就医 is not graded in LN.
LN_ANY = {"I": {"acct", "remote"}, "II": {"acct", "pooling", "remote"},
          "III": {"acct", "pooling", "chronic", "two_diseases", "special", "remote"}}
SERVICES = ["acct", "chronic", "pooling", "two_diseases", "remote", "special"]


def service_settlement(service: str, code: str) -> dict[str, Any]:
    over: dict[str, Any] = {"med_type": "41", "hifp_pay": "0.00", "acct_pay": "30.00"}
    if service == "chronic":
        over.update(med_type="14", hifp_pay="20.00", acct_pay="10.00")
    elif service == "pooling":
        over.update(hifp_pay="18.00", acct_pay="12.00")
    elif service == "two_diseases":
        over.update(med_type="140301", hifp_pay="15.00", acct_pay="15.00")
    elif service == "remote":
        over.update(insuplc_admdvs="310101")
    elif service == "special":
        over.update(drugdetail=[{"med_list_codg": HIGH, "cnt": "1", "pric": "30.00", "trdn_flag": "0"}])
    return settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00", code=code, **over)


CASES = (
    [("XY", t, "pharmacy", s, s in XY_PHARMACY[t]) for t in XY_PHARMACY for s in SERVICES]
    + [("XY", t, "clinic", s, s in XY_CLINIC[t]) for t in XY_CLINIC for s in SERVICES]
    + [("LN", t, kind, s, s in LN_ANY[t]) for t in LN_ANY for kind in ("pharmacy", "clinic") for s in SERVICES]
)


@pytest.mark.parametrize(("scheme", "tier", "kind", "service", "ok"), CASES)
def test_tier_by_service(scheme: str, tier: str, kind: str, service: str, ok: bool) -> None:
    code = PHARMACY if kind == "pharmacy" else CLINIC
    recs = [("institutions", institution(code, tier=tier, tier_scheme=scheme)),
            ("drugs", drug(HIGH, "900.00", high_value=True)), ("drugs", drug()),
            ("settlements", service_settlement(service, code))]
    alerts, tickets = run_engine(recs)
    hits = [a for a in alerts if a["rule_id"] == "tier.not_entitled"]
    assert bool(hits) is not ok
    if not ok:
        assert hits[0]["evidence"]["not_entitled"] == [service]
        assert hits[0]["severity"] == "critical"
        assert [t["action"] for t in tickets] == ["REVIEW"]
    else:
        assert tickets == []


def test_ungraded_institutions_are_not_checked_and_one_review_a_day() -> None:
    recs = [("institutions", institution(PHARMACY)),
            ("settlements", service_settlement("pooling", PHARMACY) | {"setl_id": "S1"})]
    alerts, _ = run_engine(recs)
    assert [a for a in alerts if a["rule_id"] == "tier.not_entitled"] == []
    recs = [("institutions", institution(PHARMACY, tier="A", tier_scheme="XY"))]
    recs += [("settlements", service_settlement("pooling", PHARMACY) | {"setl_id": f"S{i}"}) for i in range(3)]
    alerts, tickets = run_engine(recs)
    assert len([a for a in alerts if a["rule_id"] == "tier.not_entitled"]) == 3
    assert [t["action"] for t in tickets] == ["REVIEW"]


# ------------------------------------------------------------------------------------------- downgrade
def downgrades(tickets: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return [(t["action"], t["new_tier"], t["effective_from"]) for t in tickets if t["action"] == "DOWNGRADE_TIER"]


def xy(tier: str = "C", valid_from: str = "2025-01-01 00:00:00") -> tuple[str, dict[str, Any]]:
    return ("institutions", institution(PHARMACY, tier=tier, tier_scheme="XY", valid_from=valid_from,
                                        agreement_start="2025-01-01", agreement_end="2027-12-31"))


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("2025-03-01 10:00:00", "2026-03-01 10:00:00", []),  # exactly a year apart: not "近1年内"
        ("2025-03-02 10:00:00", "2026-03-01 10:00:00", [("DOWNGRADE_TIER", "B", "2026-03-02")]),
        ("2026-02-01 10:00:00", "2026-03-01 10:00:00", [("DOWNGRADE_TIER", "B", "2026-03-02")]),
    ],
)
def test_xy_two_interviews_within_a_year(first: str, second: str, expected: list[Any]) -> None:
    recs = [xy(), ("findings", finding("F1", "interview", first)), ("findings", finding("F2", "interview", second))]
    _, tickets = run_engine(recs, policy="xianyang")
    assert downgrades(tickets) == expected
    if expected:
        assert tickets[0]["basis"] == ["XY-TIER 第十四条"]
        assert "降至B级" in tickets[0]["summary"]["zh"]


def test_xy_counters_consume_and_step_down_to_a_then_extend() -> None:
    recs = [xy("C"),
            ("findings", finding("F1", "interview", "2026-01-05 10:00:00")),
            ("findings", finding("F2", "interview", "2026-01-06 10:00:00")),
            ("findings", finding("F2", "interview", "2026-01-06 10:00:00")),  # resent
            ("findings", finding("F3", "interview", "2026-01-07 10:00:00")),  # F1, F2 consumed: 1 of 2
            ("findings", finding("F4", "payment_refused", "2026-02-01 10:00:00")),  # (二): B → A
            ("findings", finding("F5", "admin_penalty", "2026-03-01 10:00:00"))]  # (三) at A: extension
    alerts, tickets = run_engine(recs, policy="xianyang")
    assert downgrades(tickets) == [("DOWNGRADE_TIER", "B", "2026-01-07"), ("DOWNGRADE_TIER", "A", "2026-02-02")]
    info = [a for a in alerts if a["rule_id"] == "tier.downgrade" and a["severity"] == "info"]
    assert len(info) == 1 and "延长1年" in info[0]["evidence"]["consequence"]


def test_xy_a_new_registry_entry_resets_the_tier() -> None:
    recs = [xy("D"), ("findings", finding("F1", "agreement_suspended", "2026-01-05 10:00:00")),
            xy("D", valid_from="2026-01-20 00:00:00"),  # the agency kept D (e.g. on appeal)
            ("findings", finding("F2", "payment_suspended", "2026-02-05 10:00:00"))]
    _, tickets = run_engine(recs, policy="xianyang")
    assert [t[1] for t in downgrades(tickets)] == ["C", "C"]


def test_xy_termination_grounds_terminate_the_agreement() -> None:
    recs = [xy(), ("findings", finding("F1", "agreement_terminated", "2026-01-05 10:00:00"))]
    _, tickets = run_engine(recs, policy="xianyang")
    assert [(t["action"], t["reapply_after"]) for t in tickets] == [("TERMINATE_AGREEMENT", "2029-01-06")]


def ln(tier: str = "III") -> tuple[str, dict[str, Any]]:
    return ("institutions", institution(PHARMACY, tier=tier, tier_scheme="LN"))


@pytest.mark.parametrize(
    ("kinds_dates", "expected"),
    [
        ([("interview", "2026-01-02"), ("interview", "2026-05-02")], []),
        ([("interview", "2026-01-02"), ("interview", "2026-05-02"), ("interview", "2026-12-31")],
         [("DOWNGRADE_TIER", "I", "2027-01-01")]),
        # calendar year: 2025-12-31 does not add to 2026
        ([("interview", "2025-12-31"), ("interview", "2026-01-01"), ("interview", "2026-01-02")], []),
        ([("payment_suspended", "2026-02-01"), ("payment_suspended", "2026-03-01")],
         [("DOWNGRADE_TIER", "I", "2026-03-02")]),
        # suspensions and refusals are counted apart (四(三)3: "…达2次的；…达2次的")
        ([("payment_suspended", "2026-02-01"), ("payment_refused", "2026-03-01")], []),
        ([("agreement_suspended", "2026-02-01")], [("DOWNGRADE_TIER", "I", "2026-02-02")]),
        ([("admin_penalty", "2026-02-01")], [("DOWNGRADE_TIER", "I", "2026-02-02")]),
    ],
)
def test_ln_downgrade_to_one_in_a_calendar_year(kinds_dates: list[tuple[str, str]], expected: list[Any]) -> None:
    recs = [ln("III")] + [("findings", finding(f"F{i}", k, f"{d} 10:00:00"))
                          for i, (k, d) in enumerate(kinds_dates)]
    _, tickets = run_engine(recs, policy="liaoning")
    assert downgrades(tickets) == expected


def test_ln_tier_one_is_not_promoted_and_gets_no_ticket() -> None:
    recs = [ln("I"), ("findings", finding("F1", "admin_penalty", "2026-02-01 10:00:00"))]
    alerts, tickets = run_engine(recs, policy="liaoning")
    assert downgrades(tickets) == []
    assert [a["evidence"]["consequence"] for a in alerts if a["rule_id"] == "tier.downgrade"] == [
        "I级机构不晋级（LN-TIER 四(三)）"]


def test_downgrade_replayed_twice_is_issued_once() -> None:
    recs = [ln("II"), ("findings", finding("F1", "agreement_suspended", "2026-02-01 10:00:00"))]
    once = run_engine(recs, policy="liaoning")
    twice = run_engine(recs + recs[1:], policy="liaoning")
    assert once == twice
    assert downgrades(once[1]) == [("DOWNGRADE_TIER", "I", "2026-02-02")]


def test_xy_tier_4_promotion_applies_from_its_valid_from_not_its_arrival() -> None:
    """XY-TIER 第四条: a B-tier pharmacy (account + 门诊慢特病 only) whose promotion to C (adds 门诊统筹) is
    uploaded on 03-01 but takes effect 03-10 is still judged as B until then: 门诊统筹 on 03-05 is
    not entitled, on 03-10 it is."""
    base = institution(PHARMACY, tier="B", tier_scheme="XY", agreement_end="2027-12-31")
    promo = institution(PHARMACY, tier="C", tier_scheme="XY", agreement_end="2027-12-31",
                        valid_from="2026-03-10 00:00:00", inf_time="2026-03-01 08:00:00")
    money = {"hifp_pay": "18.00", "acct_pay": "12.00"}
    items = [("institutions", base), ("institutions", promo),
             ("settlements", settlement("S1", "2026-03-05 10:00:00", "2026-03-05 10:01:00", **money)),
             ("settlements", settlement("S2", "2026-03-10 10:00:00", "2026-03-10 10:01:00", **money))]
    alerts, _ = run_engine(items, policy="xianyang")
    got = [(a["evidence"]["setl_id"], a["evidence"]["tier"]) for a in alerts if a["rule_id"] == "tier.not_entitled"]
    assert got == [("S1", "B")]

"""benefit.overpaid — EZ-CONV 二: pharmacy 门诊统筹 pays 60 % (in service, psn_type 11xx) / 68 % (retired,
12xx) of the in-scope amount; more than ¥0.01 above that is overpaid. Expected values by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, institution, run_engine, settlement

REG = [("institutions", institution(PHARMACY)), ("institutions", institution(CLINIC))]


def pooled(setl_id: str, hifp: str, psn_type: str = "1101", inscp: str = "100.00", code: str = PHARMACY,
           day: str = "2026-03-02", **over: Any) -> tuple[str, dict[str, Any]]:
    rec = settlement(setl_id, f"{day} 10:00:00", f"{day} 10:01:00", code=code, psn_type=psn_type,
                     medfee_sumamt=inscp, inscp_scp_amt=inscp, hifp_pay=hifp, acct_pay="0.00",
                     psn_cash_pay=str(100 - float(hifp)), **over)
    return ("settlements", rec)


@pytest.mark.parametrize(
    ("psn_type", "hifp", "flagged", "excess"),
    [
        ("1101", "60.00", False, None),
        ("1101", "60.01", False, None),  # ¥0.01 above: not more than ¥0.01
        ("1101", "60.02", True, "0.02"),
        ("1201", "68.01", False, None),  # retired: 68 %
        ("1201", "68.02", True, "0.02"),
        ("1201", "60.02", False, None),
        ("1102", "75.00", True, "15.00"),
        ("1501", "90.00", False, None),  # a resident person type: not this benefit
    ],
)
def test_benefit_ratio_threshold(psn_type: str, hifp: str, flagged: bool, excess: str | None) -> None:
    alerts, tickets = run_engine([*REG, pooled("S1", hifp, psn_type)])
    hits = [a for a in alerts if a["rule_id"] == "benefit.overpaid"]
    assert bool(hits) is flagged
    if flagged:
        assert hits[0]["evidence"]["excess"] == excess
        assert hits[0]["vola_amt"] == excess
        assert hits[0]["severity"] == "critical"
        assert hits[0]["basis"] == "EZ-CONV 二"
        assert [t["action"] for t in tickets] == ["REVIEW"]
        assert tickets[0]["requires_verification"] is True
    else:
        assert tickets == []


@pytest.mark.parametrize(
    "over",
    [
        {"med_type": "11"},  # not a pharmacy purchase
        {"insutype": "390"},  # resident insurance
        {"code": CLINIC},  # a clinic
        {"setl_status": "revoked"},
    ],
)
def test_benefit_scope(over: dict[str, Any]) -> None:
    code = over.pop("code", PHARMACY)
    alerts, _ = run_engine([*REG, pooled("S1", "90.00", code=code, **over)])
    assert [a for a in alerts if a["rule_id"] == "benefit.overpaid"] == []


def test_one_review_per_institution_day_and_no_personal_data() -> None:
    recs = [*REG, pooled("S1", "70.00"), pooled("S2", "70.00"), pooled("S3", "70.00", day="2026-03-03")]
    alerts, tickets = run_engine(recs)
    assert len([a for a in alerts if a["rule_id"] == "benefit.overpaid"]) == 3
    assert [(t["action"], t["effective_from"]) for t in tickets] == [
        ("REVIEW", "2026-03-03"), ("REVIEW", "2026-03-04")]
    text = json.dumps(alerts + tickets, ensure_ascii=False)
    assert "42000011112222" not in text and "420702198001011234" not in text and "张三" not in text

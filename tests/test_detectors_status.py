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
    assert [(t["action"], t["effective_from"], t["effective_until"]) for t in tickets] == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-03-02", "2026-09-02")]
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

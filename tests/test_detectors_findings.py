"""Findings-driven sanctions: complaints.repeated (EZ-DM 二(一), agreement year), cloud_monitor.repeated
(EZ-DM 二(二), agreement term), infostd_substandard / data_falsified_verified / agreement_terminated
(EZ-DM 二(一)(二)(四)) and suspensions.repeated (AR-AGR 三(三)). Dates by hand from the clauses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, finding, institution, run_engine


def inst(start: str = "2026-01-01", end: str = "2026-12-31") -> tuple[str, dict[str, Any]]:
    return ("institutions", institution(PHARMACY, agreement_start=start, agreement_end=end))


def f(fid: str, kind: str, day: str, **over: Any) -> tuple[str, dict[str, Any]]:
    return ("findings", finding(fid, kind, f"{day} 10:00:00", **over))


def summary(tickets: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["action"], t["effective_from"], t["effective_until"], t["reapply_after"]) for t in tickets]


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        ("2026-01-01", ["2026-03-01", "2026-06-01"],
         [("SUSPEND_OUTPATIENT_POOLING", "2026-06-02", "2026-07-02", None)]),
        ("2026-01-01", ["2026-03-01"], []),
        # the agreement year runs 2025-07-01 … 2026-06-30: either side of the anniversary never adds up
        ("2025-07-01", ["2026-06-30", "2026-07-01"], []),
        ("2025-07-01", ["2025-07-01", "2026-06-30"],
         [("SUSPEND_OUTPATIENT_POOLING", "2026-07-01", "2026-08-01", None)]),
        # a third complaint in the same year: "2 次及以上" is one case, one suspension
        ("2026-01-01", ["2026-03-01", "2026-04-01", "2026-05-01"],
         [("SUSPEND_OUTPATIENT_POOLING", "2026-04-02", "2026-05-02", None)]),
    ],
)
def test_complaints_in_an_agreement_year(start: str, days: list[str], expected: list[Any]) -> None:
    recs = [inst(start, "2027-06-30")] + [f(f"C{i}", "complaint_verified", d) for i, d in enumerate(days)]
    alerts, tickets = run_engine(recs)
    assert summary(tickets) == expected
    assert bool([a for a in alerts if a["rule_id"] == "complaints.repeated"]) is bool(expected)


def test_a_resent_complaint_counts_once_even_after_the_dedup_horizon() -> None:
    recs = [inst(), f("C1", "complaint_verified", "2026-03-01"), f("C1", "complaint_verified", "2026-03-01")]
    assert run_engine(recs)[1] == []
    # the same finding resent 3 months later (beyond the engine's 35-day dedup memory)
    late = ("findings", finding("C1", "complaint_verified", "2026-03-01 10:00:00", inf_time="2026-06-01 10:00:00"))
    assert run_engine([recs[0], recs[1], ("findings", finding("X", "rectified", "2026-05-01 10:00:00")), late])[1] == []


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["2026-01-05", "2026-12-31"], [("CANCEL_OUTPATIENT_POOLING", "2027-01-01", None, None)]),
        (["2025-12-31", "2026-01-05"], []),  # the first notice belongs to the previous term
        (["2026-01-05"], []),
    ],
)
def test_cloud_monitor_notices_in_an_agreement_term(days: list[str], expected: list[Any]) -> None:
    recs = [inst()] + [f(f"N{i}", "cloud_monitor_notice", d) for i, d in enumerate(days)]
    assert summary(run_engine(recs)[1]) == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("infostd_substandard", [("SUSPEND_OUTPATIENT_POOLING", "2026-03-02", "2026-09-02", None)]),
        ("data_falsified_verified", [("CANCEL_OUTPATIENT_POOLING", "2026-03-02", None, "2029-03-02")]),
        ("agreement_terminated", [("CANCEL_OUTPATIENT_POOLING", "2026-03-02", None, None)]),
        ("rectified", []),
    ],
)
def test_single_findings(kind: str, expected: list[Any]) -> None:
    assert summary(run_engine([inst(), f("F1", kind, "2026-03-01")])[1]) == expected


def test_same_findings_replayed_twice_give_the_same_tickets() -> None:
    recs = [inst(), f("C1", "complaint_verified", "2026-03-01"), f("C2", "complaint_verified", "2026-04-01"),
            f("N1", "cloud_monitor_notice", "2026-05-01"), f("I1", "infostd_substandard", "2026-08-01")]
    first = run_engine(recs)
    assert first == run_engine(recs)
    assert first == run_engine(recs + recs[1:])  # resent: counted once
    # the complaints suspension (04-02 .. 05-01) ends with REINSTATE before the infostd one starts (#12 point 7)
    assert [t["action"] for t in first[1]] == ["SUSPEND_OUTPATIENT_POOLING", "REINSTATE",
                                                "SUSPEND_OUTPATIENT_POOLING"]


# ------------------------------------------------------------------------------ suspensions.repeated
def test_two_agreement_suspensions_in_a_term_terminate_at_once() -> None:
    recs = [inst(), f("A1", "agreement_suspended", "2026-02-01"), f("A2", "agreement_suspended", "2026-05-01")]
    _, tickets = run_engine(recs, policy="autonomous-region")
    assert summary(tickets) == [("TERMINATE_AGREEMENT", "2026-05-01", None, "2029-05-01")]
    assert tickets[0]["basis"] == ["AR-AGR 三(三)"]


def test_suspensions_in_different_terms_do_not_add_up() -> None:
    recs = [inst(), f("A1", "agreement_suspended", "2025-12-20"), f("A2", "agreement_suspended", "2026-01-10")]
    assert run_engine(recs, policy="autonomous-region")[1] == []


def test_own_suspension_tickets_count_and_their_execution_report_does_not_count_twice(tmp_path: Path) -> None:
    pack = tmp_path / "test-ar.toml"
    pack.write_text('[pack]\nname = "test-ar"\nversion = "1"\ntitle = "t"\nregion = ""\n'
                    'includes = ["autonomous-region"]\n'
                    '[ladders.test_suspend]\nkind = "immediate"\ntriggers = ["finding:payment_suspended"]\n'
                    'basis = ["AR-AGR 三(二)2"]\naction = "SUSPEND_AGREEMENT"\nduration_months = 1\n', encoding="utf-8")
    base = [inst(), f("P1", "payment_suspended", "2026-02-01")]
    _, tickets = run_engine(base, policy=str(pack))
    assert summary(tickets) == [("SUSPEND_AGREEMENT", "2026-02-02", "2026-03-02", None)]
    own = tickets[0]["ticket_id"]
    # the case system reports executing our ticket: the same suspension, not a second one
    recs = [*base, f("A1", "agreement_suspended", "2026-02-02", ref_ticket_id=own)]
    assert summary(run_engine(recs, policy=str(pack))[1]) == summary(tickets)
    # an independent suspension later in the term is the second one
    recs.append(f("A2", "agreement_suspended", "2026-06-01"))
    assert summary(run_engine(recs, policy=str(pack))[1])[-1] == ("TERMINATE_AGREEMENT", "2026-06-01", None,
                                                                   "2029-06-01")

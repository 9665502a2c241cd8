"""EZ-DM 二(一) end to end: upload.late → upload.not_realtime → suspend 1 month → terminate / reinstate.

Expected values are worked out by hand from the clause and the pack defaults (24 h, 10 %, 5 late,
one calendar month, last 7 days)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, institution, read_jsonl, settlement, write_jsonl

from monitor.clock import CST
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir

FMT = "%Y-%m-%d %H:%M:%S"


def day_records(code: str, day: date, total: int, late: int, prefix: str = "") -> list[dict[str, Any]]:
    """``total`` settlements on ``day`` at 10:00+i min; the first ``late`` uploaded 30 h later, the rest
    after 1 minute."""
    out = []
    for i in range(total):
        t = datetime(day.year, day.month, day.day, 10, 0, tzinfo=CST) + timedelta(minutes=i)
        up = t + (timedelta(hours=30) if i < late else timedelta(minutes=1))
        out.append(settlement(f"{prefix}{code}-{day:%m%d}-{i}", t.strftime(FMT), up.strftime(FMT), code=code))
    return out


def run(tmp_path: Path, records: list[dict[str, Any]], as_of: str | None = None,
        institutions: list[dict[str, Any]] | None = None) -> tuple[list[dict], list[dict]]:
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", institutions or [institution(PHARMACY), institution(CLINIC)])
    write_jsonl(inp, "settlements", sorted(records, key=lambda r: r["inf_time"]))
    out = tmp_path / "out"
    # These settlements have no 3505 sales: on a busy day that is upload.silent_stream (tested in
    # test_detectors_upload.py); here only the late-record path of the ladder is under test.
    pack_file = tmp_path / "no-silent.toml"
    pack_file.write_text('[pack]\nname = "t"\nversion = "1"\ntitle = "t"\nregion = "4207"\n'
                         'includes = ["ezhou"]\n[rules."upload.silent_stream"]\nenabled = false\n',
                         encoding="utf-8")
    replay_dir(inp, out, load_pack(str(pack_file)),
               as_of=datetime.strptime(as_of, FMT).replace(tzinfo=CST) if as_of else None)
    # only the EZ-DM 二(一) ladder is under test here (these settlements have no 3505 sales, which
    # data.incomplete would rightly flag)
    return read_jsonl(out / "alerts.jsonl"), [t for t in read_jsonl(out / "tickets.jsonl")
                                              if t["ladder"] == "realtime"]


@pytest.mark.parametrize(
    ("lag", "late"),
    [
        (timedelta(hours=24), False),  # exactly the maximum lag is on time
        (timedelta(hours=24, seconds=1), True),
        (timedelta(hours=23, minutes=59, seconds=59), False),
        (timedelta(days=3), True),
    ],
)
def test_late_boundary(tmp_path: Path, lag: timedelta, late: bool) -> None:
    t = datetime(2026, 1, 10, 10, 0, tzinfo=CST)
    recs = [settlement("S1", t.strftime(FMT), (t + lag).strftime(FMT))]
    alerts, _ = run(tmp_path, recs, as_of="2026-01-20 00:00:00")
    late_alerts = [a for a in alerts if a["rule_id"] == "upload.late"]
    assert bool(late_alerts) is late
    if late:
        assert late_alerts[0]["evidence"]["late"] == 1
        assert late_alerts[0]["basis"] == "EZ-DM 二(一)"


@pytest.mark.parametrize(
    ("total", "late", "flagged"),
    [
        (50, 5, True),  # 10 % and 5 late
        (51, 5, False),  # 9.8 %
        (40, 4, False),  # 10 % but fewer than 5
        (5, 5, True),  # 100 %
        (49, 5, True),
        (200, 19, False),  # 9.5 %
        (200, 20, True),
    ],
)
def test_not_realtime_threshold(tmp_path: Path, total: int, late: int, flagged: bool) -> None:
    alerts, tickets = run(tmp_path, day_records(PHARMACY, date(2026, 1, 10), total, late),
                          as_of="2026-01-20 00:00:00")
    nr = [a for a in alerts if a["rule_id"] == "upload.not_realtime"]
    assert bool(nr) is flagged
    assert bool(tickets) is flagged
    if flagged:
        assert nr[0]["evidence"]["late"] == late and nr[0]["evidence"]["records"] == total
        assert nr[0]["severity"] == "critical"
        assert nr[0]["jr_id"] == nr[0]["alert_id"]


def test_late_records_rejudge_a_day_already_judged(tmp_path: Path) -> None:
    """All on-time records arrive first; the day is judged clean at 01-12 00:00; five records arriving
    on 01-15 push it over, and the determination (so the suspension) dates from their arrival."""
    on_time = day_records(PHARMACY, date(2026, 1, 10), 20, 0)
    very_late = [settlement(f"L{i}", f"2026-01-10 1{i}:00:00", "2026-01-15 09:00:00") for i in range(5)]
    alerts, tickets = run(tmp_path, on_time + very_late, as_of="2026-01-20 00:00:00")
    nr = [a for a in alerts if a["rule_id"] == "upload.not_realtime"]
    assert len(nr) == 1 and nr[0]["evidence"]["late"] == 5 and nr[0]["evidence"]["records"] == 25
    assert nr[0]["detected_at"].startswith("2026-01-15T09:00:00")
    assert [(t["action"], t["effective_from"]) for t in tickets] == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-16")]


def test_full_ladder_suspend_then_terminate_and_suspend_then_reinstate(tmp_path: Path) -> None:
    """Both institutions fail 2026-01-10 (judged at 01-12 00:00): suspended 01-13 .. 02-13 (one calendar
    month). The pharmacy fails again on 02-10, inside the month's last 7 days (02-06 .. 02-12):
    terminated from 02-13. The clinic fails on 02-01 only (outside the last 7 days): reinstated 02-13.
    The review happens once 02-12 is judged (02-14 00:00). The clinic's reinstatement rests on positive
    evidence: 5 on-time uploads on 02-08 (its usual volume before the suspension: 20 in 28 days)."""
    recs = (day_records(PHARMACY, date(2026, 1, 10), 20, 10)
            + day_records(CLINIC, date(2026, 1, 10), 20, 10)
            + day_records(PHARMACY, date(2026, 2, 10), 20, 10)
            + day_records(CLINIC, date(2026, 2, 1), 20, 10)
            + day_records(CLINIC, date(2026, 2, 8), 5, 0, prefix="ok"))
    alerts, tickets = run(tmp_path, recs, as_of="2026-03-01 00:00:00")
    got = sorted((t["fixmedins_code"], t["action"], t["effective_from"], t["effective_until"]) for t in tickets)
    assert got == sorted([
        (PHARMACY, "SUSPEND_OUTPATIENT_POOLING", "2026-01-13", "2026-02-13"),
        (PHARMACY, "TERMINATE_OUTPATIENT_POOLING", "2026-02-13", None),
        (CLINIC, "SUSPEND_OUTPATIENT_POOLING", "2026-01-13", "2026-02-13"),
        (CLINIC, "REINSTATE", "2026-02-13", None),
    ])
    # further not-real-time days while suspended raise alerts but no new suspension
    nr_days = sorted((a["fixmedins_code"], a["evidence"]["business_date"]) for a in alerts
                     if a["rule_id"] == "upload.not_realtime")
    assert nr_days == sorted([(PHARMACY, "2026-01-10"), (CLINIC, "2026-01-10"), (PHARMACY, "2026-02-10"),
                              (CLINIC, "2026-02-01")])
    term = next(t for t in tickets if t["action"] == "TERMINATE_OUTPATIENT_POOLING")
    assert term["basis"] == ["EZ-DM 二(一)"]
    assert term["issued_at"].startswith("2026-02-14T00:00:00")
    assert "终止门诊统筹定点资格" in term["summary"]["zh"] and "terminate" in term["summary"]["en"]
    # the review is done exactly once per suspension
    assert len({t["ticket_id"] for t in tickets}) == len(tickets) == 4


def test_suspension_from_january_31_ends_february_28(tmp_path: Path) -> None:
    """Day 01-28 is judged at its end (01-29 00:00) + 24 h = 01-30 00:00, even though no record arrives
    between 01-29 16:09 and the --as-of: the suspension starts the day after, 01-31, and one calendar
    month later is 02-28."""
    recs = day_records(PHARMACY, date(2026, 1, 28), 20, 10)
    _, tickets = run(tmp_path, recs, as_of="2026-01-31 00:00:00")
    assert [(t["effective_from"], t["effective_until"]) for t in tickets] == [("2026-01-31", "2026-02-28")]


def test_no_review_before_the_month_is_over(tmp_path: Path) -> None:
    _, tickets = run(tmp_path, day_records(PHARMACY, date(2026, 1, 10), 20, 10), as_of="2026-02-13 23:59:59")
    assert [t["action"] for t in tickets] == ["SUSPEND_OUTPATIENT_POOLING"]


def test_after_reinstatement_a_new_failure_suspends_again(tmp_path: Path) -> None:
    recs = (day_records(PHARMACY, date(2026, 1, 10), 20, 10) + day_records(PHARMACY, date(2026, 3, 2), 20, 10)
            + day_records(PHARMACY, date(2026, 2, 9), 5, 0, prefix="ok"))  # evidence for the reinstatement
    _, tickets = run(tmp_path, recs, as_of="2026-03-10 00:00:00")
    assert [(t["action"], t["effective_from"]) for t in tickets] == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-01-13"),
        ("REINSTATE", "2026-02-13"),
        ("SUSPEND_OUTPATIENT_POOLING", "2026-03-05"),
    ]


def test_a_failure_on_the_last_day_of_the_suspension_terminates(tmp_path: Path) -> None:
    """The suspension 01-13 .. 02-13 has 02-12 as its last day; 02-12 is judged at 02-14 00:00, the same
    instant as the review — the judgment must come first, so the review sees it: terminate."""
    recs = day_records(PHARMACY, date(2026, 1, 10), 20, 10) + day_records(PHARMACY, date(2026, 2, 12), 20, 10)
    _, tickets = run(tmp_path, recs, as_of="2026-03-01 00:00:00")
    assert [(t["action"], t["effective_from"]) for t in tickets] == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-01-13"),
        ("TERMINATE_OUTPATIENT_POOLING", "2026-02-13"),
    ]


def test_a_failure_the_day_after_the_suspension_is_a_new_case(tmp_path: Path) -> None:
    recs = (day_records(PHARMACY, date(2026, 1, 10), 20, 10) + day_records(PHARMACY, date(2026, 2, 13), 20, 10)
            + day_records(PHARMACY, date(2026, 2, 9), 5, 0, prefix="ok"))  # evidence for the reinstatement
    _, tickets = run(tmp_path, recs, as_of="2026-03-01 00:00:00")
    assert [(t["action"], t["effective_from"]) for t in tickets] == [
        ("SUSPEND_OUTPATIENT_POOLING", "2026-01-13"),
        ("REINSTATE", "2026-02-13"),
        ("SUSPEND_OUTPATIENT_POOLING", "2026-02-16"),
    ]

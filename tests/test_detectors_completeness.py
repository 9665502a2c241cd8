"""data.incomplete — EZ-DM 二(二): settlement drug lines must be matched by 3505 sales within 72 h.

Expected values are worked out by hand from the clause and the pack defaults (72 h, 98 %, REVIEW with
verification; verified finding → suspend 6 months; again after it ends and within 2 years → cancel)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import PHARMACY, institution, sale, settlement

from monitor.clock import CST
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.records import parse_value

FMT = "%Y-%m-%d %H:%M:%S"
T0 = datetime(2026, 1, 10, 10, 0, tzinfo=CST)


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def run(items: list[tuple[str, dict[str, Any]]], as_of: str = "2026-01-20 00:00:00") -> tuple[
        list[Alert], list[Ticket]]:
    """Feed records in the given order (each must carry inf_time), then move time to ``as_of``."""
    engine = Engine(load_pack("ezhou"))
    out: list[Alert | Ticket] = []
    for stream, raw in [("institutions", institution(PHARMACY)), *items]:
        for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode()):
            assert not hasattr(rec, "reason"), rec
            out.extend(engine.process(rec))  # type: ignore[arg-type]
    out.extend(engine.advance(datetime.strptime(as_of, FMT).replace(tzinfo=CST)))
    alerts = [o for o in out if isinstance(o, Alert) and o.rule_id == "data.incomplete"]
    tickets = [o for o in out if isinstance(o, Ticket) and o.ladder.startswith("completeness")]
    return alerts, tickets


def setl(setl_id: str, when: datetime, cnt: str = "1", **over: Any) -> tuple[str, dict[str, Any]]:
    rec = settlement(setl_id, ts(when), ts(when + timedelta(minutes=1)), **over)
    rec["drugdetail"][0]["cnt"] = cnt
    return ("settlements", rec)


def sold(setl_id: str, when: datetime, arrival: datetime, cnt: str = "1", bchno: str = "B1",
         infno: str = "3505") -> tuple[str, dict[str, Any]]:
    return ("inventory", sale(bchno, ts(when), ts(arrival), cnt=cnt, setl_id=setl_id, mdtrt_setl_type="1",
                              infno=infno, rtal_docno=f"R{setl_id}"))


@pytest.mark.parametrize(
    ("arrival_after", "flagged"),
    [
        (timedelta(hours=71, minutes=59), False),
        (timedelta(hours=72), False),  # exactly 72 h is in time
        (timedelta(hours=72, minutes=1), True),
        (None, True),  # never uploaded
    ],
)
def test_match_window_edge(arrival_after: timedelta | None, flagged: bool) -> None:
    items = [setl("S1", T0)]
    if arrival_after is not None:
        items.append(sold("S1", T0, T0 + arrival_after))
    alerts, tickets = run(items)
    assert bool(alerts) is flagged
    if flagged:
        a = alerts[0]
        assert a.evidence["settlement_lines"] == 1 and a.evidence["matched_lines"] == 0
        assert a.evidence["sample_unmatched"] == ["setl_id=S1;med_list_codg=XA01AAA001"]
        assert a.basis == "EZ-DM 二(二)" and a.vola_amt == 30
        # judged at day end + 72 h = 2026-01-14 00:00
        assert a.detected_at == datetime(2026, 1, 14, tzinfo=CST)
        assert [(t.action, t.requires_verification, str(t.effective_from)) for t in tickets] == [
            ("REVIEW", True, "2026-01-15")]
    else:
        assert tickets == []


@pytest.mark.parametrize(("lines", "unmatched", "flagged"), [(50, 1, False), (49, 1, True), (100, 2, False),
                                                            (100, 3, True)])
def test_day_threshold_98_percent(lines: int, unmatched: int, flagged: bool) -> None:
    items = []
    for i in range(lines):
        t = T0 + timedelta(minutes=i)
        items.append(setl(f"S{i}", t))
        if i >= unmatched:
            items.append(sold(f"S{i}", t, t + timedelta(minutes=2)))
    alerts, _ = run(items)
    assert bool(alerts) is flagged
    if flagged:
        assert alerts[0].evidence["unmatched_lines"] == unmatched


@pytest.mark.parametrize(
    ("need", "sales", "flagged"),
    [
        ("3", ["1", "2"], False),  # two batches add up
        ("3", ["1", "1"], True),
        ("2", ["5"], False),
    ],
)
def test_quantities_add_up(need: str, sales: list[str], flagged: bool) -> None:
    items = [setl("S1", T0, cnt=need)]
    items += [sold("S1", T0, T0 + timedelta(minutes=5 + i), cnt=c, bchno=f"B{i}") for i, c in enumerate(sales)]
    alerts, _ = run(items)
    assert bool(alerts) is flagged


def test_a_resent_sale_counts_once() -> None:
    """The same 3505 record uploaded twice is one sale of 1, not 2."""
    one = sold("S1", T0, T0 + timedelta(minutes=5))
    again = ("inventory", {**one[1], "inf_time": ts(T0 + timedelta(minutes=9))})
    alerts, _ = run([setl("S1", T0, cnt="2"), one, again])
    assert len(alerts) == 1


def test_revoked_settlement_and_its_return_cancel_out() -> None:
    revoke = settlement("S1", ts(T0), ts(T0 + timedelta(hours=1)), setl_status="revoked")
    items = [setl("S1", T0), sold("S1", T0, T0 + timedelta(minutes=5)), ("settlements", revoke),
             sold("S1", T0 + timedelta(minutes=50), T0 + timedelta(hours=1), infno="3506"),
             # a revoked settlement without any sale is not incomplete either
             setl("S2", T0), ("settlements", settlement("S2", ts(T0), ts(T0 + timedelta(hours=2)),
                                                       setl_status="revoked"))]
    alerts, tickets = run(items)
    assert alerts == [] and tickets == []


def test_sale_uploaded_before_its_settlement_matches() -> None:
    items = [sold("S1", T0, T0 + timedelta(seconds=30)), setl("S1", T0)]
    alerts, _ = run(items)
    assert alerts == []


def test_a_settlement_uploaded_after_its_day_was_judged_re_opens_it() -> None:
    late = settlement("S9", ts(T0), ts(T0 + timedelta(days=5)))
    alerts, _ = run([setl("S1", T0), sold("S1", T0, T0 + timedelta(minutes=5)), ("settlements", late)])
    assert len(alerts) == 1
    assert alerts[0].evidence["settlement_lines"] == 2 and alerts[0].evidence["matched_lines"] == 1
    assert alerts[0].detected_at == T0 + timedelta(days=5)


def finding(fid: str, when: str) -> tuple[str, dict[str, Any]]:
    return ("findings", {"finding_id": fid, "fixmedins_code": PHARMACY, "kind": "data_incomplete_verified",
                         "occurred_at": when, "inf_time": when})


#: the 6-month suspension ends with REINSTATE on its effective_until (#12 point 7)
END = ("REINSTATE", "2026-07-11", None)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        # first finding 2026-01-10: suspended 2026-01-11 .. 2026-07-11 (exclusive)
        ("2026-07-10 12:00:00", []),  # during the suspension: already in force
        ("2026-07-11 12:00:00", [END, ("CANCEL_OUTPATIENT_POOLING", "2026-07-12", None)]),  # the day it ends
        ("2028-01-10 12:00:00", [END, ("CANCEL_OUTPATIENT_POOLING", "2028-01-11", None)]),  # 2 years to the day
        ("2028-01-11 12:00:00", [END, ("SUSPEND_OUTPATIENT_POOLING", "2028-01-12", "2028-07-12")]),  # too late
    ],
)
def test_recurrence_window_six_months_to_two_years(second: str, expected: list[tuple[str, str, str | None]]
                                                   ) -> None:
    _, tickets = run([finding("F1", "2026-01-10 12:00:00"), finding("F2", second)], as_of=second)
    got = [(t.action, str(t.effective_from), str(t.effective_until) if t.effective_until else None)
           for t in tickets]
    assert got[0] == ("SUSPEND_OUTPATIENT_POOLING", "2026-01-11", "2026-07-11")
    assert got[1:] == expected
    assert all(t.basis == ["EZ-DM 二(二)"] for t in tickets)

"""inventory.negative_stock — EZ-DM 二(二): a sale that takes a balanced batch below zero.

Balances are worked out by hand: 3501 sets, +3503 −3504 −3505 +3506, ±3502 by inv_chg_type; movements
folded in business-time order 24 h after their time; tolerance 0, split packs 0.99."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import PHARMACY, institution

from monitor.clock import CST
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.records import parse_value

FMT = "%Y-%m-%d %H:%M:%S"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=CST)
MED = "XA01AAA001"


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def base(infno: str, arrival: datetime, bchno: str = "B1", **over: Any) -> tuple[str, dict[str, Any]]:
    rec = {"infno": infno, "fixmedins_code": PHARMACY, "med_list_codg": MED, "fixmedins_hilist_id": "H001",
           "fixmedins_bchno": bchno, "inf_time": ts(arrival), "finl_trns_pric": "12.50"}
    rec.update(over)
    return ("inventory", rec)


def stocktake(day: str, cnt: str, arrival: datetime, **kw: Any) -> tuple[str, dict[str, Any]]:
    return base("3501", arrival, invdate=day, inv_cnt=cnt, **kw)


def purchase(when: datetime, cnt: str, arrival: datetime | None = None, infno: str = "3503",
             **kw: Any) -> tuple[str, dict[str, Any]]:
    return base(infno, arrival or when + timedelta(minutes=1), purc_retn_stoin_time=ts(when),
                purc_retn_cnt=cnt, **kw)


def sell(when: datetime, cnt: str, arrival: datetime | None = None, infno: str = "3505", doc: str = "D",
         **kw: Any) -> tuple[str, dict[str, Any]]:
    return base(infno, arrival or when + timedelta(minutes=1), sel_retn_time=ts(when), sel_retn_cnt=cnt,
                rtal_docno=f"{doc}{when:%d%H%M}", mdtrt_setl_type="2", **kw)


def change(when: datetime, cnt: str, kind: str) -> tuple[str, dict[str, Any]]:
    return base("3502", when + timedelta(minutes=1), inv_chg_time=ts(when), cnt=cnt, inv_chg_type=kind)


def run(items: list[tuple[str, dict[str, Any]]], as_of: str = "2026-01-25 00:00:00") -> tuple[
        list[Alert], list[Ticket], Engine]:
    engine = Engine(load_pack("ezhou"))
    out: list[Alert | Ticket] = []
    items = [("institutions", institution(PHARMACY)), *items]
    for stream, raw in sorted(items, key=lambda it: it[1].get("inf_time", "")):
        for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode()):
            assert not hasattr(rec, "reason"), rec
            out.extend(engine.process(rec))  # type: ignore[arg-type]
    out.extend(engine.advance(datetime.strptime(as_of, FMT).replace(tzinfo=CST)))
    alerts = [o for o in out if isinstance(o, Alert) and o.rule_id == "inventory.negative_stock"]
    tickets = [o for o in out if isinstance(o, Ticket) and o.ladder in ("negative_stock_review", "falsified")]
    return alerts, tickets, engine


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_sale_below_zero_alerts_once_per_episode() -> None:
    """5 counted; sell 3 (2 left), sell 3 (−1: alert), sell 1 (−2: same episode, no new alert)."""
    alerts, tickets, _ = run([stocktake("2026-01-10", "5", h(0)), sell(h(1), "3"), sell(h(2), "3"),
                              sell(h(3), "1")])
    assert len(alerts) == 1
    ev = alerts[0].evidence
    assert (ev["balance_before"], ev["sold"], ev["balance_after"]) == ("2", "3", "-1")
    assert ev["sale_time"] == h(2).isoformat() and ev["baseline"] == "3501:2026-01-10"
    assert alerts[0].vola_amt == pytest.approx(12.5)
    assert alerts[0].basis == "EZ-DM 二(二)"
    # decided once the sale's 24 h settling time has passed
    assert alerts[0].detected_at == h(2) + timedelta(hours=24)
    assert [(t.action, t.requires_verification) for t in tickets] == [("REVIEW", True)]


def test_stocktake_resets_a_negative_balance() -> None:
    """−1 after day 1 (alert); day 2 stocktake counts 10: sell 4 (6 left, clean), sell 7 (−1: new alert)."""
    alerts, _, _ = run([
        stocktake("2026-01-10", "2", h(0)), sell(h(1), "3"),
        stocktake("2026-01-11", "10", h(20)), sell(h(16), "4"), sell(h(17), "7")])
    assert [a.evidence["balance_after"] for a in alerts] == ["-1", "-1"]
    assert [a.evidence["baseline"] for a in alerts] == ["3501:2026-01-10", "3501:2026-01-11"]


def test_stocktake_reset_then_clean() -> None:
    alerts, _, _ = run([stocktake("2026-01-10", "2", h(0)), sell(h(1), "3"),
                        stocktake("2026-01-11", "10", h(20)), sell(h(16), "4"), sell(h(17), "6")])
    assert len(alerts) == 1  # only the first day's


def test_purchase_uploaded_after_the_sale_it_supplied_is_not_negative() -> None:
    """Business time decides: purchase at 10:00 (uploaded 14:00) supplies the 11:00 sale (uploaded 11:01)."""
    alerts, _, _ = run([stocktake("2026-01-10", "0", h(0)), purchase(h(1), "5", arrival=h(5)), sell(h(2), "3")])
    assert alerts == []


@pytest.mark.parametrize(
    ("moves", "flagged"),
    [
        ([purchase(h(1), "3"), sell(h(2), "3")], False),  # exactly zero
        ([purchase(h(1), "3"), sell(h(2), "4")], True),
        ([purchase(h(1), "3"), purchase(h(1.5), "1", infno="3504"), sell(h(2), "3")], True),
        ([purchase(h(1), "3"), sell(h(1.2), "2"), sell(h(1.5), "1", infno="3506"), sell(h(2), "2")], False),
        ([purchase(h(1), "3"), change(h(1.5), "1", "104"), sell(h(2), "3")], True),  # 盘损 −1
        ([purchase(h(1), "3"), change(h(1.5), "1", "101"), sell(h(2), "4")], False),  # 调拨入 +1
        ([purchase(h(1), "3"), sell(h(2), "3.5", trdn_flag="1")], False),  # split pack: −0.5 tolerated
        ([purchase(h(1), "3"), sell(h(2), "4", trdn_flag="1")], True),  # split pack: −1 is not
    ],
)
def test_balance_arithmetic(moves: list[tuple[str, dict[str, Any]]], flagged: bool) -> None:
    alerts, _, _ = run(moves)
    assert bool(alerts) is flagged


def test_batch_never_balanced_is_a_quality_count_not_negative_stock() -> None:
    alerts, _, engine = run([sell(h(1), "3", bchno="UNKNOWN"), sell(h(2), "3", bchno="UNKNOWN")])
    assert alerts == []
    assert engine.stats.quality["inventory.movement_without_baseline"] == 2


def test_sale_before_the_stocktake_time_is_already_in_the_count() -> None:
    """A stocktake on 01-11 (as of 00:00) counts 1; a 01-10 sale uploaded after it does not reduce it."""
    alerts, _, _ = run([stocktake("2026-01-11", "1", h(16)), sell(h(2), "3", arrival=h(17)),
                        sell(h(20), "1")])
    assert alerts == []


def test_falsified_finding_cancels_with_three_year_ban() -> None:
    finding = ("findings", {"finding_id": "F1", "fixmedins_code": PHARMACY, "kind": "data_falsified_verified",
                            "occurred_at": "2026-01-20 10:00:00", "inf_time": "2026-01-20 10:00:00"})
    _, tickets, _ = run([finding])
    assert [(t.action, str(t.reapply_after)) for t in tickets] == [("CANCEL_OUTPATIENT_POOLING", "2029-01-21")]

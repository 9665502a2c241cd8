"""price.dual / price.dual_serious (AR-AGR 二(二)13, 三(二)2), price.above_listed (EZ-CONV 三) and
price.above_mode. Expected values are worked out by hand from the rules and the ezhou defaults
(1 % and ¥0.01; ¥500 or 3 days within 30; listed price + 0; mode + 20 % with 3 votes)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, drug, institution, run_engine, sale, settlement
from rule_harness import alerts as only_alerts
from rule_harness import assert_batch_parity

from monitor.clock import CST
from monitor.detectors.pricing import Pricing
from monitor.records import InvalidRecord, Record, parse_value

DRUG = "XA01AAA001"
OTHER = "XB02BBB002"


def insured(setl_id: str, day: date, price: str, cnt: str = "1", code: str = PHARMACY, med: str = DRUG,
            trdn: str = "0", hour: int = 10) -> tuple[str, dict[str, Any]]:
    amount = str(Decimal(price) * Decimal(cnt))
    rec = settlement(setl_id, f"{day} {hour:02d}:00:00", f"{day} {hour:02d}:05:00", code=code,
                     medfee_sumamt=amount, inscp_scp_amt=amount, acct_pay=amount,
                     drugdetail=[{"feedetl_sn": "1", "med_list_codg": med, "cnt": cnt, "pric": price,
                                  "det_item_fee_sumamt": amount, "rx_flag": "0", "trdn_flag": trdn}])
    return ("settlements", rec)


def selfpay(doc: str, day: date, price: str, cnt: str = "1", code: str = PHARMACY, med: str = DRUG,
            trdn: str = "0", hour: int = 11, inf: str | None = None) -> tuple[str, dict[str, Any]]:
    rec = sale(doc, f"{day} {hour:02d}:00:00", inf or f"{day} {hour:02d}:05:00", code=code, cnt=cnt,
               med_list_codg=med, finl_trns_pric=price, mdtrt_setl_type="2", trdn_flag=trdn)
    return ("inventory", rec)


def registry() -> list[tuple[str, dict[str, Any]]]:
    return [("institutions", institution(PHARMACY)), ("institutions", institution(CLINIC)),
            ("drugs", drug(DRUG, "30.00")), ("drugs", drug(OTHER, "30.00"))]


D1 = date(2026, 3, 2)


def rule(alerts: list[dict[str, Any]], rule_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule_id"] == rule_id]


def actions(tickets: list[dict[str, Any]], ladder_prefix: str = "dual_price") -> list[str]:
    return [t["action"] for t in tickets if t["ladder"].startswith(ladder_prefix)]


@pytest.mark.parametrize(
    ("selfpay_price", "insured_price", "flagged", "overcharge"),
    [
        ("10.00", "10.10", False, None),  # exactly 1 % above: not more than 1 %
        ("10.00", "10.11", True, "0.22"),  # 1.1 % and ¥0.11 above, 2 packs
        ("0.50", "0.51", False, None),  # 2 % above but only ¥0.01: not more than ¥0.01
        ("0.50", "0.52", True, "0.04"),  # 4 % and ¥0.02
        ("10.00", "9.00", False, None),  # self-pay dearer than insured: not a violation
        ("10.00", "10.00", False, None),
    ],
)
def test_dual_threshold(selfpay_price: str, insured_price: str, flagged: bool, overcharge: str | None) -> None:
    recs = [*registry(), insured("S1", D1, insured_price, cnt="2"), selfpay("R1", D1, selfpay_price)]
    alerts, tickets = run_engine(recs, as_of="2026-03-05 00:00:00")
    dual = rule(alerts, "price.dual")
    assert bool(dual) is flagged
    if flagged:
        ev = dual[0]["evidence"]
        assert ev["overcharge"] == overcharge
        assert ev["insured_unit_price"] == insured_price
        assert ev["selfpay_unit_price"] == selfpay_price
        assert ev["insured_quantity"] == "2"
        assert Decimal(dual[0]["vola_amt"]) == Decimal(overcharge or "0")
        assert actions(tickets) == ["INTERVIEW"]
        assert "AR-AGR 三(二)2" in dual[0]["basis"]
    else:
        assert actions(tickets) == []


def test_dual_compares_like_with_like() -> None:
    """Split-pack self-pay prices are per unit; another drug's price is another drug's."""
    recs = [*registry(), insured("S1", D1, "20.00"), selfpay("R1", D1, "2.00", trdn="1"),
            selfpay("R2", D1, "10.00", med=OTHER), insured("S2", D1, "3.00", trdn="1"),
            selfpay("R3", D1, "3.00", trdn="1")]
    alerts, _ = run_engine(recs, as_of="2026-03-05 00:00:00")
    assert rule(alerts, "price.dual") == []


def test_dual_reference_is_the_highest_selfpay_price_of_the_day() -> None:
    recs = [*registry(), insured("S1", D1, "10.50"), selfpay("R1", D1, "9.00"), selfpay("R2", D1, "10.50")]
    alerts, _ = run_engine(recs, as_of="2026-03-05 00:00:00")
    assert rule(alerts, "price.dual") == []


def test_sale_price_wins_over_the_settlement_line_and_missing_sale_price_falls_back() -> None:
    # S1: 3505 insured price 10.00 for the same setl_id as a settlement line priced 20.00 → 10.00 counts
    ins_sale = sale("B1", f"{D1} 10:01:00", f"{D1} 10:06:00", mdtrt_setl_type="1", setl_id="S1",
                    finl_trns_pric="10.00")
    recs = [*registry(), insured("S1", D1, "20.00"), ("inventory", ins_sale), selfpay("R1", D1, "10.00")]
    alerts, _ = run_engine(recs, as_of="2026-03-05 00:00:00")
    assert rule(alerts, "price.dual") == []
    # S2: the 3505 insured sale has no finl_trns_pric → the settlement line's 20.00 is the insured price
    no_price = sale("B2", f"{D1} 10:01:00", f"{D1} 10:06:00", mdtrt_setl_type="1", setl_id="S2")
    recs = [*registry(), insured("S2", D1, "20.00"), ("inventory", no_price), selfpay("R1", D1, "10.00")]
    alerts, _ = run_engine(recs, as_of="2026-03-05 00:00:00")
    assert [a["evidence"]["overcharge"] for a in rule(alerts, "price.dual")] == ["10.00"]


def test_revoked_settlement_is_not_dual_pricing() -> None:
    rev = insured("S1", D1, "20.00")[1] | {"setl_status": "revoked", "inf_time": f"{D1} 12:00:00"}
    recs = [*registry(), insured("S1", D1, "20.00"), ("settlements", rev), selfpay("R1", D1, "10.00")]
    alerts, _ = run_engine(recs, as_of="2026-03-05 00:00:00")
    assert rule(alerts, "price.dual") == []


def test_a_late_selfpay_sale_rejudges_the_day() -> None:
    # judged at 03-04 00:00 with no self-pay sale; the self-pay sale of 03-02 arrives on 03-04 12:00
    recs = [*registry(), insured("S1", D1, "20.00"), ("settlements", settlement("X", "2026-03-04 11:00:00",
                                                                                 "2026-03-04 11:00:00")),
            selfpay("R1", D1, "10.00", inf="2026-03-04 12:00:00")]
    alerts, tickets = run_engine(recs, as_of="2026-03-06 00:00:00")
    assert [a["evidence"]["business_date"] for a in rule(alerts, "price.dual")] == ["2026-03-02"]
    assert actions(tickets) == ["INTERVIEW"]


def day_case(day: date, overcharge_per_pack: str, packs: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    price = str(Decimal("10.00") + Decimal(overcharge_per_pack))
    return [insured(f"S{n}", day, price, cnt=str(packs)), selfpay(f"R{n}", day, "10.00")]


@pytest.mark.parametrize(
    ("days", "serious"),
    [
        # (offset from 2026-03-01, overcharge per pack, packs)
        ([(0, "10.00", 25), (1, "9.99", 25)], False),  # ¥250 + ¥249.75 = ¥499.75 on 2 days
        ([(0, "10.00", 25), (1, "10.00", 25)], True),  # ¥500.00
        ([(0, "10.00", 50)], True),  # ¥500 on one day
        # 3 days: 03-01, 03-15, 03-30, ¥1 × 40 packs a day; 涉及药品金额 3 × 40 × ¥11 = ¥1 320 ≥ ¥1 000
        ([(0, "1.00", 40), (14, "1.00", 40), (29, "1.00", 40)], True),
        ([(0, "1.00", 40), (14, "1.00", 40), (30, "1.00", 40)], False),  # 03-01 is outside the 30 days to 03-31
        ([(0, "1.00", 40), (1, "1.00", 40)], False),
        ([(0, "1.00", 30), (14, "1.00", 30), (29, "1.00", 30)], False),  # 3 days but 涉及 ¥990 < ¥1 000
    ],
)
def test_dual_serious_thresholds(days: list[tuple[int, str, int]], serious: bool) -> None:
    recs = [*registry()]
    for n, (offset, over, packs) in enumerate(days):
        recs += day_case(date(2026, 3, 1) + timedelta(days=offset), over, packs, n)
    alerts, tickets = run_engine(recs, as_of="2026-04-05 00:00:00")
    assert len(rule(alerts, "price.dual")) == len(days)
    assert bool(rule(alerts, "price.dual_serious")) is serious
    # the gravity ladders (AR-AGR 二(二)13); the escalation (三(二)2) starts with INTERVIEW whatever the gravity
    assert actions(tickets, "dual_price_review") + actions(tickets, "dual_price_no_renewal") == (
        ["REVIEW", "NO_RENEWAL"] if serious else [])
    assert actions(tickets, "dual_price_escalation")[0] == "INTERVIEW"
    if serious:
        crit = rule(alerts, "price.dual_serious")[0]
        assert crit["severity"] == "critical"
        assert crit["basis"].startswith("AR-AGR 二(二)13")
        review = next(t for t in tickets if t["action"] == "REVIEW")
        assert review["requires_verification"] is True


def test_serious_episodes_do_not_reuse_days_and_no_renewal_is_once_per_term() -> None:
    recs = [*registry()]
    for n in range(6):  # six consecutive dual-pricing days: two serious episodes (days 1–3 and 4–6)
        recs += day_case(date(2026, 3, 1) + timedelta(days=n), "1.00", 40, n)
    alerts, tickets = run_engine(recs, as_of="2026-04-05 00:00:00")
    serious = rule(alerts, "price.dual_serious")
    assert [a["evidence"]["days"] for a in serious] == [
        ["2026-03-01", "2026-03-02", "2026-03-03"], ["2026-03-04", "2026-03-05", "2026-03-06"]]
    assert actions(tickets) == ["INTERVIEW", "REVIEW", "NO_RENEWAL", "REVIEW"]


def test_same_input_twice_gives_the_same_outputs() -> None:
    recs = [*registry(), *day_case(D1, "30.00", 20, 1)]
    assert run_engine(recs, as_of="2026-03-10 00:00:00") == run_engine(recs, as_of="2026-03-10 00:00:00")


@pytest.mark.parametrize(
    ("code", "price", "flagged"),
    [
        (PHARMACY, "30.00", False),  # equal to the listed price
        (PHARMACY, "30.01", True),
        (CLINIC, "35.00", False),  # EZ-CONV 三 governs pharmacies
    ],
)
def test_above_listed(code: str, price: str, flagged: bool) -> None:
    recs = [*registry(), insured("S1", D1, price, cnt="3", code=code), insured("S2", D1, price, code=code)]
    alerts, tickets = run_engine(recs)
    hits = rule(alerts, "price.above_listed")
    assert len(hits) == (1 if flagged else 0)  # once per institution, drug and day
    if flagged:
        assert hits[0]["evidence"]["listed_price"] == "30.00"
        assert hits[0]["evidence"]["excess"] == "0.03"
        assert hits[0]["severity"] == "warning"
    assert tickets == []


def test_above_listed_skips_split_packs_and_drugs_without_listed_price() -> None:
    recs = [*registry(), ("drugs", drug("XC03CCC003", None)), insured("S1", D1, "31.00", trdn="1"),
            insured("S2", D1, "99.00", med="XC03CCC003")]
    alerts, _ = run_engine(recs)
    assert rule(alerts, "price.above_listed") == []


PEERS = ["P42070200011", "P42070200012", "P42070200013"]


@pytest.mark.parametrize(
    ("peers", "price", "flagged"),
    [
        (3, "12.00", False),  # exactly 20 % above the mode 10.00
        (3, "12.01", True),
        (2, "15.00", False),  # the mode 10.00 has only 2 votes (< 3)
    ],
)
def test_above_mode(peers: int, price: str, flagged: bool) -> None:
    recs = [*registry(), ("drugs", drug(DRUG, "50.00"))]
    recs += [("institutions", institution(c)) for c in PEERS]
    day0 = date(2026, 3, 1)
    recs += [selfpay(f"R{i}", day0, "10.00", code=c) for i, c in enumerate(PEERS[:peers])]
    recs += [selfpay("RX", day0, "11.00", code=PEERS[0])]  # a second price, one vote
    recs += [insured("S1", D1, price)]
    alerts, _ = run_engine(recs)
    hits = rule(alerts, "price.above_mode")
    assert bool(hits) is flagged
    if flagged:
        assert hits[0]["evidence"]["modal_price"] == "10.00"
        assert hits[0]["evidence"]["modal_votes"] == 3


def test_mode_forgets_votes_older_than_the_window() -> None:
    recs = [*registry(), ("drugs", drug(DRUG, "50.00"))]
    recs += [("institutions", institution(c)) for c in PEERS]
    recs += [selfpay(f"R{i}", date(2026, 1, 1), "10.00", code=c) for i, c in enumerate(PEERS)]
    recs += [insured("S1", date(2026, 1, 31), "15.00")]  # 31 days later: the votes have expired
    alerts, _ = run_engine(recs)
    assert rule(alerts, "price.above_mode") == []


def test_mode_reached_later_the_same_day_is_used() -> None:
    """A modal price computed with too few votes is recomputed once a new vote arrives the same day:
    two peers at 10.00 (2 votes < 3: no mode), an insured 15.00 (no alert), the third peer's 10.00,
    then an insured 15.00 (50 % > 20 % above the mode 10.00 with 3 votes) → one alert, on that sale."""
    recs = [*registry(), ("drugs", drug(DRUG, "50.00"))]
    recs += [("institutions", institution(c)) for c in PEERS]
    recs += [selfpay(f"R{i}", D1, "10.00", code=c, hour=8) for i, c in enumerate(PEERS[:2])]
    recs += [insured("S1", D1, "15.00", hour=9)]
    recs += [selfpay("R2", D1, "10.00", code=PEERS[2], hour=10)]
    recs += [insured("S2", D1, "15.00", hour=11)]
    alerts, _ = run_engine(recs)
    hits = rule(alerts, "price.above_mode")
    assert len(hits) == 1
    assert hits[0]["evidence"]["modal_votes"] == 3
    assert hits[0]["evidence"]["sample_record"] == "setl_id=S2"


def test_ar_agr_2_2_13_small_overcharge_on_3_days_is_not_serious() -> None:
    """AR-AGR 二(二)13 "涉及药品金额较大、情节严重" is amount and gravity: ¥0.20 overcharged on one pack a day
    on 3 days (¥0.60 in all, 涉及药品金额 ¥30.60) is dual pricing (INTERVIEW, AR-AGR 三(二)2) but not
    serious — no REVIEW, no NO_RENEWAL."""
    recs = [*registry()]
    for n in range(3):
        recs += day_case(date(2026, 3, 1) + timedelta(days=n), "0.20", 1, n)
    alerts, tickets = run_engine(recs, as_of="2026-04-05 00:00:00")
    assert len(rule(alerts, "price.dual")) == 3
    assert [a["evidence"]["involved_amount"] for a in rule(alerts, "price.dual")] == ["10.20"] * 3
    assert rule(alerts, "price.dual_serious") == []
    assert "NO_RENEWAL" not in actions(tickets)


def _arrival_order(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[Record, datetime | None]]:
    earliest = datetime(2000, 1, 1, tzinfo=CST)
    parsed = [(rec.arrival_time or earliest, i, rec) for i, (stream, raw) in enumerate(items)
              for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode())
              if not isinstance(rec, InvalidRecord)]
    return [(rec, None) for _, _, rec in sorted(parsed, key=lambda p: (p[0], p[1]))]


def test_the_batch_path_judges_prices_in_the_one_by_one_order() -> None:
    """Pricing's ``on_batch`` (issue #16) against ``on_record`` one by one, batches of one stream and of
    both (``assert_batch_parity``): a dual-priced day judged at day end + 24 h inside a batch; a late
    self-pay sale of that day re-judging it at once (a second drug's day, flagged by the late price); a
    day uploaded 30 h late whose judgment falls inside the batch that brings it; a revoked settlement;
    three peers setting a modal price and a dearer insured sale on the same day (above_mode), a pharmacy
    above the listed price (above_listed); dual days on three days (dual_serious)."""
    items = [*registry(), ("drugs", drug(DRUG, "12.00"))]
    items += [("institutions", institution(c)) for c in PEERS]
    for n in range(3):  # three dual-priced days in a row (gravity: 3 days; ¥1 035 involved)
        day = D1 + timedelta(days=n)
        items += [insured(f"S{n}", day, "11.50", cnt="30"), selfpay(f"R{n}", day, "10.00")]
        items += [insured(f"O{n}", day, "10.00", med=OTHER), selfpay(f"Q{n}", day, "9.00", med=OTHER, hour=9)]
    # a late self-pay sale of D1 (arrives after D1's judgment): OTHER's day re-judged at once
    items += [selfpay("LATE", D1, "9.50", med=OTHER, hour=15, inf=f"{D1 + timedelta(days=2)} 09:00:00")]
    # a whole day uploaded 30 h late: opened past its judgment time, judged inside the batch
    late_day = D1 + timedelta(days=4)
    for i in range(3):
        rec = settlement(f"L{i}", f"{late_day} 10:0{i}:00", f"{late_day + timedelta(days=1)} 16:0{i}:00",
                         drugdetail=[{"feedetl_sn": "1", "med_list_codg": DRUG, "cnt": "1", "pric": "11.80",
                                      "det_item_fee_sumamt": "11.80", "rx_flag": "0", "trdn_flag": "0"}],
                         medfee_sumamt="11.80", inscp_scp_amt="11.80", acct_pay="11.80")
        items.append(("settlements", rec))
        items.append(selfpay(f"LR{i}", late_day, "10.00", hour=11, inf=f"{late_day + timedelta(days=1)} 16:1{i}:00"))
    # a revoked settlement: its insured price no longer counts
    items += [insured("V1", D1 + timedelta(days=5), "14.00")]
    items.append(("settlements", {**insured("V1", D1 + timedelta(days=5), "14.00")[1], "setl_status": "revoked",
                                  "inf_time": f"{D1 + timedelta(days=5)} 10:30:00"}))
    items += [selfpay("V1R", D1 + timedelta(days=5), "10.00")]
    # the modal price: three peers sell at 10.00, then an insured 12.50 (25 % above) the same day
    mode_day = D1 + timedelta(days=6)
    items += [selfpay(f"M{i}", mode_day, "10.00", code=c, hour=8) for i, c in enumerate(PEERS)]
    items += [insured("MS", mode_day, "12.50", hour=9)]
    found = assert_batch_parity(Pricing, _arrival_order(items), until="2026-04-30 00:00:00")
    rules = {a.rule_id for a in only_alerts(found)}
    assert rules == {"price.dual", "price.dual_serious", "price.above_mode", "price.above_listed"}, rules

"""rx.not_uploaded — EZ-DM 二(三) — and rx.over_12_weeks — EZ-CONV 五.

Coverage and the rectification ladder worked out by hand: 24 h arrival window, 100 % per day,
SUSPEND_AGREEMENT the day after the determination, rectify_by one calendar month later, review of the
last 7 days before that deadline."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, institution, sale, settlement
from rule_harness import assert_batch_parity

from monitor.clock import CST
from monitor.detectors.prescriptions import Prescriptions
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import Pack, load_pack
from monitor.records import parse_value

FMT = "%Y-%m-%d %H:%M:%S"
T0 = datetime(2026, 1, 10, 10, 0, tzinfo=CST)
PSN = "42000011112222"


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def pooling(setl_id: str, when: datetime, hi_rxno: str | None = "RX1", code: str = CLINIC,
            **over: Any) -> tuple[str, dict[str, Any]]:
    """A 门诊统筹 purchase (med_type 41, hifp_pay > 0): needs a prescription. By default at the clinic that
    issued it (its own prescription: an upload failure is its own)."""
    money = {"hifp_pay": "18.00", "acct_pay": "0.00", "psn_cash_pay": "12.00"}
    rec = settlement(setl_id, ts(when), ts(when + timedelta(minutes=1)), code=code, **{**money, **over})
    if hi_rxno is not None:
        rec["hi_rxno"] = hi_rxno
    return ("settlements", rec)


def rx(hi_rxno: str, arrival: datetime, status: str = "uploaded", prsc: datetime | None = None,
       valid_days: int = 3, psn_no: str = PSN, medc_days: int = 7) -> tuple[str, dict[str, Any]]:
    start = prsc or T0 - timedelta(hours=2)
    return ("prescriptions", {
        "hi_rxno": hi_rxno, "hosp_rxno": f"H{hi_rxno}", "fixmedins_code": "H42070200002", "psn_no": psn_no,
        "prsc_time": ts(start), "valid_end_time": ts(start + timedelta(days=valid_days)),
        "rx_status": status, "inf_time": ts(arrival),
        "rxdrugdetail": [{"med_list_codg": "XA01AAA001", "drug_cnt": "1", "medc_days": medc_days}]})


def ladder_pack() -> Pack:
    """ezhou with the proportionate trigger off (one uncovered settlement feeds the ladder): the
    coverage and ladder mechanics below are tested on single settlements."""
    pack = load_pack("ezhou")
    rule = pack.rules["rx.not_uploaded"]
    params = {**rule.params, "trigger_min_needing": 1, "trigger_below_coverage": 1.0}
    rules = {**pack.rules, "rx.not_uploaded": rule.model_copy(update={"params": params})}
    return pack.model_copy(update={"rules": rules})


def run(items: list[tuple[str, dict[str, Any]]], as_of: str = "2026-01-20 00:00:00",
        pack: Pack | None = None) -> tuple[list[Alert], list[Ticket]]:
    engine = Engine(pack or ladder_pack())
    out: list[Alert | Ticket] = []
    items = [("institutions", institution(PHARMACY)), ("institutions", institution(CLINIC)), *items]
    for stream, raw in sorted(items, key=lambda it: it[1].get("inf_time", "")):
        for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode()):
            assert not hasattr(rec, "reason"), rec
            out.extend(engine.process(rec))  # type: ignore[arg-type]
    out.extend(engine.advance(datetime.strptime(as_of, FMT).replace(tzinfo=CST)))
    alerts = [o for o in out if isinstance(o, Alert) and o.rule_id.startswith("rx.")]
    tickets = [o for o in out if isinstance(o, Ticket) and o.ladder == "prescriptions"]
    return alerts, tickets


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([rx("RX1", T0 - timedelta(hours=1))], None),
        ([rx("RX1", T0 + timedelta(hours=24))], None),  # exactly 24 h after the settlement: in time
        ([rx("RX1", T0 + timedelta(hours=24, seconds=1))], "uploaded_late"),
        ([], "not_uploaded"),
        # revoked before vs after the settlement (a revocation is dated by its arrival)
        ([rx("RX1", T0 - timedelta(hours=1)), rx("RX1", T0 - timedelta(minutes=1), status="revoked")],
         "revoked_before_settlement"),
        ([rx("RX1", T0 - timedelta(hours=1)), rx("RX1", T0 + timedelta(minutes=1), status="revoked")], None),
        ([rx("RX1", T0 - timedelta(hours=1), psn_no="42000099998888")], "other_person"),
        ([rx("RX1", T0 - timedelta(hours=1), prsc=T0 - timedelta(days=4), valid_days=3)], "outside_validity"),
        ([rx("RX1", T0 + timedelta(hours=1), prsc=T0 + timedelta(minutes=30))], "outside_validity"),
    ],
)
def test_coverage_edges(items: list[tuple[str, dict[str, Any]]], reason: str | None) -> None:
    alerts, tickets = run([pooling("S1", T0), *items])
    if reason is None:
        assert alerts == [] and tickets == []
        return
    assert len(alerts) == 1
    ev = alerts[0].evidence
    assert ev["uncovered_by_reason"] == {reason: 1} and ev["coverage"] == "0.0000"
    assert ev["sample_uncovered"] == [f"setl_id=S1;reason={reason}"]
    assert alerts[0].basis == "EZ-DM 二(三)" and alerts[0].severity == "critical"
    assert PSN not in json.dumps(alerts[0].model_dump(mode="json"))
    # judged at day end + 24 h (2026-01-12 00:00) → suspended from 01-13, rectify by 02-13
    assert [(t.action, str(t.effective_from), str(t.rectify_by)) for t in tickets] == [
        ("SUSPEND_AGREEMENT", "2026-01-13", "2026-02-13")]


def test_settlement_without_hi_rxno_is_uncovered() -> None:
    alerts, _ = run([pooling("S1", T0, hi_rxno=None)])
    assert alerts[0].evidence["uncovered_by_reason"] == {"no_hi_rxno": 1}


@pytest.mark.parametrize(
    ("over", "needs"),
    [
        ({"hifp_pay": "0.00", "acct_pay": "30.00", "psn_cash_pay": "0.00"}, False),  # account only, OTC
        ({"med_type": "11"}, False),  # not a pharmacy pooling purchase, no Rx line
        ({"med_type": "11", "drugdetail": [{"med_list_codg": "XA01AAA001", "cnt": "1", "pric": "30",
                                            "rx_flag": "1"}]}, True),  # an Rx drug line
        ({}, True),
    ],
)
def test_which_settlements_need_a_prescription(over: dict[str, Any], needs: bool) -> None:
    alerts, _ = run([pooling("S1", T0, hi_rxno=None, **over)])
    assert bool(alerts) is needs


def test_revoked_settlement_needs_nothing() -> None:
    revoke = settlement("S1", ts(T0), ts(T0 + timedelta(hours=2)), setl_status="revoked")
    alerts, _ = run([pooling("S1", T0, hi_rxno=None), ("settlements", revoke)])
    assert alerts == []


def test_one_uncovered_settlement_among_many_fails_the_day() -> None:
    items = [rx(f"RX{i}", T0) for i in range(9)]
    items += [pooling(f"S{i}", T0 + timedelta(minutes=i), hi_rxno=f"RX{i}") for i in range(10)]
    alerts, _ = run(items)
    assert len(alerts) == 1
    assert (alerts[0].evidence["settlements_needing_rx"], alerts[0].evidence["covered"]) == (10, 9)


def _evidence() -> list[tuple[str, dict[str, Any]]]:
    """Self-pay 3505 sales uploaded on time on 02-08 and 02-09 (inside the review window): the
    institution is seen uploading while suspended (EZ-DM 二(三) review evidence)."""
    out = []
    for i, day in enumerate(("2026-02-08", "2026-02-09")):
        when = f"{day} 10:00:00"
        out.append(("inventory", sale(f"EV{i}", when, f"{day} 10:01:00", code=CLINIC)))
    return out


def test_ez_dm_2_3_quiet_institution_is_not_reinstated() -> None:
    """EZ-DM 二(三) "整改达不到要求": an institution that uploads nothing during its rectification month
    shows no rectification — the review is a REVIEW requiring verification, not a REINSTATE."""
    _, tickets = run([pooling("S1", T0, hi_rxno=None)], as_of="2026-03-01 00:00:00")
    got = [(t.action, str(t.effective_from), t.requires_verification) for t in tickets]
    assert got == [("SUSPEND_AGREEMENT", "2026-01-13", False), ("REVIEW", "2026-02-13", True)]


@pytest.mark.parametrize(
    ("second_day", "outcome"),
    [
        # suspended 2026-01-13, rectify by 2026-02-13: the last 7 days are 02-06 .. 02-12; a clean
        # window is reinstated only on positive evidence (on-time uploads there: see _EVIDENCE)
        (None, "REINSTATE"),
        ("2026-02-05 10:00:00", "REINSTATE"),
        ("2026-02-06 10:00:00", "CANCEL_OUTPATIENT_POOLING"),
        ("2026-02-12 10:00:00", "CANCEL_OUTPATIENT_POOLING"),  # judged 02-14 00:00, the review waits for it
    ],
)
def test_rectification_deadline_both_sides(second_day: str | None, outcome: str) -> None:
    items = [pooling("S1", T0, hi_rxno=None), *_evidence()]
    if second_day is not None:
        when = datetime.strptime(second_day, FMT).replace(tzinfo=CST)
        items.append(pooling("S2", when, hi_rxno=None))
    _, tickets = run(items, as_of="2026-03-01 00:00:00")
    got = [(t.action, str(t.effective_from)) for t in tickets]
    assert got == [("SUSPEND_AGREEMENT", "2026-01-13"), (outcome, "2026-02-13")]
    assert tickets[1].issued_at == datetime(2026, 2, 14, 1, 0, tzinfo=CST)


def test_no_review_before_the_deadline_has_been_judged() -> None:
    _, tickets = run([pooling("S1", T0, hi_rxno=None)], as_of="2026-02-14 00:59:59")
    assert [t.action for t in tickets] == ["SUSPEND_AGREEMENT"]


@pytest.mark.parametrize(("days", "flagged"), [(84, False), (85, True)])
def test_over_12_weeks(days: int, flagged: bool) -> None:
    alerts, _ = run([rx("RX1", T0, medc_days=days)])
    long = [a for a in alerts if a.rule_id == "rx.over_12_weeks"]
    assert bool(long) is flagged
    if flagged:
        assert long[0].fixmedins_code == "H42070200002" and long[0].severity == "warning"
        assert long[0].evidence["longest_medc_days"] == 85 and long[0].basis == "EZ-CONV 五"
        assert PSN not in json.dumps(long[0].model_dump(mode="json"))


# ------------------------------------------------------------------ proportionate triggers (issue 12.4)
def _day(n: int, uncovered: int, code: str = CLINIC, hi_rxno: bool = True,
         rx_lag: timedelta = timedelta(hours=-1), issuer: str = CLINIC) -> list[tuple[str, dict[str, Any]]]:
    """``n`` 门诊统筹 settlements at ``code`` on 01-10; the first ``uncovered`` without hi_rxno (or, with
    ``hi_rxno``, citing a prescription of ``issuer`` uploaded ``rx_lag`` after the settlement)."""
    items: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        when = T0 + timedelta(minutes=i)
        bad = i < uncovered
        if bad and not hi_rxno:
            items.append(pooling(f"S{i}", when, hi_rxno=None, code=code))
            continue
        lag = rx_lag if bad else timedelta(hours=-1)
        item = rx(f"RX{i}", when + lag, prsc=T0 - timedelta(hours=2))
        item[1]["fixmedins_code"] = issuer
        items += [item, pooling(f"S{i}", when, hi_rxno=f"RX{i}", code=code)]
    return items


def test_ez_dm_2_3_one_settlement_without_hi_rxno_does_not_suspend() -> None:
    """EZ-DM 二(三) 中止协议 is for a practice, not one slip (ezhou: ≥ 10 settlements needing a
    prescription and < 90 % coverage): 1 of 1 uncovered → a warning alert, no ticket; 2 of 12
    uncovered (83 %) → critical alert and SUSPEND_AGREEMENT; 1 of 12 (92 %) → warning only."""
    alerts, tickets = run(_day(1, 1, hi_rxno=False), pack=load_pack("ezhou"))
    assert [(a.severity, a.evidence["uncovered"]) for a in alerts] == [("warning", 1)] and tickets == []
    alerts, tickets = run(_day(12, 2, hi_rxno=False), pack=load_pack("ezhou"))
    assert [(a.severity, a.evidence["uncovered"]) for a in alerts] == [("critical", 2)]
    assert [t.action for t in tickets] == ["SUSPEND_AGREEMENT"]
    alerts, tickets = run(_day(12, 1, hi_rxno=False), pack=load_pack("ezhou"))
    assert [a.severity for a in alerts] == ["warning"] and tickets == []


def test_ez_dm_2_3_external_prescription_not_uploaded_charges_the_issuer() -> None:
    """外配处方 (EZ-CONV 二): 12 pharmacy settlements citing clinic prescriptions uploaded 25 h late.
    The clinic (issuer) is charged — its day has 12 issued prescriptions not uploaded in time → critical
    alert and SUSPEND_AGREEMENT; the pharmacy cited a prescription each time: a warning, no ticket."""
    items = _day(12, 12, code=PHARMACY, rx_lag=timedelta(hours=25), issuer=CLINIC)
    alerts, tickets = run(items, pack=load_pack("ezhou"), as_of="2026-01-20 00:00:00")
    by_inst = sorted((a.fixmedins_code, a.severity) for a in alerts if a.rule_id == "rx.not_uploaded")
    assert by_inst == [(CLINIC, "critical"), (PHARMACY, "warning")]
    clinic = next(a for a in alerts if a.fixmedins_code == CLINIC)
    assert clinic.evidence["uncovered_by_reason"] == {"issued_uploaded_late": 12}
    assert [(t.fixmedins_code, t.action) for t in tickets] == [(CLINIC, "SUSPEND_AGREEMENT")]


def test_ez_dm_2_3_pharmacy_settling_without_any_reference_is_charged() -> None:
    """The same 3 settlements without any hi_rxno: the pharmacy itself is charged (25 % uncovered)."""
    items = _day(12, 3, code=PHARMACY, hi_rxno=False)
    alerts, tickets = run(items, pack=load_pack("ezhou"))
    assert [(a.fixmedins_code, a.severity) for a in alerts] == [(PHARMACY, "critical")]
    assert [(t.fixmedins_code, t.action) for t in tickets] == [(PHARMACY, "SUSPEND_AGREEMENT")]


def test_the_batch_path_joins_and_judges_in_the_one_by_one_order() -> None:
    """Prescriptions' ``on_batch`` (issue #16) against ``on_record`` one by one, batches of one stream and
    of both (``assert_batch_parity``): a day of 12 settlements, 2 uncovered, judged at day end + 24 h
    inside a batch; a settlement of that day arriving after its judgment (re-judged at once: a third
    uncovered one); a day whose settlements arrive 30 h late (opened past its judgment time, judged
    inside the batch that brings them); 外配处方 charged to the issuer; a revoked prescription; a long
    prescription (rx.over_12_weeks)."""
    items = [("institutions", institution(PHARMACY)), ("institutions", institution(CLINIC))]
    items += _day(12, 2, hi_rxno=False)
    late = pooling("LATE", T0 + timedelta(hours=5), hi_rxno=None)
    late[1]["inf_time"] = ts(T0 + timedelta(days=2))
    items.append(late)
    day2 = T0 + timedelta(days=1)
    for i in range(3):
        item = pooling(f"D2{i}", day2 + timedelta(minutes=i), hi_rxno=None)
        item[1]["inf_time"] = ts(day2 + timedelta(hours=40, minutes=i))
        items.append(item)
    for i in range(3):  # 外配处方: the clinic's prescriptions uploaded 25 h after the pharmacy settled
        when = T0 + timedelta(hours=1, minutes=i)
        item = rx(f"EXT{i}", when + timedelta(hours=25), prsc=T0 - timedelta(hours=2))
        item[1]["fixmedins_code"] = CLINIC
        items += [item, pooling(f"X{i}", when, hi_rxno=f"EXT{i}", code=PHARMACY)]
    items += [rx("RXR", T0 - timedelta(hours=3)), rx("RXR", T0 - timedelta(hours=2), status="revoked"),
              pooling("SR", T0 + timedelta(minutes=50), hi_rxno="RXR"),
              rx("RXLONG", T0 + timedelta(hours=1), medc_days=90)]
    records = [(rec, None) for stream, raw in sorted(items, key=lambda it: it[1].get("inf_time", ""))
               for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode())]
    found = assert_batch_parity(Prescriptions, records, until="2026-01-20 00:00:00")  # type: ignore[arg-type]
    got = sorted({(a.rule_id, a.fixmedins_code, a.severity) for a in found if isinstance(a, Alert)})
    # the clinic: its own day (critical) and the issued prescriptions not uploaded in time (a warning: 3 <
    # the trigger's minimum); the pharmacy: warned as the dispenser; the long prescription on its issuer
    assert got == [("rx.not_uploaded", CLINIC, "critical"), ("rx.not_uploaded", CLINIC, "warning"),
                   ("rx.not_uploaded", PHARMACY, "warning"), ("rx.over_12_weeks", CLINIC, "warning")], got

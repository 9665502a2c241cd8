"""trace.duplicate and trace.missing — LN-TIER 三(一)3 依码结算, AR-AGR 二(二)8, EZ-DM 二(一); and the
compact code table behind the duplicate check (design §6)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, institution

from monitor.clock import CST
from monitor.detectors.tracecodes import CODES_TABLE, RETURNED, SOLD, code_key, pack_value, unpack_value
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, parse_value
from monitor.state import to_seconds
from monitor.state.packed import PackedTable

FMT = "%Y-%m-%d %H:%M:%S"
T0 = datetime(2026, 1, 10, 10, 0, tzinfo=CST)
CODE = "81234567890123456789"
OTHER = "P42070200009"


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def scan(when: datetime, kind: str = "sale", code: str = CODE, inst: str = PHARMACY, trdn: str = "0",
         arrival: datetime | None = None, doc: str | None = None, setl_id: str | None = None,
         med: str = "XA01AAA001") -> tuple[str, dict[str, Any]]:
    rec: dict[str, Any] = {"drug_trac_codg": code, "fixmedins_code": inst, "med_list_codg": med,
                           "scan_kind": kind, "trdn_flag": trdn, "scan_time": ts(when),
                           "inf_time": ts(arrival or when + timedelta(minutes=1))}
    if kind == "sale":
        rec["rtal_docno"] = doc or f"R{when:%m%d%H%M%S}"
    if setl_id:
        rec["setl_id"] = setl_id
    return ("tracecodes", rec)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def run(items: list[tuple[str, dict[str, Any]]], as_of: str = "2026-01-20 00:00:00",
        in_order: bool = False) -> tuple[list[Alert], list[Ticket], Engine]:
    engine = Engine(load_pack("ezhou"))
    out: list[Alert | Ticket] = []
    regs = [("institutions", institution(c)) for c in (PHARMACY, CLINIC, OTHER)]
    feed = items if in_order else sorted(items, key=lambda it: it[1].get("inf_time", ""))
    for stream, raw in regs + feed:
        for rec in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode()):
            assert not isinstance(rec, InvalidRecord), rec
            out.extend(engine.process(rec))
    out.extend(engine.advance(datetime.strptime(as_of, FMT).replace(tzinfo=CST)))
    alerts = [o for o in out if isinstance(o, Alert) and o.rule_id.startswith("trace.")]
    tickets = [o for o in out if isinstance(o, Ticket)]
    return alerts, tickets, engine


def dups(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.fixmedins_code, a.evidence["later_sale"]["scan_time"]) for a in alerts
            if a.rule_id == "trace.duplicate"]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([("sale", PHARMACY, 0), ("sale_return", PHARMACY, 1), ("sale", PHARMACY, 2)], []),  # clean
        ([("sale", PHARMACY, 0), ("sale", PHARMACY, 2)], [(PHARMACY, 2)]),  # sold → sold
        ([("sale", PHARMACY, 0), ("sale", OTHER, 2)], [(OTHER, 2)]),  # across institutions
        ([("sale", PHARMACY, 0), ("sale_return", PHARMACY, 1), ("sale", OTHER, 2)], []),  # returned, resold
        ([("sale", PHARMACY, 0), ("sale", OTHER, 2), ("sale", CLINIC, 3)], [(OTHER, 2), (CLINIC, 3)]),
        ([("sale", PHARMACY, 0), ("stock_in", OTHER, 1), ("sale", OTHER, 2)], [(OTHER, 2)]),  # no return
        ([("sale_return", PHARMACY, 0), ("sale", PHARMACY, 1)], []),
    ],
)
def test_duplicate_sequences(events: list[tuple[str, str, int]], expected: list[tuple[str, int]]) -> None:
    alerts, tickets, _ = run([scan(h(t), kind, inst=inst) for kind, inst, t in events])
    assert dups(alerts) == [(inst, h(t).isoformat()) for inst, t in expected]
    reviews = [t for t in tickets if t.ladder == "trace_duplicate_review"]
    assert sorted(t.fixmedins_code for t in reviews) == sorted({inst for inst, _ in expected})


def test_duplicate_alert_evidence_has_both_sales() -> None:
    alerts, tickets, _ = run([scan(h(0), doc="D1"), scan(h(26), inst=OTHER, doc="D2", setl_id="S2")])
    (a,) = [x for x in alerts if x.rule_id == "trace.duplicate"]
    assert a.severity == "critical" and a.basis == "LN-TIER 三(一)3"
    assert a.evidence == {
        "drug_trac_codg": CODE,
        "cross_institution": True,
        "first_sale": {"fixmedins_code": PHARMACY, "scan_time": h(0).isoformat()},
        "later_sale": {"fixmedins_code": OTHER, "scan_time": h(26).isoformat(), "rtal_docno": "D2",
                       "setl_id": "S2", "med_list_codg": "XA01AAA001"},
    }
    assert a.window_start == datetime(2026, 1, 11, tzinfo=CST)
    (t,) = [x for x in tickets if x.ladder == "trace_duplicate_review"]
    assert (t.action, t.fixmedins_code, t.alert_ids) == ("REVIEW", OTHER, [a.alert_id])


def test_the_same_duplicate_resent_gives_one_alert() -> None:
    second = scan(h(2), inst=OTHER)
    resent = ("tracecodes", {**second[1], "inf_time": ts(h(5))})
    alerts, tickets, _ = run([scan(h(0)), second, resent])
    assert dups(alerts) == [(OTHER, h(2).isoformat())]
    assert len([t for t in tickets if t.ladder == "trace_duplicate_review"]) == 1


def test_the_same_sale_resent_is_not_a_duplicate() -> None:
    first = scan(h(0))
    alerts, _, _ = run([first, ("tracecodes", {**first[1], "inf_time": ts(h(3))})])
    assert dups(alerts) == []


def test_split_pack_codes_are_exempt() -> None:
    alerts, _, _ = run([scan(h(0), trdn="1"), scan(h(1), trdn="1"), scan(h(2), trdn="1", inst=OTHER)])
    assert dups(alerts) == []


def test_later_seller_is_decided_by_scan_time_not_arrival() -> None:
    """OTHER's sale at +2 h arrives first; PHARMACY's earlier sale at +0 h arrives a day late."""
    alerts, _, _ = run([scan(h(2), inst=OTHER), scan(h(0), arrival=h(30))])
    assert dups(alerts) == [(OTHER, h(2).isoformat())]


def test_original_sale_uploaded_after_its_return_and_the_resale_is_clean() -> None:
    """Seen in the synthetic city: sold 10:00 (uploaded 11:00), returned 10:20 (uploaded 10:21), sold
    again 10:25 (uploaded 10:26). In scan-time order: sale, return, sale — clean."""
    alerts, _, _ = run([scan(h(0), arrival=h(1)), scan(h(1 / 3), "sale_return"), scan(h(25 / 60))])
    assert dups(alerts) == []


@pytest.mark.parametrize(("return_lag", "flagged"), [(24, False), (25 + 1 / 60, True)])
def test_return_uploaded_after_the_resale_clears_it_within_the_settling_time(return_lag: float,
                                                                             flagged: bool) -> None:
    """Sold 10:00, sold again 12:00; the 11:00 return is uploaded ``return_lag`` hours after its scan.
    The suspect is judged at 12:00 + 24 h: a return uploaded in time (≤ 24 h) always makes it."""
    alerts, _, _ = run([scan(h(0)), scan(h(2), inst=OTHER),
                        scan(h(1), "sale_return", arrival=h(1 + return_lag))])
    assert bool(dups(alerts)) is flagged
    if flagged:
        (a,) = [x for x in alerts if x.rule_id == "trace.duplicate"]
        assert a.detected_at == h(26)


def test_a_late_sale_older_than_its_return_is_the_returned_sale() -> None:
    alerts, _, _ = run([scan(h(1), "sale_return"), scan(h(0), arrival=h(3)), scan(h(2), inst=OTHER)],
                       in_order=True)
    assert dups(alerts) == []


@pytest.mark.parametrize(("resold", "flagged"), [("2028-12-01 10:00:00", True), ("2029-03-01 10:00:00", False)])
def test_codes_expire_after_three_years(resold: str, flagged: bool) -> None:
    when = datetime.strptime(resold, FMT).replace(tzinfo=CST)
    alerts, _, _ = run([scan(h(0)), scan(when, inst=OTHER)], as_of=ts(when + timedelta(days=2)))
    assert bool(dups(alerts)) is flagged


@pytest.mark.parametrize("code", ["8123-4567", "", "x" * 101, "81234 567"])
def test_malformed_codes_are_dead_lettered(code: str) -> None:
    _, raw = scan(h(0), code=code)
    (parsed,) = parse_value("tracecodes", json.dumps(raw).encode())
    assert isinstance(parsed, InvalidRecord) and "drug_trac_codg" in parsed.reason


# ------------------------------------------------------------------------------------------ trace.missing
def insured_sale(i: int, packs: str = "1", trdn: str = "0", insured: bool = True) -> tuple[str, dict[str, Any]]:
    when = h(i / 60)
    rec = {"infno": "3505", "fixmedins_code": PHARMACY, "med_list_codg": "XA01AAA001", "fixmedins_hilist_id": "H1",
           "fixmedins_bchno": "B1", "sel_retn_time": ts(when), "sel_retn_cnt": packs,
           "rtal_docno": f"R{i}", "mdtrt_setl_type": "1" if insured else "2", "trdn_flag": trdn,
           "inf_time": ts(when + timedelta(minutes=1))}
    if insured:
        rec["setl_id"] = f"S{i}"
    return ("inventory", rec)


def codes_for(i: int, n: int = 1, by: str = "setl") -> list[tuple[str, dict[str, Any]]]:
    when = h(i / 60)
    return [scan(when, code=f"8{i:09d}{k:010d}", doc=f"R{i}", setl_id=f"S{i}" if by == "setl" else None)
            for k in range(n)]


@pytest.mark.parametrize(("coded", "flagged"), [(10, False), (9, False), (8, True), (0, True)])
def test_missing_day_coverage_threshold(coded: int, flagged: bool) -> None:
    """10 insured one-pack sales on 01-10; ``coded`` of them have their code: < 90 % is a not-real-time
    day of the trace stream (judged 01-12 00:00) → EZ-DM 二(一) suspension from 01-13."""
    items = [insured_sale(i) for i in range(10)]
    for i in range(coded):
        items += codes_for(i, by="setl" if i % 2 else "docno")
    alerts, tickets, _ = run(items)
    missing = [a for a in alerts if a.rule_id == "trace.missing"]
    assert bool(missing) is flagged
    realtime = [(t.action, str(t.effective_from)) for t in tickets if t.ladder == "realtime"]
    if flagged:
        ev = missing[0].evidence
        assert (ev["packs"], ev["packs_with_code"], ev["not_realtime"]) == ("10", str(coded), True)
        assert realtime == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-13")]
        assert missing[0].detected_at == datetime(2026, 1, 12, tzinfo=CST)
    else:
        assert realtime == []


def test_missing_counts_packs_and_exempts_split_and_self_pay() -> None:
    """Judged: 2 packs with 1 code + 1 pack with 1 code = 2/3. Split-pack and self-pay sales without
    codes do not count."""
    items = [insured_sale(0, packs="2"), *codes_for(0, 1), insured_sale(1), *codes_for(1, 1),
             insured_sale(2, packs="1", trdn="1"), insured_sale(3, insured=False)]
    alerts, _, _ = run(items)
    (m,) = [a for a in alerts if a.rule_id == "trace.missing"]
    assert (m.evidence["packs"], m.evidence["packs_with_code"], m.evidence["insured_whole_pack_sales"]) == (
        "3", "2", 2)
    assert m.evidence["sample_short"] == ["setl_id=S0;med_list_codg=XA01AAA001;packs=2;codes=1"]


def test_codes_uploaded_after_the_judgment_do_not_count() -> None:
    items = [insured_sale(0), scan(h(0), code="81111111111111111111", doc="R0", arrival=h(40))]
    alerts, _, _ = run(items)
    assert [a.rule_id for a in alerts if a.rule_id == "trace.missing"] == ["trace.missing"]


# ------------------------------------------------------------------------------------------- the table
def test_code_table_put_get_grow_expire_and_round_trip() -> None:
    """The detector's code table (the store's ``PackedTable``, table ``trace_codes``): 5 000 codes grow it
    within the design §6 budget, a later scan replaces a code's value and expiry, expiry forgets exactly
    the codes whose last scan is older than the horizon, and a dump applied to a fresh table equals it."""
    table = PackedTable(CODES_TABLE, capacity=16)
    keys = [code_key(f"8{i:019d}") for i in range(5000)]
    horizon_s = 100 * 86400

    def scanned(i: int) -> int:
        return to_seconds(T0 + timedelta(days=i % 100)) + horizon_s

    for i, key in enumerate(keys):
        table.set_at(key, pack_value(i % 7, T0 + timedelta(days=i % 100), SOLD), scanned(i))
    assert len(table) == 5000 and table.capacity >= 5000 / 0.75
    assert table.nbytes / len(table) <= 64
    assert all(unpack_value(table.get(k) or 0)[0] == i % 7 for i, k in enumerate(keys))
    assert table.get(code_key("not stored")) is None
    table.set_at(keys[0], pack_value(3, T0 + timedelta(days=200), RETURNED),
                 to_seconds(T0 + timedelta(days=200)) + horizon_s)
    assert unpack_value(table.get(keys[0]) or 0) == (3, T0 + timedelta(days=200), RETURNED)
    # a second before day 150, every code last scanned before day 50 is past its 100-day horizon (an
    # entry expires once event time reaches its expiry; keys[0] was scanned again on day 200 and stays)
    removed = table.expire(T0 + timedelta(days=150) - timedelta(seconds=1))
    expected = sum(1 for i in range(1, 5000) if i % 100 < 50)
    assert removed == expected and len(table) == 5000 - expected
    assert table.get(keys[1]) is None and table.get(keys[50]) is not None and table.get(keys[0]) is not None
    clone = PackedTable(CODES_TABLE)
    clone.apply(table.dump())
    assert len(clone) == len(table) and all(clone.get(k) == table.get(k) for k in keys)


def test_code_table_reuses_a_freed_slot_as_a_later_scan_finds_it() -> None:
    """A slot freed by expiry is reused by the next new code that probes past it, and every code behind
    it stays reachable (keys chosen by hand: with 16 slots a key's home slot is key & 15, so 18 and 34
    share slot 2 and 3–6 fill slots 3–6)."""
    far = to_seconds(T0 + timedelta(days=1000))
    kept = pack_value(2, T0 + timedelta(days=20), RETURNED)
    added = pack_value(1, T0 + timedelta(days=10), SOLD)
    table = PackedTable(CODES_TABLE, capacity=16)
    for key in (3, 4, 5, 6):
        table.set_at(key, kept, far)
    table.set_at(18, pack_value(0, T0, SOLD), to_seconds(T0) + 1)
    assert table.expire(T0 + timedelta(days=1)) == 1 and table.get(18) is None and table.deleted == 1
    table.set_at(34, added, far)  # probes 2 (freed), 3–6, 7 (empty): takes slot 2
    assert table.slot_keys[2] == 34 and table.deleted == 0 and len(table) == 5
    assert table.get(34) == added and all(table.get(k) == kept for k in (3, 4, 5, 6))


def test_state_survives_a_checkpoint() -> None:
    _, _, engine = run([scan(h(0))])
    restored = Engine.restore(engine.snapshot())
    out = restored.process(parse_value("tracecodes", json.dumps(scan(h(50), inst=OTHER)[1]).encode())[0])  # type: ignore[arg-type]
    assert [o.rule_id for o in out if isinstance(o, Alert) and o.rule_id == "trace.duplicate"] == [
        "trace.duplicate"]


# --------------------------------------------------------------- proportionate trace.missing (issue 12.4)
def test_ez_dm_2_1_one_uncoded_pack_is_an_alert_not_a_suspension() -> None:
    """EZ-DM 二(一) via trace.missing: one insured whole pack without its code (coverage 0 %) is alerted,
    but the day has fewer than ezhou's trigger_min_packs (10): no suspension. 10 packs with 2 uncoded
    (80 %) do suspend (test_missing_day_coverage_threshold)."""
    alerts, tickets, _ = run([insured_sale(0)])
    (m,) = [a for a in alerts if a.rule_id == "trace.missing"]
    assert (m.evidence["packs"], m.evidence["not_realtime"], m.evidence["trigger_min_packs"]) == ("1", False, "10")
    assert [t for t in tickets if t.ladder == "realtime"] == []


def test_ez_dm_2_1_codes_in_the_same_second_as_their_sale_count_for_it() -> None:
    """Ten sales and their codes uploaded in one second, exactly when the day is judged (01-12 00:00:00,
    day end + 24 h) or minutes after it: the judgment must not fall between the sales and their scans
    (main counted each sale before its scan arrived: coverage 0 %). The day is fully coded: no alert."""
    judge = datetime(2026, 1, 12, 0, 0, tzinfo=CST)
    for upload in (judge, judge + timedelta(minutes=5)):
        items = []
        for i in range(10):
            (stream, rec) = insured_sale(i)
            rec["inf_time"] = ts(upload)
            items.append((stream, rec))
        for i in range(10):
            items.append(scan(h(i / 60), code=f"8{i:09d}{0:010d}", doc=f"R{i}", setl_id=f"S{i}", arrival=upload))
        alerts, tickets, _ = run(items, in_order=True)
        assert [a for a in alerts if a.rule_id == "trace.missing"] == [], upload
        # (these uploads are late for upload.not_realtime: 38 h after the sale; not under test here)
        assert [t for t in tickets if "trace.missing" in t.rule_ids] == []

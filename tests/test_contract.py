"""The rule contract (``monitor/contract.py``) and how the engine applies findings.

* rules *return* findings: the one-rule harness (``tests/rule_harness.py``) sees them without an engine;
* timers are typed: a rule that schedules an undeclared key type is refused;
* the engine applies a record's findings only after every rule has seen the record, so no rule's
  result depends on the order of ``DETECTORS`` (issue #14: "results depend on the order of DETECTORS");
* a batch gives the same outputs as the same records one by one.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import pytest
from builders import PHARMACY, institution, sale, settlement
from rule_harness import RuleHarness, alerts, escalations

from monitor.clock import business_date, parse_time
from monitor.contract import DayFact, Escalation, Findings, ForgetDay, JudgeDay, Rule, RuleContext
from monitor.detectors.benefit import Benefit
from monitor.detectors.completeness import Completeness
from monitor.detectors.status import Status
from monitor.detectors.upload import UploadTimeliness
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.ledger import Sanction
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, Record, Settlement, parse_value

REG = ("institutions", institution(PHARMACY))


# ----------------------------------------------------------------------------- one rule, findings out
def test_benefit_returns_its_alert_and_the_escalation_that_follows_it() -> None:
    h = RuleHarness(Benefit)
    found = h.feed_all([REG, ("settlements", settlement(
        "S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00", medfee_sumamt="100.00", inscp_scp_amt="100.00",
        hifp_pay="75.00", acct_pay="0.00", psn_cash_pay="25.00"))])
    (alert,) = alerts(found)
    (esc,) = escalations(found)
    assert alert.rule_id == "benefit.overpaid" and alert.evidence["excess"] == "15.00"  # 75 − 60 % × 100
    assert (esc.rule_id, esc.fixmedins_code, esc.day, esc.cause) == (
        "benefit.overpaid", PHARMACY, date(2026, 3, 2), "day:2026-03-02")
    assert esc.alert is alert  # the engine puts its id on the ticket only if it emits the alert
    assert found.index(alert) < found.index(esc)


def test_completeness_judges_an_institution_day_on_its_judge_timer() -> None:
    h = RuleHarness(Completeness)
    assert h.feed("settlements", settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00")) == []
    assert [type(t[2]) for t in h.timers] == [JudgeDay, ForgetDay]
    judge_at = h.timers[0][0]
    assert judge_at == parse_time("2026-03-02 23:59:59.999999") + timedelta(hours=72) or judge_at > parse_time(
        "2026-03-05 23:00:00")
    assert h.advance(judge_at - timedelta(seconds=1)) == []  # not before every line had its 72 h
    found = h.advance(judge_at)
    (alert,) = alerts(found)
    assert alert.rule_id == "data.incomplete" and alert.evidence["unmatched_lines"] == 1
    assert alert.detected_at == judge_at  # a timer's now is its due time
    assert [e.cause for e in escalations(found)] == ["day:2026-03-02"]


def test_completeness_a_matched_day_returns_only_its_numbers() -> None:
    h = RuleHarness(Completeness)
    h.feed("settlements", settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00"))
    h.feed("inventory", sale("B1", "2026-03-02 10:00:00", "2026-03-02 10:05:00", setl_id="S1"))
    assert h.advance("2026-03-09 00:00:00") == [
        DayFact(PHARMACY, date(2026, 3, 2), {"settlement_lines": 1, "matched_lines": 1})]  # no alert, no escalation


def test_upload_late_records_make_a_not_realtime_day() -> None:
    h = RuleHarness(UploadTimeliness)
    assert h.feed_all([("settlements", settlement("S0", "2026-03-02 10:00:00", "2026-03-02 10:05:00"))]) == []
    per_record = [h.feed("settlements", settlement(f"S{i}", "2026-03-02 10:00:00", "2026-03-04 10:00:00"))
                  for i in range(1, 6)]  # 26 h after the day ended: its judgment is over, each is judged at once
    assert [[a.rule_id for a in alerts(f)] for f in per_record] == [
        ["upload.late"], [], [],
        ["upload.silent_stream"],  # 5 settlements with drugs and no 3505 sale of the day
        ["upload.not_realtime"]]  # the 5th late record of 6 (≥ 5 and ≥ 10 %)
    assert [e.rule_id for f in per_record for e in escalations(f)] == ["upload.silent_stream", "upload.not_realtime"]


def test_status_reads_sanctions_through_the_read_only_view() -> None:
    h = RuleHarness(Status)
    h.feed(*REG)
    h.ledger.book(PHARMACY).sanctions.append(Sanction("realtime", "SUSPEND_OUTPATIENT_POOLING", "TK1",
                                                      date(2026, 3, 1), date(2026, 4, 1)))
    found = h.feed("settlements", settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00",
                                             hifp_pay="20.00", acct_pay="10.00"))
    (alert,) = alerts(found)
    assert alert.rule_id == "status.settled_while_suspended"
    assert alert.evidence["state"] == "suspended"
    assert [g["ticket_id"] for g in alert.evidence["in_force"]] == ["TK1"]
    assert isinstance(h.ctx.sanctions.in_force(PHARMACY, date(2026, 3, 2)), tuple)
    with pytest.raises(TypeError):
        h.ctx.registry.institutions[PHARMACY] = h.registry.institutions[PHARMACY]  # type: ignore[index]


class _Stray(Rule):
    name: ClassVar[str] = "stray"
    rule_ids: ClassVar[tuple[str, ...]] = ("benefit.overpaid",)
    streams: ClassVar[tuple[str, ...]] = ("settlements",)
    timers: ClassVar[tuple[type, ...]] = (JudgeDay,)

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        ctx.schedule(arrival, ("judge", "P1", business_date(arrival)))  # an untyped key
        return []


def test_a_timer_key_of_an_undeclared_type_is_refused() -> None:
    h = RuleHarness(_Stray)
    with pytest.raises(TypeError, match="declares JudgeDay"):
        h.feed("settlements", settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00"))


# -------------------------------------------------------------------------- the engine applies findings
class _Escalator(Rule):
    """Returns an escalation for every settlement: the realtime ladder (ezhou:
    SUSPEND_OUTPATIENT_POOLING from the next day)."""

    name: ClassVar[str] = "escalator"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements",)

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        assert isinstance(rec, Settlement)
        return [ctx.escalate("upload.not_realtime", rec.fixmedins_code, business_date(rec.setl_time), cause="test")]


class _Observer(Rule):
    """Writes down the sanction state it sees, for the next day, on each settlement."""

    name: ClassVar[str] = "observer"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[str] = []

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        assert isinstance(rec, Settlement)
        self.seen.append(ctx.sanctions.state(rec.fixmedins_code, business_date(rec.setl_time) + timedelta(days=1)))
        return []


def _parsed(stream: str, rec: dict[str, Any]) -> list[Record]:
    return [r for r in parse_value(stream, json.dumps(rec).encode()) if not isinstance(r, InvalidRecord)]


@pytest.mark.parametrize("escalator_first", [True, False])
def test_rules_see_the_state_before_the_record_whatever_their_order(escalator_first: bool) -> None:
    """Before the contract ``ctx.trigger`` entered the ledger inside ``on_record``: the observer saw the
    suspension caused by the same record only when the escalator ran before it."""
    pack = load_pack("ezhou")
    engine = Engine(pack)
    observer = _Observer(pack)
    for det in ([_Escalator(pack), observer] if escalator_first else [observer, _Escalator(pack)]):
        engine.attach(det)
    out = []
    for stream, rec in [REG, ("settlements", settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:01:00")),
                        ("settlements", settlement("S2", "2026-03-02 11:00:00", "2026-03-02 11:01:00"))]:
        for parsed in _parsed(stream, rec):
            out.extend(engine.process(parsed))
    assert observer.seen == ["normal", "suspended"]
    assert [t.action for t in out if isinstance(t, Ticket)] == ["SUSPEND_OUTPATIENT_POOLING"]


def test_an_escalation_carries_its_alert_id_only_when_that_alert_is_emitted() -> None:
    engine = Engine(load_pack("ezhou"))
    engine.process(_parsed(*REG)[0])
    engine.advance(parse_time("2026-03-02 10:00:00"))
    ctx = engine.rule_context("benefit")
    assert isinstance(ctx, RuleContext)
    alert = ctx.alert("benefit.overpaid", PHARMACY, "x", parse_time("2026-03-02 10:00:00"),
                      parse_time("2026-03-02 10:00:00"), {}, "test")
    assert alert is not None
    engine.apply([alert, Escalation("benefit.overpaid", PHARMACY, date(2026, 3, 2), "c1", alert=alert)])
    engine.apply([alert, Escalation("benefit.overpaid", PHARMACY, date(2026, 3, 3), "c2", alert=alert)])
    tickets = [t for t in engine._drain() if isinstance(t, Ticket)]
    assert [t.alert_ids for t in tickets] == [[alert.alert_id], []]  # the second time it was a repeat


def test_a_batch_gives_the_outputs_of_the_same_records_one_by_one() -> None:
    """Late records of a day already open and judged are judged at once, in the batch as one by one
    (a late record that *opens* a day past its judge time is the documented exception: its judgment
    waits for the end of the batch)."""
    records = [REG]
    for i in range(6):  # day 2 opened on time ...
        records.append(("settlements", settlement(f"S{i}", f"2026-03-02 1{i}:00:00", f"2026-03-02 1{i}:05:00")))
    for i in range(6, 12):  # ... then 6 late records of it after its judgment (6 of 12 late → not real time)
        records.append(("settlements", settlement(f"S{i}", f"2026-03-02 1{i - 6}:30:00", f"2026-03-04 1{i - 6}:00:00")))
    parsed = [p for stream, rec in records for p in _parsed(stream, rec)]
    one, many = Engine(load_pack("ezhou")), Engine(load_pack("ezhou"))
    singly = [o for rec in parsed for o in one.process(rec)] + one.advance(parse_time("2026-04-30 00:00:00"))
    batched = many.process_batch(parsed) + many.advance(parse_time("2026-04-30 00:00:00"))
    assert {o.rule_id for o in singly if isinstance(o, Alert)} >= {"upload.late", "upload.not_realtime"}
    key = lambda o: o.model_dump_json()  # noqa: E731
    assert sorted(map(key, batched)) == sorted(map(key, singly))


class _Batches(Rule):
    """Takes whole batches: writes down their sizes (and returns nothing)."""

    name: ClassVar[str] = "batches"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sizes: list[int] = []

    def on_batch(self, stream: str, batch: Any, ctx: RuleContext) -> Findings:
        self.sizes.append(len(batch))
        assert ctx.now == batch[-1].now
        return []


def _sizes(records: list[Record]) -> list[int]:
    engine = Engine(load_pack("ezhou"))
    rule = engine.attach(_Batches(engine.pack))
    assert isinstance(rule, _Batches)
    engine.process_batch(records)
    return rule.sizes


def test_a_batch_ends_at_the_next_timer_instant_and_at_a_registry_record() -> None:
    def day(d: int, n: int) -> list[Record]:
        return [p for i in range(n) for p in _parsed("settlements", settlement(
            f"S{d}{i}", f"2026-03-0{d} 1{i}:00:00", f"2026-03-0{d} 1{i}:05:00"))]

    reg = _parsed(*REG)
    assert _sizes([*reg, *day(2, 7)]) == [7]  # no timer due in between
    # the engine's institution_daily emission is due at every event-time midnight (monitor.detectors.daily)
    assert _sizes([*reg, *day(2, 4), *day(3, 3)]) == [4, 3]
    # day 2's judge timers (day end + 24 h of upload.late) fall before day 4's first arrival
    assert _sizes([*reg, *day(2, 4), *day(4, 3)]) == [4, 3]
    assert _sizes([*reg, *day(2, 2), *reg, *day(3, 2)]) == [2, 2]  # a registry record ends a batch

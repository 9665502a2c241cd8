"""The sanction ledger and its one definition of sanctions (issue #14 point 5, ``monitor.policy.sanctions``):
what each action is and restricts, what is in force on a day — the same answer from the ledger and from
a case file built from the outputs alone —, the ``VOID`` ticket that tells downstream a rejected ticket no
longer holds, and the ledger's typed timers. The ladders' clause-by-clause behaviour is in
``test_ledger_state.py`` and ``test_ar_agr_escalation.py``."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, finding, institution, read_jsonl, run_engine, write_jsonl

from monitor.clock import CST, business_date
from monitor.engine import Engine
from monitor.inspect.model import MemoryStore, build_case_file, state_on
from monitor.inspect.store import FileStore
from monitor.inspect.text import render_case_file
from monitor.outputs import ACTIONS, Summary, Ticket, make_id
from monitor.policy import sanctions
from monitor.policy.ledger import ReviewDue, TermEnds
from monitor.policy.pack import load_pack
from monitor.records import parse_value
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate

Rec = tuple[str, dict[str, Any]]


def f(fid: str, kind: str, day: str, **over: Any) -> Rec:
    return ("findings", finding(fid, kind, f"{day} 10:00:00", inf_time=f"{day} 10:00:00", **over))


REGISTRY: Rec = ("institutions", institution(PHARMACY, agreement_start="2026-01-01", agreement_end="2026-12-31"))


def ticket(action: str, eff: str, *, ladder: str = "L", until: str | None = None, rectify: str | None = None,
           at: str | None = None, ref: str | None = None, tid: str | None = None) -> Ticket:
    return Ticket(ticket_id=tid or f"TK-{action}-{eff}", fixmedins_code=PHARMACY, action=action,  # type: ignore[arg-type]
                  issued_at=datetime.fromisoformat(f"{at or eff}T00:00:00+08:00"),
                  effective_from=date.fromisoformat(eff),
                  effective_until=date.fromisoformat(until) if until else None,
                  rectify_by=date.fromisoformat(rectify) if rectify else None, ladder=ladder, rule_ids=[],
                  alert_ids=[], basis=["EZ-DM 二(一)"], policy="t", summary=Summary(zh="z", en="e"),
                  ref_ticket_id=ref)


# ------------------------------------------------------------------------------ the definition
def test_every_ticket_action_is_defined_once_with_its_kind_scope_and_texts() -> None:
    assert set(sanctions.ACTIONS) == set(ACTIONS)
    for action, d in sanctions.ACTIONS.items():
        assert d.action == action and d.zh and d.en
        assert (d.scope is not None) == d.restricting == (d.restricts is not None), action
        assert (d.term == "for_good") == (d.kind == "ending"), action
        if d.restricting:
            assert "VOID" in d.ends_by and (d.kind == "ending" or "REINSTATE" in d.ends_by), action
    # EZ-DM 二 (pooling) vs the agreement vs AR-AGR 三(二)2 暂停医保结算 (every insured settlement, not the agreement)
    assert sanctions.SCOPE["SUSPEND_SETTLEMENT"] == "settlement" and "SUSPEND_SETTLEMENT" in sanctions.STOPS_INSURED
    assert "SUSPEND_OUTPATIENT_POOLING" not in sanctions.STOPS_INSURED
    assert sanctions.AGREEMENT_ENDS == {"TERMINATE_AGREEMENT"}
    assert sanctions.POOLING_ENDS == {"TERMINATE_OUTPATIENT_POOLING", "CANCEL_OUTPATIENT_POOLING"}


def test_a_span_ends_on_its_term_a_rectification_date_or_never() -> None:
    book = sanctions.replay([
        ticket("SUSPEND_OUTPATIENT_POOLING", "2026-01-13", until="2026-02-13"),
        ticket("SUSPEND_AGREEMENT", "2026-03-01", rectify="2026-04-01", ladder="rx"),
        ticket("CANCEL_OUTPATIENT_POOLING", "2026-05-01", until="2026-06-01", ladder="c"),  # an ending: for good
        ticket("INTERVIEW", "2026-01-02", ladder="i"),  # restricts nothing
    ])
    assert [(s.action, s.until) for s in book] == [
        ("SUSPEND_OUTPATIENT_POOLING", date(2026, 2, 13)), ("SUSPEND_AGREEMENT", date(2026, 4, 1)),
        ("CANCEL_OUTPATIENT_POOLING", None)]
    on = {d: sanctions.state_of(sanctions.in_force(book, d)) for d in
          (date(2026, 1, 12), date(2026, 1, 13), date(2026, 2, 12), date(2026, 2, 13), date(2026, 3, 31),
           date(2026, 4, 1), date(2027, 1, 1))}
    assert on == {date(2026, 1, 12): "normal", date(2026, 1, 13): "suspended", date(2026, 2, 12): "suspended",
                  date(2026, 2, 13): "normal", date(2026, 3, 31): "suspended", date(2026, 4, 1): "normal",
                  date(2027, 1, 1): "terminated"}


def test_reinstate_ends_its_ladders_latest_suspension_and_a_void_ticket_never_held() -> None:
    book = sanctions.replay([
        ticket("SUSPEND_SETTLEMENT", "2026-03-01", until="2026-06-01", ladder="esc", tid="A"),
        ticket("SUSPEND_AGREEMENT", "2026-03-10", rectify="2026-04-10", ladder="rx", tid="B"),
        ticket("REINSTATE", "2026-03-20", ladder="rx", at="2026-03-19", tid="R"),  # rectified early
        ticket("SUSPEND_SETTLEMENT", "2026-04-01", until="2026-05-01", ladder="other", tid="C"),
        ticket("VOID", "2026-04-03", ladder="other", at="2026-04-03", ref="C", tid="V"),
    ])
    assert [(s.ticket_id, s.until, s.void) for s in book] == [
        ("A", date(2026, 6, 1), False), ("B", date(2026, 3, 20), False), ("C", date(2026, 5, 1), True)]
    assert [s.ticket_id for s in sanctions.in_force(book, date(2026, 3, 19))] == ["A", "B"]
    assert [s.ticket_id for s in sanctions.in_force(book, date(2026, 4, 2))] == ["A"]  # C was void from the start


# ------------------------------------------------------------------------------ VOID
def _terminated_then_rejected() -> tuple[list[Rec], str]:
    first = run_engine([REGISTRY, f("T1", "agreement_terminated", "2026-03-01")])[1][0]
    assert first["action"] == "CANCEL_OUTPATIENT_POOLING"
    recs = [REGISTRY, f("T1", "agreement_terminated", "2026-03-01"),
            f("R1", "ticket_rejected", "2026-03-03", ref_ticket_id=first["ticket_id"]),
            f("R2", "ticket_rejected", "2026-03-05", ref_ticket_id=first["ticket_id"])]  # sent again
    return recs, first["ticket_id"]


def test_a_rejected_ticket_is_voided_by_one_void_ticket_with_reason_and_clause() -> None:
    recs, rejected = _terminated_then_rejected()
    _, tickets = run_engine(recs, as_of="2026-04-01 00:00:00")
    assert [t["action"] for t in tickets] == ["CANCEL_OUTPATIENT_POOLING", "VOID"]  # the second rejection: none
    void = tickets[1]
    assert void["ticket_id"] == make_id("TK", "agreement_terminated", PHARMACY, "VOID", rejected)
    assert (void["ref_ticket_id"], void["reason"], void["effective_from"]) == (rejected, "ticket_rejected",
                                                                                "2026-03-03")
    assert void["basis"] == tickets[0]["basis"] and void["ladder"] == tickets[0]["ladder"]
    assert rejected in void["summary"]["zh"] and "驳回" in void["summary"]["zh"] and "R1" in void["summary"]["en"]
    # every other ticket's JSON is as before the VOID existed: no new keys
    assert "ref_ticket_id" not in tickets[0] and "reason" not in tickets[0]
    assert "ref_ticket_id" not in Ticket.model_validate(tickets[0]).model_dump_json()


def _replay(tmp_path: Path, recs: list[Rec], as_of: str, dsn: str) -> Path:
    from monitor.sinks.clickhouse import ClickHouseSink

    inp = tmp_path / "in"
    for stream in {s for s, _ in recs}:
        write_jsonl(inp, stream, [r for s, r in recs if s == stream])
    replay_dir(inp, tmp_path / "out", load_pack("ezhou"), as_of=datetime.fromisoformat(as_of).replace(tzinfo=CST),
               extra_sinks=[ClickHouseSink(dsn, tmp_path / "buffer")])
    return tmp_path / "out"


@pytest.mark.parametrize("where", ["files", "clickhouse"])
def test_case_file_from_the_outputs_shows_a_rejected_ticket_as_not_in_force(tmp_path: Path, where: str) -> None:
    """The defect: built from tickets alone, the case file showed the rejected termination in force
    (state ``terminated``) and a rejected six-month suspension with its end still to come. The VOID
    tickets reach both stores: the replay's files and ClickHouse (chDB)."""
    from monitor.inspect.store import ClickHouseStore

    recs, rejected = _terminated_then_rejected()
    first = run_engine([REGISTRY, f("I1", "infostd_substandard", "2026-06-01")])[1][0]
    assert first["action"] == "SUSPEND_OUTPATIENT_POOLING"
    recs += [f("I1", "infostd_substandard", "2026-06-01"),
             f("R3", "ticket_rejected", "2026-06-04", ref_ticket_id=first["ticket_id"])]
    dsn = f"chdb://{tmp_path / 'ch'}"
    out = _replay(tmp_path, recs, "2026-07-01T00:00:00", dsn)
    store = FileStore(out) if where == "files" else ClickHouseStore.open(dsn)
    cf = build_case_file(store, PHARMACY, load_pack("ezhou"), as_of=datetime(2026, 7, 1, tzinfo=CST))
    assert cf is not None
    assert cf.state == "normal" and cf.in_force == []
    assert cf.deadlines == []  # a rejected suspension ends nowhere and is reviewed by nobody
    assert cf.sanction_periods == []
    written = read_jsonl(out / "tickets.jsonl")
    assert [t["action"] for t in written] == ["CANCEL_OUTPATIENT_POOLING", "VOID", "SUSPEND_OUTPATIENT_POOLING", "VOID"]
    assert sorted(t.model_dump_json() for t in store.tickets(PHARMACY)) == sorted(
        Ticket.model_validate(t).model_dump_json() for t in written)
    events = {e.id: e for e in cf.timeline}
    assert events[rejected].void and events[first["ticket_id"]].void
    assert "rejected: void, never in force" in render_case_file(cf)
    voids = [e for e in cf.timeline if e.action == "VOID"]
    assert [e.ref_ticket_id for e in voids] == [rejected, first["ticket_id"]] and not any(e.void for e in voids)
    # and on the day between issue and rejection too: the ticket never held
    assert state_on(MemoryStore(tickets=[Ticket.model_validate(t) for t in written]).tickets(), date(2026, 3, 2))[0] \
        == "normal"


# ------------------------------------------------------------------------------ timers
def test_the_ledgers_timers_are_typed_keys_and_nothing_else_is_accepted() -> None:
    engine = Engine(load_pack("ezhou"))
    for stream, rec in [REGISTRY, f("I1", "infostd_substandard", "2026-06-01")]:
        for parsed in parse_value(stream, json.dumps(rec, ensure_ascii=False).encode()):
            engine.process(parsed)  # type: ignore[arg-type]
    keys = [key for *_, owner, key in engine.timers._heap if owner == "ledger"]
    assert keys and all(isinstance(k, (ReviewDue, TermEnds)) for k in keys)
    end = next(k for k in keys if isinstance(k, TermEnds))
    assert (end.code, end.ladder) == (PHARMACY, "infostd")
    with pytest.raises(TypeError, match="ReviewDue and TermEnds"):
        engine.ledger.on_timer((PHARMACY, end.ladder, end.ticket_id), engine.ctx)
    # a checkpoint written before the keys were typed: its tuple fires as the same TermEnds would
    engine.firing_at = datetime(2026, 12, 2, tzinfo=CST)
    try:
        legacy = engine.ledger.on_timer(("end", PHARMACY, end.ladder, end.ticket_id), engine.ctx)
    finally:
        engine.firing_at = None
    assert [(t.action, t.effective_from) for t in legacy] == [("REINSTATE", date(2026, 12, 2))]
    with pytest.raises(AttributeError):
        end.code = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------ ledger = case file, every day
@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, list[Ticket], date, date]:
    """The autonomous-region profile for 60 days: settlement suspensions and their REINSTATEs, agreement
    terminations, interviews, rejected tickets."""
    tmp = tmp_path_factory.mktemp("region")
    days = 60
    cfg = SimConfig(out=tmp / "in", profile="autonomous-region", days=days, institutions=20, scale=0.05, seed=7)
    simulate(cfg)
    end = datetime.combine(cfg.start + timedelta(days=days), datetime.min.time(), CST)
    result = replay_dir(cfg.out, tmp / "out", load_pack("autonomous-region"), as_of=end)
    tickets = [Ticket.model_validate(t) for t in read_jsonl(tmp / "out" / "tickets.jsonl")]
    return result.engine, tickets, cfg.start, business_date(end)


def test_ledger_and_case_file_agree_on_what_is_in_force_every_day_of_a_run(
        region_run: tuple[Engine, list[Ticket], date, date]) -> None:
    engine, tickets, start, end = region_run
    actions = {t.action for t in tickets}
    assert {"SUSPEND_SETTLEMENT", "REINSTATE", "TERMINATE_AGREEMENT", "VOID"} <= actions, actions
    by_code: dict[str, list[Ticket]] = {}
    for t in tickets:
        by_code.setdefault(t.fixmedins_code, []).append(t)
    compared = set()
    for code, mine in by_code.items():
        day = start
        while day <= end + timedelta(days=120):  # past the run too: terms that end after it
            state, active = state_on(mine, day)
            assert state == engine.ledger.state(code, day), (code, day)
            assert [(s.ticket_id, s.until) for s in active] == [
                (s.ticket_id, s.until) for s in engine.ledger.in_force(code, day)], (code, day)
            compared.add(state)
            day += timedelta(days=1)
    assert compared == {"normal", "suspended", "terminated"}

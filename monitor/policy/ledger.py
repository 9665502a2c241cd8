"""The sanction ledger: turns rule violations into tickets, following the pack's ladders.

Source of truth for "what is in force for this institution, since when, until when, and what will be
re-checked next". Guarantees (design §5):
* the same cause never yields a second ticket (ticket ids are derived from ladder, institution,
  action, cause and effective date; the engine also drops an id it has already emitted);
* a sanction already in force is not re-issued; a trigger while the same ladder's restriction runs is
  kept: a review ladder judges it at the deadline, any other ladder judges it when the restriction ends
  (a new term from that day);
* a deadline (end of a suspension, a rectification date) is re-checked exactly once, by a timer that
  fires when event time passes it — not by the wall clock; every fixed-term suspension ends with a
  ``REINSTATE`` ticket (unless something that outlives it, a termination, is in force).

State model (#12). Two things can be restricted, each with its own suspension and its own end:
* the **outpatient-pooling designation** (门诊统筹定点资格): ``SUSPEND_OUTPATIENT_POOLING`` for a while;
  ``TERMINATE_OUTPATIENT_POOLING`` / ``CANCEL_OUTPATIENT_POOLING`` end it;
* the **whole agreement** (医保服务协议): ``SUSPEND_AGREEMENT`` for a while; ``TERMINATE_AGREEMENT`` ends it,
  and with it the pooling designation;
* **settlement** (医保结算, AR-AGR 三(二)2 暂停医保结算): ``SUSPEND_SETTLEMENT`` stops every insured
  settlement for a while without suspending the agreement — AR-AGR 三(三) counts "被中止医保服务协议" and
  does not count it; the agreement's termination ends it.
Once a scope has ended nothing of that scope is suspended or reinstated again; the other scope goes on
(an agreement can still be terminated after pooling was cancelled). A re-application ban is never lost:
an ending of a scope already ended is still issued when it carries a later ban (``reapply_after``).

Dates: a sanction covers ``[effective_from, effective_until)`` — ``effective_until`` is the first day it
no longer applies (exclusive); the ticket's text names the last day it does apply ("至 YYYY-MM-DD 止" is
that day, inclusive), so field and text agree.

What each action is, restricts and how long, its text, and what is in force on a day are defined in
``monitor.policy.sanctions`` (the case files read the same); the ledger holds ``Sanction`` objects
built there and decides when they end.

Timers (``LedgerContext.schedule`` with owner ``ledger``): typed keys, ``ReviewDue(code, ladder)`` (a review
ladder's deadline) and ``TermEnds(code, ladder, ticket_id)`` (a fixed term ends); ``on_timer`` refuses
any other key (the tuples of a checkpoint written before the keys were typed are read as these).

Findings about tickets (``ref_ticket_id``): ``ticket_rejected`` voids the ticket (it restricts nothing,
is reviewed by nobody, and counts toward nothing) and the ledger issues a ``VOID`` ticket saying so
(``ref_ticket_id`` = the voided ticket, ``reason`` = the finding kind), so the outputs alone tell a case
file it no longer holds; ``ticket_approved`` confirms it — a ladder's
``on_approved`` trigger fires (an approved REVIEW of 数据不完整 is the verification the clause asks for);
``rectified`` ends a rectification early where the ladder says the clause allows it (``rectified_ends``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from monitor.clock import add_months, add_years, business_date, day_start
from monitor.outputs import Summary, Ticket, make_id
from monitor.policy import sanctions
from monitor.policy.pack import LadderSpec, Pack
from monitor.policy.sanctions import AGREEMENT_ENDS, POOLING_ENDS, SCOPE, SUSPENSIONS, TERMINAL, Sanction

__all__ = ["AGREEMENT_ENDS", "POOLING_ENDS", "SCOPE", "SUSPENSIONS", "TERMINAL", "Deadline", "Ledger", "LedgerTimer",
           "ReviewDue", "Sanction", "TermEnds", "Trigger"]

if TYPE_CHECKING:
    from monitor.engine import LedgerContext, Registry
    from monitor.records import Finding


@dataclass(frozen=True, slots=True)
class ReviewDue:
    """Timer: ladder ``ladder``'s deadline for ``code`` is due — judge it (``suspend_then_review``)."""

    code: str
    ladder: str


@dataclass(frozen=True, slots=True)
class TermEnds:
    """Timer: ticket ``ticket_id`` of ladder ``ladder`` reaches the end of its fixed term for ``code``."""

    code: str
    ladder: str
    ticket_id: str


LedgerTimer = ReviewDue | TermEnds


@dataclass(frozen=True)
class Trigger:
    """Rule ``rule_id`` (or ``finding:KIND``) was violated by an institution on business ``day``,
    determined at event time ``at``."""

    rule_id: str
    fixmedins_code: str
    day: date
    at: datetime
    cause: str
    alert_id: str | None = None
    #: For DOWNGRADE_TIER ladders: the tier the institution goes down to (carried onto the ticket).
    new_tier: str | None = None


@dataclass(frozen=True)
class Step:
    """A step an ``escalation`` ladder has taken: its ticket, which step, from when, rectify by when."""

    ticket_id: str
    index: int
    effective_from: date
    rectify_by: date | None


@dataclass
class LadderState:
    active: Sanction | None = None
    deadline: date | None = None
    first_day: date | None = None
    violation_days: set[date] = field(default_factory=set)
    issued: set[tuple[str, ...]] = field(default_factory=set)
    rule_ids: list[str] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    #: Triggers that arrived while this ladder's restriction ran, judged when it ends.
    pending: list[Trigger] = field(default_factory=list)
    #: A non-restricting rectification notice (e.g. LN 限期整改) awaiting its review: its ticket id.
    notice: str | None = None
    #: escalation ladders: the steps taken (not rejected), oldest first.
    steps: list[Step] = field(default_factory=list)


RECENT_TICKETS = 64


@dataclass
class InstitutionLedger:
    ladders: dict[str, LadderState] = field(default_factory=dict)
    sanctions: list[Sanction] = field(default_factory=list)
    #: The institution's most recent ``RECENT_TICKETS`` ticket ids, newest last (inspection only: no
    #: decision reads it; bounded so that a ledger running for years does not grow with every ticket).
    tickets: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_TICKETS))
    #: ticket id → ladder, for findings that refer to a ticket (approved, rejected, rectified).
    ticket_ladder: dict[str, str] = field(default_factory=dict)
    #: Approved tickets whose ``on_approved`` trigger has fired (a finding on them is the same case).
    confirmed: set[str] = field(default_factory=set)

    def ladder(self, name: str) -> LadderState:
        return self.ladders.setdefault(name, LadderState())


@dataclass(frozen=True)
class Deadline:
    """The next thing the ledger will check for an institution (for inspectors' case files)."""

    ladder: str
    due: date
    checks: str
    if_violation: str | None
    otherwise: str | None


class Ledger:
    TIMER_OWNER = "ledger"

    def __init__(self, pack: Pack, registry: Registry) -> None:
        self.pack = pack
        self.registry = registry
        self.books: dict[str, InstitutionLedger] = {}

    # ------------------------------------------------------------------------------------ queries
    def book(self, code: str) -> InstitutionLedger:
        return self.books.setdefault(code, InstitutionLedger())

    def in_force(self, code: str, day: date) -> list[Sanction]:
        """What restricts ``code`` on ``day`` (``monitor.policy.sanctions.in_force``)."""
        book = self.books.get(code)
        if book is None:
            return []
        return sanctions.in_force(book.sanctions, day)

    def state(self, code: str, day: date) -> str:
        """``normal``, ``suspended`` or ``terminated`` on ``day`` (``monitor.policy.sanctions.state_of``)."""
        return sanctions.state_of(self.in_force(code, day))

    def deadlines(self, code: str) -> list[Deadline]:
        book = self.books.get(code)
        out = []
        if book is not None:
            for name, st in sorted(book.ladders.items()):
                if st.deadline is not None and st.active is not None:
                    spec = self.pack.ladders[name]
                    out.append(Deadline(
                        ladder=name, due=st.deadline,
                        checks=f"any of {', '.join(spec.triggers)} in the last {spec.review_lookback_days} days",
                        if_violation=spec.on_violation, otherwise=spec.on_clean,
                    ))
        return out

    def ended(self, code: str, scope: str, day: date) -> bool:
        """Whether ``scope`` (``pooling`` / ``agreement``) has ended for good by ``day``: the agreement by
        its termination; the pooling designation by its own end or by the agreement's."""
        for s in self.in_force(code, day):
            if s.action in AGREEMENT_ENDS or (scope == "pooling" and s.action in POOLING_ENDS):
                return True
        return False

    def _ban(self, code: str, scope: str) -> date | None:
        bans = [s.reapply_after for s in self.book(code).sanctions
                if not s.void and s.reapply_after is not None and s.action in TERMINAL
                and (s.scope == scope or s.action in AGREEMENT_ENDS)]
        return max(bans) if bans else None

    def _blocked(self, code: str, action: str, day: date, reapply: date | None) -> bool:
        """A restriction that cannot be issued on ``day``: a suspension of an ended scope; an ending of an
        ended scope unless it brings a later re-application ban (a ban is never lost)."""
        scope = SCOPE.get(action)
        if scope is None or not self.ended(code, scope, day):
            return False
        if action in TERMINAL and reapply is not None:
            ban = self._ban(code, scope)
            return ban is not None and ban >= reapply
        return True

    # ------------------------------------------------------------------------------------ tickets
    def _ticket(
        self,
        ctx: LedgerContext,
        ladder: str,
        spec: LadderSpec,
        trig: Trigger | None,
        code: str,
        action: str,
        cause: str,
        effective_from: date,
        effective_until: date | None = None,
        rectify_by: date | None = None,
        reapply_after: date | None = None,
        requires_verification: bool = False,
        rule_ids: list[str] | None = None,
        alert_ids: list[str] | None = None,
    ) -> Ticket:
        book = self.book(code)
        inst = self.registry.institution(code)
        name = inst.fixmedins_name if inst is not None else code
        rules = rule_ids if rule_ids is not None else ([trig.rule_id] if trig else [])
        alerts = alert_ids if alert_ids is not None else ([trig.alert_id] if trig and trig.alert_id else [])
        zh_rule = "、".join(self._rule_name(r, zh=True) for r in rules)
        en_rule = ", ".join(self._rule_name(r, zh=False) for r in rules)
        zh_act, en_act = sanctions.text(action)
        basis = "；".join(spec.basis)
        zh = f"{name}（{code}）因{zh_rule}（{basis}），{zh_act}，自{effective_from}起"
        en = f"{name} ({code}): {en_act} from {effective_from} because of {en_rule} ({'; '.join(spec.basis)})"
        if effective_until is not None:  # the field is exclusive; the text names the last day in force
            last = effective_until - timedelta(days=1)
            zh += f"至{last}止"
            en += f" through {last} (ends {effective_until})"
        if rectify_by is not None:
            zh += f"，须于{rectify_by}前整改到位"
            en += f"; rectify by {rectify_by}"
        if reapply_after is not None:
            zh += f"，{reapply_after}前不得再次申请"
            en += f"; may not reapply before {reapply_after}"
        new_tier = trig.new_tier if trig is not None else None
        if new_tier is not None:
            zh += f"，降至{new_tier}级"
            en += f"; new tier {new_tier}"
        if spec.borrow:  # a borrowed rule says whose it is (#12: borrowing only by naming)
            zh += f"（借用 {'、'.join(spec.borrow)} 的规则：{basis}）"
            en += f"; rule borrowed from {', '.join(spec.borrow)} ({'; '.join(spec.basis)})"
        if requires_verification:
            zh += "（须经核实后执行）"
            en += " (requires verification before execution)"
        ticket = Ticket(
            ticket_id=make_id("TK", ladder, code, action, cause, effective_from.isoformat()),
            fixmedins_code=code,
            admdvs=inst.admdvs if inst is not None else None,
            action=action,
            issued_at=ctx.now,
            effective_from=effective_from,
            effective_until=effective_until,
            rectify_by=rectify_by,
            reapply_after=reapply_after,
            requires_verification=requires_verification,
            new_tier=new_tier,
            ladder=ladder,
            rule_ids=rules,
            alert_ids=alerts,
            basis=list(spec.basis),
            policy=self.pack.label,
            summary=Summary(zh=zh + "。", en=en + "."),
        )
        book.tickets.append(ticket.ticket_id)
        book.ticket_ladder[ticket.ticket_id] = ladder
        sanction = sanctions.sanction_of(ladder, action, ticket.ticket_id, effective_from, effective_until, rectify_by,
                                         reapply_after)
        if sanction is not None:
            book.sanctions.append(sanction)
        return ticket

    def _rule_name(self, rule_id: str, zh: bool) -> str:
        if rule_id.startswith("finding:"):
            kind = rule_id.split(":", 1)[1]
            return f"经查实的{kind}" if zh else f"verified finding {kind}"
        spec = self.pack.rules.get(rule_id)
        if spec is None:
            return rule_id
        return spec.name_zh if zh else spec.name_en

    def _once_key(self, spec: LadderSpec, trig: Trigger) -> tuple[str, ...]:
        if spec.once_per == "cause":
            return ("cause", trig.cause)
        if spec.once_per == "institution":
            return ("institution",)
        if spec.once_per == "agreement_term":
            # the term in force on the trigger's business date, from every registry entry seen: a renewal
            # uploaded mid-term neither opens a second case in this term nor closes the next one
            from monitor.detectors.findings import agreement_term

            code = trig.fixmedins_code
            start, end = agreement_term(self.registry, code, trig.day, self.registry.agreement_terms(code))
            return ("term", start.isoformat() if start else f"…/{end}")
        year = self.registry.agreement_year_start(trig.fixmedins_code, trig.day)
        return ("year", str(year))

    # ------------------------------------------------------------------------------------ triggers
    def on_trigger(self, trig: Trigger, ctx: LedgerContext) -> list[Ticket]:
        out: list[Ticket] = []
        if not trig.rule_id.startswith("finding:") and not self.pack.applies(trig.rule_id, trig.day):
            ctx.count("ledger.rule_not_yet_in_force")  # the rule applies from a later date (pack)
            return out
        for name, spec in self.pack.ladders_for(trig.rule_id):
            if not self.pack.ladder_applies(name, trig.day):
                ctx.count("ledger.ladder_not_yet_in_force")
                continue
            st = self.book(trig.fixmedins_code).ladder(name)
            st.violation_days.add(trig.day)
            if len(st.violation_days) > 400:  # bound memory: only recent days are ever reviewed
                horizon = trig.day - timedelta(days=400)
                st.violation_days = {d for d in st.violation_days if d >= horizon}
            if spec.kind == "immediate":
                out.extend(self._immediate(ctx, name, spec, st, trig))
            elif spec.kind == "suspend_then_review":
                out.extend(self._suspend(ctx, name, spec, st, trig))
            elif spec.kind == "escalation":
                out.extend(self._escalate(ctx, name, spec, st, trig))
            else:
                out.extend(self._recurrence(ctx, name, spec, st, trig))
        return out

    def _effective(self, spec: LadderSpec, trig: Trigger) -> date:
        today = business_date(trig.at)
        return today + timedelta(days=1) if spec.effective == "next_day" else today

    def _restricting(self, action: str) -> bool:
        return action in sanctions.RESTRICTING

    def _running(self, st: LadderState, day: date) -> bool:
        return st.active is not None and not st.active.void and st.active.in_force(day)

    def _schedule_end(self, ctx: LedgerContext, name: str, code: str, sanction: Sanction) -> None:
        """A fixed-term suspension ends with REINSTATE (or the next kept trigger) on its ``until``."""
        if sanction.until is not None and sanction.action in SUSPENSIONS:
            ctx.schedule(day_start(sanction.until), self.TIMER_OWNER, TermEnds(code, name, sanction.ticket_id))

    def _immediate(self, ctx: LedgerContext, name: str, spec: LadderSpec, st: LadderState,
                   trig: Trigger, start: date | None = None) -> list[Ticket]:
        once = self._once_key(spec, trig)
        if once in st.issued:
            return []
        start = start or self._effective(spec, trig)
        reapply = add_years(start, spec.reapply_after_years) if spec.reapply_after_years else None
        if self._restricting(spec.action):
            if self._blocked(trig.fixmedins_code, spec.action, start, reapply):
                return []
            if spec.action in SUSPENSIONS and self._running(st, start):
                st.pending.append(trig)  # kept: judged when the running restriction ends
                return []
        st.issued.add(once)
        until = add_months(start, spec.duration_months) if spec.duration_months else None
        ticket = self._ticket(
            ctx, name, spec, trig, trig.fixmedins_code, spec.action, trig.cause, start,
            effective_until=until,
            rectify_by=add_months(start, spec.rectify_months) if spec.rectify_months else None,
            reapply_after=reapply,
            requires_verification=spec.requires_verification,
        )
        if self._restricting(spec.action):
            st.active = self.book(trig.fixmedins_code).sanctions[-1]
            self._schedule_end(ctx, name, trig.fixmedins_code, st.active)
        return [ticket]

    def _escalate(self, ctx: LedgerContext, name: str, spec: LadderSpec, st: LadderState,
                  trig: Trigger) -> list[Ticket]:
        """AR-AGR 三(二)2 "视情节严重程度和整改情况": found again after a step's rectification time and within
        the window of that step → the next step; before its rectification time → the same case."""
        code = trig.fixmedins_code
        start = self._effective(spec, trig)
        index = 0
        if st.steps:
            last = st.steps[-1]
            assert spec.escalate_within_months is not None
            if last.rectify_by is None or trig.day < last.rectify_by:
                ctx.count("ledger.escalation_same_case")  # still being rectified, or the last step taken
                return []
            if trig.day < add_months(last.effective_from, spec.escalate_within_months):
                index = last.index + 1
            else:
                ctx.count("ledger.escalation_starts_again")  # found again only after the window
        if self.ended(code, "agreement", start):
            return []  # nothing left to escalate on
        if index == 0:
            action, months, years, verify = spec.action, spec.duration_months, spec.reapply_after_years, \
                spec.requires_verification
        else:
            step = spec.escalation[index - 1]
            action, months, years, verify = step.action, step.duration_months, step.reapply_after_years, \
                step.requires_verification
        reapply = add_years(start, years) if years else None
        if self._restricting(action) and self._blocked(code, action, start, reapply):
            return []
        final = index == len(spec.escalation)
        assert spec.rectify_days is not None
        rectify = None if final else start + timedelta(days=spec.rectify_days)
        ticket = self._ticket(ctx, name, spec, trig, code, action, trig.cause, start,
                              effective_until=add_months(start, months) if months else None,
                              rectify_by=rectify, reapply_after=reapply, requires_verification=verify)
        st.steps = [*st.steps[-7:], Step(ticket.ticket_id, index, start, rectify)]  # bounded; the last decides
        if self._restricting(action):
            st.active = self.book(code).sanctions[-1]
            self._schedule_end(ctx, name, code, st.active)
        return [ticket]

    def _suspend(self, ctx: LedgerContext, name: str, spec: LadderSpec, st: LadderState,
                 trig: Trigger) -> list[Ticket]:
        if st.active is not None or st.notice is not None:
            if trig.rule_id not in st.rule_ids:
                st.rule_ids.append(trig.rule_id)
            return []  # in force or awaiting its review: the review's evidence (violation_days)
        start = self._effective(spec, trig)
        if self._blocked(trig.fixmedins_code, spec.action, start, None):
            return []
        if self._restricting(spec.action) is False and self.ended(trig.fixmedins_code, "agreement", start):
            return []  # a rectification notice to an institution whose agreement has ended
        if spec.duration_months:
            deadline = add_months(start, spec.duration_months)
            until, rectify = deadline, None
        else:
            deadline = add_months(start, spec.rectify_months or 1)
            until, rectify = None, deadline
        ticket = self._ticket(ctx, name, spec, trig, trig.fixmedins_code, spec.action, trig.cause, start,
                              effective_until=until, rectify_by=rectify,
                              requires_verification=spec.requires_verification)
        if self._restricting(spec.action):
            st.active = self.book(trig.fixmedins_code).sanctions[-1]
        else:
            st.notice = ticket.ticket_id
        st.deadline = deadline
        st.rule_ids = [trig.rule_id]
        st.alert_ids = [trig.alert_id] if trig.alert_id else []
        due = sanctions.review_at(deadline, spec.review_delay_hours)
        ctx.schedule(due, self.TIMER_OWNER, ReviewDue(trig.fixmedins_code, name))
        return [ticket]

    def _recurrence(self, ctx: LedgerContext, name: str, spec: LadderSpec, st: LadderState,
                    trig: Trigger, start: date | None = None) -> list[Ticket]:
        start = start or self._effective(spec, trig)
        if self._blocked(trig.fixmedins_code, spec.action, start, None):
            return []
        if self._running(st, trig.day) or self._running(st, start):
            st.pending.append(trig)  # found again while the suspension runs: judged when it ends
            return []
        within = spec.recurrence_within_months or 0
        if (st.first_day is not None and st.active is not None and st.active.until is not None
                and trig.day >= st.active.until and trig.day <= add_months(st.first_day, within)):
            assert spec.recurrence_action is not None
            reapply = (add_years(start, spec.recurrence_reapply_after_years)
                       if spec.recurrence_reapply_after_years else None)
            if self._blocked(trig.fixmedins_code, spec.recurrence_action, start, reapply):
                return []
            ticket = self._ticket(ctx, name, spec, trig, trig.fixmedins_code, spec.recurrence_action,
                                  trig.cause, start, reapply_after=reapply)
            st.active = None
            st.first_day = None
            return [ticket]
        st.first_day = trig.day
        until = add_months(start, spec.duration_months or 1)
        ticket = self._ticket(ctx, name, spec, trig, trig.fixmedins_code, spec.action, trig.cause, start,
                              effective_until=until, requires_verification=spec.requires_verification)
        st.active = self.book(trig.fixmedins_code).sanctions[-1]
        self._schedule_end(ctx, name, trig.fixmedins_code, st.active)
        return [ticket]

    # ------------------------------------------------------------------------------------ endings
    def _reinstate(self, ctx: LedgerContext, name: str, spec: LadderSpec, code: str, ending: Sanction, day: date,
                   cause: str, rule_ids: list[str], alert_ids: list[str]) -> list[Ticket]:
        """End ``ending`` on ``day`` with a REINSTATE ticket — unless its scope has ended for good (no
        REINSTATE after a termination) or another suspension of the same scope still runs (its own end
        reinstates)."""
        sanctions.end(ending, day)
        if self.ended(code, ending.scope, day):
            ctx.count("ledger.no_reinstate_after_termination")
            return []
        if any(s is not ending and s.action == ending.action for s in self.in_force(code, day)):
            ctx.count("ledger.reinstate_waits_for_another_suspension")
            return []
        return [self._ticket(ctx, name, spec, None, code, "REINSTATE", cause, day,
                             rule_ids=rule_ids, alert_ids=alert_ids)]

    def _end_of_term(self, key: TermEnds, ctx: LedgerContext) -> list[Ticket]:
        code, name, ticket_id = key.code, key.ladder, key.ticket_id
        spec = self.pack.ladders[name]
        st = self.book(code).ladder(name)
        ending = st.active
        if ending is None or ending.ticket_id != ticket_id or ending.void or ending.until is None:
            return []  # voided, or replaced by a later ticket of the ladder
        day = ending.until
        pending, st.pending = st.pending, []
        if pending:  # a kept trigger starts a new term (for recurrence: a new first finding)
            st.active, st.first_day = None, None
        out: list[Ticket] = []
        for trig in pending:  # kept triggers are judged now, as if they arrived on the day it ends
            if spec.kind == "immediate":
                out.extend(self._immediate(ctx, name, spec, st, trig, start=day))
            else:
                out.extend(self._recurrence(ctx, name, spec, st, trig, start=day))
        if any(t.action in SUSPENSIONS for t in out):
            return out  # the restriction continues under a new term: nothing to reinstate yet
        rules = [t.rule_id for t in pending] or [self._rule_of(ticket_id, code)]
        return self._reinstate(ctx, name, spec, code, ending, day, f"end:{ticket_id}",
                               [r for r in rules if r], []) + out

    def _rule_of(self, ticket_id: str, code: str) -> str:
        for name, spec in self.pack.ladders.items():
            if self.book(code).ticket_ladder.get(ticket_id) == name:
                return spec.triggers[0]
        return ""

    # ------------------------------------------------------------------------------------ findings
    def on_finding(self, rec: Finding, when: datetime, ctx: LedgerContext) -> list[Ticket]:
        """A record of ``medins.findings``. Findings about one of our tickets (``ref_ticket_id``) act on
        it; every finding is also a ``finding:KIND`` trigger for the ladders that take it."""
        code, day = rec.fixmedins_code, business_date(rec.occurred_at)
        book = self.book(code)
        ref = rec.ref_ticket_id
        out: list[Ticket] = []
        if ref is not None and ref in book.ticket_ladder:
            name = book.ticket_ladder[ref]
            spec = self.pack.ladders.get(name)
            st = book.ladder(name)
            if rec.kind == "ticket_rejected":
                voided = None
                for s in book.sanctions:
                    if s.ticket_id == ref:
                        s.void, voided = True, s
                if st.active is not None and st.active.ticket_id == ref:
                    st.active, st.deadline, st.pending = None, None, []
                if st.notice == ref:
                    st.notice, st.deadline = None, None
                if spec is not None and spec.kind == "escalation":  # the step was not taken
                    st.steps = [step for step in st.steps if step.ticket_id != ref]
                ctx.count("ledger.ticket_rejected")
                if spec is not None:
                    out.append(self._void(ctx, name, spec, code, ref, voided, rec, day))
            elif rec.kind == "ticket_approved" and spec is not None and spec.on_approved and ref not in book.confirmed:
                book.confirmed.add(ref)
                out.extend(self.on_trigger(Trigger(spec.on_approved, code, day, when, f"approved:{ref}"), ctx))
            elif rec.kind == "rectified" and spec is not None:
                out.extend(self._rectified(ctx, name, spec, st, code, ref, day))
        if ref is not None and ref in book.confirmed and rec.kind not in ("ticket_approved", "ticket_rejected"):
            spec = self.pack.ladders.get(book.ticket_ladder[ref])
            if spec is not None and spec.on_approved == f"finding:{rec.kind}":
                ctx.count("ledger.finding_of_confirmed_review")  # the approval already counted it
                return out
        out.extend(self.on_trigger(Trigger(f"finding:{rec.kind}", code, day, when, rec.finding_id), ctx))
        return out

    def _void(self, ctx: LedgerContext, name: str, spec: LadderSpec, code: str, ref: str, voided: Sanction | None,
              rec: Finding, day: date) -> Ticket:
        """The ``VOID`` ticket that tells downstream ticket ``ref`` no longer holds: the agency rejected it
        (finding ``rec``). Its id depends on the voided ticket alone, so a rejection sent twice is one VOID;
        its basis is the clause of the measure it voids (no clause governs the rejection itself: the
        agency decides). Effective the rejection's business day; the voided ticket never held."""
        inst = self.registry.institution(code)
        who = inst.fixmedins_name if inst is not None else code
        basis = "；".join(spec.basis)
        what_zh = what_en = ""
        if voided is not None:
            zh_act, en_act = sanctions.text(voided.action)
            what_zh, what_en = f"（{zh_act}，自{voided.effective_from}起）", f" ({en_act} from {voided.effective_from})"
        ticket = Ticket(
            ticket_id=make_id("TK", name, code, "VOID", ref),
            fixmedins_code=code,
            admdvs=inst.admdvs if inst is not None else None,
            action="VOID",
            issued_at=ctx.now,
            effective_from=day,
            ladder=name,
            rule_ids=[f"finding:{rec.kind}"],
            alert_ids=[],
            basis=list(spec.basis),
            policy=self.pack.label,
            summary=Summary(
                zh=f"{who}（{code}）工单 {ref}{what_zh}已被驳回（{rec.finding_id}），"
                   f"自{day}起作废，不再执行（{basis}）。",
                en=f"{who} ({code}): ticket {ref}{what_en} was rejected ({rec.finding_id}); void from {day}, "
                   f"it no longer holds ({'; '.join(spec.basis)}).",
            ),
            ref_ticket_id=ref,
            reason=rec.kind,
        )
        self.book(code).tickets.append(ticket.ticket_id)
        return ticket

    def _rectified(self, ctx: LedgerContext, name: str, spec: LadderSpec, st: LadderState, code: str, ref: str,
                   day: date) -> list[Ticket]:
        if not spec.rectified_ends:
            ctx.count("ledger.rectified_not_ending")  # the clause fixes the term; the review decides
            return []
        if st.notice == ref:  # a rectification notice closed: nothing was restricted, nothing to issue
            st.notice, st.deadline, st.violation_days = None, None, set()
            return []
        if st.active is None or st.active.ticket_id != ref:
            return []
        end = max(day + timedelta(days=1), st.active.effective_from)
        ending = st.active
        st.active, st.deadline, st.violation_days = None, None, set()
        return self._reinstate(ctx, name, spec, code, ending, end, f"rectified:{ref}",
                               list(st.rule_ids), list(st.alert_ids))

    # ------------------------------------------------------------------------------------ deadlines
    def on_timer(self, key: Hashable, ctx: LedgerContext) -> list[Ticket]:
        """A deadline is due: ``TermEnds`` (a fixed term ends) or ``ReviewDue`` (a review is judged). A
        checkpoint written before the keys were typed holds ``("review", code, ladder)`` /
        ``("end", code, ladder, ticket_id)``: read as the same keys once, on restore's first firing."""
        if isinstance(key, tuple) and key and key[0] in ("review", "end"):
            key = ReviewDue(*key[1:]) if key[0] == "review" else TermEnds(*key[1:])
        if isinstance(key, TermEnds):
            return self._end_of_term(key, ctx)
        if not isinstance(key, ReviewDue):
            raise TypeError(f"the ledger schedules ReviewDue and TermEnds timers, not {type(key).__name__}")
        code, name = key.code, key.ladder
        spec = self.pack.ladders[name]
        st = self.book(code).ladder(name)
        if (st.active is None and st.notice is None) or st.deadline is None:
            return []
        deadline = st.deadline
        window = {deadline - timedelta(days=i) for i in range(1, spec.review_lookback_days + 1)}
        hits = sorted(d for d in st.violation_days if d in window)
        action = spec.on_violation if hits else spec.on_clean
        verify = bool(hits) and spec.on_violation_requires_verification
        missing_evidence = False
        if not hits and spec.review_evidence is not None and st.active is not None:
            # EZ-DM 二(一)/二(三): a clean review needs uploads seen in the window, not silence
            ev = spec.review_evidence
            first = deadline - timedelta(days=spec.review_lookback_days)
            base_end = st.active.effective_from - timedelta(days=1)
            facts = ctx.review_evidence(code, ev.streams, (first, deadline - timedelta(days=1)),
                                        (base_end - timedelta(days=ev.baseline_days - 1), base_end),
                                        ev.min_volume_share, ev.max_late_share, ev.each_stream)
            if not facts.get("ok"):
                action, verify, missing_evidence = ev.on_missing, True, True
        cause = "review:" + (",".join(d.isoformat() for d in hits) if hits
                             else "no_evidence" if missing_evidence else "clean")
        reapply = (add_years(deadline, spec.on_violation_reapply_after_years)
                   if hits and spec.on_violation_reapply_after_years else None)
        ending = st.active
        rules, alerts = list(st.rule_ids), list(st.alert_ids)
        st.active, st.notice, st.deadline = None, None, None
        st.violation_days = {d for d in st.violation_days if d >= deadline}
        if ending is not None and ending.until is None:
            sanctions.end(ending, deadline)  # a rectification-bounded suspension ends at its review
        if action is None:
            return []
        if action == "REINSTATE":
            assert ending is not None
            return self._reinstate(ctx, name, spec, code, ending, deadline, cause, rules, alerts)
        if self._blocked(code, action, deadline, reapply) or (
                ending is not None and self.ended(code, ending.scope, deadline) and action not in TERMINAL):
            ctx.count("ledger.review_after_termination")
            return []
        return [self._ticket(ctx, name, spec, None, code, action, cause, deadline, reapply_after=reapply,
                             rule_ids=rules, alert_ids=alerts, requires_verification=verify)]

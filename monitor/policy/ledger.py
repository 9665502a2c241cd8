"""The sanction ledger: turns rule violations into tickets, following the pack's ladders.

Source of truth for "what is in force for this institution, since when, until when, and what will be
re-checked next". Guarantees (design §5):
* the same cause never yields a second ticket (ticket ids are derived from ladder, institution,
  action, cause and effective date; the engine also drops an id it has already emitted);
* a sanction already in force is not re-issued (a trigger while a suspension runs only raises alerts);
* a deadline (end of a suspension, a rectification date) is re-checked exactly once, by a timer that
  fires when event time passes it — not by the wall clock.

After a terminal action (terminate/cancel the outpatient-pooling designation, terminate the agreement)
no further suspension of outpatient pooling is issued for that institution: there is nothing left to
suspend. Alerts keep flowing.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from monitor.clock import add_months, add_years, business_date, day_start
from monitor.outputs import Summary, Ticket, make_id
from monitor.policy.pack import LadderSpec, Pack

if TYPE_CHECKING:
    from monitor.engine import Context, Registry

#: Actions that end a designation or an agreement: in force indefinitely once issued.
TERMINAL = frozenset({"TERMINATE_OUTPATIENT_POOLING", "CANCEL_OUTPATIENT_POOLING", "TERMINATE_AGREEMENT"})
#: Actions that stop settlement for a while (what `status.settled_while_suspended` looks at).
SUSPENSIONS = frozenset({"SUSPEND_OUTPATIENT_POOLING", "SUSPEND_AGREEMENT"})

ACTION_TEXT: dict[str, tuple[str, str]] = {
    "SUSPEND_OUTPATIENT_POOLING": ("中止门诊统筹服务", "suspend outpatient-pooling service"),
    "TERMINATE_OUTPATIENT_POOLING": ("终止门诊统筹定点资格", "terminate the outpatient-pooling designation"),
    "SUSPEND_AGREEMENT": ("中止医保服务协议", "suspend the medical-insurance service agreement"),
    "CANCEL_OUTPATIENT_POOLING": ("取消门诊统筹定点资格", "cancel the outpatient-pooling designation"),
    "TERMINATE_AGREEMENT": ("解除医保服务协议", "terminate the service agreement"),
    "REINSTATE": ("恢复医保服务", "reinstate the suspended service"),
    "DOWNGRADE_TIER": ("降低医保结算等级", "downgrade the settlement tier"),
    "INTERVIEW": ("约谈主要负责人", "interview the person in charge"),
    "REVIEW": ("立案核查（须经核实）", "open a review (verification required)"),
    "NO_RENEWAL": ("不再续签服务协议", "do not renew the service agreement"),
}


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


@dataclass
class Sanction:
    """A ticket that restricts an institution, and the days it covers: ``[effective_from, until)``;
    ``until`` None = until a later ticket ends it (or for good, when terminal)."""

    ladder: str
    action: str
    ticket_id: str
    effective_from: date
    until: date | None

    def in_force(self, day: date) -> bool:
        return self.effective_from <= day and (self.until is None or day < self.until)


@dataclass
class LadderState:
    active: Sanction | None = None
    deadline: date | None = None
    first_day: date | None = None
    violation_days: set[date] = field(default_factory=set)
    issued: set[tuple[str, ...]] = field(default_factory=set)
    rule_ids: list[str] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)


@dataclass
class InstitutionLedger:
    ladders: dict[str, LadderState] = field(default_factory=dict)
    sanctions: list[Sanction] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)

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
        book = self.books.get(code)
        if book is None:
            return []
        return [s for s in book.sanctions if s.in_force(day) and s.action in SUSPENSIONS | TERMINAL]

    def state(self, code: str, day: date) -> str:
        """``normal``, ``suspended`` or ``terminated`` on ``day``."""
        active = self.in_force(code, day)
        if any(s.action in TERMINAL for s in active):
            return "terminated"
        if active:
            return "suspended"
        return "normal"

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

    def _terminated(self, code: str, day: date) -> bool:
        return self.state(code, day) == "terminated"

    # ------------------------------------------------------------------------------------ tickets
    def _ticket(
        self,
        ctx: Context,
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
        zh_act, en_act = ACTION_TEXT[action]
        basis = "；".join(spec.basis)
        zh = f"{name}（{code}）因{zh_rule}（{basis}），{zh_act}，自{effective_from}起"
        en = f"{name} ({code}): {en_act} from {effective_from} because of {en_rule} ({'; '.join(spec.basis)})"
        if effective_until is not None:
            zh += f"至{effective_until}止"
            en += f" until {effective_until}"
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
        if action in SUSPENSIONS or action in TERMINAL:
            book.sanctions.append(Sanction(ladder, action, ticket.ticket_id, effective_from,
                                           None if action in TERMINAL else (effective_until or rectify_by)))
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
        inst = self.registry.institution(trig.fixmedins_code)
        if spec.once_per == "agreement_term":
            return ("term", str(inst.agreement_start) if inst else "?")
        year = self.registry.agreement_year_start(trig.fixmedins_code, trig.day)
        return ("year", str(year))

    # ------------------------------------------------------------------------------------ triggers
    def on_trigger(self, trig: Trigger, ctx: Context) -> list[Ticket]:
        out: list[Ticket] = []
        for name, spec in self.pack.ladders_for(trig.rule_id):
            st = self.book(trig.fixmedins_code).ladder(name)
            st.violation_days.add(trig.day)
            if len(st.violation_days) > 400:  # bound memory: only recent days are ever reviewed
                horizon = trig.day - timedelta(days=400)
                st.violation_days = {d for d in st.violation_days if d >= horizon}
            if spec.kind == "immediate":
                out.extend(self._immediate(ctx, name, spec, st, trig))
            elif spec.kind == "suspend_then_review":
                out.extend(self._suspend(ctx, name, spec, st, trig))
            else:
                out.extend(self._recurrence(ctx, name, spec, st, trig))
        return out

    def _effective(self, spec: LadderSpec, trig: Trigger) -> date:
        today = business_date(trig.at)
        return today + timedelta(days=1) if spec.effective == "next_day" else today

    def _restricting(self, action: str) -> bool:
        return action in SUSPENSIONS or action in TERMINAL

    def _immediate(self, ctx: Context, name: str, spec: LadderSpec, st: LadderState,
                   trig: Trigger) -> list[Ticket]:
        once = self._once_key(spec, trig)
        if once in st.issued:
            return []
        start = self._effective(spec, trig)
        if self._restricting(spec.action):
            if self._terminated(trig.fixmedins_code, start):
                return []
            if st.active is not None and st.active.in_force(start):
                return []
        st.issued.add(once)
        until = add_months(start, spec.duration_months) if spec.duration_months else None
        ticket = self._ticket(
            ctx, name, spec, trig, trig.fixmedins_code, spec.action, trig.cause, start,
            effective_until=until,
            rectify_by=add_months(start, spec.rectify_months) if spec.rectify_months else None,
            reapply_after=add_years(start, spec.reapply_after_years) if spec.reapply_after_years else None,
            requires_verification=spec.requires_verification,
        )
        if self._restricting(spec.action):
            st.active = self.book(trig.fixmedins_code).sanctions[-1]
        return [ticket]

    def _suspend(self, ctx: Context, name: str, spec: LadderSpec, st: LadderState,
                 trig: Trigger) -> list[Ticket]:
        if st.active is not None:
            if trig.rule_id not in st.rule_ids:
                st.rule_ids.append(trig.rule_id)
            return []  # in force or awaiting its review: alerts only
        start = self._effective(spec, trig)
        if self._terminated(trig.fixmedins_code, start):
            return []
        if spec.duration_months:
            deadline = add_months(start, spec.duration_months)
            until, rectify = deadline, None
        else:
            deadline = add_months(start, spec.rectify_months or 1)
            until, rectify = None, deadline
        ticket = self._ticket(ctx, name, spec, trig, trig.fixmedins_code, spec.action, trig.cause, start,
                              effective_until=until, rectify_by=rectify,
                              requires_verification=spec.requires_verification)
        st.active = self.book(trig.fixmedins_code).sanctions[-1]
        st.deadline = deadline
        st.rule_ids = [trig.rule_id]
        st.alert_ids = [trig.alert_id] if trig.alert_id else []
        due = day_start(deadline) + timedelta(hours=spec.review_delay_hours)
        ctx.schedule(due, self.TIMER_OWNER, ("review", trig.fixmedins_code, name))
        return [ticket]

    def _recurrence(self, ctx: Context, name: str, spec: LadderSpec, st: LadderState,
                    trig: Trigger) -> list[Ticket]:
        start = self._effective(spec, trig)
        if self._terminated(trig.fixmedins_code, start):
            return []
        if st.active is not None and st.active.in_force(trig.day):
            return []  # found again while the suspension runs: the sanction is already in force
        within = spec.recurrence_within_months or 0
        if (st.first_day is not None and st.active is not None and st.active.until is not None
                and trig.day >= st.active.until and trig.day <= add_months(st.first_day, within)):
            assert spec.recurrence_action is not None
            reapply = (add_years(start, spec.recurrence_reapply_after_years)
                       if spec.recurrence_reapply_after_years else None)
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
        return [ticket]

    # ------------------------------------------------------------------------------------ deadlines
    def on_timer(self, key: Hashable, ctx: Context) -> list[Ticket]:
        assert isinstance(key, tuple) and key[0] == "review"
        _, code, name = key
        spec = self.pack.ladders[name]
        st = self.book(code).ladder(name)
        if st.active is None or st.deadline is None:
            return []
        deadline = st.deadline
        window = {deadline - timedelta(days=i) for i in range(1, spec.review_lookback_days + 1)}
        hits = sorted(d for d in st.violation_days if d in window)
        action = spec.on_violation if hits else spec.on_clean
        assert action is not None
        verify = False
        missing_evidence = False
        if not hits and spec.review_evidence is not None:
            # EZ-DM 二(一)/二(三): a clean review needs uploads seen in the window, not silence
            ev = spec.review_evidence
            first = deadline - timedelta(days=spec.review_lookback_days)
            base_end = st.active.effective_from - timedelta(days=1)
            facts = ctx.review_evidence(code, ev.streams, (first, deadline - timedelta(days=1)),
                                        (base_end - timedelta(days=ev.baseline_days - 1), base_end),
                                        ev.min_volume_share, ev.max_late_share, ev.each_stream)
            if not facts.get("ok"):
                action, verify, missing_evidence = ev.on_missing, True, True
        if st.active.until is None:
            st.active.until = deadline  # a rectification-bounded suspension ends at its review
        cause = "review:" + (",".join(d.isoformat() for d in hits) if hits
                             else "no_evidence" if missing_evidence else "clean")
        reapply = (add_years(deadline, spec.on_violation_reapply_after_years)
                   if hits and spec.on_violation_reapply_after_years else None)
        ticket = self._ticket(ctx, name, spec, None, code, action, cause, deadline, reapply_after=reapply,
                              rule_ids=list(st.rule_ids), alert_ids=list(st.alert_ids),
                              requires_verification=verify)
        st.active = None
        st.deadline = None
        st.violation_days = {d for d in st.violation_days if d >= deadline}
        return [ticket]

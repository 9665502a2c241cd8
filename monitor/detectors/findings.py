"""Counting rules on verified findings (``medins.findings``) and on the monitor's own tickets.

* ``complaints.repeated`` — EZ-DM 二(一): "服务协议年度内，有 2 次及以上投诉经查实的，中止门诊统筹服务
  1 个月". ``min_count`` (2) ``complaint_verified`` findings whose ``occurred_at`` falls in the same
  agreement year (the anniversary of ``agreement_start`` that contains it; the calendar year when the
  institution is not registered) → critical alert and the ``complaints`` ladder (suspend 1 month). The
  year is decided by the finding's own date, so a complaint on the last day of one agreement year and
  one on the first day of the next never add up.
* ``cloud_monitor.repeated`` — EZ-DM 二(二): "协议期内，因云监控查实不符合管理规定被通报两次及以上的，
  取消门诊统筹定点资格". ``min_count`` (2) ``cloud_monitor_notice`` findings dated within the same agreement
  term [``agreement_start``, ``agreement_end``] → ``cloud_monitor`` ladder (cancel).
* ``suspensions.repeated`` — AR-AGR 三(三): "对协议有效期内累计2次及以上被中止医保服务协议…应当即时解除
  协议". Agreement suspensions in one agreement term: ``SUSPEND_AGREEMENT`` tickets this monitor issued
  (seen through ``on_ticket``) and ``agreement_suspended`` findings; a finding whose ``ref_ticket_id`` is a
  ticket already counted is the same suspension (the case system reporting that it executed it) and is
  not counted again. ``min_count`` (2) → ``suspensions`` ladder (terminate the agreement, 3-year ban).

Each finding counts once per ``finding_id`` (the engine drops resends within its dedup horizon; the
counters also remember ids for the whole period, so a resend months later does not count twice).

State model (#12):
* a count is **consumed** by the trigger it causes: the next ``min_count`` events of the same period
  trigger again (cause ``period:LABEL#N``) — a third and fourth verified complaint in one agreement year
  are a second case (reading of EZ-DM 二(一) "2 次及以上": each suspension answers for the complaints
  that caused it); the ledger keeps a trigger that arrives while the first suspension runs and starts
  the second when the first ends;
* agreement terms come from every registry entry seen (``institutions`` stream), not the current one: a
  renewal uploaded mid-term does not split the count of the term a finding is dated in;
* a ``ticket_rejected`` finding on a counted ``SUSPEND_AGREEMENT`` ticket removes it from the count
  (a rejected ticket suspended nothing);
* AR-AGR 三(三) "即时解除": the termination triggered by our own suspension ticket is dated the day that
  suspension takes effect (``at`` = its ``effective_from``), never before the suspension it counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import Field

from monitor.clock import add_years, business_date, day_end, day_start
from monitor.contract import Findings, Params, Rule, RuleContext
from monitor.records import Finding, Institution

if TYPE_CHECKING:
    from monitor.outputs import Ticket
    from monitor.policy.pack import Pack
    from monitor.records import Record


class CountParams(Params):
    min_count: int = Field(ge=1)


class SuspensionParams(Params):
    min_count: int = Field(ge=1)
    #: Ticket actions of this monitor that are agreement suspensions.
    ticket_actions: list[str] = Field(default=["SUSPEND_AGREEMENT"], min_length=0)
    #: Finding kinds that are agreement suspensions imposed by the agency.
    finding_kinds: list[str] = Field(default=["agreement_suspended"])


class _Agreements(Protocol):
    """What the period helpers read: the registry (``RegistryView`` of a rule, or the ledger's)."""

    def institution(self, code: str) -> Institution | None: ...

    def agreement_year_start(self, code: str, day: date) -> date | None: ...


Period = tuple[date | None, date | None]  # [start, end] inclusive; None = open (not known)


def agreement_year(registry: _Agreements, code: str, day: date) -> Period:
    """The agreement year containing ``day`` (the calendar year when the institution is unknown)."""
    inst = registry.institution(code)
    if inst is None:
        return (date(day.year, 1, 1), date(day.year, 12, 31))
    if day < inst.agreement_start:
        return (None, inst.agreement_start - timedelta(days=1))
    start = registry.agreement_year_start(code, day)
    assert start is not None
    return (start, add_years(start, 1) - timedelta(days=1))


def agreement_term(registry: _Agreements, code: str, day: date,
                   known: set[tuple[date, date]] | None = None) -> Period:
    """The agreement term containing ``day``: one of the ``known`` terms (every registry entry seen)
    if one contains it; else as far as the current registry entry knows: the registered term; before
    it, an earlier term ending the day before; after it, a later term starting the day after."""
    for start, end in sorted(known or ()):
        if start <= day <= end:
            return (start, end)
    inst = registry.institution(code)
    if inst is None:
        return (None, None)
    if day < inst.agreement_start:
        return (None, inst.agreement_start - timedelta(days=1))
    if day > inst.agreement_end:
        return (inst.agreement_end + timedelta(days=1), None)
    return (inst.agreement_start, inst.agreement_end)


def period_label(period: Period) -> str:
    start, end = period
    return f"{start.isoformat() if start else '…'}/{end.isoformat() if end else '…'}"


def _window(period: Period, day: date) -> tuple[datetime, datetime]:
    start, end = period
    return day_start(start or day), day_end(end or day)


@dataclass(slots=True)
class Tally:
    """Events counted in one period: event id → business date."""

    events: dict[str, date] = field(default_factory=dict)
    fired: bool = False
    #: Events already consumed by a trigger, and how many triggers the period has caused.
    used: set[str] = field(default_factory=set)
    fires: int = 0


RULES = ("complaints.repeated", "cloud_monitor.repeated", "suspensions.repeated")


class FindingCounters(Rule):
    name: ClassVar[str] = "findings"
    rule_ids: ClassVar[tuple[str, ...]] = RULES
    streams: ClassVar[tuple[str, ...]] = ("findings", "institutions")
    params: ClassVar[dict[str, type[Params]]] = {
        "complaints.repeated": CountParams,
        "cloud_monitor.repeated": CountParams,
        "suspensions.repeated": SuspensionParams,
    }
    state: ClassVar[tuple[str, ...]] = ("tallies", "counted_tickets", "terms")
    watches_tickets: ClassVar[bool] = True

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        self.enabled = {r: pack.enabled(r) for r in RULES}
        self.min_count: dict[str, int] = {}
        self.ticket_actions: frozenset[str] = frozenset()
        self.suspension_kinds: frozenset[str] = frozenset()
        for rule in RULES:
            if self.enabled[rule]:
                self.min_count[rule] = self.param_model(rule).min_count
        if self.enabled["suspensions.repeated"]:
            sp: SuspensionParams = self.param_model("suspensions.repeated")
            self.ticket_actions = frozenset(sp.ticket_actions)
            self.suspension_kinds = frozenset(sp.finding_kinds)
        #: (rule, institution) → period → tally. Old periods are dropped as newer ones appear.
        self.tallies: dict[tuple[str, str], dict[Period, Tally]] = {}
        #: Ticket ids counted as suspensions (to recognise a finding that reports executing one).
        self.counted_tickets: set[str] = set()
        #: institution → every agreement term its registry entries have carried.
        self.terms: dict[str, set[tuple[date, date]]] = {}

    # ---------------------------------------------------------------------------------- inputs
    def _term(self, ctx: RuleContext, code: str, day: date) -> Period:
        return agreement_term(ctx.registry, code, day, self.terms.get(code))

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        if isinstance(rec, Institution):
            known = self.terms.setdefault(rec.fixmedins_code, set())
            if len(known) < 64:  # bounded: an institution signs one agreement a year
                known.add((rec.agreement_start, rec.agreement_end))
            return []
        if not isinstance(rec, Finding):
            return []
        day = business_date(rec.occurred_at)
        code = rec.fixmedins_code
        if rec.kind == "ticket_rejected" and rec.ref_ticket_id in self.counted_tickets:
            self._uncount(ctx, code, f"ticket:{rec.ref_ticket_id}")
            return []
        out: Findings = []
        if rec.kind == "complaint_verified" and self.enabled["complaints.repeated"]:
            out += self._count(ctx, "complaints.repeated", code, agreement_year(ctx.registry, code, day),
                               rec.finding_id, day)
        elif rec.kind == "cloud_monitor_notice" and self.enabled["cloud_monitor.repeated"]:
            out += self._count(ctx, "cloud_monitor.repeated", code, self._term(ctx, code, day),
                               rec.finding_id, day)
        if rec.kind in self.suspension_kinds and self.enabled["suspensions.repeated"]:
            if rec.ref_ticket_id is not None and rec.ref_ticket_id in self.counted_tickets:
                ctx.count("suspensions.finding_of_counted_ticket")
                return out
            out += self._count(ctx, "suspensions.repeated", code, self._term(ctx, code, day),
                               f"finding:{rec.finding_id}", day)
        return out

    def on_ticket(self, ticket: Ticket, ctx: RuleContext) -> Findings:
        if ticket.action not in self.ticket_actions or not self.enabled["suspensions.repeated"]:
            return []
        self.counted_tickets.add(ticket.ticket_id)
        code, day = ticket.fixmedins_code, ticket.effective_from
        # AR-AGR 三(三): terminate when the counted suspension takes effect, not before it
        return self._count(ctx, "suspensions.repeated", code, self._term(ctx, code, day),
                           f"ticket:{ticket.ticket_id}", day, at=max(ctx.now, day_start(day)))

    def _uncount(self, ctx: RuleContext, code: str, event: str) -> None:
        for tally in self.tallies.get(("suspensions.repeated", code), {}).values():
            if event in tally.events:
                if event in tally.used:
                    ctx.count("suspensions.rejected_after_it_counted")  # the termination is issued
                    return
                del tally.events[event]
                ctx.count("suspensions.rejected_ticket_uncounted")
                return

    # ---------------------------------------------------------------------------------- judgment
    def _count(self, ctx: RuleContext, rule: str, code: str, period: Period, event: str, day: date,
               at: datetime | None = None) -> Findings:
        if not ctx.pack.applies(rule, day):
            ctx.count(f"{rule}.before_effective_date")  # an event before the rule applies counts for nothing
            return []
        periods = self.tallies.setdefault((rule, code), {})
        tally = periods.get(period)
        if tally is None:
            tally = periods[period] = Tally()
            self._forget_old(periods, day)
        if event in tally.events:
            ctx.count(f"{rule}.resent")
            return []
        tally.events[event] = day
        fresh = {e: d for e, d in tally.events.items() if e not in tally.used}
        if len(fresh) < self.min_count[rule]:
            return []
        tally.fired = True
        tally.used |= set(fresh)
        tally.fires += 1
        events = sorted(fresh.items(), key=lambda kv: (kv[1], kv[0]))
        start, end = _window(period, day)
        label = period_label(period) + (f"#{tally.fires}" if tally.fires > 1 else "")
        alert = ctx.alert(
            rule, code, subject=label, window_start=start, window_end=end,
            evidence={
                "period": label,
                "count": len(events),
                "min_count": self.min_count[rule],
                "events": [f"{d.isoformat()} {e}" for e, d in events],
            },
            vola_cont=f"{label} 期间累计 {len(events)} 次（≥{self.min_count[rule]}）",
        )
        escalation = ctx.escalate(rule, code, day, cause=f"period:{label}", alert=alert, at=at)
        return [alert, escalation] if alert is not None else [escalation]

    @staticmethod
    def _forget_old(periods: dict[Period, Tally], day: date) -> None:
        """Keep memory bounded: periods that ended more than two years before ``day`` are done."""
        horizon = day - timedelta(days=800)
        for key in [k for k in periods if k[1] is not None and k[1] < horizon]:
            del periods[key]

"""Sanctions, defined once (issue #14 point 5): what each ticket action is, what it restricts, for how
long, how it ends, and what is in force on a day. The ledger (``monitor.policy.ledger``: what rules see
through ``monitor.contract.SanctionView``, what its ladders check) and the inspector's case files
(``monitor.inspect.model``: the state on a day, the sanctions in force, the chart's periods) both read
it; neither derives these things on its own.

**Actions** (``ACTIONS``: one ``ActionDef`` each):

* ``kind`` — ``suspension`` (restricts for a while: 中止 / 暂停), ``ending`` (restricts for good: 终止 /
  取消 / 解除), ``measure`` (restricts nothing: 约谈, 立案核查, 降级, 不再续签), ``reinstate`` (ends a
  suspension: 恢复), ``void`` (a ticket that no longer holds: the agency rejected it);
* ``scope`` — what a restricting action suspends or ends (#12): ``pooling`` (门诊统筹定点资格, EZ-DM 二),
  ``agreement`` (医保服务协议; its end also ends the pooling designation) or ``settlement`` (医保结算,
  AR-AGR 三(二)2 暂停医保结算: not an agreement suspension, 三(三) does not count it);
* ``restricts`` — which settlements it stops: ``pooling`` (门诊统筹 only) or ``insured`` (every insured
  settlement: the agreement's suspension or end, and 暂停医保结算) — what
  ``status.settled_while_suspended`` checks a settlement against;
* ``term`` — its duration rule: ``months`` (calendar months from ``effective_from``, the ladder's
  ``duration_months``: EZ-DM "中止…1 个月"; ``monitor.clock.add_months``, 01-31 + 1 month = 02-28),
  ``rectify`` (until the rectification date ``rectify_by``, the ladder's ``rectify_months`` /
  ``rectify_days``: EZ-DM 二(三) "限期 1 个月整改", AR-AGR 三(二)2), ``for_good`` (an ending; a
  re-application ban ``reapply_after`` = ``effective_from`` + the ladder's years, EZ-DM 二(二) 3 年,
  AR-AGR 三(三)), ``none`` (a measure);
* ``ends_by`` — what can end it before its term: ``REINSTATE`` (the ledger's end of term, its review's
  clean result, or a ``rectified`` finding where the ladder allows it), ``VOID`` (the agency rejected the
  ticket: it never held);
* ``zh`` / ``en`` — the action's name: the ticket's text and the inspector's display name
  (``monitor.inspect.names.action_name`` reads it from here).

**Spans.** A restricting ticket covers ``[effective_from, until)`` (``span``): ``until`` is the first day
it no longer applies — ``effective_until`` for a fixed term, ``rectify_by`` for a rectification-bounded
suspension (reviewed on that day), none for an ending or an open suspension. A ``REINSTATE`` of a ladder
effective on day D ends that ladder's latest suspension (not voided) issued before it, from D; a
``VOID`` (``ref_ticket_id``) makes the ticket it names restrict nothing, on every day (it never held).

**Deadlines.** A review ladder's suspension is judged at ``review_at(until, review_delay_hours)``: the
ledger's ``ReviewDue`` timer fires then, and the case file shows it as the deadline's ``checked_at``.

**State in force** on day D (``in_force``, ``state_of``): the restricting sanctions whose span covers D
and that are not void; ``terminated`` if one of them is an ending, ``suspended`` if any, else ``normal``.
``replay(tickets)`` builds the sanctions from the tickets a run wrote (the case files); the ledger builds
the same ``Sanction`` objects with ``sanction_of`` as it issues them and applies ``end`` / ``void`` as it
decides, so for the same tickets both answer every day the same (``tests/test_ledger.py``). One case
writes no ticket and so cannot be replayed: a suspension rectified early while its scope has ended or
while another suspension of the same action runs ends in the ledger without a ``REINSTATE`` (#12: none
after a termination; the other's end reinstates) — the state is the same (terminated / suspended), the
list of what is in force keeps it in the case file until its own term ends.

Dates are business dates (Asia/Shanghai); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, Protocol

from monitor.clock import day_start

Kind = Literal["suspension", "ending", "measure", "reinstate", "void"]
Scope = Literal["pooling", "agreement", "settlement"]
State = Literal["normal", "suspended", "terminated"]


@dataclass(frozen=True)
class ActionDef:
    """One ticket action (module docstring)."""

    action: str
    kind: Kind
    zh: str
    en: str
    scope: Scope | None = None
    restricts: Literal["pooling", "insured"] | None = None
    term: Literal["months", "rectify", "for_good", "none"] = "none"
    ends_by: tuple[str, ...] = ()

    @property
    def restricting(self) -> bool:
        return self.kind in ("suspension", "ending")


_SUSPENSION_ENDS = ("REINSTATE", "VOID")
ACTIONS: dict[str, ActionDef] = {d.action: d for d in (
    # EZ-DM 二(一)(二): 中止门诊统筹服务 for a term (1 or 6 months), or until its review
    ActionDef("SUSPEND_OUTPATIENT_POOLING", "suspension", "中止门诊统筹服务", "suspend outpatient-pooling service",
              "pooling", "pooling", "months", _SUSPENSION_ENDS),
    # EZ-DM 二(一): 1 个月后仍未实现实时上传的，终止其门诊统筹定点资格
    ActionDef("TERMINATE_OUTPATIENT_POOLING", "ending", "终止门诊统筹定点资格",
              "terminate the outpatient-pooling designation", "pooling", "pooling", "for_good", ("VOID",)),
    # EZ-DM 二(三): 中止医保服务协议，限期 1 个月整改 (until rectify_by); AR-AGR 三(三) counts it
    ActionDef("SUSPEND_AGREEMENT", "suspension", "中止医保服务协议", "suspend the medical-insurance service agreement",
              "agreement", "insured", "rectify", _SUSPENSION_ENDS),
    # AR-AGR 三(二)2 暂停医保结算: settlement stops, the agreement is not suspended (三(三) does not count it)
    ActionDef("SUSPEND_SETTLEMENT", "suspension", "暂停医保结算", "suspend medical-insurance settlement",
              "settlement", "insured", "months", _SUSPENSION_ENDS),
    # EZ-DM 二(二)(四): 取消门诊统筹定点资格 (二(二) 虚假: 3 年内不得再次申请)
    ActionDef("CANCEL_OUTPATIENT_POOLING", "ending", "取消门诊统筹定点资格",
              "cancel the outpatient-pooling designation", "pooling", "pooling", "for_good", ("VOID",)),
    # AR-AGR 三(三): 解除医保服务协议, 3 年内不得再次申请; ends the pooling designation with it
    ActionDef("TERMINATE_AGREEMENT", "ending", "解除医保服务协议", "terminate the service agreement",
              "agreement", "insured", "for_good", ("VOID",)),
    ActionDef("REINSTATE", "reinstate", "恢复医保服务", "reinstate the suspended service"),
    # XY-TIER 第十四条, LN-TIER 四(三)
    ActionDef("DOWNGRADE_TIER", "measure", "降低医保结算等级", "downgrade the settlement tier"),
    # AR-AGR 三(二)2 约谈
    ActionDef("INTERVIEW", "measure", "约谈主要负责人", "interview the person in charge"),
    ActionDef("REVIEW", "measure", "立案核查（须经核实）", "open a review (verification required)"),
    # AR-AGR 二(二)13 不再续签
    ActionDef("NO_RENEWAL", "measure", "不再续签服务协议", "do not renew the service agreement"),
    # the agency rejected a ticket (finding ticket_rejected): it no longer holds (README, deviations)
    ActionDef("VOID", "void", "工单作废（已驳回）", "ticket void (rejected)"),
)}

#: Restricting actions by kind and scope (what the ledger's scope rules and the case files test).
SUSPENSIONS = frozenset(a for a, d in ACTIONS.items() if d.kind == "suspension")
TERMINAL = frozenset(a for a, d in ACTIONS.items() if d.kind == "ending")
RESTRICTING = SUSPENSIONS | TERMINAL
POOLING_ENDS = frozenset(a for a in TERMINAL if ACTIONS[a].scope == "pooling")
AGREEMENT_ENDS = frozenset(a for a in TERMINAL if ACTIONS[a].scope == "agreement")
#: What each restricting action restricts.
SCOPE: dict[str, str] = {a: d.scope for a, d in ACTIONS.items() if d.scope is not None}
#: Actions that stop every insured settlement, not only 门诊统筹.
STOPS_INSURED = frozenset(a for a, d in ACTIONS.items() if d.restricts == "insured")


def text(action: str) -> tuple[str, str]:
    """``(中文, English)`` name of ``action`` (a ticket's text, the inspector's display name)."""
    d = ACTIONS[action]
    return d.zh, d.en


@dataclass
class Sanction:
    """A ticket that restricts an institution, and the days it covers: ``[effective_from, until)``;
    ``until`` None = until a later ticket ends it (or for good, when terminal). ``void``: the agency
    rejected the ticket."""

    ladder: str
    action: str
    ticket_id: str
    effective_from: date
    until: date | None
    void: bool = False
    reapply_after: date | None = None

    def in_force(self, day: date) -> bool:
        return not self.void and self.effective_from <= day and (self.until is None or day < self.until)

    @property
    def scope(self) -> str:
        return SCOPE.get(self.action, "")


class TicketLike(Protocol):
    """The ticket fields a sanction is derived from (``monitor.outputs.Ticket``)."""

    @property
    def ticket_id(self) -> str: ...
    @property
    def ladder(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def effective_from(self) -> date: ...
    @property
    def effective_until(self) -> date | None: ...
    @property
    def rectify_by(self) -> date | None: ...
    @property
    def reapply_after(self) -> date | None: ...
    @property
    def ref_ticket_id(self) -> str | None: ...


def span_until(action: str, effective_until: date | None, rectify_by: date | None) -> date | None:
    """The first day a restricting ticket no longer applies by its own term (module docstring)."""
    if ACTIONS[action].kind == "ending":
        return None
    return effective_until or rectify_by


def sanction_of(ladder: str, action: str, ticket_id: str, effective_from: date, effective_until: date | None,
                rectify_by: date | None, reapply_after: date | None) -> Sanction | None:
    """The restriction a ticket imposes, or None for an action that restricts nothing."""
    if action not in RESTRICTING:
        return None
    return Sanction(ladder, action, ticket_id, effective_from, span_until(action, effective_until, rectify_by),
                    reapply_after=reapply_after)


def review_at(due: date, delay_hours: int) -> datetime:
    """When a review ladder judges the deadline ``due`` (a suspension's first day no longer in force):
    ``delay_hours`` (the ladder's ``review_delay_hours``) after that day starts, so the last day under
    review is fully judged first (EZ-DM 二(一): 1 个月后仍未实现实时上传的…)."""
    return day_start(due) + timedelta(hours=delay_hours)


def end(sanction: Sanction, day: date) -> None:
    """``sanction`` no longer applies from ``day`` (a REINSTATE, a review): its term ends then at the latest."""
    if sanction.until is None or sanction.until > day:
        sanction.until = day


def in_force(sanctions: Iterable[Sanction], day: date) -> list[Sanction]:
    """The restricting sanctions in force on ``day`` (not void, span covering it), in their order."""
    return [s for s in sanctions if s.in_force(day)]


def state_of(active: Sequence[Sanction]) -> State:
    """``terminated`` (an ending in force), ``suspended`` (a suspension in force) or ``normal``."""
    if any(s.action in TERMINAL for s in active):
        return "terminated"
    return "suspended" if active else "normal"


def issue_order(t: TicketLike) -> tuple[datetime, date, str]:
    """The order tickets were issued in, as far as the tickets tell (a store keeps no order of its own)."""
    return t.issued_at, t.effective_from, t.ticket_id


def replay(tickets: Iterable[TicketLike]) -> list[Sanction]:
    """The sanctions the tickets of one institution impose, as the ledger held them when it wrote them:
    each restricting ticket's span (``sanction_of``), ended by a later REINSTATE of its ladder (``end``),
    void when a VOID names it (module docstring). In issue order."""
    ordered = sorted(tickets, key=issue_order)
    voided = {t.ref_ticket_id for t in ordered if t.action == "VOID" and t.ref_ticket_id}
    out: list[Sanction] = []
    for t in ordered:
        s = sanction_of(t.ladder, t.action, t.ticket_id, t.effective_from, t.effective_until, t.rectify_by,
                        t.reapply_after)
        if s is not None:
            s.void = t.ticket_id in voided
            out.append(s)
        elif t.action == "REINSTATE":
            for prev in reversed(out):
                if prev.ladder == t.ladder and prev.action in SUSPENSIONS and not prev.void:
                    if prev.effective_from <= t.effective_from:
                        end(prev, t.effective_from)
                    break
    return out

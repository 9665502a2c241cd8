"""The case file: what an inspector opens to review a flagged institution (issue 9).

Built from what the monitor has *written* (alerts, tickets, the institution registry), never from a
running engine, so the same case file comes out of the embedded store, a ClickHouse server or a replay's
JSONL files. Contract:

* **institution** — name, type, region, tier, agreement term from the registry (``None`` when the store
  has no registry entry; the case file still renders from the outputs);
* **state** on ``as_of`` — ``terminated`` (a terminal ticket is in effect), ``suspended`` (a suspension's
  ``[effective_from, effective_until or rectify_by)`` covers the day) or ``normal``; the same rule the
  ledger applies (``monitor.policy.ledger.Ledger.state``);
* **timeline** — every alert (at ``detected_at``) and ticket (at ``issued_at``) in event-time order, each
  with its rule, clause(s), the clause text (``monitor.inspect.clauses``) and the evidence with personal
  data masked (``mask_evidence``);
* **next deadlines** — what the ledger will check next, derived from the tickets and the pack's ladders:
  a ``suspend_then_review`` suspension whose review ticket (effective on the deadline) has not been
  written yet is reviewed on ``effective_until`` (or ``rectify_by``), at ``review_delay_hours`` after that
  day starts: any trigger in the last ``review_lookback_days`` → ``on_violation``, else ``on_clean``
  (EZ-DM 二(一): 1 个月后仍未实现实时上传的，终止其门诊统筹定点资格). A fixed-term suspension of another
  ladder ends on ``effective_until`` (no check; a ``recurrence`` ladder's next trigger before the recurrence
  horizon leads to its ``recurrence_action``, EZ-DM 二(二)).

``as_of`` is event time, not the wall clock: by default the latest ``detected_at``/``issued_at`` in the
store, so a replayed city shows the state at the end of its replay.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from monitor.clock import business_date, day_start
from monitor.inspect.clauses import document, excerpt, normalize
from monitor.outputs import Alert, Ticket
from monitor.policy.ledger import ACTION_TEXT, SUSPENSIONS, TERMINAL
from monitor.policy.pack import Pack
from monitor.privacy import mask_certno, mask_name
from monitor.records import Institution

State = Literal["normal", "suspended", "terminated"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
STATE_TEXT: dict[str, tuple[str, str]] = {
    "normal": ("正常", "normal"),
    "suspended": ("中止中", "suspended"),
    "terminated": ("已终止/取消", "terminated"),
}
SEVERITY_TEXT: dict[str, tuple[str, str]] = {
    "info": ("提示", "info"),
    "warning": ("警告", "warning"),
    "critical": ("严重", "critical"),
}
TYPE_TEXT: dict[str, tuple[str, str]] = {
    "1": ("定点医疗机构（诊所）", "clinic"),
    "2": ("定点零售药店", "retail pharmacy"),
}
#: Region names of the admdvs codes the default pack governs (Ezhou); others show their code only.
REGION_NAMES: dict[str, str] = {
    "4207": "鄂州市",
    "420700": "鄂州市",
    "420702": "梁子湖区",
    "420703": "华容区",
    "420704": "鄂城区",
}


# ------------------------------------------------------------------------------------------ the store
class CaseStore(Protocol):
    """Read-only access to what the monitor wrote. Implementations: ``MemoryStore`` (tests, a replay's
    JSONL folder via ``FileStore``) and ``monitor.inspect.store.ClickHouseStore``. Rows are
    de-duplicated on their ids (a sink may hold a row twice until it merges)."""

    def institutions(self) -> Mapping[str, Institution]: ...

    def alerts(self, code: str | None = None) -> Sequence[Alert]: ...

    def tickets(self, code: str | None = None) -> Sequence[Ticket]: ...

    def daily(self, code: str) -> Sequence[Mapping[str, Any]]:
        """``institution_daily`` rows of one institution, oldest first (``[]`` when the store has none)."""
        ...


class MemoryStore:
    """A ``CaseStore`` over lists already in memory (de-duplicated on ids, the last copy wins)."""

    def __init__(self, alerts: Iterable[Alert] = (), tickets: Iterable[Ticket] = (),
                 institutions: Iterable[Institution] = (),
                 daily: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> None:
        self._alerts = list({a.alert_id: a for a in alerts}.values())
        self._tickets = list({t.ticket_id: t for t in tickets}.values())
        self._institutions: dict[str, Institution] = {}
        for inst in institutions:
            old = self._institutions.get(inst.fixmedins_code)
            if old is None or inst.valid_from >= old.valid_from:
                self._institutions[inst.fixmedins_code] = inst
        self._daily = dict(daily or {})

    def institutions(self) -> Mapping[str, Institution]:
        return self._institutions

    def alerts(self, code: str | None = None) -> Sequence[Alert]:
        return [a for a in self._alerts if code is None or a.fixmedins_code == code]

    def tickets(self, code: str | None = None) -> Sequence[Ticket]:
        return [t for t in self._tickets if code is None or t.fixmedins_code == code]

    def daily(self, code: str) -> Sequence[Mapping[str, Any]]:
        return list(self._daily.get(code, ()))


# ------------------------------------------------------------------------------------------ privacy
#: An 18-character resident certificate number (17 digits + digit or X), not part of a longer number.
CERTNO_RE = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_NAME_KEYS = frozenset({"psn_name", "name_of_person"})
_CERT_KEYS = frozenset({"certno", "cert_no"})
_PSN_KEYS = frozenset({"psn_no"})


def mask_text(text: str) -> str:
    """Mask every certificate-number-shaped run in free text (defence in depth: detectors already
    pseudonymize, but a case file is shown to people, so nothing that looks like one leaves in clear)."""
    return CERTNO_RE.sub(lambda m: mask_certno(m.group(0)) or "", text)


def mask_evidence(value: Any, key: str | None = None) -> Any:
    """A deep copy of evidence with personal fields masked: ``certno`` → ``4207************12``,
    ``psn_name`` → ``张**``, ``psn_no`` → ``****`` + last 2; any certificate-shaped string masked."""
    if isinstance(value, Mapping):
        return {str(k): mask_evidence(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_evidence(v, key) for v in value]
    if isinstance(value, str):
        if key in _CERT_KEYS:
            return mask_certno(value)
        if key in _NAME_KEYS:
            return mask_name(value)
        if key in _PSN_KEYS and not value.startswith("psn:"):
            return "*" * max(len(value) - 2, 0) + value[-2:]
        return mask_text(value)
    return value


# ------------------------------------------------------------------------------------------ the case file
class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ClauseView(_View):
    clause: str
    document: str | None
    excerpt: list[str]


class InstitutionView(_View):
    code: str
    name: str
    type: str
    type_zh: str
    type_en: str
    admdvs: str
    region: str
    outpatient_pooling: bool
    tier: str | None
    tier_scheme: str | None
    agreement_start: date
    agreement_end: date
    designated_since: date


class Event(_View):
    """One line of the timeline: an alert or a ticket."""

    kind: Literal["alert", "ticket"]
    id: str
    at: datetime
    rule_ids: list[str]
    rule_names: list[str]
    title_zh: str
    title_en: str
    severity: str | None = None
    action: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    effective_from: date | None = None
    effective_until: date | None = None
    rectify_by: date | None = None
    reapply_after: date | None = None
    requires_verification: bool = False
    amount: Decimal | None = None
    text_zh: str
    text_en: str | None = None
    clauses: list[ClauseView]
    evidence: dict[str, Any] = {}
    alert_ids: list[str] = []


class Deadline(_View):
    """The next thing the ledger will check (or the day a fixed-term sanction ends)."""

    ladder: str
    kind: Literal["review", "ends"]
    due: date
    checked_at: datetime | None
    overdue: bool
    checks_zh: str
    checks_en: str
    if_violation: str | None
    otherwise: str | None
    then_zh: str
    then_en: str
    ticket_id: str
    clauses: list[ClauseView]


class SanctionView(_View):
    ticket_id: str
    action: str
    action_zh: str
    action_en: str
    effective_from: date
    until: date | None


class CaseFile(_View):
    code: str
    as_of: datetime
    policy: str
    institution: InstitutionView | None
    state: State
    state_zh: str
    state_en: str
    in_force: list[SanctionView]
    alerts: int
    tickets: int
    alerts_by_rule: dict[str, int]
    tickets_by_action: dict[str, int]
    max_severity: str | None
    first_activity: datetime | None
    last_activity: datetime | None
    timeline: list[Event]
    deadlines: list[Deadline]
    next_deadline: Deadline | None
    daily: list[dict[str, Any]] = []


class CaseSummary(_View):
    """One row of the list of flagged institutions."""

    code: str
    name: str | None
    type: str | None
    admdvs: str | None
    region: str | None
    state: State
    state_zh: str
    state_en: str
    alerts: int
    tickets: int
    rules: list[str]
    actions: list[str]
    max_severity: str | None
    last_activity: datetime | None
    next_due: date | None
    next_then: str | None


# ------------------------------------------------------------------------------------------ building
def store_as_of(store: CaseStore) -> datetime | None:
    """The store's event-time horizon: the latest ``detected_at`` / ``issued_at`` it holds."""
    times = [a.detected_at for a in store.alerts()] + [t.issued_at for t in store.tickets()]
    return max(times) if times else None


def clause_view(clause: str) -> ClauseView:
    return ClauseView(clause=normalize(clause), document=document(clause), excerpt=list(excerpt(clause)))


def institution_view(inst: Institution) -> InstitutionView:
    zh, en = TYPE_TEXT.get(inst.fixmedins_type, (inst.fixmedins_type, inst.fixmedins_type))
    return InstitutionView(
        code=inst.fixmedins_code, name=inst.fixmedins_name, type=inst.fixmedins_type, type_zh=zh, type_en=en,
        admdvs=inst.admdvs, region=region_name(inst.admdvs), outpatient_pooling=inst.outpatient_pooling,
        tier=inst.tier, tier_scheme=inst.tier_scheme, agreement_start=inst.agreement_start,
        agreement_end=inst.agreement_end, designated_since=inst.designated_since,
    )


def region_name(admdvs: str | None) -> str:
    """``鄂城区 (420704)`` for a known code, else the code."""
    if not admdvs:
        return ""
    name = REGION_NAMES.get(admdvs) or REGION_NAMES.get(admdvs[:4])
    return f"{name} ({admdvs})" if name else admdvs


def _rule_name(pack: Pack, rule_id: str) -> str:
    spec = pack.rules.get(rule_id)
    if spec is not None:
        return f"{spec.name_zh} / {spec.name_en}"
    if rule_id.startswith("finding:"):
        return f"经查实的 {rule_id[8:]} / verified finding {rule_id[8:]}"
    return rule_id


def restricting(ticket: Ticket) -> tuple[date, date | None] | None:
    """``[from, until)`` a ticket restricts the institution (the ledger's ``Sanction``), or ``None``."""
    if ticket.action in TERMINAL:
        return ticket.effective_from, None
    if ticket.action in SUSPENSIONS:
        return ticket.effective_from, ticket.effective_until or ticket.rectify_by
    return None


def state_on(tickets: Iterable[Ticket], day: date) -> tuple[State, list[Ticket]]:
    """The institution's sanction state on ``day`` and the tickets in force then."""
    active = []
    for t in tickets:
        span = restricting(t)
        if span is not None and span[0] <= day and (span[1] is None or day < span[1]):
            active.append(t)
    if any(t.action in TERMINAL for t in active):
        return "terminated", active
    return ("suspended" if active else "normal"), active


def _action_text(action: str | None) -> tuple[str, str]:
    if action is None:
        return "—", "—"
    return ACTION_TEXT.get(action, (action, action))


def deadlines(tickets: Sequence[Ticket], pack: Pack, as_of: datetime) -> list[Deadline]:
    """What the ledger will check next for one institution, soonest first (see module docstring)."""
    ordered = sorted(tickets, key=lambda t: (t.issued_at, t.effective_from, t.ticket_id))
    today = business_date(as_of)
    out: list[Deadline] = []
    for t in ordered:
        spec = pack.ladders.get(t.ladder)
        if spec is None or t.action != spec.action or restricting(t) is None or t.action in TERMINAL:
            continue
        due = t.effective_until or t.rectify_by
        if due is None:
            continue
        later = [u for u in ordered if u.ladder == t.ladder and u.ticket_id != t.ticket_id
                 and (u.issued_at, u.effective_from) >= (t.issued_at, t.effective_from)]
        clauses = [clause_view(c) for c in spec.basis]
        if spec.kind == "suspend_then_review":
            if any(u.effective_from >= due or u.action in TERMINAL for u in later):
                continue  # reviewed already (the review ticket is effective on the deadline)
            checked_at = day_start(due) + timedelta(hours=spec.review_delay_hours)
            triggers = ", ".join(spec.triggers)
            v_zh, v_en = _action_text(spec.on_violation)
            c_zh, c_en = _action_text(spec.on_clean)
            out.append(Deadline(
                ladder=t.ladder, kind="review", due=due, checked_at=checked_at, overdue=checked_at <= as_of,
                checks_zh=f"复核 {due - timedelta(days=spec.review_lookback_days)} 至 {due - timedelta(days=1)}"
                          f"（最近 {spec.review_lookback_days} 天）是否再有 {triggers}",
                checks_en=f"any {triggers} in the last {spec.review_lookback_days} days "
                          f"({due - timedelta(days=spec.review_lookback_days)} .. {due - timedelta(days=1)})",
                if_violation=spec.on_violation, otherwise=spec.on_clean,
                then_zh=f"仍有违规 → {v_zh}；否则 → {c_zh}（自 {due} 起）",
                then_en=f"if so → {v_en}; otherwise → {c_en} (from {due})",
                ticket_id=t.ticket_id, clauses=clauses,
            ))
        elif t.effective_until is not None and t.effective_until > today:
            if spec.kind == "recurrence" and spec.recurrence_action and spec.recurrence_within_months:
                r_zh, r_en = _action_text(spec.recurrence_action)
                then_zh = (f"中止期满；期满后至首次发现起 {spec.recurrence_within_months} 个月内再次发现 → {r_zh}")
                then_en = (f"the suspension ends; found again after it and within "
                           f"{spec.recurrence_within_months} months of the first → {r_en}")
            else:
                then_zh, then_en = "中止期满，恢复服务", "the suspension ends"
            out.append(Deadline(
                ladder=t.ladder, kind="ends", due=t.effective_until, checked_at=None, overdue=False,
                checks_zh="中止期限届满", checks_en="end of the suspension", if_violation=spec.recurrence_action,
                otherwise=None, then_zh=then_zh, then_en=then_en, ticket_id=t.ticket_id, clauses=clauses,
            ))
    out.sort(key=lambda d: (d.due, d.ladder))
    return out


def _alert_event(a: Alert, pack: Pack) -> Event:
    return Event(
        kind="alert", id=a.alert_id, at=a.detected_at, rule_ids=[a.rule_id], rule_names=[_rule_name(pack, a.rule_id)],
        title_zh=mask_text(a.rule_name), title_en=a.rule_id, severity=a.severity,
        window_start=a.window_start, window_end=a.window_end,
        amount=a.vola_amt if a.vola_amt else None, text_zh=mask_text(a.vola_cont), text_en=None,
        clauses=[clause_view(c) for c in re.split(r"[;；]\s*", a.basis) if c.strip()],
        evidence=mask_evidence(a.evidence),
    )


def _ticket_event(t: Ticket, pack: Pack) -> Event:
    zh, en = _action_text(t.action)
    return Event(
        kind="ticket", id=t.ticket_id, at=t.issued_at, rule_ids=list(t.rule_ids),
        rule_names=[_rule_name(pack, r) for r in t.rule_ids], title_zh=zh, title_en=en, action=t.action,
        effective_from=t.effective_from, effective_until=t.effective_until, rectify_by=t.rectify_by,
        reapply_after=t.reapply_after, requires_verification=t.requires_verification,
        text_zh=mask_text(t.summary.zh), text_en=mask_text(t.summary.en),
        clauses=[clause_view(c) for c in t.basis], alert_ids=list(t.alert_ids),
    )


def _max_severity(alerts: Iterable[Alert]) -> str | None:
    sevs = [a.severity for a in alerts]
    return max(sevs, key=lambda s: SEVERITY_RANK[s]) if sevs else None


def build_case_file(store: CaseStore, code: str, pack: Pack, as_of: datetime | None = None) -> CaseFile | None:
    """The case file of ``code`` on ``as_of`` (default: the store's horizon); ``None`` when the store
    knows nothing of the institution."""
    alerts = list(store.alerts(code))
    tickets = list(store.tickets(code))
    inst = store.institutions().get(code)
    if not alerts and not tickets and inst is None:
        return None
    when = as_of or store_as_of(store) or datetime.now().astimezone()
    state, active = state_on(tickets, business_date(when))
    events = [_alert_event(a, pack) for a in alerts] + [_ticket_event(t, pack) for t in tickets]
    # same instant: alerts before the tickets they caused, milder before graver (a late-upload alert
    # before the not-real-time day it adds up to), then rule and id — the same order from every store
    events.sort(key=lambda e: (e.at, 0 if e.kind == "alert" else 1, SEVERITY_RANK.get(e.severity or "", 0),
                               e.rule_ids[0] if e.rule_ids else "", e.id))
    dls = deadlines(tickets, pack, when)
    zh, en = STATE_TEXT[state]
    in_force = []
    for t in active:
        span = restricting(t)
        assert span is not None
        a_zh, a_en = _action_text(t.action)
        in_force.append(SanctionView(ticket_id=t.ticket_id, action=t.action, action_zh=a_zh, action_en=a_en,
                                     effective_from=span[0], until=span[1]))
    return CaseFile(
        code=code, as_of=when, policy=pack.label, institution=institution_view(inst) if inst else None,
        state=state, state_zh=zh, state_en=en, in_force=in_force,
        alerts=len(alerts), tickets=len(tickets),
        alerts_by_rule=dict(sorted(Counter(a.rule_id for a in alerts).items())),
        tickets_by_action=dict(sorted(Counter(t.action for t in tickets).items())),
        max_severity=_max_severity(alerts),
        first_activity=events[0].at if events else None, last_activity=events[-1].at if events else None,
        timeline=events, deadlines=dls, next_deadline=dls[0] if dls else None,
        daily=[mask_evidence(dict(row)) for row in store.daily(code)],
    )


class ListQuery(BaseModel):
    """Filters and order of the list page / ``/api/institutions``; empty filters match everything."""

    model_config = ConfigDict(frozen=True)

    region: str = ""
    rule: str = ""
    action: str = ""
    state: str = ""
    sort: Literal["severity", "recency"] = "severity"

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> ListQuery:
        def one(name: str) -> str:
            vals = query.get(name) or [""]
            return vals[0].strip()

        sort = one("sort")
        return cls(region=one("region"), rule=one("rule"), action=one("action"), state=one("state"),
                   sort="recency" if sort == "recency" else "severity")


def list_cases(store: CaseStore, pack: Pack, query: ListQuery | None = None,
               as_of: datetime | None = None) -> list[CaseSummary]:
    """Flagged institutions (at least one alert or ticket), filtered and ordered by ``query``:
    ``severity`` = most severe alert first, then more alerts, then most recent; ``recency`` = latest
    activity first. Ties break on the institution code, so the order is deterministic."""
    q = query or ListQuery()
    when = as_of or store_as_of(store)
    if when is None:
        return []
    today = business_date(when)
    insts = store.institutions()
    by_code_alerts: dict[str, list[Alert]] = {}
    by_code_tickets: dict[str, list[Ticket]] = {}
    for a in store.alerts():
        by_code_alerts.setdefault(a.fixmedins_code, []).append(a)
    for t in store.tickets():
        by_code_tickets.setdefault(t.fixmedins_code, []).append(t)
    rows: list[CaseSummary] = []
    for code in sorted(set(by_code_alerts) | set(by_code_tickets)):
        alerts = by_code_alerts.get(code, [])
        tickets = by_code_tickets.get(code, [])
        inst = insts.get(code)
        admdvs = inst.admdvs if inst else next(
            (x for x in [*(a.admdvs for a in alerts), *(t.admdvs for t in tickets)] if x), None)
        state, _ = state_on(tickets, today)
        rules = sorted({a.rule_id for a in alerts} | {r for t in tickets for r in t.rule_ids})
        actions = sorted({t.action for t in tickets})
        if q.region and not (admdvs or "").startswith(q.region):
            continue
        if q.rule and q.rule not in rules:
            continue
        if q.action and q.action not in actions:
            continue
        if q.state and q.state != state:
            continue
        times = [a.detected_at for a in alerts] + [t.issued_at for t in tickets]
        dls = deadlines(tickets, pack, when)
        zh, en = STATE_TEXT[state]
        rows.append(CaseSummary(
            code=code, name=inst.fixmedins_name if inst else None, type=inst.fixmedins_type if inst else None,
            admdvs=admdvs, region=region_name(admdvs) or None, state=state, state_zh=zh, state_en=en,
            alerts=len(alerts), tickets=len(tickets), rules=rules, actions=actions,
            max_severity=_max_severity(alerts), last_activity=max(times) if times else None,
            next_due=dls[0].due if dls else None, next_then=dls[0].then_zh if dls else None,
        ))
    far_past = datetime(1970, 1, 1).astimezone()
    if q.sort == "recency":
        rows.sort(key=lambda r: (-(r.last_activity or far_past).timestamp(), r.code))
    else:
        rows.sort(key=lambda r: (-SEVERITY_RANK.get(r.max_severity or "", -1), -r.alerts,
                                 -(r.last_activity or far_past).timestamp(), r.code))
    return rows

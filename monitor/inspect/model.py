"""The case file: what an inspector opens to review a flagged institution (issue 9).

Built from what the monitor has *written* (alerts, tickets, the institution registry), never from a
running engine, so the same case file comes out of the embedded store, a ClickHouse server or a replay's
JSONL files. Contract:

* **institution** — name, type, region, tier, agreement term from the registry (``None`` when the store
  has no registry entry; the case file still renders from the outputs);
* **state** on ``as_of`` — ``terminated`` (a terminal ticket is in effect), ``suspended`` (a suspension's
  ``[effective_from, effective_until or rectify_by)`` covers the day, unless a later ``REINSTATE`` of its
  ladder ended it) or ``normal``; a ticket a ``VOID`` names (the agency rejected it) is in force on no
  day. One definition for the ledger and the case file: ``monitor.policy.sanctions`` (``replay`` the
  tickets, ``in_force``, ``state_of``);
* **timeline** — every alert (at ``detected_at``) and ticket (at ``issued_at``) in event-time order, each
  with its rule, clause(s), the clause text (``monitor.inspect.clauses``) and the evidence with personal
  data masked (``mask_evidence``); a rejected ticket is marked ``void`` and its ``VOID`` names it;
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
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from monitor.clock import business_date, day_start
from monitor.inspect.clauses import document, excerpt, normalize
from monitor.inspect.evidence import EvidenceTable, evidence_table
from monitor.inspect.names import action_name, rule_name, table
from monitor.outputs import Alert, Ticket
from monitor.policy import sanctions
from monitor.policy.pack import Pack
from monitor.policy.sanctions import AGREEMENT_ENDS, POOLING_ENDS, SCOPE, SUSPENSIONS, TERMINAL, Sanction
from monitor.privacy import mask_certno, mask_name
from monitor.records import Institution

State = sanctions.State
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
#: (中文, English) of the states and severities, from ``names.toml`` (``monitor.inspect.names``).
STATE_TEXT: dict[str, tuple[str, str]] = {k: table()["states"][k] for k in ("normal", "suspended", "terminated")}
SEVERITY_TEXT: dict[str, tuple[str, str]] = {k: table()["severities"][k] for k in ("info", "warning", "critical")}
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
@dataclass(frozen=True)
class RuleTally:
    """Alerts of one institution and rule, aggregated (what the list and the case file's counts are
    built from, so a 20 000-alert store is never read row by row for them)."""

    code: str
    rule_id: str
    admdvs: str | None
    alerts: int
    max_severity: str
    amount: Decimal
    first: datetime
    last: datetime


class CaseStore(Protocol):
    """Read-only access to what the monitor wrote. Implementations: ``MemoryStore`` (tests, a replay's
    JSONL folder via ``FileStore``) and ``monitor.inspect.store.ClickHouseStore``. Rows are
    de-duplicated on their ids (a sink may hold a row twice until it merges)."""

    def institutions(self) -> Mapping[str, Institution]: ...

    def alerts(self, code: str | None = None, offset: int = 0, limit: int | None = None) -> Sequence[Alert]:
        """Alerts (of ``code``), ordered by ``(detected_at, alert_id)`` when ``limit`` is given
        (a page: ``offset``, ``limit``)."""
        ...

    def alert_tallies(self, code: str | None = None, since: datetime | None = None,
                      until: datetime | None = None) -> Sequence[RuleTally]:
        """Per institution and rule: count, worst severity, amount, first/last ``detected_at``
        (``since <= detected_at < until`` when given)."""
        ...

    def alert_days(self, code: str) -> Sequence[tuple[str, date, int]]:
        """``(rule_id, day, alerts)`` of one institution (``day`` = the window's calendar day)."""
        ...

    def horizon(self) -> datetime | None:
        """The latest ``detected_at`` / ``issued_at`` in the store."""
        ...

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

    def alerts(self, code: str | None = None, offset: int = 0, limit: int | None = None) -> Sequence[Alert]:
        out = [a for a in self._alerts if code is None or a.fixmedins_code == code]
        if limit is None:
            return out
        out.sort(key=lambda a: (a.detected_at, a.alert_id))
        return out[offset:offset + limit]

    def alert_tallies(self, code: str | None = None, since: datetime | None = None,
                      until: datetime | None = None) -> Sequence[RuleTally]:
        return tally_alerts(a for a in self.alerts(code) if (since is None or a.detected_at >= since)
                            and (until is None or a.detected_at < until))

    def alert_days(self, code: str) -> Sequence[tuple[str, date, int]]:
        days = Counter((a.rule_id, a.window_start.date()) for a in self.alerts(code))
        return [(r, d, n) for (r, d), n in sorted(days.items())]

    def horizon(self) -> datetime | None:
        times = [a.detected_at for a in self._alerts] + [t.issued_at for t in self._tickets]
        return max(times) if times else None

    def tickets(self, code: str | None = None) -> Sequence[Ticket]:
        return [t for t in self._tickets if code is None or t.fixmedins_code == code]

    def daily(self, code: str) -> Sequence[Mapping[str, Any]]:
        return list(self._daily.get(code, ()))


def tally_alerts(alerts: Iterable[Alert]) -> list[RuleTally]:
    """``RuleTally`` rows of alerts in memory (the ClickHouse store computes the same with GROUP BY)."""
    acc: dict[tuple[str, str], list[Any]] = {}
    for a in alerts:
        row = acc.get((a.fixmedins_code, a.rule_id))
        if row is None:
            acc[(a.fixmedins_code, a.rule_id)] = [a.admdvs, 1, a.severity, a.vola_amt, a.detected_at, a.detected_at]
            continue
        row[0] = row[0] or a.admdvs
        row[1] += 1
        if SEVERITY_RANK[a.severity] > SEVERITY_RANK[row[2]]:
            row[2] = a.severity
        row[3] += a.vola_amt
        row[4] = min(row[4], a.detected_at)
        row[5] = max(row[5], a.detected_at)
    return [RuleTally(c, r, *v) for (c, r), v in sorted(acc.items())]


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
    #: the rules' names, Chinese and English, with their ids (``monitor.inspect.names``)
    rules: list[dict[str, Any]] = []
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
    #: a ticket the agency rejected: it never held (a later ``VOID`` ticket names it)
    void: bool = False
    #: a ``VOID`` ticket: the ticket it voids
    ref_ticket_id: str | None = None
    clauses: list[ClauseView]
    evidence: dict[str, Any] = {}
    evidence_table: EvidenceTable | None = None
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
    #: the rules' and actions' names (id → {zh, en, known}) of the counts above
    rule_names: dict[str, dict[str, Any]] = {}
    action_names: dict[str, dict[str, Any]] = {}
    #: sum of the alerts' amounts (vola_amt), the amount at stake
    amount: Decimal = Decimal("0")
    #: the timeline is paged: this page (1-based) of ``pages``, ``page_size`` alerts a page
    page: int = 1
    pages: int = 1
    page_size: int = 0
    #: ``(rule_id, day, alerts)``: the days that tripped a rule (chart marks)
    tripped: list[tuple[str, date, int]] = []
    #: every restricting ticket's ``[from, until)`` (chart shading): (action, from, until or None)
    sanction_periods: list[tuple[str, date, date | None]] = []


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
    rule_names: list[dict[str, Any]] = []
    action_names: list[dict[str, Any]] = []
    amount: Decimal = Decimal("0")
    first_activity: datetime | None = None


# ------------------------------------------------------------------------------------------ building
def store_as_of(store: CaseStore) -> datetime | None:
    """The store's event-time horizon: the latest ``detected_at`` / ``issued_at`` it holds."""
    return store.horizon()


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
    return rule_name(pack, rule_id).both


def state_on(tickets: Iterable[Ticket], day: date) -> tuple[State, list[Sanction]]:
    """The institution's sanction state on ``day`` and the sanctions in force then, from its tickets
    (``monitor.policy.sanctions``: the ledger's own definition)."""
    active = sanctions.in_force(sanctions.replay(tickets), day)
    return sanctions.state_of(active), active


def _action_text(action: str | None) -> tuple[str, str]:
    if action is None:
        return "—", "—"
    name = action_name(action)
    return name.zh, name.en


def deadlines(tickets: Sequence[Ticket], pack: Pack, as_of: datetime) -> list[Deadline]:
    """What the ledger will check next for one institution, soonest first (see module docstring)."""
    ordered = sorted((t for t in tickets if t.action != "VOID"), key=sanctions.issue_order)
    void = {s.ticket_id for s in sanctions.replay(tickets) if s.void}
    today = business_date(as_of)
    out: list[Deadline] = []
    for t in ordered:
        spec = pack.ladders.get(t.ladder)
        if spec is None or t.action != spec.action or t.action not in SUSPENSIONS or t.ticket_id in void:
            continue  # a rejected suspension is reviewed by nobody and ends nowhere
        due = sanctions.span_until(t.action, t.effective_until, t.rectify_by)
        if due is None:
            continue
        later = [u for u in ordered if u.ladder == t.ladder and u.ticket_id != t.ticket_id
                 and (u.issued_at, u.effective_from) >= (t.issued_at, t.effective_from)]
        clauses = [clause_view(c) for c in spec.basis]
        if spec.kind == "suspend_then_review":
            if any(u.effective_from >= due or u.action in TERMINAL for u in later):
                continue  # reviewed already (the review ticket is effective on the deadline)
            checked_at = sanctions.review_at(due, spec.review_delay_hours)
            scope = SCOPE.get(t.action)
            if checked_at <= as_of and any(  # reviewed silently: the scope had ended (no REINSTATE, #12)
                    u.effective_from <= due and (u.action in AGREEMENT_ENDS
                                                 or (scope == "pooling" and u.action in POOLING_ENDS))
                    for u in ordered):
                continue
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
    evidence = mask_evidence(a.evidence)
    return Event(
        kind="alert", id=a.alert_id, at=a.detected_at, rule_ids=[a.rule_id], rule_names=[_rule_name(pack, a.rule_id)],
        rules=[rule_name(pack, a.rule_id).as_json()],
        title_zh=mask_text(a.rule_name), title_en=a.rule_id, severity=a.severity,
        window_start=a.window_start, window_end=a.window_end,
        amount=a.vola_amt if a.vola_amt else None, text_zh=mask_text(a.vola_cont), text_en=None,
        clauses=[clause_view(c) for c in re.split(r"[;；]\s*", a.basis) if c.strip()],
        evidence=evidence,
        evidence_table=evidence_table(a.rule_id, evidence, a.fixmedins_code, a.vola_amt),
    )


def _ticket_event(t: Ticket, pack: Pack, void: bool = False) -> Event:
    zh, en = _action_text(t.action)
    return Event(
        kind="ticket", id=t.ticket_id, at=t.issued_at, rule_ids=list(t.rule_ids),
        rule_names=[_rule_name(pack, r) for r in t.rule_ids], title_zh=zh, title_en=en, action=t.action,
        rules=[rule_name(pack, r).as_json() for r in t.rule_ids],
        effective_from=t.effective_from, effective_until=t.effective_until, rectify_by=t.rectify_by,
        reapply_after=t.reapply_after, requires_verification=t.requires_verification,
        text_zh=mask_text(t.summary.zh), text_en=mask_text(t.summary.en), void=void, ref_ticket_id=t.ref_ticket_id,
        clauses=[clause_view(c) for c in t.basis], alert_ids=list(t.alert_ids),
    )


def _max_severity(alerts: Iterable[Alert]) -> str | None:
    sevs = [a.severity for a in alerts]
    return max(sevs, key=lambda s: SEVERITY_RANK[s]) if sevs else None


#: alerts per page of a case file's timeline (``build_case_file(page_size=…)``), and the most allowed
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _names(ids: Iterable[str], lookup: Any) -> dict[str, dict[str, Any]]:
    return {i: lookup(i).as_json() for i in ids}


def build_case_file(store: CaseStore, code: str, pack: Pack, as_of: datetime | None = None,
                    page: int = 1, page_size: int = PAGE_SIZE) -> CaseFile | None:
    """The case file of ``code`` on ``as_of`` (default: the store's horizon); ``None`` when the store
    knows nothing of the institution.

    Counts, amounts and the tripped days come from aggregates (``alert_tallies``, ``alert_days``); the
    timeline is paged: page ``page`` holds alerts ``[(page-1)·page_size, page·page_size)`` in
    ``(detected_at, id)`` order and the tickets issued between that page's first alert and the next
    page's first alert (the first page also every earlier ticket, the last page every later one).
    Tickets are read whole: state and deadlines depend on all of them."""
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    tallies = list(store.alert_tallies(code))
    n_alerts = sum(t.alerts for t in tallies)
    tickets = list(store.tickets(code))
    inst = store.institutions().get(code)
    if not n_alerts and not tickets and inst is None:
        return None
    pages = max(1, -(-n_alerts // page_size))
    page = max(1, min(page, pages))
    fetched = list(store.alerts(code, offset=(page - 1) * page_size, limit=page_size + 1)) if n_alerts else []
    alerts, following = fetched[:page_size], fetched[page_size:]
    lo = alerts[0].detected_at if alerts and page > 1 else None
    hi = following[0].detected_at if following else None
    page_tickets = [t for t in tickets if (lo is None or t.issued_at >= lo) and (hi is None or t.issued_at < hi)]
    when = as_of or store_as_of(store) or datetime.now().astimezone()
    book = sanctions.replay(tickets)
    active = sanctions.in_force(book, business_date(when))
    state = sanctions.state_of(active)
    void = {s.ticket_id for s in book if s.void} | {t.ref_ticket_id for t in tickets if t.action == "VOID"}
    events = [_alert_event(a, pack) for a in alerts] + [_ticket_event(t, pack, t.ticket_id in void)
                                                       for t in page_tickets]
    # same instant: alerts before the tickets they caused, milder before graver (a late-upload alert
    # before the not-real-time day it adds up to), then rule and id — the same order from every store
    events.sort(key=lambda e: (e.at, 0 if e.kind == "alert" else 1, SEVERITY_RANK.get(e.severity or "", 0),
                               e.rule_ids[0] if e.rule_ids else "", e.id))
    dls = deadlines(tickets, pack, when)
    zh, en = STATE_TEXT[state]
    in_force = []
    for s in active:
        a_zh, a_en = _action_text(s.action)
        in_force.append(SanctionView(ticket_id=s.ticket_id, action=s.action, action_zh=a_zh, action_en=a_en,
                                     effective_from=s.effective_from, until=s.until))
    by_rule: Counter[str] = Counter()
    for tl in tallies:
        by_rule[tl.rule_id] += tl.alerts
    times = [x for tl in tallies for x in (tl.first, tl.last)] + [t.issued_at for t in tickets]
    periods = [(s.action, s.effective_from, s.until)
               for s in sorted(book, key=lambda s: (s.effective_from, s.ticket_id)) if not s.void]
    return CaseFile(
        code=code, as_of=when, policy=pack.label, institution=institution_view(inst) if inst else None,
        state=state, state_zh=zh, state_en=en, in_force=in_force,
        alerts=n_alerts, tickets=len(tickets),
        alerts_by_rule=dict(sorted(by_rule.items())),
        tickets_by_action=dict(sorted(Counter(t.action for t in tickets).items())),
        max_severity=max((tl.max_severity for tl in tallies), key=lambda s: SEVERITY_RANK[s], default=None),
        first_activity=min(times) if times else None, last_activity=max(times) if times else None,
        timeline=events, deadlines=dls, next_deadline=dls[0] if dls else None,
        daily=[mask_evidence(dict(row)) for row in store.daily(code)],
        rule_names=_names(sorted(set(by_rule) | {r for t in tickets for r in t.rule_ids}),
                          lambda r: rule_name(pack, r)),
        action_names=_names(sorted({t.action for t in tickets}), action_name),
        amount=sum((tl.amount for tl in tallies), Decimal("0")),
        page=page, pages=pages, page_size=page_size,
        tripped=list(store.alert_days(code)), sanction_periods=periods,
    )


SortKey = Literal["severity", "recency", "amount", "alerts", "region", "code"]
SORT_KEYS: tuple[str, ...] = ("severity", "recency", "amount", "alerts", "region", "code")
LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 500


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _parse_amount(text: str) -> Decimal | None:
    try:
        value = Decimal(text) if text else None
    except ArithmeticError:
        return None
    return value if value is not None and value.is_finite() and abs(value) < Decimal("1e15") else None


class ListQuery(BaseModel):
    """Filters and order of the list page / ``/api/institutions`` / the CSV export; empty filters match
    everything. ``severity`` = at least this severe; ``min_amount`` = amount at stake (sum of the
    alerts' ``vola_amt`` in the date range) at least this; ``date_from``/``date_to`` = business days
    (Asia/Shanghai, inclusive) in which the institution had an alert or a ticket — counts and amounts
    are then those of the range. ``page``/``per_page`` page the HTML and JSON lists (the CSV is whole)."""

    model_config = ConfigDict(frozen=True)

    region: str = ""
    rule: str = ""
    action: str = ""
    state: str = ""
    severity: str = ""
    min_amount: Decimal | None = None
    date_from: date | None = None
    date_to: date | None = None
    sort: SortKey = "severity"
    #: ``None`` = the sort's natural order (largest/latest/most severe first; region and code A→Z)
    descending: bool | None = None
    page: int = 1
    per_page: int = LIST_PAGE_SIZE

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> ListQuery:
        """From a query string; a value that does not parse is ignored (the filter is off), never an error."""
        def one(name: str) -> str:
            vals = query.get(name) or [""]
            return vals[0].strip()[:64]

        def number(name: str, default: int, top: int) -> int:
            text = one(name)
            return max(1, min(int(text), top)) if text.isdigit() and len(text) < 9 else default

        sort = one("sort")
        return cls(region=one("region"), rule=one("rule"), action=one("action"), state=one("state"),
                   severity=one("severity") if one("severity") in SEVERITY_RANK else "",
                   min_amount=_parse_amount(one("min_amount")),
                   date_from=_parse_date(one("from")), date_to=_parse_date(one("to")),
                   sort=sort if sort in SORT_KEYS else "severity",
                   descending={"asc": False, "desc": True}.get(one("order")),
                   page=number("page", 1, 1_000_000), per_page=number("per_page", LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE))

    def as_params(self, **change: Any) -> dict[str, str]:
        """The query string of this query (``change`` overrides), empty filters left out."""
        q = self.model_copy(update=change)
        out = {"region": q.region, "rule": q.rule, "action": q.action, "state": q.state, "severity": q.severity,
               "min_amount": str(q.min_amount) if q.min_amount is not None else "",
               "from": q.date_from.isoformat() if q.date_from else "",
               "to": q.date_to.isoformat() if q.date_to else "",
               "sort": q.sort if q.sort != "severity" else "",
               "order": {None: "", True: "desc", False: "asc"}[q.descending],
               "page": str(q.page) if q.page != 1 else "",
               "per_page": str(q.per_page) if q.per_page != LIST_PAGE_SIZE else ""}
        return {k: v for k, v in out.items() if v}


def list_cases(store: CaseStore, pack: Pack, query: ListQuery | None = None,
               as_of: datetime | None = None) -> list[CaseSummary]:
    """Flagged institutions (at least one alert or ticket, in the date range when given), filtered and
    ordered by ``query`` (not paged: ``page_of`` pages). Built from the alerts' aggregate
    (``alert_tallies``) and the tickets, never from every alert row. Orders: ``severity`` = most severe
    alert first, then more alerts, then most recent; ``recency`` = latest activity; ``amount`` = amount
    at stake; ``alerts``; ``region``; ``code``. ``descending=False`` reverses it. Ties break on the
    institution code, so the order is deterministic."""
    q = query or ListQuery()
    when = as_of or store_as_of(store)
    if when is None:
        return []
    today = business_date(when)
    since = day_start(q.date_from) if q.date_from else None
    until = day_start(q.date_to + timedelta(days=1)) if q.date_to else None
    insts = store.institutions()
    tallies: dict[str, list[RuleTally]] = {}
    for tl in store.alert_tallies(since=since, until=until):
        tallies.setdefault(tl.code, []).append(tl)
    all_tickets: dict[str, list[Ticket]] = {}
    for t in store.tickets():
        all_tickets.setdefault(t.fixmedins_code, []).append(t)

    def in_range(t: Ticket) -> bool:
        return (since is None or t.issued_at >= since) and (until is None or t.issued_at < until)

    rows: list[CaseSummary] = []
    min_rank = SEVERITY_RANK.get(q.severity, -1)
    for code in sorted(set(tallies) | {c for c, ts in all_tickets.items() if any(in_range(t) for t in ts)}):
        tls = tallies.get(code, [])
        tickets = all_tickets.get(code, [])
        shown = [t for t in tickets if in_range(t)]
        inst = insts.get(code)
        admdvs = inst.admdvs if inst else next(
            (x for x in [*(tl.admdvs for tl in tls), *(t.admdvs for t in tickets)] if x), None)
        rules = sorted({tl.rule_id for tl in tls} | {r for t in shown for r in t.rule_ids})
        actions = sorted({t.action for t in shown})
        if q.region and not (admdvs or "").startswith(q.region):
            continue
        if q.rule and q.rule not in rules:
            continue
        if q.action and q.action not in actions:
            continue
        max_sev = max((tl.max_severity for tl in tls), key=lambda x: SEVERITY_RANK[x], default=None)
        if min_rank >= 0 and SEVERITY_RANK.get(max_sev or "", -1) < min_rank:
            continue
        amount = sum((tl.amount for tl in tls), Decimal("0"))
        if q.min_amount is not None and amount < q.min_amount:
            continue
        state, _ = state_on(tickets, today)
        if q.state and q.state != state:
            continue
        times = [x for tl in tls for x in (tl.first, tl.last)] + [t.issued_at for t in shown]
        dls = deadlines(tickets, pack, when)
        zh, en = STATE_TEXT[state]
        rows.append(CaseSummary(
            code=code, name=inst.fixmedins_name if inst else None, type=inst.fixmedins_type if inst else None,
            admdvs=admdvs, region=region_name(admdvs) or None, state=state, state_zh=zh, state_en=en,
            alerts=sum(tl.alerts for tl in tls), tickets=len(shown), rules=rules, actions=actions,
            max_severity=max_sev, last_activity=max(times) if times else None,
            next_due=dls[0].due if dls else None, next_then=dls[0].then_zh if dls else None,
            rule_names=[rule_name(pack, r).as_json() for r in rules],
            action_names=[action_name(a).as_json() for a in actions],
            amount=amount, first_activity=min(times) if times else None,
        ))
    far_past = datetime(1970, 1, 1).astimezone()
    natural_desc = q.sort not in ("region", "code")
    desc = natural_desc if q.descending is None else q.descending
    sign = -1 if desc else 1

    def ts(r: CaseSummary) -> float:
        return (r.last_activity or far_past).timestamp()

    keys: dict[str, Any] = {
        "recency": lambda r: (sign * ts(r), r.code),
        "amount": lambda r: (sign * float(r.amount), r.code),
        "alerts": lambda r: (sign * r.alerts, r.code),
        "region": lambda r: (r.admdvs or "", r.code),
        "code": lambda r: (r.code,),
        "severity": lambda r: (sign * SEVERITY_RANK.get(r.max_severity or "", -1), sign * r.alerts, sign * ts(r),
                               r.code),
    }
    rows.sort(key=keys[q.sort], reverse=not natural_desc and desc)
    return rows


def page_of(rows: Sequence[CaseSummary], query: ListQuery) -> tuple[list[CaseSummary], int]:
    """``(rows of query.page, number of pages)`` (at least one page)."""
    pages = max(1, -(-len(rows) // query.per_page))
    page = min(query.page, pages)
    return list(rows[(page - 1) * query.per_page: page * query.per_page]), pages

"""The rule contract: what a compliance rule declares, what it may read, and what it returns.

A **rule** is one class in ``monitor/detectors/`` (one module per rule family; the module docstring
quotes the clauses it encodes) deriving from ``Rule``. The engine (``monitor/engine.py``) is the only
caller of its methods; a rule never calls the engine, the ledger, a sink or another rule.

Declarations (class attributes, read once when the engine is built)
--------------------------------------------------------------------
``name``
    Stable id: owner of the rule's timers, its row in the bench, its place in a checkpoint.
``rule_ids``
    The pack rules it judges. The rule runs when any of them is enabled in the pack (``DETECTORS`` in
    ``monitor/detectors/__init__.py`` lists the classes).
``streams``
    The streams whose de-duplicated records it reads (``Record.STREAM``: ``settlements``, ``inventory``,
    ``tracecodes``, ``prescriptions``, ``findings``, ``institutions``, ``drugs``). Nothing else reaches it.
``params``
    ``rule_id → Params`` model of that rule's pack ``params`` (unknown keys are errors).
``timers``
    The key types of the timers it schedules: each a small frozen dataclass (e.g. ``JudgeDay(code,
    day)``). ``RuleContext.schedule`` refuses any other key, so ``on_timer`` dispatches on the key's
    type instead of checking tuples. (A ``NamedTuple`` key equals any tuple of the same values, so two
    kinds of the same shape would be one timer: use one only when it is the rule's only kind.)
``state``
    Names of the attributes that hold its keyed state (what a checkpoint carries for it). They are
    plain dicts, sets and lists, changed in place as the rule likes: a checkpoint writes each of them
    per key, only the keys whose value changed (``monitor.state.keyed``; so does every other container
    attribute of a rule). What that asks of a rule: a mutable value (a list, a tally object) is reachable
    from one key of one attribute only. ``bind_state`` is the seam through which the engine hands the
    rule its ``StateStore`` (called after build and restore) for tables with event-time TTL.
``watches_tickets``
    True: ``on_ticket`` sees every ticket the engine emits.

Calls (engine → rule); each **returns** its findings
-----------------------------------------------------
``on_batch(stream, batch, ctx) -> BatchFindings``
    **The unit of work.** ``batch`` is a sequence of ``Delivery`` (record, arrival, upload time known,
    event time after it) of the rule's own ``streams``, de-duplicated, in arrival order (``stream`` is
    their stream, ``"*"`` when the batch holds several). The engine (``Engine.process_batch``) cuts
    batches at the next timer instant — before a record arriving at or after the next due timer, after
    a record that made a timer due at once — and at a registry or findings record, **not** at a change
    of stream (settlements, their sales and their trace scans arrive interleaved: cut by stream, batches
    would be one or two records long). The default implementation calls ``on_record`` for each delivery
    (``ctx.now`` = that delivery's event time) and concatenates the findings; the engine never calls it:
    a rule that keeps the default gets the records one by one, timers interleaved, exactly as
    ``process`` does — so it loses nothing. A rule that overrides ``on_batch`` (per institution-day
    work, lookups hoisted) receives whole batches and promises the findings one by one gives, each
    placed (below); the engine applies every finding of a batch — the batch rules' and the one-by-one
    rules' — when it ends, in the one-by-one order (delivery, phase, timer due, the rule's place in
    ``DETECTORS``, the rule's step) and at the event time one by one applies it, so the outputs are the
    same bytes in the same order. What a batch rule cannot see inside its batch is what the *other*
    rules' findings of earlier records of the batch changed (the ledger's sanctions, a ticket watcher's
    state): every rule sees the state from before the batch (contract step 1 for a batch). Timers it
    schedules with a due instant after the batch go to the engine. ``process(record)`` is a batch of
    one, and calls ``on_record``.

    **Placing findings; timers due inside the batch.** A batch rule returns each finding as a
    ``Placed(at, phase, finding)``: ``at`` is the index of the delivery in ``batch`` (the sequence the
    rule got; the engine maps it back to the whole batch) and ``phase`` where
    one by one would have found it — 0: a timer of the rule due when delivery ``at`` is admitted (before
    any rule sees it), 1: delivery ``at`` itself, 2: a timer delivery ``at`` made due (right after it);
    so the engine can apply a batch in the one-by-one order. ``Rule.each_delivery(batch, ctx, handle)``
    is the skeleton that does it: it calls ``handle(delivery)`` per delivery with ``ctx.now`` at it and
    *holds* the timers the rule schedules meanwhile whose due instant falls inside the batch (at or before
    its last delivery's event time), firing them through ``on_timer`` at their instant in ``(due,
    scheduling)`` order, exactly when the engine would have one by one; later ones, and those the last
    delivery schedules (the engine fires them right after the batch, as one by one after that record),
    go to the engine.
    A rule whose ``handle`` keeps per-institution-day work for the whole batch (tallies once per key)
    uses it the same way. What holding assumes (true of ``DayWindows`` and of every rule here): a key is
    not re-scheduled, while it is still pending with the engine, with a due instant inside the batch.
``on_record(rec, arrival, ctx) -> Findings``
    One record of one of ``streams``. ``arrival`` is its upload time (``inf_time``, a broker timestamp,
    or its business time when neither is known: ``ctx.upload_time_known`` is then False).
``on_timer(key, ctx) -> Findings``
    A timer this rule scheduled is due: ``ctx.now`` is its due time (not the arrival of the record that
    moved time past it).
``on_ticket(ticket, ctx) -> Findings``
    A ticket the engine emitted (only with ``watches_tickets``); the rule's own triggers' tickets too.

Findings are ``Alert`` (built with ``ctx.alert``), ``Escalation`` (built with ``ctx.escalate``: feed
the pack's sanction ladders) and ``DayFact`` (the rule's own numbers of an institution-day it judged,
for the engine's ``institution_daily`` tally) in the order the rule wants them applied. A rule keeps
no reference to what it returned and learns nothing back: whether an alert id was already emitted is the engine's
business (an ``Escalation`` built with ``alert=`` carries that alert's id only if the engine emitted it
now, else none — as before this contract).

What a rule may read and do (``RuleContext``)
---------------------------------------------
``ctx.now`` (event time, never the wall clock), ``ctx.pack`` (the policy pack), ``ctx.registry``
(``RegistryView``: institutions and drugs, read-only), ``ctx.sanctions`` (``SanctionView``: what the
ledger has in force, read-only), ``ctx.person(psn_no)`` (the keyed pseudonym; a rule never keeps a
person id in clear), ``ctx.upload_time_known``; and two effects that are not findings:
``ctx.schedule(due, key)`` (its own timers) and ``ctx.count(name)`` (data-quality counters of
``summary.json``). No I/O, no wall clock, no Faust/Kafka/ClickHouse import (``tests/test_purity.py``).

How the engine applies findings (the order is part of the contract)
-------------------------------------------------------------------
1. A record (a batch) goes to every rule subscribed to its stream in ``DETECTORS`` order; **every rule
   sees the same state**: the ledger's sanctions and the registry as they were before the record (the
   ledger has already taken a ``findings`` record, the registry an ``institutions``/``drugs`` one).
2. Only when all of them have returned are the findings applied, rule by rule in that order, each
   rule's findings in its own order: an ``Alert`` is emitted unless its id was emitted before; an
   ``Escalation`` becomes a ledger ``Trigger`` and the ledger's tickets are emitted.
3. Each emitted ticket goes at once to the ticket watchers (``watches_tickets``, ``DETECTORS`` order);
   what they return is applied right there, before the next finding (depth first).
4. A timer is a step of its own: its rule's findings are applied as soon as it returns, before the
   next timer fires (timers fire in ``(due, rank, sequence)`` order; the ledger's reviews rank after
   the rules' judgments due at the same instant).
So no rule's result depends on the order of ``DETECTORS``: a rule never sees another rule's findings
of the same record. Outputs come out in the order findings are applied.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict

from monitor.clock import business_date
from monitor.outputs import Alert, InstitutionDay, Severity, make_id

if TYPE_CHECKING:
    from monitor.outputs import Ticket
    from monitor.policy.pack import Pack
    from monitor.policy.sanctions import Sanction
    from monitor.records import Drug, Institution, Record




class Params(BaseModel):
    """Base of a rule's ``params`` model: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------- findings
@dataclass(frozen=True, slots=True)
class Escalation:
    """Feed the sanction ladders: rule ``rule_id`` was violated by ``fixmedins_code`` on business ``day``
    (``cause`` = a stable subject: one ticket per cause). ``alert``: the alert this escalation follows —
    its id goes onto the ticket only if the engine emitted that alert now; ``alert_id``: an id the rule
    already holds (used when ``alert`` is None). ``at``: event time of the determination (default: now).
    ``only_with_alert``: dropped unless ``alert`` was emitted now (a repeated finding escalates once)."""

    rule_id: str
    fixmedins_code: str
    day: date
    cause: str
    alert: Alert | None = None
    alert_id: str | None = None
    at: datetime | None = None
    new_tier: str | None = None
    only_with_alert: bool = False


@dataclass(frozen=True, slots=True)
class DayFact:
    """A rule's own numbers for an institution-day, as it judged it (e.g. completeness: settlement lines
    and those matched in time). Not an alert: the engine hands it to the observers of
    ``institution_daily`` tally (``monitor.detectors.daily``), so the figures inspectors read next to the alerts
    are the rule's, never a second reckoning under the same name."""

    fixmedins_code: str
    day: date
    facts: Mapping[str, Any]


#: ``InstitutionDay`` is returned only by the engine's own tally (``monitor.detectors.daily``): the engine
#: emits it as an output as it is.
RuleFinding = Alert | Escalation | DayFact | InstitutionDay
Findings = list[RuleFinding]
NO_FINDINGS: tuple[RuleFinding, ...] = ()


#: ``Placed.phase``: found by an in-batch timer the rule fires when the delivery is admitted (before any
#: rule sees it) / by the delivery itself / by an in-batch timer the delivery made due (right after it).
BEFORE, WITH, AFTER = 0, 1, 2


class Placed(NamedTuple):
    """A finding of ``on_batch`` with its place in the one-by-one order, so that the engine applies a
    batch's findings exactly as it would have one by one: ``at`` = index of the delivery in the batch,
    ``phase`` = ``BEFORE``/``WITH``/``AFTER`` it, ``due`` = the in-batch timer's due time (its order among
    the timers at the same place), ``step`` = one ``apply`` per (at, phase, due, step) of a rule (one
    timer, or one record). A finding returned without a ``Placed`` goes after the batch's last record."""

    at: int
    phase: int
    finding: RuleFinding
    due: datetime | None = None
    step: int = 0


BatchFindings = Sequence["RuleFinding | Placed"]


class Delivery(NamedTuple):
    """One record of a batch, as the engine hands it to ``on_batch``."""

    record: Record
    arrival: datetime
    upload_time_known: bool
    #: event time once this record has arrived (the watermark after it)
    now: datetime


# ----------------------------------------------------------------------------------------- timer keys
@dataclass(frozen=True, slots=True)
class JudgeDay:
    """Judge the institution-day ``(code, day)`` (``monitor.detectors.windows.DayWindows``)."""

    code: str
    day: date


@dataclass(frozen=True, slots=True)
class ForgetDay:
    """Forget the institution-day ``(code, day)``: late records can no longer re-open its judgment."""

    code: str
    day: date


# ------------------------------------------------------------------------------------ read-only views
class _RegistryLike(Protocol):
    institutions: dict[str, Institution]
    drugs: dict[str, Drug]

    def institution(self, code: str) -> Institution | None: ...

    def institution_on(self, code: str, moment: datetime) -> Institution | None: ...

    def admdvs(self, code: str) -> str | None: ...

    def agreement_year_start(self, code: str, day: date) -> date | None: ...


class RegistryView:
    """Institutions and drugs as last uploaded, read-only (the engine's ``Registry`` writes them)."""

    __slots__ = ("_registry", "drugs", "institutions")

    def __init__(self, registry: _RegistryLike) -> None:
        self._registry = registry
        #: code → latest entry (read-only mapping, live)
        self.institutions: Mapping[str, Institution] = MappingProxyType(registry.institutions)
        #: med_list_codg → catalogue entry (read-only mapping, live)
        self.drugs: Mapping[str, Drug] = MappingProxyType(registry.drugs)

    def institution(self, code: str) -> Institution | None:
        return self._registry.institution(code)

    def institution_on(self, code: str, moment: datetime) -> Institution | None:
        """The entry in effect at ``moment`` (latest ``valid_from`` ≤ it; XY-TIER 第四条)."""
        return self._registry.institution_on(code, moment)

    def admdvs(self, code: str) -> str | None:
        return self._registry.admdvs(code)

    def agreement_year_start(self, code: str, day: date) -> date | None:
        return self._registry.agreement_year_start(code, day)


class _LedgerLike(Protocol):
    def in_force(self, code: str, day: date) -> list[Sanction]: ...

    def state(self, code: str, day: date) -> str: ...


class SanctionView:
    """What the sanction ledger has in force, read-only. A rule must not change what it gets back."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: _LedgerLike) -> None:
        self._ledger = ledger

    def in_force(self, code: str, day: date) -> tuple[Sanction, ...]:
        """Suspensions and endings in force for ``code`` on ``day`` (``monitor.policy.ledger``)."""
        return tuple(self._ledger.in_force(code, day))

    def state(self, code: str, day: date) -> str:
        """``normal``, ``suspended`` or ``terminated`` on ``day``."""
        return self._ledger.state(code, day)


# ---------------------------------------------------------------------------------------- the context
def build_alert(pack: Pack, registry: RegistryView | _RegistryLike, now: datetime, rule_id: str,
                fixmedins_code: str, subject: str, window_start: datetime, window_end: datetime,
                evidence: dict[str, Any], vola_cont: str, vola_amt: Decimal = Decimal("0"),
                severity: Severity | None = None, detected_at: datetime | None = None) -> Alert | None:
    """The alert of ``rule_id`` (its id derived from rule, institution, subject and window), or ``None``
    when the rule does not apply yet on the last business day of the window (pack ``effective_from``)."""
    spec = pack.rule(rule_id)
    last_day = min(business_date(window_end if window_end == window_start
                                 else window_end - timedelta(microseconds=1)),
                   business_date(detected_at or now))
    if not pack.applies(rule_id, last_day):
        return None
    alert_id = make_id("AL", rule_id, fixmedins_code, subject, window_start.isoformat(), window_end.isoformat())
    basis = "; ".join(spec.basis)
    facts = "; ".join(f"{k}={v}" for k, v in evidence.items() if not isinstance(v, (list, dict)))
    return Alert(
        alert_id=alert_id,
        rule_id=rule_id,
        fixmedins_code=fixmedins_code,
        admdvs=registry.admdvs(fixmedins_code),
        severity=severity or spec.severity,
        window_start=window_start,
        window_end=window_end,
        detected_at=detected_at or now,
        evidence=evidence,
        basis=basis,
        policy=pack.label,
        jr_id=alert_id,
        rule_name=spec.name_zh,
        vola_cont=vola_cont,
        vola_amt=vola_amt,
        sev_deg=spec.sev_deg,
        vola_evid=f"{basis}: {facts}" if facts else basis,
        vola_bhvr_type=spec.vola_bhvr_type,
    )


class RuleContext:
    """What one rule may read and do while it handles a batch, a record, a timer or a ticket (see the
    module docstring). The engine builds one per rule; it is never checkpointed."""

    __slots__ = (
        "_at",
        "_clock",
        "_count",
        "_held",
        "_held_keys",
        "_held_seq",
        "_owner",
        "_person",
        "_schedule",
        "_timers",
        "_until",
        "pack",
        "registry",
        "sanctions",
        "upload_time_known",
    )

    def __init__(self, owner: Rule, pack: Pack, registry: RegistryView, sanctions: SanctionView,
                 clock: Callable[[], datetime], schedule: Callable[[datetime, str, Hashable], None],
                 count: Callable[[str, int], None], person: Callable[[str | None], str | None]) -> None:
        self.pack = pack
        self.registry = registry
        self.sanctions = sanctions
        #: whether the upload time of the record being handled is known (see ``on_record``)
        self.upload_time_known = True
        self._owner = owner.name
        self._timers = tuple(owner.timers)
        self._clock = clock
        self._schedule = schedule
        self._count = count
        self._person = person
        self._at: datetime | None = None
        #: timers held while a batch is handled (``hold_timers``): (due, sequence, key) heap, their keys
        self._held: list[tuple[datetime, int, Hashable]] | None = None
        self._held_keys: set[Hashable] = set()
        self._held_seq = 0
        self._until: datetime | None = None

    @property
    def now(self) -> datetime:
        """Event time of what is being handled (a timer: its due time). Never the wall clock."""
        return self._at if self._at is not None else self._clock()

    def deliver(self, delivery: Delivery | None) -> None:
        """Engine and ``Rule.on_batch`` only: handle ``delivery`` now (None: back to the engine's time)."""
        if delivery is None:
            self._at, self.upload_time_known = None, True
        else:
            self._at, self.upload_time_known = delivery.now, delivery.upload_time_known

    def at_timer(self, due: datetime) -> None:
        """``Rule.each_delivery`` only: a held timer due at ``due`` is being handled now."""
        self._at, self.upload_time_known = due, True

    def hold_timers(self, until: datetime) -> None:
        """``Rule.each_delivery`` only: from now on, hold the timers due at or before ``until`` (the
        batch's last event time) instead of handing them to the engine (see the module docstring)."""
        self._held, self._held_keys, self._until = [], set(), until

    def pop_held(self, now: datetime) -> tuple[datetime, Hashable] | None:
        """The next held timer due at or before ``now`` (``(due, scheduling)`` order), or None."""
        held = self._held
        if held and held[0][0] <= now:
            due, _, key = heapq.heappop(held)
            self._held_keys.discard(key)
            return due, key
        return None

    def release_timers(self) -> None:
        """End of the batch: timers still held go to the engine (their due instants are kept)."""
        held, self._held, self._until = self._held, None, None
        self._held_keys = set()
        for due, _, key in sorted(held or ()):
            self._schedule(due, self._owner, key)

    def person(self, psn_no: str | None) -> str | None:
        """The keyed pseudonym of a person id (``monitor.privacy``): what a rule may keep or show."""
        return self._person(psn_no)

    def schedule(self, due: datetime, key: Hashable) -> None:
        """Call ``on_timer(key)`` once event time reaches ``due`` (a due time already past fires at the
        current event time). Once per key while pending. ``key`` must be of one of ``timers``."""
        if not isinstance(key, self._timers):
            raise TypeError(f"rule {self._owner} schedules a {type(key).__name__} timer; it declares "
                            f"{', '.join(t.__name__ for t in self._timers) or 'none'}")
        due = max(due, self.now)
        held = self._held
        if held is not None:
            if key in self._held_keys:
                return  # once per key while pending
            if self._until is not None and due <= self._until:  # due inside the batch: the rule fires it
                self._held_keys.add(key)
                self._held_seq += 1
                heapq.heappush(held, (due, self._held_seq, key))
                return
        self._schedule(due, self._owner, key)

    def count(self, name: str, n: int = 1) -> None:
        """A data-quality counter (``summary.json`` ``quality``)."""
        self._count(name, n)

    def alert(self, rule_id: str, fixmedins_code: str, subject: str, window_start: datetime,
              window_end: datetime, evidence: dict[str, Any], vola_cont: str, vola_amt: Decimal = Decimal("0"),
              severity: Severity | None = None, detected_at: datetime | None = None) -> Alert | None:
        """Build (not emit) an alert to return; ``None`` when the rule does not apply yet (pack
        ``effective_from``; counted ``alerts.rule_not_yet_in_force``)."""
        alert = build_alert(self.pack, self.registry, self.now, rule_id, fixmedins_code, subject, window_start,
                            window_end, evidence, vola_cont, vola_amt, severity, detected_at)
        if alert is None:
            self._count("alerts.rule_not_yet_in_force", 1)
        return alert

    def escalate(self, rule_id: str, fixmedins_code: str, day: date, cause: str, alert: Alert | None = None,
                 alert_id: str | None = None, at: datetime | None = None, new_tier: str | None = None,
                 only_with_alert: bool = False) -> Escalation:
        """Build (not apply) an escalation to return (see ``Escalation``)."""
        return Escalation(rule_id, fixmedins_code, day, cause, alert, alert_id, at or self.now, new_tier,
                          only_with_alert)


# ------------------------------------------------------------------------------------------- the rule
class Rule:
    """Base of every rule (see the module docstring: declarations, calls, what they return)."""

    name: ClassVar[str]
    rule_ids: ClassVar[tuple[str, ...]]
    streams: ClassVar[tuple[str, ...]]
    params: ClassVar[dict[str, type[Params]]] = {}
    timers: ClassVar[tuple[type, ...]] = ()
    state: ClassVar[tuple[str, ...]] = ()
    watches_tickets: ClassVar[bool] = False

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    def param_model(self, rule_id: str) -> Any:
        """The validated params of one of this rule's pack rules."""
        return self.params[rule_id].model_validate(self.pack.rule(rule_id).params)

    def bind_state(self, store: Any) -> None:
        """The engine hands the rule its ``monitor.state.StateStore`` (after build and after restore)."""

    def on_batch(self, stream: str, batch: Sequence[Delivery], ctx: RuleContext) -> BatchFindings:
        out: Findings = []
        try:
            for delivery in batch:
                ctx.deliver(delivery)
                found = self.on_record(delivery.record, delivery.arrival, ctx)
                if found:
                    out.extend(found)
        finally:
            ctx.deliver(None)
        return out

    def each_delivery(self, batch: Sequence[Delivery], ctx: RuleContext,
                      handle: Callable[[Delivery], Findings | None]) -> list[Placed]:
        """The skeleton of an ``on_batch`` override (module docstring): ``handle`` each delivery with
        ``ctx.now`` at it, fire the rule's own timers that fall due inside the batch at their instant
        (``on_timer``), and place every finding where one by one would have found it."""
        out: list[Placed] = []
        last = len(batch) - 1
        if last > 0:
            ctx.hold_timers(batch[-1].now)
        try:
            for at, delivery in enumerate(batch):
                if ctx._held:  # a timer held from an earlier delivery, due by this one's admission
                    self._fire_held(at, BEFORE, delivery.now, ctx, out)
                if at == last and last > 0:
                    # the last delivery's timers go to the engine, which fires them right after the
                    # batch — where one by one fires them, in its own (due, rank, sequence) order
                    ctx.release_timers()
                ctx._at, ctx.upload_time_known = delivery.now, delivery.upload_time_known  # ctx.deliver
                found = handle(delivery)
                if found:
                    out.extend([Placed(at, WITH, f) for f in found])
                if ctx._held:  # a timer this delivery made due (a late record re-opening a past day)
                    self._fire_held(at, AFTER, delivery.now, ctx, out)
        finally:
            ctx.deliver(None)
            if ctx._held is not None:
                ctx.release_timers()
        return out

    def _fire_held(self, at: int, phase: int, now: datetime, ctx: RuleContext, out: list[Placed]) -> None:
        step = 0
        while (item := ctx.pop_held(now)) is not None:
            step += 1  # each timer is one step of its own (contract step 4)
            ctx.at_timer(item[0])
            found = self.on_timer(item[1], ctx)
            if found:
                out.extend([Placed(at, phase, f, item[0], step) for f in found])

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        return []

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        return []

    def on_ticket(self, ticket: Ticket, ctx: RuleContext) -> Findings:
        return []


__all__ = [
    "AFTER",
    "BEFORE",
    "NO_FINDINGS",
    "WITH",
    "BatchFindings",
    "Delivery",
    "Escalation",
    "Findings",
    "ForgetDay",
    "JudgeDay",
    "Params",
    "Placed",
    "RegistryView",
    "Rule",
    "RuleContext",
    "RuleFinding",
    "SanctionView",
    "build_alert",
]

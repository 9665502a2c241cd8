"""The pure core: routes records to detectors, fires due timers, feeds the sanction ledger.

Contract
--------
``Engine.process(record, arrival)`` and ``Engine.advance(now)`` are the entry points (``process_batch``
the same for many, ``close_days`` at the end of a final replay); they return the outputs they caused —
alerts, tickets and the institution-day facts (``InstitutionDay``, emitted by the engine's own tally
``monitor.detectors.daily`` at event-time midnights) — in a deterministic order. For every record:

1. the watermark advances to the record's arrival time and every timer due at or before it fires
   (in ``(due, sequence)`` order) — so windows of idle institutions close as time moves on; registry
   records (institutions, drugs) never move it (a future ``valid_from`` is not "now"). Which arrival
   a shell may pass is decided before the engine, by ``monitor.watermark.EventClock``;
2. a record already seen (same identity, design §3 "duplicates happen") is counted and dropped;
3. registry records (institutions, drugs) update the registry; findings feed the ledger as
   ``finding:KIND`` triggers; every record goes to the detectors subscribed to its stream;
4. timers that the record itself made due fire.

The engine does no I/O and never reads the wall clock: the same records in the same order give the
same outputs, byte for byte. Its whole state pickles (``Engine.snapshot``/``Engine.restore``), which the
shells use to checkpoint it together with the input positions it reflects.

Checkpoints (``seal``/``unseal``, ``load_state``): the state holds no secret (the pseudonymizer keeps only
its key's fingerprint); a checkpoint file is ``MAGIC | key fingerprint | HMAC-SHA256 | pickle``, signed
with a subkey of ``MONITOR_PII_KEY``, verified *before* anything is unpickled, and unpickled with an
allow-list of state types (no function or foreign class can be named). A checkpoint made under another
key is refused with ``KeyMismatch`` (a rotated key: the person tokens in state would no longer match).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import hmac
import operator
import pickle
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

from monitor.clock import CST, Watermark, add_years, business_date, day_end
from monitor.contract import (
    AFTER,
    WITH,
    DayFact,
    Delivery,
    Findings,
    Placed,
    RegistryView,
    Rule,
    RuleContext,
    RuleFinding,
    SanctionView,
)
from monitor.detectors import build_detectors
from monitor.detectors.daily import DailyTally
from monitor.outputs import Alert, InstitutionDay, Ticket
from monitor.policy.ledger import Ledger, Trigger
from monitor.policy.pack import Pack
from monitor.privacy import KeyMismatch, Pseudonymizer
from monitor.records import Drug, Finding, Institution, Record
from monitor.state import EPOCH as STATE_EPOCH
from monitor.state import U64, MemoryStore, StateStore, Table, restoring, to_seconds

# the allow-list unpickler lives with the state store (table values use it too); re-exported here
from monitor.state.safepickle import CheckpointError as CheckpointError
from monitor.state.safepickle import load_state as load_state

_EPOCH_ORDINAL = STATE_EPOCH.date().toordinal()
#: Days an emitted alert/ticket id is remembered (de-duplication of outputs) after it was emitted: longer
#: than any window a rule re-judges (trace codes: 3 years, ``horizon_days`` 1096) plus a month.
EMITTED_MEMORY_DAYS = 1127

Output = Alert | Ticket | InstitutionDay

#: What the per-record path needs to know of a record's class: business records go to the rules; the
#: others change the registry (never move time) or feed the ledger (``_admit``).
_BUSINESS, _FINDING, _INSTITUTION, _DRUG = 0, 1, 2, 3
_KIND: dict[type, int] = {}
#: Before any instant a record can carry (the business dates of ``monitor.records`` start in 1990).
_LONG_AGO = datetime(1900, 1, 1, tzinfo=CST)
_NO_DUE = _LONG_AGO
#: The order of a batch's findings: (delivery, phase, timer due, rule's place, rule's step).
_PLACE = operator.itemgetter(0, 1, 2, 3, 4)
#: A registry entry's ``valid_from`` (the key its history is sorted by)
_VALID_FROM = operator.attrgetter("valid_from")
#: ``tuple.__new__``: a ``Delivery`` built from its fields without the NamedTuple's Python-level ``__new__``
_new_tuple = tuple.__new__


def _failed(exc: BaseException, index: int, outputs: list[Output]) -> None:
    """Give an exception leaving ``Engine.process_batch`` the failing record's index and the outputs of
    what was applied (see there)."""
    try:
        exc.batch_index = index  # type: ignore[attr-defined]
        exc.batch_outputs = outputs  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without a __dict__: nothing to attach to
        pass


def _kind(rec: object) -> int:
    kind = (_INSTITUTION if isinstance(rec, Institution) else _DRUG if isinstance(rec, Drug)
            else _FINDING if isinstance(rec, Finding) else _BUSINESS)
    _KIND[type(rec)] = kind
    return kind


class _Run:
    """One batch being built by ``Engine.process_batch`` (transient: never outlives the call): the
    de-duplicated deliveries of every business stream in arrival order, and the findings the
    record-by-record rules already returned for them, placed."""

    __slots__ = ("deliveries", "placed")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.placed: list[tuple[int, int, datetime, int, int, RuleFinding]] = []


#: A batch rule as the engine plans it: its place in ``DETECTORS``, the rule, its context, its streams.
_BatchRule = tuple[int, Rule, RuleContext, frozenset[str]]


class Registry:
    """Institutions and drugs as last uploaded (compacted topics: the latest ``valid_from`` wins)."""

    def __init__(self) -> None:
        self.institutions: dict[str, Institution] = {}
        self.drugs: dict[str, Drug] = {}

    def upsert_institution(self, inst: Institution) -> None:
        old = self.institutions.get(inst.fixmedins_code)
        if old is None or inst.valid_from >= old.valid_from:
            self.institutions[inst.fixmedins_code] = inst
        # every entry by its valid_from, for judgments on a business date (XY-TIER 第四条: a tier
        # applies from the date it takes effect, not from its upload)
        history = self.__dict__.setdefault("history", {}).setdefault(inst.fixmedins_code, [])
        at = bisect.bisect_left(history, inst.valid_from, key=_VALID_FROM)
        if at < len(history) and history[at].valid_from == inst.valid_from:
            history[at] = inst
        else:
            history.insert(at, inst)

    def institution_on(self, code: str, moment: datetime) -> Institution | None:
        """The registry entry in effect at ``moment``: the one with the latest ``valid_from`` ≤ it (None
        when no entry applies yet)."""
        history = self.__dict__.get("history", {}).get(code)
        if not history:
            return None
        at = bisect.bisect_right(history, moment, key=_VALID_FROM)
        return history[at - 1] if at else None

    def institution(self, code: str) -> Institution | None:
        return self.institutions.get(code)

    def agreement_terms(self, code: str) -> set[tuple[date, date]]:
        """Every agreement term ``(agreement_start, agreement_end)`` the institution's registry entries
        have carried (a renewal uploaded mid-term adds the next term; it does not replace this one)."""
        return {(h.agreement_start, h.agreement_end) for h in self.__dict__.get("history", {}).get(code, [])}

    def admdvs(self, code: str) -> str | None:
        inst = self.institutions.get(code)
        return inst.admdvs if inst is not None else None

    def agreement_year_start(self, code: str, day: date) -> date | None:
        """Start of the agreement year (anniversary of ``agreement_start``) that contains ``day``."""
        inst = self.institutions.get(code)
        if inst is None:
            return None
        start = inst.agreement_start
        if day < start:
            return start
        years = day.year - start.year
        candidate = add_years(start, years)
        return candidate if candidate <= day else add_years(start, years - 1)


class TimerQueue:
    """Timers ordered by (due, rank, sequence). At the same instant, rank 0 (detector judgments) fires
    before rank 1 (ledger reviews), so a review sees the judgment of the last day it looks at; the
    sequence makes remaining ties fire in scheduling order."""

    #: ``monitor.state.keyed``: the heap's order is not state (its entries are distinct, immutable and
    #: totally ordered, so any heap of them pops alike): checkpointed as a set, restored sorted
    unordered_state: ClassVar[tuple[str, ...]] = ("_heap",)
    #: ``monitor.state.keyed``: what is pending is what the heap holds — not checkpointed, rebuilt
    derived_state: ClassVar[tuple[str, ...]] = ("_pending",)

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, int, str, Hashable]] = []
        self._seq = 0
        self._pending: set[tuple[str, Hashable]] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, due: datetime, owner: str, key: Hashable, rank: int = 0) -> bool:
        """Schedule once per (owner, key) while pending; returns False if already pending."""
        ident = (owner, key)
        if ident in self._pending:
            return False
        self._pending.add(ident)
        self._seq += 1
        heapq.heappush(self._heap, (due, rank, self._seq, owner, key))
        return True

    def pop_due(self, now: datetime) -> tuple[datetime, str, Hashable] | None:
        if self._heap and self._heap[0][0] <= now:
            due, _, _, owner, key = heapq.heappop(self._heap)
            self._pending.discard((owner, key))
            return due, owner, key
        return None

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def derive_state(self) -> None:
        """Rebuild ``_pending`` from the heap (after a restore: ``derived_state``)."""
        self._pending.clear()
        self._pending.update((owner, key) for _, _, _, owner, key in self._heap)

    def rekey(self, owner: str, convert: Callable[[Hashable], Hashable]) -> None:
        """Replace each key of ``owner``'s timers by ``convert(key)`` (a checkpoint of an older version),
        in place; due, rank and sequence stay, so the heap's order does too. A key ``convert`` returns
        as it is stays the very entry (a checkpoint diffs the heap by its entries' identity)."""
        heap = self._heap
        for i, (due, rank, seq, who, key) in enumerate(heap):
            if who == owner and (new := convert(key)) is not key:
                heap[i] = (due, rank, seq, who, new)
                self._pending.discard((who, key))
                self._pending.add((who, new))


class Dedup:
    """Identities of recent records (64-bit stable hashes) in the store's ``seen`` table, each expiring
    ``horizon_days`` after its business date (event-time TTL: gone once the watermark's day is
    ``day + horizon_days``). A record whose day is already beyond the horizon cannot be told from a
    duplicate, so it is counted (documented limit): the table does not store an entry already expired."""

    TABLE = "seen"

    def __init__(self, horizon_days: int, store: StateStore | None = None) -> None:
        self.horizon_days = horizon_days
        self._table = (store or MemoryStore()).table(self.TABLE, U64, U64)
        self._horizon_s = horizon_days * 86400

    def seen(self, key: int, day: date) -> bool:
        if key < 2:
            key += 2  # 0 and 1 are the packed table's empty/deleted marks
        table = self._table
        if table.get(key) is not None:
            return True
        # expires at 00:00 of day + horizon (Asia/Shanghai): EPOCH is a CST midnight
        table.set_at(key, 1, (day.toordinal() - _EPOCH_ORDINAL) * 86400 + self._horizon_s)
        return False

    def __len__(self) -> int:
        return len(self._table)


@dataclass
class Stats:
    """Counters the shells expose (summary.json, Prometheus)."""

    records: Counter[str]
    duplicates: Counter[str]
    alerts: Counter[str]
    tickets: Counter[str]
    quality: Counter[str]

    @classmethod
    def empty(cls) -> Stats:
        return cls(Counter(), Counter(), Counter(), Counter(), Counter())


class LedgerContext:
    """The engine's own context: what the sanction ledger (``monitor.policy.ledger``) may see and do
    while the engine feeds it a trigger, a finding record or a ledger timer. Rules never get it: they
    get a ``monitor.contract.RuleContext`` and return their findings, which the engine applies."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.pack: Pack = engine.pack
        self.registry: Registry = engine.registry
        self.ledger: Ledger = engine.ledger
        self.pseudo: Pseudonymizer = engine.pseudo

    @property
    def now(self) -> datetime:
        """Event time of what is being handled: while a timer fires, its due time (so a judgment made
        by a timer does not depend on when the next record happened to arrive); otherwise the
        watermark, the largest arrival time seen. Never the wall clock."""
        if self._engine.firing_at is not None:
            return self._engine.firing_at
        value = self._engine.watermark.value
        assert value is not None, "no record has arrived yet"
        return value

    def schedule(self, due: datetime, owner: str, key: Hashable) -> None:
        """Fire ``owner.on_timer(key)`` once event time reaches ``due``. A due time already past (a late
        record re-opening an old window) fires at the current event time, never in the past."""
        rank = 1 if owner == Ledger.TIMER_OWNER else 0  # reviews after the judgments due with them
        self._engine.timers.schedule(max(due, self.now), owner, key, rank)

    def review_evidence(self, code: str, streams: list[str], window: tuple[date, date],
                        baseline: tuple[date, date], min_volume_share: float,
                        max_late_share: float, each_stream: bool = True) -> dict[str, Any]:
        """Positive evidence of real-time uploads for an end-of-suspension review, from the upload
        detector (``UploadTimeliness.review_evidence``); ``{"ok": False}`` when it does not run."""
        det = self._engine._by_name.get("upload")
        finder = getattr(det, "review_evidence", None)
        if finder is None:
            return {"ok": False, "note": "no upload detector"}
        result: dict[str, Any] = finder(code, streams, window, baseline, min_volume_share,
                                          max_late_share, each_stream)
        return result

    def count(self, name: str, n: int = 1) -> None:
        """A data-quality counter (summary.json ``quality``)."""
        self._engine.stats.quality[name] += n


class Engine:
    """Deterministic compliance engine over (state, record, now). See the module docstring."""

    def __init__(self, pack: Pack, pseudo: Pseudonymizer | None = None, store: StateStore | None = None) -> None:
        self.pack = pack
        self.pseudo = pseudo or Pseudonymizer()
        #: the keyed state that grows (monitor.state): not pickled with the engine, checkpointed as deltas
        self.state: StateStore = store if store is not None else MemoryStore()
        self.registry = Registry()
        self.timers = TimerQueue()
        self.ledger = Ledger(pack, self.registry)
        self.watermark = Watermark()
        self.dedup = Dedup(int(pack.setting("dedup_horizon_days", 35)), self.state)
        self.stats = Stats.empty()
        self.detectors: list[Rule] = build_detectors(pack)
        #: the institution-day facts (``institution_daily``): an engine output, from its own tally
        self.daily = DailyTally(pack)
        self.detectors.append(self.daily)
        self._by_name: dict[str, Rule] = {d.name: d for d in self.detectors}
        self._routes: dict[str, list[Rule]] = defaultdict(list)
        for det in self.detectors:
            for stream in det.streams:
                self._routes[stream].append(det)
        #: Detectors that see every ticket the ledger issues (e.g. suspensions.repeated counts them).
        self._ticket_watchers: list[Rule] = [d for d in self.detectors if d.watches_tickets]
        #: ids of emitted alerts and tickets (64-bit BLAKE2b of the id; ``EMITTED_MEMORY_DAYS``)
        self._emitted: Table[int, int] = self.state.table("emitted", U64, U64)
        self._out: list[Output] = []
        self.firing_at: datetime | None = None
        self._last_prune: date | None = None
        self._bind()
        for det in self.detectors:
            bind = getattr(det, "bind_state", None)
            if bind is not None:
                bind(self.state)

    def _bind(self) -> None:
        """The transient parts: the engine's context and one ``RuleContext`` per rule (never pickled)."""
        self.ctx = LedgerContext(self)
        registry, sanctions = RegistryView(self.registry), SanctionView(self.ledger)
        self._rule_ctx: dict[str, RuleContext] = {}
        self._fact_observers: list[Callable[[DayFact], None]] = [
            d.on_fact for d in self.detectors if callable(getattr(d, "on_fact", None))]  # type: ignore[attr-defined]
        for det in self.detectors:
            self._rule_ctx[det.name] = self._rule_context(det, registry, sanctions)
        self._plan_calls()
        #: the instant the business day of the last expiry ends (``_fire_due`` expires the store then)
        self._prune_at = day_end(self._last_prune) if self._last_prune is not None else _LONG_AGO

    def _plan_calls(self) -> None:
        """Per stream, the rules a record goes to one by one (``_calls``: rule and its RuleContext, in
        ``DETECTORS`` order); the rules that take batches whole (they override ``on_batch``) and, per
        stream, the rules that take its records one by one inside a batch, each with its place in
        ``DETECTORS`` (all transient: rebuilt at bind and when a rule is attached)."""
        self._calls: dict[str, tuple[tuple[Any, RuleContext], ...]] = {
            stream: tuple((det, self._rule_ctx[det.name]) for det in routed)
            for stream, routed in self._routes.items()}
        rank = {id(det): i for i, det in enumerate(self.detectors)}
        self._batch_rules: tuple[_BatchRule, ...] = tuple(
            (rank[id(det)], det, self._rule_ctx[det.name], frozenset(det.streams)) for det in self.detectors
            if type(det).on_batch is not Rule.on_batch)
        whole = {id(rule) for _, rule, _, _ in self._batch_rules}
        self._singles: dict[str, tuple[tuple[int, Any, RuleContext], ...]] = {
            stream: tuple((rank[id(det)], det, self._rule_ctx[det.name]) for det in routed if id(det) not in whole)
            for stream, routed in self._routes.items()}
        self._batch_streams = frozenset(s for _, _, _, streams in self._batch_rules for s in streams)

    def _rule_context(self, rule: Rule, registry: RegistryView, sanctions: SanctionView) -> RuleContext:
        ctx = self.ctx
        timers = self.timers

        def schedule(due: datetime, owner: str, key: Hashable) -> None:
            timers.schedule(due, owner, key, 0)

        return RuleContext(rule, self.pack, registry, sanctions, lambda: ctx.now, schedule, ctx.count,
                           self.pseudo.person)

    def rule_context(self, name: str) -> RuleContext:
        """The context the engine hands rule ``name``."""
        return self._rule_ctx[name]

    # ------------------------------------------------------------------------------------------ outputs
    @staticmethod
    def _emitted_key(ident: str) -> int:
        return int.from_bytes(hashlib.blake2b(ident.encode(), digest_size=8).digest(), "big") | 2

    def was_emitted(self, ident: str) -> bool:
        """Whether the alert or ticket id ``ident`` was emitted (within ``EMITTED_MEMORY_DAYS``)."""
        return self._emitted.get(self._emitted_key(ident)) is not None

    def emit(self, item: Alert | Ticket) -> bool:
        ident = item.alert_id if isinstance(item, Alert) else item.ticket_id
        key = self._emitted_key(ident)
        emitted = self._emitted
        if emitted.get(key) is not None:
            return False
        now = self.firing_at or self.watermark.value
        emitted.set_at(key, 1, 0 if now is None else
                       to_seconds(now) + EMITTED_MEMORY_DAYS * 86400)
        self._out.append(item)
        if isinstance(item, Alert):
            self.stats.alerts[item.rule_id] += 1
            self.daily.on_alert(item)
        else:
            self.stats.tickets[item.action] += 1
            for det in self._ticket_watchers:  # contract step 3: watchers see a ticket as it is emitted
                self.apply(det.on_ticket(item, self._rule_ctx[det.name]))
        return True

    def apply(self, findings: Iterable[RuleFinding]) -> None:
        """Apply a rule's findings in order (contract steps 2–3, ``monitor.contract``): an alert is
        emitted unless its id was before; an escalation becomes a ledger trigger whose tickets are
        emitted (and seen by the ticket watchers at once). An escalation's ``alert`` lends it its id only
        when that alert was emitted here."""
        fresh: set[str] | None = None
        for f in findings:
            if isinstance(f, Alert):
                if self.emit(f):
                    if fresh is None:
                        fresh = set()
                    fresh.add(f.alert_id)
                continue
            if isinstance(f, DayFact):
                for observer in self._fact_observers:
                    observer(f)
                continue
            if isinstance(f, InstitutionDay):  # the tally's emission (ids carry their version)
                self._out.append(f)
                continue
            alert_id = f.alert_id
            if f.alert is not None:
                alert_id = f.alert.alert_id if fresh is not None and f.alert.alert_id in fresh else None
                if alert_id is None and f.only_with_alert:
                    continue
            elif f.only_with_alert:
                continue
            trig = Trigger(rule_id=f.rule_id, fixmedins_code=f.fixmedins_code, day=f.day,
                           at=f.at or self.ctx.now, cause=f.cause, alert_id=alert_id, new_tier=f.new_tier)
            for ticket in self.ledger.on_trigger(trig, self.ctx):
                self.emit(ticket)

    def observe_facts(self, observer: Callable[[DayFact], None]) -> None:
        """Hand every ``DayFact`` the rules return to ``observer`` too (the engine's ``institution_daily``
        tally gets them anyway).
        Transient: observers are not checkpointed; a shell registers them again after a restore."""
        if observer not in self._fact_observers:
            self._fact_observers.append(observer)

    def _drain(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------------------------------- time
    def _fire_due(self) -> None:
        now = self.watermark.value
        if now is None:
            return
        heap = self.timers._heap
        while heap and heap[0][0] <= now and (item := self.timers.pop_due(now)) is not None:
            due, owner, key = item
            self.firing_at = due
            try:
                if owner == Ledger.TIMER_OWNER:
                    for ticket in self.ledger.on_timer(key, self.ctx):
                        self.emit(ticket)
                else:  # contract step 4: a timer is a step of its own
                    self.apply(self._by_name[owner].on_timer(key, self._rule_ctx[owner]))
            finally:
                self.firing_at = None
        if now >= self._prune_at:
            today = business_date(now)
            if self._last_prune != today:
                self._last_prune = today
                self.state.expire(now)  # event-time TTL of every table (dedup, emitted ids, trace codes, …)
            self._prune_at = day_end(today)

    def _due(self, now: datetime) -> bool:
        """Whether ``_fire_due`` at ``now`` has anything to do: a timer due, or a new business day (the
        store's expiry). One comparison or two instead of a call: the per-record path asks twice."""
        heap = self.timers._heap
        return bool(heap and heap[0][0] <= now) or now >= self._prune_at

    def close_days(self) -> list[Output]:
        """The input ended (a replay not to be continued): emit every institution-day changed since its
        last emission (``monitor.detectors.daily``), without moving event time."""
        self._out.extend(self.daily.emit_changed())
        return self._drain()

    def advance(self, now: datetime) -> list[Output]:
        """Move event time to ``now`` (e.g. ``--as-of`` or a Faust tick) and fire what is due."""
        self.watermark.observe(now)
        self._fire_due()
        return self._drain()

    # ----------------------------------------------------------------------------------------- records
    def _admit(self, rec: Record, arrival: datetime | None) -> datetime | None:
        """Steps 1–3 of ``process`` up to the rules: time, de-duplication, registry, ledger findings.
        Returns the record's arrival for the rules, or None when it goes no further (a duplicate, or
        no time at all yet)."""
        kind = _KIND.get(type(rec))
        if kind is None:
            kind = _kind(rec)
        stream = rec.STREAM
        btime = rec.business_time
        inf = rec.inf_time
        when = arrival or (inf if inf is not None else btime)  # ``arrival_time``, without the property call
        watermark = self.watermark
        if kind >= _INSTITUTION:  # a registry upload (a future valid_from) never moves time
            if when is not None and watermark.value is not None:
                when = min(when, watermark.value)
        elif when is not None:
            now = watermark.value
            if now is None or when > now:
                watermark.value = now = when
            heap = self.timers._heap
            if (heap and heap[0][0] <= now) or now >= self._prune_at:  # ``_due(now)``, inline
                self._fire_due()
        stats = self.stats
        stats.records[stream] += 1
        key = rec.dedup_key()
        if key is not None:
            moment = btime if btime is not None else (when or self.ctx.now)
            if self.dedup.seen(key, moment.date() if moment.tzinfo is CST else business_date(moment)):
                stats.duplicates[stream] += 1
                return None
        if when is None:
            when = watermark.value
        if btime is not None and inf is not None and btime > inf:
            self.stats.quality[f"{stream}.business_time_after_upload"] += 1
        if kind == _BUSINESS:
            return when
        if kind == _INSTITUTION:
            assert isinstance(rec, Institution)
            self.registry.upsert_institution(rec)
        elif kind == _DRUG:
            assert isinstance(rec, Drug)
            self.registry.drugs[rec.med_list_codg] = rec
        elif when is not None:
            assert isinstance(rec, Finding)
            for ticket in self.ledger.on_finding(rec, when, self.ctx):  # ledger state model (#12)
                self.emit(ticket)
        return when

    def process(self, rec: Record, arrival: datetime | None = None) -> list[Output]:
        """Handle one record (a batch of one). ``arrival`` overrides the record's own (e.g. the Kafka
        timestamp)."""
        self._step(rec, arrival)
        return self._drain()

    def _step(self, rec: Record, arrival: datetime | None) -> None:
        """``process`` without the drain: admit, every subscribed rule's ``on_record``, their findings
        applied rule by rule (contract steps 1–2), then the timers the record made due."""
        when = self._admit(rec, arrival)
        if when is None:
            return
        calls = self._calls.get(rec.STREAM)
        if calls:
            known = arrival is not None or rec.inf_time is not None
            # contract steps 1–2: every rule sees the record before any finding of it is applied
            results: list[Findings] | None = None
            for det, rctx in calls:
                if not known:
                    found = self._record_call(det, rctx, rec, when)
                else:
                    found = det.on_record(rec, when, rctx)
                if found:
                    if results is None:
                        results = [found]
                    else:
                        results.append(found)
            if results is not None:
                for found in results:
                    self.apply(found)
        now = self.watermark.value
        if now is not None and self._due(now):
            self._fire_due()

    def _record_call(self, det: Rule, rctx: RuleContext, rec: Record, when: datetime) -> Findings:
        """One record whose upload time is not known (replay fell back to its business time) to one
        rule: ``ctx.upload_time_known`` is False while the rule reads it (a rule with a batch path too:
        a batch of one is its reference)."""
        rctx.upload_time_known = False
        try:
            return det.on_record(rec, when, rctx)
        finally:
            rctx.upload_time_known = True

    def process_batch(self, records: Sequence[Record], arrivals: Sequence[datetime | None] | None = None,
                      ) -> list[Output]:
        """Handle ``records`` in arrival order (``arrivals[i]`` overrides record i's own, as in
        ``process``); the same outputs, in the same order, as ``process`` one by one.

        Without batch rules (rules overriding ``on_batch``, ``monitor.contract``) this is the per-record
        path in one tight loop. With them, a **batch** starts at a business record of a stream a batch
        rule reads and ends at the next timer instant — before a record arriving at or after the next due
        timer, after a record that made a timer due at once — or at a registry or findings record (not
        at a change of stream). Each batch rule gets, at the end, the deliveries of *its* streams in
        arrival order (``stream`` = their stream, ``"*"`` when several); the other rules get the records
        one by one as always. Every finding of the batch is then applied in the one-by-one order: by
        delivery, ``Placed`` phase (before / with / after it), timer due, the rule's place in
        ``DETECTORS``, the rule's step — ``Placed.at`` indexes the sequence the rule got, the engine maps
        it back. Rules see the ledger and the registry as they were before the batch; a new business
        day's expiry of the store happens when the record that starts it is admitted, as one by one.

        ``records`` is read lazily, in order. **When something raises**, the records before the failing
        one are applied (a batch collected so far is ended without it) and the exception leaves with
        ``batch_index`` (that record's index; for a failure while a batch ends: its last record's) and
        ``batch_outputs`` (the outputs of what was applied); the records after it are untouched."""
        if not self._batch_rules:
            step = self._step
            i = -1
            try:
                if arrivals is None:
                    for i, rec in enumerate(records):  # noqa: B007 — ``i`` names a failing record
                        step(rec, None)
                else:
                    for i, rec in enumerate(records):
                        step(rec, arrivals[i])
            except BaseException as exc:
                _failed(exc, i, self._drain())
                raise
            return self._drain()
        return self._process_runs(records, arrivals)

    def _process_runs(self, records: Sequence[Record], arrivals: Sequence[datetime | None] | None) -> list[Output]:
        """``process_batch`` with batch rules (see there)."""
        batch_streams = self._batch_streams
        heap = self.timers._heap
        watermark = self.watermark
        run: _Run | None = None
        last = -1  # index of the run's last record: the one named when ending the run fails
        i = -1

        def end() -> None:
            nonlocal run, i
            ending, run = run, None
            assert ending is not None
            try:
                self._flush(ending)
            except BaseException:
                i = last
                raise

        try:
            for i, rec in enumerate(records):
                arrival = arrivals[i] if arrivals is not None else None
                kind = _KIND.get(type(rec))
                if kind is None:
                    kind = _kind(rec)
                if run is not None:
                    if kind != _BUSINESS:
                        end()
                    else:
                        inf = rec.inf_time  # ``arrival_time`` without the property call
                        when = arrival or (inf if inf is not None else rec.business_time)
                        if when is not None and heap and heap[0][0] <= when:
                            end()
                if kind != _BUSINESS or (run is None and rec.STREAM not in batch_streams):
                    self._step(rec, arrival)
                    continue
                if run is None:
                    run = _Run()
                mark = len(run.deliveries)
                try:
                    self._batched(run, rec, arrival)
                except BaseException:
                    del run.deliveries[mark:]  # the failing record goes no further
                    run.placed = [p for p in run.placed if p[0] < mark]
                    raise
                last = i
                now = watermark.value
                if heap and now is not None and heap[0][0] <= now:  # a record made a timer due at once
                    end()
            if run is not None:
                end()
        except BaseException as exc:
            if run is not None:  # the records before the failing one still reach the batch rules
                end()
            _failed(exc, i, self._drain())
            raise
        return self._drain()

    def _batched(self, run: _Run, rec: Record, arrival: datetime | None) -> None:
        """One record of a batch: admitted now; the batch rules get it when the batch ends, the others
        now (their findings kept, placed, for the end)."""
        when = self._admit(rec, arrival)
        if when is None:
            return
        known = arrival is not None or rec.inf_time is not None
        now = self.watermark.value
        assert now is not None
        at = len(run.deliveries)
        run.deliveries.append(_new_tuple(Delivery, (rec, when, known, now)))  # Delivery(rec, when, known, now)
        for rank, det, rctx in self._singles.get(rec.STREAM, ()):
            if not known:
                found = self._record_call(det, rctx, rec, when)
            else:
                found = det.on_record(rec, when, rctx)
            if found:
                run.placed.extend([(at, WITH, _NO_DUE, rank, 0, f) for f in found])

    def _flush(self, run: _Run) -> None:
        """End a batch: the batch rules' ``on_batch`` over the deliveries of their streams, then every
        finding of the batch applied in the one-by-one order — one ``apply`` per (delivery, phase, due,
        rule, step), as one by one applies each rule's findings of a record or of a timer — then the
        timers due."""
        deliveries = run.deliveries
        if deliveries:
            placed = run.placed
            for rank, rule, rctx, streams in self._batch_rules:
                index = [j for j, d in enumerate(deliveries) if d.record.STREAM in streams]
                if not index:
                    continue
                mine = deliveries if len(index) == len(deliveries) else [deliveries[j] for j in index]
                kinds = {d.record.STREAM for d in mine}
                stream = next(iter(kinds)) if len(kinds) == 1 else "*"
                last = index[-1]
                for f in rule.on_batch(stream, mine, rctx):
                    if type(f) is Placed:
                        placed.append((index[f.at], f.phase, f.due or _NO_DUE, rank, f.step, f.finding))
                    else:  # an unplaced finding: after the last delivery the rule got
                        placed.append((last, AFTER, _NO_DUE, rank, 0, f))  # type: ignore[arg-type]
            if placed:
                placed.sort(key=_PLACE)
                group: Findings = []
                at_key = _PLACE(placed[0])
                try:
                    for entry in placed:
                        k = _PLACE(entry)
                        if k != at_key:
                            self._apply_at(deliveries, at_key, group)
                            group, at_key = [], k
                        group.append(entry[5])
                    self._apply_at(deliveries, at_key, group)
                finally:
                    self.firing_at = None
        self._fire_due()

    def _apply_at(self, deliveries: list[Delivery], place: tuple[Any, ...], group: Findings) -> None:
        """Apply one group of a batch's findings at the event time one by one applies them: a record's
        own findings at the event time after it, an in-batch timer's at its due time (what the ledger
        reads as now, e.g. a ticket's ``issued_at``)."""
        at, phase, due = place[0], place[1], place[2]
        self.firing_at = due if phase != WITH and due is not _NO_DUE else deliveries[at].now
        self.apply(group)

    def attach(self, det: Rule) -> Rule:
        """Add a pure observer at run time (tests, tools): it sees de-duplicated records like a detector
        and is checkpointed with the engine (the shells attach nothing: ``institution_daily`` is the
        engine's own output). Returns the instance in use: after ``restore`` that is the checkpointed one."""
        have = self._by_name.get(det.name)
        if have is not None:
            return have
        self.detectors.append(det)
        self._by_name[det.name] = det
        on_fact = getattr(det, "on_fact", None)
        if callable(on_fact):
            self.observe_facts(on_fact)
        for stream in det.streams:
            self._routes[stream].append(det)
        self._rule_ctx[det.name] = self._rule_context(det, RegistryView(self.registry), SanctionView(self.ledger))
        self._plan_calls()
        return det

    def process_many(self, records: Iterable[Record]) -> list[Output]:
        out: list[Output] = []
        for rec in records:
            out.extend(self.process(rec))
        return out

    # ------------------------------------------------------------------------------------- checkpoints
    def snapshot(self) -> bytes:
        """The whole state, self-contained: the engine and, for a memory store, every table whole. The
        shells' incremental checkpoints use ``small_state`` plus the store's deltas instead
        (``monitor.state.checkpoint``)."""
        tables = self.state.dump() if isinstance(self.state, MemoryStore) else None
        return pickle.dumps({"engine": self.small_state(), "tables": tables, "now_s": self.state.now_s},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def small_state(self) -> bytes:
        """The engine without its store: tables are pickled as references by name (``TableRef``), so
        this is what an incremental checkpoint writes whole, beside the store's deltas."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def restore(blob: bytes, pseudo: Pseudonymizer | None = None, store: StateStore | None = None,
                persistent: Callable[[Any], Any] | None = None) -> Engine:
        """The engine of a ``snapshot`` (or, with the ``store`` it refers to, of a ``small_state``), keyed
        with ``pseudo`` (the current ``MONITOR_PII_KEY``): it must be the key the snapshot was made
        under (``KeyMismatch``). Without ``pseudo`` only a dev-key snapshot (demo, tests) is usable.
        Unpickled with the state allow-list (``load_state``); ``persistent`` resolves the persistent ids
        of a checkpoint's residue (``monitor.state.keyed``)."""
        target = store if store is not None else MemoryStore()
        with restoring(target):
            head = load_state(blob, persistent)
        if isinstance(head, dict) and "engine" in head:  # a self-contained snapshot
            if head.get("tables"):
                target.apply(head["tables"])
            target.set_now(int(head.get("now_s") or 0))
            with restoring(target):
                engine = load_state(head["engine"])
        elif store is None:
            raise TypeError("a small_state needs the store it refers to")
        else:
            engine = head
        if not isinstance(engine, Engine):
            raise TypeError("checkpoint does not hold an Engine")
        engine.state = target
        if pseudo is not None:
            if pseudo.fingerprint != engine.pseudo.fingerprint:
                raise KeyMismatch(
                    f"the checkpoint was made under another MONITOR_PII_KEY (key {engine.pseudo.fingerprint}, "
                    f"now {pseudo.fingerprint}): its person tokens would not match new ones. Restore the "
                    "previous key, or start a new state (replay the input again under the new key)")
            engine.pseudo = pseudo
            engine._bind()
        return engine

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("ctx", None)
        state.pop("state", None)  # the store is checkpointed by itself (deltas); tables pickle by name
        state.pop("_rule_ctx", None)
        state.pop("_fact_observers", None)
        for transient in ("_batch_rules", "_singles", "_batch_streams", "_calls", "_prune_at"):
            state.pop(transient, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()


# ------------------------------------------------------------------------------------------ checkpoints
CHECKPOINT_MAGIC = b"MEDINS-CKPT-3\n"

def seal(payload: bytes, pseudo: Pseudonymizer) -> bytes:
    """``payload`` signed for a checkpoint file: magic, key fingerprint, HMAC-SHA256, payload."""
    mac = hmac.new(pseudo.derive("checkpoint"), payload, hashlib.sha256).digest()
    return CHECKPOINT_MAGIC + pseudo.fingerprint.encode("ascii") + mac + payload


def unseal(blob: bytes, pseudo: Pseudonymizer) -> bytes:
    """The payload of a sealed checkpoint, verified before anything reads it."""
    head = len(CHECKPOINT_MAGIC)
    if not blob.startswith(CHECKPOINT_MAGIC) or len(blob) < head + 16 + 32:
        raise CheckpointError("not a signed monitor checkpoint (an older or foreign file): start a new state")
    fingerprint = blob[head:head + 16].decode("ascii", "replace")
    mac, payload = blob[head + 16:head + 48], blob[head + 48:]
    if fingerprint != pseudo.fingerprint:
        raise KeyMismatch(f"the checkpoint was made under another MONITOR_PII_KEY (key {fingerprint}, now "
                          f"{pseudo.fingerprint}): restore the previous key, or start a new state")
    want = hmac.new(pseudo.derive("checkpoint"), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, want):
        raise CheckpointError("checkpoint signature does not match: the file was changed after it was written")
    return payload


def next_day(moment: datetime) -> date:
    return business_date(moment) + timedelta(days=1)

"""One rule, a fake clock, records in, findings out (``monitor.contract``).

``RuleHarness(Completeness)`` builds the rule from a pack and gives it a ``RuleContext`` of its own:
a registry, an empty sanction ledger (``harness.ledger`` to put sanctions in force), a timer heap and
an event-time clock the test moves. No engine, no other rule, no ledger application: what the rule
*returns* is what the test sees.

* ``feed(stream, record)`` — parse the record (design §3 names), move the clock to its arrival (its
  ``inf_time``, or ``arrival=``), fire the rule's timers due by then (their findings first), hand it
  the record, then fire the timers the record itself made due (as the engine does). Registry records
  (institutions, drugs) go to the registry first.
* ``advance(to)`` — move the clock and fire the timers due by then.
* ``alerts(found)`` / ``escalations(found)`` split findings by kind.
* ``run(records, batched)`` — parsed records (with their arrivals) through the rule one by one
  (``on_record``, timers between records: what ``Engine.process`` does) or batched (``on_batch`` over
  the runs ``Engine.process_batch`` cuts: one stream, up to the next due timer, a registry or findings
  record ends one), findings in the order one by one gives them (a batch's ``Placed`` findings sorted by
  their place). ``assert_batch_parity(Rule, records)`` runs both on fresh harnesses and asserts the
  same findings in the same order and the same data-quality counts: a rule's batch path is covered by it.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from typing import Any

from monitor.clock import parse_time
from monitor.contract import (
    Delivery,
    Escalation,
    Findings,
    Placed,
    RegistryView,
    Rule,
    RuleContext,
    RuleFinding,
    SanctionView,
)
from monitor.engine import Registry
from monitor.outputs import Alert
from monitor.policy.ledger import Ledger
from monitor.policy.pack import Pack, load_pack
from monitor.privacy import Pseudonymizer
from monitor.records import Drug, Finding, Institution, InvalidRecord, Record, parse_value


class RuleHarness:
    def __init__(self, rule: type[Rule], policy: str | Pack = "ezhou") -> None:
        self.pack = load_pack(policy) if isinstance(policy, str) else policy
        self.rule = rule(self.pack)
        self.registry = Registry()
        self.ledger = Ledger(self.pack, self.registry)
        self.now: datetime | None = None
        self.counts: dict[str, int] = {}
        self.timers: list[tuple[datetime, int, Hashable]] = []
        self._pending: set[Hashable] = set()
        self._seq = 0
        self._firing: datetime | None = None
        self.ctx = RuleContext(self.rule, self.pack, RegistryView(self.registry), SanctionView(self.ledger),
                               self._clock, self._schedule, self._count, Pseudonymizer().person)

    # -------------------------------------------------------------------------------- the fake clock
    def _clock(self) -> datetime:
        if self._firing is not None:
            return self._firing
        assert self.now is not None, "no record yet: feed one or advance the clock first"
        return self.now

    def _schedule(self, due: datetime, owner: str, key: Hashable) -> None:
        assert owner == self.rule.name
        if key in self._pending:
            return
        self._pending.add(key)
        self._seq += 1
        heapq.heappush(self.timers, (due, self._seq, key))

    def _count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    # ---------------------------------------------------------------------------------- driving
    def advance(self, to: str | datetime) -> Findings:
        moment = parse_time(to) if isinstance(to, str) else to
        if self.now is None or moment > self.now:
            self.now = moment
        out: Findings = []
        while self.timers and self.timers[0][0] <= self.now:
            due, _, key = heapq.heappop(self.timers)
            self._pending.discard(key)
            self._firing = due
            try:
                out.extend(self.rule.on_timer(key, self.ctx))
            finally:
                self._firing = None
        return out

    def feed(self, stream: str, record: dict[str, Any], arrival: str | None = None) -> Findings:
        out: Findings = []
        for rec in self.parse(stream, record):
            when = parse_time(arrival) if arrival is not None else (rec.arrival_time or self.now)
            assert when is not None
            if not self._register(rec):
                out.extend(self.advance(when))
            if stream not in self.rule.streams:
                continue
            if self.now is None:
                self.now = when
            known = rec.inf_time is not None or arrival is not None
            out.extend(self._one(Delivery(rec, when, known, self.now)))
            out.extend(self.advance(self.now))  # timers the record itself made due (a late record)
        return out

    def _register(self, rec: Record) -> bool:
        """A registry record goes to the registry first (True); any other record: False."""
        if isinstance(rec, Institution):
            self.registry.upsert_institution(rec)
        elif isinstance(rec, Drug):
            self.registry.drugs[rec.med_list_codg] = rec
        else:
            return False
        return True

    def _one(self, delivery: Delivery) -> Findings:
        """One record through ``on_record`` (as ``Engine.process`` hands it, also to a batch rule)."""
        self.ctx.deliver(delivery)
        try:
            return self.rule.on_record(delivery.record, delivery.arrival, self.ctx)
        finally:
            self.ctx.deliver(None)

    def run(self, records: Sequence[tuple[Record, datetime | None]], batched: bool,
            mixed: bool = False) -> list[RuleFinding]:
        """Parsed records in arrival order (each with an arrival overriding its own, or None) — see the
        module docstring. ``mixed``: a batch is not ended by another stream (the rule gets the records
        of all its streams up to the next due timer). Returns the findings in one-by-one order."""
        placed: list[tuple[int, int, RuleFinding]] = []
        batch: list[tuple[int, Delivery]] = []
        stream: str | None = None
        takes_batches = batched and type(self.rule).on_batch is not Rule.on_batch

        def put(at: int, phase: int, found: Iterable[RuleFinding]) -> None:
            placed.extend((at, phase, f) for f in found)

        def flush() -> None:
            if batch and stream is not None:
                found = self.rule.on_batch(stream, [d for _, d in batch], self.ctx)
                for f in found:
                    assert isinstance(f, Placed), f"{self.rule.name}.on_batch returned an unplaced {f!r}"
                    put(batch[f.at][0], f.phase, [f.finding])
                put(batch[-1][0], 2, self.advance(self.now))  # assert-free: nothing may be due here
                batch.clear()

        for i, (rec, arrival) in enumerate(records):
            when = arrival or rec.arrival_time or self.now
            business = not isinstance(rec, (Institution, Drug, Finding))
            if when is None:  # a registry record before any time: the registry only (as the engine)
                assert not business, f"{rec!r} has no time"
                if batch:
                    flush()
                self._register(rec)
                continue
            due = self.timers[0][0] if self.timers else None
            if batch and (not business or (rec.STREAM != stream and not mixed)
                          or (due is not None and when >= due)):
                flush()
            if not mixed:
                stream = rec.STREAM
            if not self._register(rec):
                put(i, 0, self.advance(when))
            if rec.STREAM not in self.rule.streams:
                continue
            if not batch:
                stream = rec.STREAM
            if self.now is None:
                self.now = when
            delivery = Delivery(rec, when, rec.inf_time is not None or arrival is not None, self.now)
            if takes_batches and business:
                batch.append((i, delivery))
                continue
            put(i, 1, self._one(delivery))
            put(i, 2, self.advance(self.now))
        flush()
        placed.sort(key=lambda p: (p[0], p[1]))  # stable: a place keeps the rule's own order
        return [f for _, _, f in placed]

    def feed_all(self, records: Iterable[tuple[str, dict[str, Any]]]) -> Findings:
        out: Findings = []
        for stream, record in records:
            out.extend(self.feed(stream, record))
        return out

    @staticmethod
    def parse(stream: str, record: dict[str, Any]) -> list[Record]:
        parsed = parse_value(stream, json.dumps(record, ensure_ascii=False).encode())
        for item in parsed:
            assert not isinstance(item, InvalidRecord), item.reason
        return [p for p in parsed if not isinstance(p, InvalidRecord)]


def alerts(found: Iterable[object]) -> list[Alert]:
    return [f for f in found if isinstance(f, Alert)]


def escalations(found: Iterable[object]) -> list[Escalation]:
    return [f for f in found if isinstance(f, Escalation)]


def assert_batch_parity(rule: type[Rule], records: Sequence[tuple[Record, datetime | None]],
                        policy: str | Pack = "ezhou", until: str | datetime | None = None) -> list[RuleFinding]:
    """Run ``rule`` one by one and batched over ``records`` (then ``until``) — batches of one stream, and
    batches of all its streams up to the next due timer — and assert the same findings in the same
    order, the same counters, and the same state of the rule (its declared ``state``) after the records.
    Returns the findings (so a test can check they are not trivially empty)."""
    runs = []
    for batched, mixed in ((False, False), (True, False), (True, True)):
        harness = RuleHarness(rule, policy)
        found = harness.run(records, batched, mixed)
        state = {name: plain(getattr(harness.rule, name)) for name in rule.state}
        if until is not None:
            found.extend(harness.advance(until))
        runs.append((found, harness.counts, state))
    (one, one_counts, one_state), *batched_runs = runs
    for many, many_counts, many_state in batched_runs:
        assert [repr(f) for f in many] == [repr(f) for f in one]
        assert many_counts == one_counts
        for name in rule.state:
            assert many_state[name] == one_state[name], f"{rule.name}.{name} differs after the records"
    return one


def plain(value: Any) -> Any:
    """``value`` as plain comparable data (dataclasses and state objects by their fields; tables of the
    state store by their items)."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(map(repr, value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    items = getattr(value, "items", None)
    if callable(items):
        return {plain(k): plain(v) for k, v in items()}
    if hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        return {k: plain(v) for k, v in vars(value).items() if k != "new"}
    return value

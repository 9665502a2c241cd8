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
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Any

from monitor.clock import parse_time
from monitor.contract import Delivery, Escalation, Findings, RegistryView, Rule, RuleContext, SanctionView
from monitor.engine import Registry
from monitor.outputs import Alert
from monitor.policy.ledger import Ledger
from monitor.policy.pack import Pack, load_pack
from monitor.privacy import Pseudonymizer
from monitor.records import Drug, Institution, InvalidRecord, Record, parse_value


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
            if isinstance(rec, Institution):
                self.registry.upsert_institution(rec)
            elif isinstance(rec, Drug):
                self.registry.drugs[rec.med_list_codg] = rec
            else:
                out.extend(self.advance(when))
            if stream not in self.rule.streams:
                continue
            if self.now is None:
                self.now = when
            known = rec.inf_time is not None or arrival is not None
            out.extend(self.rule.on_batch(stream, [Delivery(rec, when, known, self.now)], self.ctx))
            out.extend(self.advance(self.now))  # timers the record itself made due (a late record)
        return out

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

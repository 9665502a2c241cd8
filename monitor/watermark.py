"""Event time that moves only on evidence from many sources (design §2 "Clocks lie").

One institution's clock must never move time forward for the others: a future ``inf_time`` on the last
line of a file, a few consecutive future lines, or a producer that stamps the wall clock would otherwise
fire every pending deadline at once (premature REINSTATE tickets, windows closed before their records
arrive). ``EventClock`` sits between a shell's arrival-order merge and ``Engine.process``; both shells
(replay and the worker) use it with the same rules, so they stay in parity.

Contract
--------
* ``offer(item, claim, source)`` takes the next record in merge order with the arrival time it
  claims (``inf_time``, or its business time) and the *source* whose clock made that claim (the
  institution, ``fixmedins_code``; the stream when a record has none). It returns the items that are
  now ready, **in the order to process them**, each with the arrival the engine must use
  (``Released.arrival``) and whether it was clamped (``Released.skewed``, to be counted as
  ``<stream>.clock_skew``).
* A claim at most ``tolerance`` ahead of event time is *plausible*: released at once with its own
  arrival. Event time is then the largest arrival released (the engine's watermark), so a single
  record can move time at most ``tolerance`` past what others have shown.
* A claim further ahead is *held*. Time jumps only when ``quorum`` distinct sources have held claims:
  the target is the ``quorum``-th largest of their claims (a low order statistic: ``quorum − 1``
  sources with wrong clocks cannot reach it), and every held item within ``tolerance`` of the target
  is released with its own arrival. ``quorum`` is capped by the number of distinct sources among the
  last ``window`` offers, so an input with one or two active institutions still moves (a night
  without uploads, then the morning's first records) — where only one source is active, its claims
  cannot be checked against anyone's and are accepted.
* An item held for more than ``window`` later offers without corroboration, and every item still held
  at ``close()``, is released *clamped*: its arrival becomes the current event time. ``close(as_of)``
  first accepts what ``as_of`` (the operator's statement of "now") corroborates.
* ``registry=True`` (institutions, drugs): never moves time and is never held; its arrival is
  ``min(claim, event time)`` (or ``None`` before any activity), so a legitimate future ``valid_from``
  changes nothing about "now".
* Pure and deterministic (no wall clock); picklable with the items it holds, so a checkpoint taken
  between offers resumes exactly.

Settings: ``tolerance`` is the pack's ``max_clock_skew_minutes`` (ezhou: 60) in replay; ``quorum`` is
``MONITOR_CLOCK_QUORUM`` (default 3) for both shells (``Settings.clock_quorum``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

#: Default number of distinct sources that must agree before event time jumps (MONITOR_CLOCK_QUORUM).
DEFAULT_QUORUM = 3
#: Default number of recent offers that define the active sources and how long an item may be held.
DEFAULT_WINDOW = 256


class Released(NamedTuple, Generic[T]):
    """An item ready for the engine: the arrival to use, and whether it was clamped. (A tuple: one is
    made per record, and a frozen dataclass's ``__init__`` cost more than the rest of ``offer``.)"""

    item: T
    arrival: datetime | None
    skewed: bool = False


@dataclass(slots=True)
class _Held(Generic[T]):
    item: T
    claim: datetime
    source: Hashable
    offered_at: int  # offer counter when it was held


@dataclass
class EventClock(Generic[T]):
    """See the module docstring."""

    tolerance: timedelta
    quorum: int = DEFAULT_QUORUM
    window: int = DEFAULT_WINDOW
    #: Event time: the largest arrival released so far (``None`` before the first activity record).
    value: datetime | None = None
    _held: list[_Held[T]] = field(default_factory=list)
    _recent: deque[Hashable] = field(default_factory=deque)
    _active: Counter[Hashable] = field(default_factory=Counter)
    _offers: int = 0

    def __post_init__(self) -> None:
        if self.quorum < 1 or self.window < 1:
            raise ValueError("EventClock needs quorum ≥ 1 and window ≥ 1")
        if self.tolerance < timedelta(0):
            raise ValueError("EventClock tolerance must not be negative")

    # ------------------------------------------------------------------------------------------ queries
    @property
    def held(self) -> int:
        """Items waiting for corroboration."""
        return len(self._held)

    def effective_quorum(self) -> int:
        """Distinct sources needed now: ``quorum`` capped by the sources active in the recent window."""
        return max(1, min(self.quorum, len(self._active)))

    # ------------------------------------------------------------------------------------------ intake
    def offer(self, item: T, claim: datetime | None, source: Hashable,
              registry: bool = False) -> list[Released[T]]:
        """The next item in merge order (module docstring)."""
        if registry:
            if claim is None or self.value is None:
                return [Released(item, self.value if claim is not None else None)]
            return [Released(item, min(claim, self.value))]
        self._offers += 1
        # _remember(source), inline: this runs once per record (bench/)
        recent, active = self._recent, self._active
        recent.append(source)
        active[source] += 1
        if len(recent) > self.window:
            old = recent.popleft()
            active[old] -= 1
            if not active[old]:
                del active[old]
        value = self.value
        if claim is None:  # no time of its own: it happened "now"
            return [Released(item, value)]
        if value is None or claim <= value + self.tolerance:
            if value is None or claim > value:
                self.value = claim
            if not self._held:  # nothing waits: nothing to settle (``_settle`` of an empty hold)
                return [Released(item, claim)]
            return [Released(item, claim), *self._settle()]
        self._held.append(_Held(item, claim, source, self._offers))
        return self._settle()

    def accept(self, claim: datetime | None, source: Hashable) -> bool:
        """``offer`` without building its result when it would be just this item, released at once with
        its own claim (a plausible claim while nothing is held: the common case, the Kafka shell's per-record
        path): then the clock has taken it and this returns True. False: nothing happened, call ``offer``."""
        value = self.value
        if self._held or claim is None or value is None or claim > value + self.tolerance:
            return False
        self._offers += 1
        self._remember(source)
        if claim > value:
            self.value = claim
        return True

    def close(self, as_of: datetime | None = None) -> list[Released[T]]:
        """End of input: release everything held (accepted up to ``as_of`` + tolerance, else clamped)."""
        out: list[Released[T]] = []
        if as_of is not None:
            keep: list[_Held[T]] = []
            for h in sorted(self._held, key=lambda h: h.claim):
                if h.claim <= as_of + self.tolerance:
                    out.append(self._release(h.item, h.claim))
                else:
                    keep.append(h)
            self._held = keep
        for h in self._held:
            out.append(Released(h.item, self.value, skewed=True))
        self._held = []
        return out

    def advance(self, now: datetime) -> list[Released[T]]:
        """Another clock the shell trusts (the worker's ``BrokerClock``, itself a quantile over many
        records) says event time is ``now``: take it if later, and release the held items it makes
        plausible (claim ≤ ``now`` + tolerance) with their own arrival. Nothing is clamped."""
        if self.value is None or now > self.value:
            self.value = now
        ready = sorted((h for h in self._held if h.claim <= now + self.tolerance),
                       key=lambda h: (h.claim, h.offered_at))
        self._held = [h for h in self._held if h.claim > now + self.tolerance]
        return [self._release(h.item, h.claim) for h in ready]

    # ----------------------------------------------------------------------------------------- helpers
    def _remember(self, source: Hashable) -> None:
        self._recent.append(source)
        self._active[source] += 1
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            self._active[old] -= 1
            if not self._active[old]:
                del self._active[old]

    def _release(self, item: T, claim: datetime) -> Released[T]:
        if self.value is None or claim > self.value:
            self.value = claim
        return Released(item, claim)

    def _settle(self) -> list[Released[T]]:
        """Release what the held claims corroborate, then clamp what waited too long."""
        out: list[Released[T]] = []
        while self._held:
            target = self._target()
            if target is None:
                break
            ready = [h for h in self._held if h.claim <= target + self.tolerance]
            if not ready:
                break
            self._held = [h for h in self._held if h.claim > target + self.tolerance]
            for h in sorted(ready, key=lambda h: (h.claim, h.offered_at)):
                out.append(self._release(h.item, h.claim))
            # claims that were implausible before may be plausible now
            plausible = [h for h in self._held if self.value is not None and h.claim <= self.value + self.tolerance]
            if plausible:
                self._held = [h for h in self._held if h not in plausible]
                for h in sorted(plausible, key=lambda h: (h.claim, h.offered_at)):
                    out.append(self._release(h.item, h.claim))
        expired = [h for h in self._held if self._offers - h.offered_at > self.window]
        if expired:
            self._held = [h for h in self._held if self._offers - h.offered_at <= self.window]
            out.extend(Released(h.item, self.value, skewed=True) for h in expired)
        return out

    def _target(self) -> datetime | None:
        """The ``q``-th largest of the held sources' latest claims, or ``None`` with fewer sources."""
        q = self.effective_quorum()
        latest: dict[Hashable, datetime] = {}
        for h in self._held:
            if h.source not in latest or h.claim > latest[h.source]:
                latest[h.source] = h.claim
        if len(latest) < q:
            return None
        return sorted(latest.values(), reverse=True)[q - 1]

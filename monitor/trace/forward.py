"""The trace tier's intake clock: a scan that claims a future upload time must not move event time.

The trace watermark (``rules.StageClock``) is built from the latest arrival each source forwarded, so one
institution whose clock runs ahead (an ``inf_time`` days in the future) would otherwise close every open
judgment at once: 90-day never-stocked windows, resales whose returns are still to come. Both shells of
the tier therefore pass every scan through ``monitor.watermark.EventClock`` before it is forwarded or
applied — the same rule as the city engine (design §2 "Clocks lie"): tolerance = the pack's
``max_clock_skew_minutes`` (``TraceParams.skew``), quorum = ``MONITOR_CLOCK_QUORUM``, the source of a
claim = the uploading institution (``fixmedins_code``).

* A claim at most ``skew`` ahead of event time is forwarded at once with its own arrival.
* A claim further ahead is held until ``quorum`` institutions of the same intake agree (then it keeps
  its arrival), else it is released *clamped*: its arrival becomes the intake's event time (counted as
  ``trace.clock_skew``), after ``EventClock.window`` further scans or at the end of the input (in the
  worker: once its partition has been read to its end for ``MONITOR_TRACE_QUIET_SECONDS``).
* The clock a source reports downstream (``value``) is the intake's event time — the largest arrival it
  released — never a held claim.

Intakes: the Faust trace-worker keeps one ``ScanClock`` per source partition of ``medins.tracecodes``
(the scans of a partition arrive in its order; a held scan's message is not acknowledged until the scan
is released, so a crash re-reads it); ``monitor replay`` over several cities keeps one over the merged
upload-order stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from monitor.trace.rules import Scan, secs_of, time_of
from monitor.watermark import DEFAULT_QUORUM, EventClock, Released


@dataclass(slots=True)
class Pending:
    """A scan in the intake clock: ``token`` is the shell's handle (the Faust event), ``held`` whether
    it had to wait (its message is then acknowledged when it is released)."""

    token: Any
    code: str
    scan: Scan
    held: bool = False


@dataclass
class ScanClock:
    """One intake's ``EventClock`` over trace scans (module docstring)."""

    skew: int
    quorum: int = DEFAULT_QUORUM
    clock: EventClock[Pending] = field(init=False)
    skewed: int = 0

    def __post_init__(self) -> None:
        self.clock = EventClock(timedelta(seconds=self.skew), quorum=self.quorum)

    @property
    def held(self) -> int:
        return self.clock.held

    def value(self) -> int:
        """Event time of the intake (seconds since 2000-01-01 CST; 0 before the first scan)."""
        return secs_of(self.clock.value) if self.clock.value is not None else 0

    def offer(self, token: Any, code: str, scan: Scan) -> list[Pending]:
        """The next scan in intake order → the scans ready to forward, in order (maybe not this one:
        then it is marked ``held``)."""
        item = Pending(token, code, scan)
        out = self._out(self.clock.offer(item, time_of(scan.arrival), scan.inst))
        if not any(p is item for p in out):
            item.held = True
        return out

    def close(self, as_of: int | None = None) -> list[Pending]:
        """End of input: what is held, accepted up to ``as_of`` + skew, else clamped. The trace-worker
        calls it for a source partition that stayed read to its end for ``trace_quiet_seconds`` (its
        input has ended for now; the scans then run at the event time they were clamped to)."""
        return self._out(self.clock.close(time_of(as_of) if as_of is not None else None))

    def _out(self, released: list[Released[Pending]]) -> list[Pending]:
        out = []
        for r in released:
            p = r.item
            if r.skewed:
                self.skewed += 1
            if r.arrival is not None and secs_of(r.arrival) != p.scan.arrival:
                p.scan = replace(p.scan, arrival=secs_of(r.arrival))
            out.append(p)
        return out

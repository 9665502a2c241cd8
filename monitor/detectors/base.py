"""The detector contract.

A detector owns one rule family. It is pure: it sees records and timer firings through
``on_record``/``on_timer`` together with a ``Context`` (the event-time clock, the policy pack, the
registries, the sanction ledger), keeps its state in plain attributes (so the whole engine can be
checkpointed), and reports through the context: ``ctx.alert(...)``, ``ctx.trigger(...)`` (feeds the
sanction ladders) and ``ctx.schedule(...)`` (a timer that fires when the watermark passes it). It never
reads the wall clock, does no I/O and imports nothing of Faust or Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from monitor.clock import day_end
from monitor.contract import Params

if TYPE_CHECKING:
    from monitor.engine import Context
    from monitor.outputs import Ticket
    from monitor.policy.pack import Pack
    from monitor.records import Record


T = TypeVar("T")


class Detector:
    """Base class; subclasses set ``name``, ``rule_ids``, ``streams`` and ``params`` (rule → Params)."""

    name: ClassVar[str]
    rule_ids: ClassVar[tuple[str, ...]]
    streams: ClassVar[tuple[str, ...]]
    params: ClassVar[dict[str, type[Params]]] = {}
    #: True: ``on_ticket`` sees every ticket the engine emits (once per ticket id).
    watches_tickets: ClassVar[bool] = False

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    def param_model(self, rule_id: str) -> Any:
        """The validated params of one of this detector's rules."""
        return self.params[rule_id].model_validate(self.pack.rule(rule_id).params)

    def on_record(self, rec: Record, arrival: datetime, ctx: Context) -> None:
        """Called once per de-duplicated record of one of ``streams``, in arrival order."""

    def on_timer(self, key: Hashable, ctx: Context) -> None:
        """Called when a timer this detector scheduled becomes due (watermark ≥ due)."""

    def on_ticket(self, ticket: Ticket, ctx: Context) -> None:
        """Called for each ticket the engine emits, when ``watches_tickets`` is set. A detector may
        trigger ladders from here (the resulting tickets are seen too; ignore your own)."""

    def open_day(
        self,
        days: dict[tuple[str, date], T],
        code: str,
        day: date,
        judge_after: timedelta,
        forget_after: timedelta,
        new: Callable[[], T],
        ctx: Context,
        too_old: str,
    ) -> T | None:
        """The institution-day tally of ``(code, day)`` in ``days``, opened on first use together with its
        two timers: ``("judge", code, day)`` at day end + ``judge_after`` (when every in-time record of
        the day must have arrived) and ``("forget", code, day)`` ``forget_after`` later (memory bound;
        until then late records re-open the judgment). A record for a day already past its forget time
        cannot be judged any more: it is counted as data quality ``too_old`` and ``None`` returned."""
        key = (code, day)
        tally = days.get(key)
        if tally is None:
            judge_at = day_end(day) + judge_after
            if judge_at + forget_after < ctx.now:
                ctx.count(too_old)
                return None
            tally = days[key] = new()
            ctx.schedule(judge_at, self, ("judge", code, day))
            ctx.schedule(judge_at + forget_after, self, ("forget", code, day))
        return tally

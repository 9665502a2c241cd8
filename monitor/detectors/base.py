"""The detector contract.

A detector owns one rule family. It is pure: it sees records and timer firings through
``on_record``/``on_timer`` together with a ``Context`` (the event-time clock, the policy pack, the
registries, the sanction ledger), keeps its state in plain attributes (so the whole engine can be
checkpointed), and reports through the context: ``ctx.alert(...)``, ``ctx.trigger(...)`` (feeds the
sanction ladders) and ``ctx.schedule(...)`` (a timer that fires when the watermark passes it). It never
reads the wall clock, does no I/O and imports nothing of Faust or Kafka.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from monitor.engine import Context
    from monitor.outputs import Ticket
    from monitor.policy.pack import Pack
    from monitor.records import Record


class Params(BaseModel):
    """Base of a rule's ``params`` model: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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

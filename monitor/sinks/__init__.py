"""Sinks: where outputs go. Every sink is idempotent on the output ids (alert_id, ticket_id), so a
replayed or redelivered input never duplicates a row or a ticket downstream.

Outputs are alerts, tickets and the engine's institution-day facts (``InstitutionDay``, ``institution_daily``;
idempotent on ``day_id`` + ``version``, the newest version wins); a sink ignores the kinds it does not carry.
A sink implements ``Sink``: ``write`` may buffer; ``flush`` returns only when everything written so
far is durable (the Kafka shell commits input offsets only after ``flush``); ``close`` flushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from monitor.outputs import Alert, DeadLetter, InstitutionDay, Ticket


class Sink(Protocol):
    def write(self, outputs: Sequence[Alert | Ticket | InstitutionDay], dead: Sequence[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

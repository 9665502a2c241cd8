"""Sinks: where outputs go. Every sink is idempotent on the output ids (alert_id, ticket_id), so a
replayed or redelivered input never duplicates a row or a ticket downstream.

A sink implements ``Sink``: ``write`` may buffer; ``flush`` returns only when everything written so
far is durable (the Kafka shell commits input offsets only after ``flush``); ``close`` flushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from monitor.outputs import Alert, DeadLetter, Ticket


class Sink(Protocol):
    def write(self, outputs: Sequence[Alert | Ticket], dead: Sequence[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

"""Outputs of the monitor (design §4): alerts, tickets and dead letters, with deterministic ids.

Ids are content-addressed from the cause, never from a counter or the wall clock, so a replay, a
restarted worker or a redelivered record re-produces the *same* id, and every sink de-duplicates on it:
* ``alert_id``  = AL- + hash(rule_id, fixmedins_code, subject, window_start, window_end)
* ``ticket_id`` = TK- + hash(ladder, fixmedins_code, action, cause, effective_from); a ``VOID`` ticket:
  TK- + hash(ladder, fixmedins_code, "VOID", ref_ticket_id) — one per voided ticket, however often rejected
* ``day_id``    = DY- + hash(fixmedins_code, day), with a ``version`` (revision) per emission of that day
Alerts also carry the result fields of NHSA interface 3101 (智能监管 明细审核 ``result[]``) so agency
systems that consume rule hits read them natively (``jr_id`` equals ``alert_id``).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Severity = Literal["info", "warning", "critical"]

ACTIONS: tuple[str, ...] = (
    "SUSPEND_OUTPATIENT_POOLING",
    "TERMINATE_OUTPATIENT_POOLING",
    "SUSPEND_AGREEMENT",
    "SUSPEND_SETTLEMENT",
    "CANCEL_OUTPATIENT_POOLING",
    "TERMINATE_AGREEMENT",
    "REINSTATE",
    "DOWNGRADE_TIER",
    "INTERVIEW",
    "REVIEW",
    "NO_RENEWAL",
    "VOID",
)
#: The actions a ladder may issue (``monitor.policy.pack``).
LadderAction = Literal[
    "SUSPEND_OUTPATIENT_POOLING",
    "TERMINATE_OUTPATIENT_POOLING",
    "SUSPEND_AGREEMENT",
    "SUSPEND_SETTLEMENT",
    "CANCEL_OUTPATIENT_POOLING",
    "TERMINATE_AGREEMENT",
    "REINSTATE",
    "DOWNGRADE_TIER",
    "INTERVIEW",
    "REVIEW",
    "NO_RENEWAL",
]
#: Every ticket action: a ladder's, or ``VOID`` — the engine's word that a ticket it issued no longer holds
#: (the agency rejected it: ``ref_ticket_id``; ``monitor.policy.sanctions``, README deviations).
Action = Literal[LadderAction, "VOID"]


def make_id(prefix: str, *parts: object) -> str:
    """Deterministic id: ``PREFIX-`` + 20 hex chars of BLAKE2b over the parts (unit-separated)."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=10).hexdigest()}"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Alert(_Out):
    """A rule hit on one institution for one subject and window."""

    alert_id: str
    rule_id: str
    fixmedins_code: str
    admdvs: str | None = None
    severity: Severity
    window_start: datetime
    window_end: datetime
    detected_at: datetime
    evidence: dict[str, Any]
    basis: str
    policy: str
    # NHSA 3101 result fields
    jr_id: str
    rule_name: str
    vola_cont: str
    vola_amt: Decimal = Decimal("0")
    sev_deg: str
    vola_evid: str
    vola_bhvr_type: str


class Summary(_Out):
    zh: str
    en: str


class Ticket(_Out):
    """An action for the agency's case system; exactly once per ``ticket_id``."""

    ticket_id: str
    fixmedins_code: str
    admdvs: str | None = None
    action: Action
    issued_at: datetime
    effective_from: date
    effective_until: date | None = None
    rectify_by: date | None = None
    reapply_after: date | None = None
    requires_verification: bool = False
    new_tier: str | None = Field(default=None, description="DOWNGRADE_TIER: the tier after the downgrade")
    ladder: str
    rule_ids: list[str]
    alert_ids: list[str]
    basis: list[str]
    policy: str
    summary: Summary
    #: VOID: the ticket that no longer holds, and why (the finding kind that voided it); left out of
    #: every other ticket's JSON, so a ticket without them reads exactly as before they existed
    ref_ticket_id: str | None = None
    reason: str | None = None

    @model_serializer(mode="wrap")
    def _leave_out_void_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.ref_ticket_id is None and self.reason is None:
            data.pop("ref_ticket_id", None)
            data.pop("reason", None)
        return data


#: Columns of an ``InstitutionDay`` in ``institution_daily`` order (the ClickHouse table uses the same names).
DAILY_COLUMNS: tuple[str, ...] = (
    "fixmedins_code", "day", "admdvs",
    "records_settlements", "records_inventory", "records_tracecodes", "records_prescriptions",
    "late", "lag_p50_s", "lag_p90_s", "lag_p99_s", "lag_max_s",
    "settlement_lines", "completeness", "trace_packs", "trace_codes", "trace_coverage",
    "rx_required", "rx_coverage", "dual_price_overcharge", "alerts", "version",
)


class InstitutionDay(_Out):
    """The facts of one institution's business day (Asia/Shanghai), ``institution_daily`` (design §4), as
    the engine's tally (``monitor.detectors.daily``) holds them when it emits them. A day is emitted at
    the first event-time midnight after it changed, again (``version`` + 1) at each later midnight
    after a late record, alert or rule judgment changed it, and is final once forgotten; the newest
    ``version`` of a ``day_id`` replaces the older ones (ClickHouse ``ReplacingMergeTree(version)``)."""

    day_id: str
    fixmedins_code: str
    day: date
    admdvs: str
    records_settlements: int
    records_inventory: int
    records_tracecodes: int
    records_prescriptions: int
    late: int
    lag_p50_s: float
    lag_p90_s: float
    lag_p99_s: float
    lag_max_s: float
    settlement_lines: int
    completeness: float | None
    trace_packs: Decimal
    trace_codes: int
    trace_coverage: float | None
    rx_required: int
    rx_coverage: float | None
    dual_price_overcharge: Decimal
    alerts: int
    version: int

    def row(self) -> tuple[Any, ...]:
        """The values in ``DAILY_COLUMNS`` order."""
        return tuple(getattr(self, c) for c in DAILY_COLUMNS)


class DeadLetter(_Out):
    """An input value that could not become a record, with everything needed to replay it."""

    source: str = Field(description="topic or file name")
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    index: int | None = Field(default=None, description="element of a JSON-array value")
    key: str | None = None
    value: str | None = Field(default=None, description="bounded prefix of the value, personal fields masked, "
                              "when it is UTF-8 (only on the first dead letter of a value)")
    value_b64: str | None = Field(default=None, description="bounded prefix of the bytes, masked, base64, when not "
                                  "UTF-8 (only on the first dead letter of a value)")
    value_sha256: str | None = Field(default=None, description="SHA-256 of the whole original value")
    value_bytes: int | None = Field(default=None, description="length of the whole original value")
    value_truncated: bool = Field(default=False, description="the prefix is shorter than the value")
    quarantined: bool = Field(default=False, description="raw bytes kept in the operator's quarantine as "
                              "<value_sha256>.bin")
    error: str

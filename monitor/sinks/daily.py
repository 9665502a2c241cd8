"""Per institution-day facts for ClickHouse ``institution_daily`` (design §4) and the Prometheus tap.

``DailyCollector`` is a pure observer of the engine: attached with ``Engine.attach`` it sees every
de-duplicated record (like a detector, but it owns no rule and emits nothing), and the ClickHouse sink
hands it the outputs (``on_output``). It is checkpointed with the engine, so a resumed run continues
the same rows. It keeps compliance logic out: the figures are observations inspectors read next to
the alerts, not judgments (the detectors judge).

Facts per (``fixmedins_code``, Asia/Shanghai business day of the record):

* ``records_<stream>`` — records of settlements / inventory / tracecodes / prescriptions;
* ``late`` — upload-stream records (settlements, inventory, trace codes) whose arrival is more than
  the pack's ``upload.late`` ``max_lag_hours`` after their business time (EZ-DM 二(一));
* ``lag_p50_s`` / ``lag_p90_s`` / ``lag_p99_s`` / ``lag_max_s`` — nearest-rank quantiles of
  upload lag (arrival − business time, seconds, negative lags count as 0) of those records;
* ``settlement_lines`` / ``completeness`` — **the ``data.incomplete`` rule's own numbers** (EZ-DM 二(二),
  ``monitor.detectors.completeness``), handed over as a ``DayFact`` whenever the rule judges the day: its
  drug lines (per settlement and code, revoked settlements out) and the share whose 3505 sales reach the
  settled quantity within ``match_window_hours`` of ``setl_time``. Until the rule has judged the day
  (day end + 72 h in the ezhou pack) ``completeness`` is ``None`` and ``settlement_lines`` counts the
  day's settled lines seen so far. (This collector used to compute its own "a sale with the same
  ``setl_id`` and drug exists" share under the same name — no quantity, no window, revocations kept —
  so inspectors could read two different completeness figures; the rule's is the one the clause judges.)
* ``trace_coverage`` — sale trace codes scanned for the day's insured settlements ÷ whole packs
  settled (lines with ``trdn_flag`` ≠ 1), capped at 1 (LN-TIER 三(一)3);
* ``rx_coverage`` — share of prescription-requiring settlements (a line with ``rx_flag`` 1) whose
  ``hi_rxno`` has an uploaded prescription (EZ-DM 二(三));
* ``dual_price_overcharge`` — sum of ``vola_amt`` of ``price.dual`` alerts of the day (AR-AGR 二(二)13);
* ``alerts`` — alerts whose window starts that day.

Ratios are ``None`` when the day has no denominator. A later record (a sale matching an earlier
settlement, a prescription uploaded late) updates the earlier day's row: every emission carries a
higher ``version`` and ClickHouse keeps the last (ReplacingMergeTree). Days are forgotten
``horizon_days`` (default 62) after they end.

No personal data is kept: settlement, prescription and drug ids only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from monitor.clock import business_date, day_end
from monitor.contract import DayFact
from monitor.detectors.base import Detector
from monitor.outputs import Alert, Ticket
from monitor.records import STREAMS, Settlement, TraceScan

if TYPE_CHECKING:
    from monitor.engine import Context
    from monitor.policy.pack import Pack
    from monitor.records import Record

COUNTED_STREAMS: tuple[str, ...] = ("settlements", "inventory", "tracecodes", "prescriptions")
UPLOAD_STREAMS: tuple[str, ...] = ("settlements", "inventory", "tracecodes")
UNKNOWN_REGION = "unknown"

#: Column order of ``institution_daily`` rows (the ClickHouse schema uses the same names).
DAILY_COLUMNS: tuple[str, ...] = (
    "fixmedins_code", "day", "admdvs",
    "records_settlements", "records_inventory", "records_tracecodes", "records_prescriptions",
    "late", "lag_p50_s", "lag_p90_s", "lag_p99_s", "lag_max_s",
    "settlement_lines", "completeness", "trace_packs", "trace_codes", "trace_coverage",
    "rx_required", "rx_coverage", "dual_price_overcharge", "alerts", "version",
)

Key = tuple[str, date]


@dataclass(slots=True)
class DayFacts:
    admdvs: str = UNKNOWN_REGION
    records: dict[str, int] = field(default_factory=dict)
    late: int = 0
    lags: list[float] = field(default_factory=list)
    settle_lines: set[tuple[str, str]] = field(default_factory=set)
    #: the data.incomplete rule's numbers once it judged the day (``DayFact``): lines, matched in time
    rule_lines: int | None = None
    rule_matched: int = 0
    trace_packs: Decimal = Decimal(0)
    trace_codes: int = 0
    rx_needed: list[str] = field(default_factory=list)
    overcharge: Decimal = Decimal(0)
    alerts: int = 0
    version: int = 0


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least ``q`` of the values at or below it."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _ratio(num: int | Decimal, den: int | Decimal) -> float | None:
    if not den:
        return None
    return min(1.0, float(Decimal(num) / Decimal(den)))


class DailyCollector(Detector):
    """Pure institution-day observer (see the module docstring). ``tap_enabled`` makes it also keep
    ``(stream, region, lag_seconds | None)`` per record for the Prometheus sink to drain; the tap is
    never checkpointed."""

    name: ClassVar[str] = "institution_daily"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    #: Every stream passes the Prometheus tap; only ``COUNTED_STREAMS`` make institution-day facts.
    streams: ClassVar[tuple[str, ...]] = STREAMS

    def __init__(self, pack: Pack, horizon_days: int = 62) -> None:
        super().__init__(pack)
        spec = pack.rules.get("upload.late")
        hours = float(spec.params.get("max_lag_hours", 24)) if spec is not None else 24.0
        self.max_lag_s = hours * 3600
        self.horizon_days = horizon_days
        self.days: dict[Key, DayFacts] = {}
        self.by_ordinal: dict[int, list[Key]] = {}
        self.dirty: set[Key] = set()
        self.setl_day: dict[str, Key] = {}  # setl_id → its settlement's day
        self.rx_waiting: dict[str, list[Key]] = {}  # hi_rxno → days that need it
        self.rx_uploaded: dict[str, int] = {}  # hi_rxno → ordinal of the prescription's day
        self.pruned_through = 0
        self.prune_at: datetime | None = None  # next event time at which a day may be forgotten
        self.tap_enabled = False
        #: The one sink that folds outputs in and takes rows (transient: a second ClickHouse sink bound
        #: to the same engine must not count alerts twice).
        self.fed_by: object | None = None
        self.tap: list[tuple[str, str, float | None]] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["tap"] = []
        state["tap_enabled"] = False
        state["fed_by"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------------------------ records
    def _facts(self, code: str, day: date, ctx: Context) -> tuple[Key, DayFacts]:
        key = (code, day)
        facts = self.days.get(key)
        if facts is None:
            facts = self.days[key] = DayFacts(admdvs=ctx.registry.admdvs(code) or UNKNOWN_REGION)
            self.by_ordinal.setdefault(day.toordinal(), []).append(key)
        elif facts.admdvs == UNKNOWN_REGION:
            facts.admdvs = ctx.registry.admdvs(code) or UNKNOWN_REGION
        self.dirty.add(key)
        return key, facts

    def on_record(self, rec: Record, arrival: datetime, ctx: Context) -> None:
        btime = rec.business_time
        code: str | None = getattr(rec, "fixmedins_code", None)
        if rec.STREAM not in COUNTED_STREAMS or btime is None or code is None:
            if self.tap_enabled:
                region = (ctx.registry.admdvs(code) if code else None) or UNKNOWN_REGION
                self.tap.append((rec.STREAM, region, None))
            return
        now = ctx.now
        if self.prune_at is None or now >= self.prune_at:  # once per event-time day, not per record
            today = business_date(now)
            self._prune(today)
            self.prune_at = day_end(today)
        stream = rec.STREAM
        day = business_date(btime)
        if day.toordinal() <= self.pruned_through:  # beyond the horizon: the row is final
            if self.tap_enabled:
                old_lag = max(0.0, (arrival - btime).total_seconds()) if stream in UPLOAD_STREAMS else None
                self.tap.append((stream, ctx.registry.admdvs(code) or UNKNOWN_REGION, old_lag))
            return
        key, facts = self._facts(code, day, ctx)
        facts.records[stream] = facts.records.get(stream, 0) + 1
        lag: float | None = None
        if stream in UPLOAD_STREAMS:
            lag = max(0.0, (arrival - btime).total_seconds())
            facts.lags.append(lag)
            if lag > self.max_lag_s:
                facts.late += 1
        if self.tap_enabled:
            self.tap.append((stream, facts.admdvs, lag))
        if isinstance(rec, Settlement):
            self._settlement(rec, key, facts)
        elif isinstance(rec, TraceScan):
            if rec.scan_kind == "sale" and rec.setl_id and rec.trdn_flag != "1":
                owner = self.setl_day.get(rec.setl_id, key)
                target = self.days.get(owner)
                if target is not None:
                    target.trace_codes += 1
                    self.dirty.add(owner)
        elif rec.STREAM == "prescriptions":
            hi_rxno: str = rec.hi_rxno  # type: ignore[union-attr]
            if rec.rx_status == "uploaded":  # type: ignore[union-attr]
                self.rx_uploaded[hi_rxno] = day.toordinal()
                for owner in self.rx_waiting.pop(hi_rxno, []):
                    self.dirty.add(owner)

    def _settlement(self, rec: Settlement, key: Key, facts: DayFacts) -> None:
        if rec.setl_status != "settled":
            return
        self.setl_day[rec.setl_id] = key
        needs_rx = False
        for line in rec.drugdetail:
            ident = (rec.setl_id, line.med_list_codg)
            facts.settle_lines.add(ident)
            if line.trdn_flag != "1":
                facts.trace_packs += line.cnt
            needs_rx = needs_rx or line.rx_flag == "1"
        if needs_rx:
            ref = rec.hi_rxno or f"setl:{rec.setl_id}"
            facts.rx_needed.append(ref)
            if rec.hi_rxno and rec.hi_rxno not in self.rx_uploaded:
                self.rx_waiting.setdefault(rec.hi_rxno, []).append(key)

    def on_timer(self, key: Hashable, ctx: Context) -> None:  # no timers: pruning is lazy
        return

    # ------------------------------------------------------------------------------------ outputs
    def on_fact(self, fact: DayFact) -> None:
        """The data.incomplete rule judged a day: its numbers become the row's (module docstring)."""
        lines = fact.facts.get("settlement_lines")
        if lines is None:
            return
        key = (fact.fixmedins_code, fact.day)
        facts = self.days.get(key)
        if facts is None:
            if fact.day.toordinal() <= self.pruned_through:
                return
            facts = self.days[key] = DayFacts()
            self.by_ordinal.setdefault(fact.day.toordinal(), []).append(key)
        facts.rule_lines = int(lines)
        facts.rule_matched = int(fact.facts.get("matched_lines", 0))
        self.dirty.add(key)

    def on_output(self, item: Alert | Ticket) -> None:
        """Fold an engine output into its day (alerts only; tickets have their own table)."""
        if not isinstance(item, Alert):
            return
        day = business_date(item.window_start)
        key = (item.fixmedins_code, day)
        facts = self.days.get(key)
        if facts is None:
            if day.toordinal() <= self.pruned_through:
                return
            facts = self.days[key] = DayFacts(admdvs=item.admdvs or UNKNOWN_REGION)
            self.by_ordinal.setdefault(day.toordinal(), []).append(key)
        facts.alerts += 1
        if item.rule_id == "price.dual":
            facts.overcharge += item.vola_amt
        self.dirty.add(key)

    # ------------------------------------------------------------------------------------ rows
    def row(self, key: Key) -> tuple[Any, ...]:
        facts = self.days[key]
        lags = sorted(facts.lags)
        lines = facts.rule_lines if facts.rule_lines is not None else len(facts.settle_lines)
        completeness = _ratio(facts.rule_matched, facts.rule_lines) if facts.rule_lines is not None else None
        covered = sum(1 for ref in facts.rx_needed if ref in self.rx_uploaded)
        return (
            key[0], key[1], facts.admdvs,
            *(facts.records.get(s, 0) for s in COUNTED_STREAMS),
            facts.late,
            nearest_rank(lags, 0.5), nearest_rank(lags, 0.9), nearest_rank(lags, 0.99),
            lags[-1] if lags else 0.0,
            lines, completeness,
            facts.trace_packs, facts.trace_codes, _ratio(facts.trace_codes, facts.trace_packs),
            len(facts.rx_needed), _ratio(covered, len(facts.rx_needed)),
            facts.overcharge, facts.alerts, facts.version,
        )

    def take_rows(self) -> list[tuple[Any, ...]]:
        """Rows of every day changed since the last call (each with a higher ``version``)."""
        out = []
        for key in sorted(self.dirty):
            facts = self.days.get(key)
            if facts is None:
                continue
            facts.version += 1
            out.append(self.row(key))
        self.dirty.clear()
        return out

    def take_tap(self) -> list[tuple[str, str, float | None]]:
        tap, self.tap = self.tap, []
        return tap

    def _prune(self, today: date) -> None:
        limit = (today - timedelta(days=self.horizon_days)).toordinal()
        if limit <= self.pruned_through:
            return
        for ordinal in [o for o in self.by_ordinal if o <= limit]:
            for key in self.by_ordinal.pop(ordinal):
                facts = self.days.pop(key, None)
                self.dirty.discard(key)
                if facts is None:
                    continue
                for line in facts.settle_lines:
                    self.setl_day.pop(line[0], None)
                for ref in facts.rx_needed:
                    self.rx_waiting.pop(ref, None)
        self.rx_uploaded = {k: o for k, o in self.rx_uploaded.items() if o > limit}
        self.pruned_through = limit

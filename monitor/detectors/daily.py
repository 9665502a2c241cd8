"""The institution-day facts of ``institution_daily`` (design §4): the engine's own tally, emitted as
``InstitutionDay`` outputs on event time like alerts (issue #14 point 3: observers are outputs).

``DailyTally`` is built by the engine itself (not from the pack: it judges nothing and alerts on
nothing) and is part of the engine's state: a resumed run continues the same days. It reads records like
a rule (every stream; only ``COUNTED_STREAMS`` make facts) and, from the engine, the alerts it emits
(``on_alert``) and the ``DayFact`` findings other rules return (``on_fact``) — the engine's outputs and
the rules' own numbers, never a second reckoning. Sinks only consume what it emits.

Facts per (``fixmedins_code``, Asia/Shanghai business day of the record):

* ``records_<stream>`` — records of settlements / inventory / tracecodes / prescriptions;
* ``late`` — upload-stream records (settlements, inventory, trace codes) whose arrival is more than
  the pack's ``upload.late`` ``max_lag_hours`` (default 24) after their business time (EZ-DM 二(一));
* ``lag_p50_s`` / ``lag_p90_s`` / ``lag_p99_s`` / ``lag_max_s`` — nearest-rank quantiles of
  upload lag (arrival − business time, seconds, negative lags count as 0) of those records;
* ``settlement_lines`` / ``completeness`` — **the ``data.incomplete`` rule's own numbers** (EZ-DM 二(二),
  ``monitor.detectors.completeness``), handed over as a ``DayFact`` whenever the rule judges the day: its
  drug lines (per settlement and code, revoked settlements out) and the share whose 3505 sales reach the
  settled quantity within ``match_window_hours`` of ``setl_time``. Until the rule has judged the day
  (day end + 72 h in the ezhou pack) ``completeness`` is ``None`` and ``settlement_lines`` counts the
  day's settled lines seen so far;
* ``trace_coverage`` — sale trace codes scanned for the day's insured settlements ÷ whole packs
  settled (lines with ``trdn_flag`` ≠ 1), capped at 1 (LN-TIER 三(一)3);
* ``rx_coverage`` — share of prescription-requiring settlements (a line with ``rx_flag`` 1) whose
  ``hi_rxno`` has an uploaded prescription (EZ-DM 二(三));
* ``dual_price_overcharge`` — sum of ``vola_amt`` of ``price.dual`` alerts of the day (AR-AGR 二(二)13);
* ``alerts`` — alerts whose window starts that day.

Ratios are ``None`` when the day has no denominator.

When a day is emitted (event time, never the wall clock)
--------------------------------------------------------
One timer per event-time day, ``EmitDays(day)``, due at 00:00 of ``day`` (Asia/Shanghai): it emits an
``InstitutionDay`` for every institution-day that changed since its last emission (sorted by code and
day), each with ``version`` one higher than its last (1 for the first), then forgets the days that ended
``horizon_days`` (default 62) or more before ``day``. So a day's first row comes out at the midnight that
ends it (later records of it, late uploads, the ``data.incomplete`` judgment at day end + 72 h and alerts
about it make new versions at the following midnights), and a day is final once forgotten: a record,
alert or fact for a forgotten day is ignored. ``day_id`` (institution + day) with ``version`` is deterministic: a
replay, a resumed run and the worker emit the same rows, and a sink keeps the newest version per
``day_id`` (ClickHouse ``ReplacingMergeTree(version)`` ordered by ``fixmedins_code, day``), so
re-inserting is idempotent. What changed after the last midnight event time reached is emitted at the
next one, or when the input ends: a replay that is not to be continued (no ``--state``, or ``--as-of``
given) ends with ``Engine.close_days`` — every day changed since its last emission, one more version —
so its files hold each day as of the end of the input. A ``--state`` run without ``--as-of`` does not (the
next part continues the same days), hence two parts give the same rows and versions as the whole.

The Prometheus tap (``Tap``, closed unless a metrics sink opened it with ``open_tap``) receives
``(stream, region, lag_seconds | None)`` per record; it is transient, never checkpointed.

No personal data is kept: settlement, prescription and drug ids only.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from monitor.clock import CST, business_date, day_end
from monitor.contract import DayFact, Findings, Rule, RuleContext
from monitor.outputs import Alert, InstitutionDay, make_id
from monitor.records import STREAMS, Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

COUNTED_STREAMS = frozenset({"settlements", "inventory", "tracecodes", "prescriptions"})
UPLOAD_STREAMS = frozenset({"settlements", "inventory", "tracecodes"})
UNKNOWN_REGION = "unknown"
#: Days kept after they end: later records, alerts and facts of a day still change it until then.
HORIZON_DAYS = 62
#: ``DailyTally.prune_floor`` while ``setl_day`` and ``rx_uploaded`` are empty (beyond every ordinal)
_NO_FLOOR = date.max.toordinal() + 1

Key = tuple[str, date]


@dataclass(frozen=True, slots=True)
class EmitDays:
    """Emit the institution-days changed before 00:00 of ``day`` and forget those beyond the horizon."""

    day: date


@dataclass(slots=True)
class DayFacts:
    admdvs: str = UNKNOWN_REGION
    records: dict[str, int] = field(default_factory=dict)
    late: int = 0
    #: upload lags in seconds (a compact array: one per upload-stream record of the day)
    lags: array[float] = field(default_factory=lambda: array("d"))
    #: distinct settled drug lines (``setl_id``, ``med_list_codg``): a settled ``setl_id`` reaches the
    #: tally once (the engine's de-duplication: identity ``setl_id`` + status), so a count per settlement
    settle_lines: int = 0
    #: the data.incomplete rule's numbers once it judged the day (``DayFact``): lines, matched in time
    rule_lines: int | None = None
    rule_matched: int = 0
    trace_packs: Decimal = Decimal(0)
    trace_codes: int = 0
    rx_needed: list[str] = field(default_factory=list)
    overcharge: Decimal = Decimal(0)
    alerts: int = 0


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least ``q`` of the values at or below it."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


_DAY_FIELDS = frozenset(InstitutionDay.model_fields)
_set = object.__setattr__


def _row(values: dict[str, object]) -> InstitutionDay:
    """The ``InstitutionDay`` of ``values`` — every field, in the model's field order, each already of its
    field's type (str, date, int, float, Decimal, None: what ``_emit`` computes) — as pydantic's validation
    would build it (the same ``__dict__``, every field set), without re-checking those types: validating
    23 plain values was ≈ 13 µs a row, the largest part of a midnight's emission of a province's days.
    ``tests/test_detectors_daily.py`` checks that every row of a simulated city equals its validated copy."""
    row = object.__new__(InstitutionDay)
    _set(row, "__dict__", values)
    _set(row, "__pydantic_fields_set__", set(_DAY_FIELDS))
    _set(row, "__pydantic_extra__", None)
    _set(row, "__pydantic_private__", None)
    return row


def _ratio(num: int | Decimal, den: int | Decimal) -> float | None:
    if not den:
        return None
    return min(1.0, float(Decimal(num) / Decimal(den)))


class Tap:
    """``(stream, region, lag_seconds | None)`` per record for the Prometheus sink while ``items`` is a list
    (``DailyTally.open_tap``). Transient: it pickles as a closed tap, so a checkpoint never carries it and
    a restored engine keeps nothing for a sink that is gone (the shell's metrics sink opens it again)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, str, float | None]] | None = None

    def __reduce__(self) -> tuple[type[Tap], tuple[()]]:
        return (Tap, ())


class DailyTally(Rule):
    """The engine's institution-day tally (see the module docstring)."""

    name: ClassVar[str] = "institution_daily"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    #: Every stream passes the Prometheus tap; only ``COUNTED_STREAMS`` make institution-day facts.
    streams: ClassVar[tuple[str, ...]] = STREAMS
    timers: ClassVar[tuple[type, ...]] = (EmitDays,)
    state: ClassVar[tuple[str, ...]] = ("days", "versions", "by_ordinal", "dirty", "setl_day", "rx_waiting",
                                        "rx_uploaded")
    #: (class default: a tally checkpointed before it existed rebuilds at its first prune)
    prune_floor: int = 0

    def __init__(self, pack: Pack, horizon_days: int = HORIZON_DAYS) -> None:
        super().__init__(pack)
        spec = pack.rules.get("upload.late")
        hours = float(spec.params.get("max_lag_hours", 24)) if spec is not None else 24.0
        self.max_lag_s = hours * 3600
        self.horizon_days = horizon_days
        self.days: dict[Key, DayFacts] = {}
        #: the last emitted ``version`` of each day (apart from its facts: emitting a day does not change them,
        #: so an incremental checkpoint does not write a day's facts again only because it was emitted)
        self.versions: dict[Key, int] = {}
        self.by_ordinal: dict[int, list[Key]] = {}
        self.dirty: set[Key] = set()
        self.setl_day: dict[str, Key] = {}  # setl_id → its settlement's day
        self.rx_waiting: dict[str, list[Key]] = {}  # hi_rxno → days that need it
        self.rx_uploaded: dict[str, int] = {}  # hi_rxno → ordinal of the prescription's day
        self.pruned_through = 0
        #: a lower bound of the day ordinals ``setl_day`` and ``rx_uploaded`` hold (``_prune`` rebuilds
        #: them only once the horizon reaches it; derived: a state without it reads 0, "rebuild")
        self.prune_floor = _NO_FLOOR
        #: the pending ``EmitDays`` timer's day (None: none pending)
        self.next_emit: date | None = None
        self.tap = Tap()

    # ------------------------------------------------------------------------------------------ tap
    def open_tap(self) -> None:
        """Start keeping ``(stream, region, lag)`` per record for the Prometheus sink (``take_tap``)."""
        if self.tap.items is None:
            self.tap.items = []

    def take_tap(self) -> list[tuple[str, str, float | None]]:
        items = self.tap.items
        if items is None:
            return []
        self.tap.items = []
        return items

    # -------------------------------------------------------------------------------------- records
    def _facts(self, code: str, day: date, admdvs: str | None, update: bool = True) -> tuple[Key, DayFacts]:
        """The day's facts (opened on first use) marked changed; ``update``: a region learnt later (the
        registry's) replaces ``unknown``."""
        key = (code, day)
        facts = self.days.get(key)
        if facts is None:
            facts = self.days[key] = DayFacts(admdvs=admdvs or UNKNOWN_REGION)
            self.by_ordinal.setdefault(day.toordinal(), []).append(key)
        elif update and admdvs and facts.admdvs == UNKNOWN_REGION:
            facts.admdvs = admdvs
        self.dirty.add(key)
        return key, facts

    def _arm(self, ctx: RuleContext) -> None:
        """Schedule the next midnight's emission (none is pending)."""
        self.next_emit = business_date(ctx.now) + timedelta(days=1)
        ctx.schedule(day_end(self.next_emit - timedelta(days=1)), EmitDays(self.next_emit))

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        btime = rec.business_time
        code: str | None = getattr(rec, "fixmedins_code", None)
        stream = rec.STREAM
        tap = self.tap.items
        if btime is None or code is None or stream not in COUNTED_STREAMS:
            if tap is not None:
                region = (ctx.registry.admdvs(code) if code else None) or UNKNOWN_REGION
                tap.append((stream, region, None))
            return []
        day = btime.date() if btime.tzinfo is CST else business_date(btime)  # business_date, inline
        if day.toordinal() <= self.pruned_through:  # beyond the horizon: the row is final
            if tap is not None:
                old_lag = max(0.0, (arrival - btime).total_seconds()) if stream in UPLOAD_STREAMS else None
                tap.append((stream, ctx.registry.admdvs(code) or UNKNOWN_REGION, old_lag))
            return []
        if self.next_emit is None:
            self._arm(ctx)
        key = (code, day)
        facts = self.days.get(key)
        if facts is None or facts.admdvs == UNKNOWN_REGION:  # the registry only for a new day (hot path)
            key, facts = self._facts(code, day, ctx.registry.admdvs(code))
        else:
            self.dirty.add(key)
        counts = facts.records
        counts[stream] = counts.get(stream, 0) + 1
        lag: float | None = None
        if stream != "prescriptions":  # UPLOAD_STREAMS: the counted streams but prescriptions
            lag = (arrival - btime).total_seconds()
            if not lag > 0.0:
                lag = 0.0
            facts.lags.append(lag)
            if lag > self.max_lag_s:
                facts.late += 1
            if stream == "tracecodes":
                if rec.scan_kind == "sale" and rec.setl_id and rec.trdn_flag != "1":  # type: ignore[union-attr]
                    owner = self.setl_day.get(rec.setl_id, key)  # type: ignore[union-attr]
                    target = self.days.get(owner)
                    if target is not None:
                        target.trace_codes += 1
                        self.dirty.add(owner)
            elif stream == "settlements":
                self._settlement(rec, key, facts)  # type: ignore[arg-type]
        else:
            hi_rxno: str = rec.hi_rxno  # type: ignore[union-attr,assignment]
            if rec.rx_status == "uploaded":  # type: ignore[union-attr]
                self.rx_uploaded[hi_rxno] = ordinal = day.toordinal()
                if ordinal < self.prune_floor:
                    self.prune_floor = ordinal
                for owner in self.rx_waiting.pop(hi_rxno, []):
                    self.dirty.add(owner)
        if tap is not None:
            tap.append((stream, facts.admdvs, lag))
        return []

    def _settlement(self, rec: Settlement, key: Key, facts: DayFacts) -> None:
        if rec.setl_status != "settled":
            return
        self.setl_day[rec.setl_id] = key
        ordinal = key[1].toordinal()
        if ordinal < self.prune_floor:
            self.prune_floor = ordinal
        needs_rx = False
        lines = rec.drugdetail
        facts.settle_lines += len({line.med_list_codg for line in lines}) if len(lines) > 1 else len(lines)
        for line in lines:
            if line.trdn_flag != "1":
                facts.trace_packs += line.cnt
            needs_rx = needs_rx or line.rx_flag == "1"
        if needs_rx:
            ref = rec.hi_rxno or f"setl:{rec.setl_id}"
            facts.rx_needed.append(ref)
            if rec.hi_rxno and rec.hi_rxno not in self.rx_uploaded:
                self.rx_waiting.setdefault(rec.hi_rxno, []).append(key)

    # ------------------------------------------------------------------------- from the engine
    def _known(self, code: str, day: date, admdvs: str | None) -> DayFacts | None:
        if day.toordinal() <= self.pruned_through:
            return None
        return self._facts(code, day, admdvs, update=False)[1]

    def on_fact(self, fact: DayFact) -> None:
        """The data.incomplete rule judged a day: its numbers become the row's (module docstring)."""
        lines = fact.facts.get("settlement_lines")
        if lines is None:
            return
        facts = self._known(fact.fixmedins_code, fact.day, None)
        if facts is not None:
            facts.rule_lines = int(lines)
            facts.rule_matched = int(fact.facts.get("matched_lines", 0))

    def on_alert(self, alert: Alert) -> None:
        """The engine emitted ``alert``: it counts on the day its window starts."""
        facts = self._known(alert.fixmedins_code, business_date(alert.window_start), alert.admdvs)
        if facts is not None:
            facts.alerts += 1
            if alert.rule_id == "price.dual":
                facts.overcharge += alert.vola_amt

    # ----------------------------------------------------------------------------------- emission
    def emit_changed(self) -> list[InstitutionDay]:
        """Every institution-day changed since its last emission, each with its next ``version``."""
        out = [self._emit(k) for k in sorted(self.dirty) if k in self.days]
        self.dirty.clear()
        return out

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        assert isinstance(key, EmitDays)
        self.next_emit = None
        out: Findings = list(self.emit_changed())
        self._prune(key.day)
        if self.days:  # the next midnight (not before the current event time's day: an idle gap skips)
            self.next_emit = max(key.day, business_date(ctx.now)) + timedelta(days=1)
            ctx.schedule(day_end(self.next_emit - timedelta(days=1)), EmitDays(self.next_emit))
        return out

    def _emit(self, key: Key) -> InstitutionDay:
        facts = self.days[key]
        version = self.versions[key] = self.versions.get(key, 0) + 1
        lags = sorted(facts.lags)
        lines = facts.rule_lines if facts.rule_lines is not None else facts.settle_lines
        completeness = _ratio(facts.rule_matched, facts.rule_lines) if facts.rule_lines is not None else None
        covered = sum(1 for ref in facts.rx_needed if ref in self.rx_uploaded)
        rec = facts.records
        return _row(dict(
            day_id=make_id("DY", key[0], key[1].isoformat()),
            fixmedins_code=key[0], day=key[1], admdvs=facts.admdvs,
            records_settlements=rec.get("settlements", 0), records_inventory=rec.get("inventory", 0),
            records_tracecodes=rec.get("tracecodes", 0), records_prescriptions=rec.get("prescriptions", 0),
            late=facts.late,
            lag_p50_s=nearest_rank(lags, 0.5), lag_p90_s=nearest_rank(lags, 0.9),
            lag_p99_s=nearest_rank(lags, 0.99), lag_max_s=lags[-1] if lags else 0.0,
            settlement_lines=lines, completeness=completeness,
            trace_packs=facts.trace_packs, trace_codes=facts.trace_codes,
            trace_coverage=_ratio(facts.trace_codes, facts.trace_packs),
            rx_required=len(facts.rx_needed), rx_coverage=_ratio(covered, len(facts.rx_needed)),
            dual_price_overcharge=facts.overcharge, alerts=facts.alerts, version=version,
        ))

    def _prune(self, today: date) -> None:
        limit = (today - timedelta(days=self.horizon_days)).toordinal()
        if limit <= self.pruned_through:
            return
        for ordinal in [o for o in self.by_ordinal if o <= limit]:
            for key in self.by_ordinal.pop(ordinal):
                facts = self.days.pop(key, None)
                self.versions.pop(key, None)
                self.dirty.discard(key)
                if facts is None:
                    continue
                for ref in facts.rx_needed:
                    self.rx_waiting.pop(ref, None)
        if limit >= self.prune_floor:  # something in them may have ended: rebuild both
            self.setl_day = {s: k for s, k in self.setl_day.items() if k[1].toordinal() > limit}
            self.rx_uploaded = {k: o for k, o in self.rx_uploaded.items() if o > limit}
            self.prune_floor = min(min((k[1].toordinal() for k in self.setl_day.values()), default=_NO_FLOOR),
                                   min(self.rx_uploaded.values(), default=_NO_FLOOR))
        self.pruned_through = limit


__all__ = ["COUNTED_STREAMS", "DailyTally", "EmitDays", "nearest_rank"]

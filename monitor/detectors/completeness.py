"""Completeness of 进销存 against settlements — EZ-DM 二(二).

    "医保结算数据、进销存数据经查实不完整的中止门诊统筹服务 6 个月，6 个月后至两年内再次发现数据不完整的，
    取消门诊统筹定点资格。"

* ``data.incomplete`` — every drug line of a settlement (``setl_id`` + ``med_list_codg``, quantity
  ``cnt``; lines of the same code in one settlement are summed) must be matched by 3505 sale records
  carrying that ``setl_id`` and code whose ``sel_retn_cnt`` add up to at least the settled quantity, the
  completing sale *arriving* (``inf_time``) no later than ``match_window_hours`` (72) after
  ``setl_time`` — exactly 72 h is in time. A settlement revoked (``setl_status=revoked``, 2103/2208) is
  taken out of the count, and so are its sales and their 3506 returns: they cancel out. 3506 returns of
  a settlement that stays settled do not un-match it (the sale *was* uploaded; a return is a separate
  movement).
* An institution-day (the Asia/Shanghai business date of ``setl_time``) is judged when event time
  reaches day end + ``match_window_hours`` — every line of that day has had its full window by then —
  and again whenever a settlement of that day arrives later (a late upload can only add a line). A
  day with fewer than ``min_complete_ratio`` (98 %) of its lines matched raises the alert (a suspicion:
  incompleteness must be verified) and triggers ``data.incomplete`` on the ladders — in the ezhou pack a
  ``REVIEW`` ticket with ``requires_verification``. The verified finding ``data_incomplete_verified``
  then drives the recurrence ladder (suspend 6 months; again after the suspension and within 2 years
  → cancel), which the ledger handles.

State (per institution key space, picklable): settlements awaiting their day's judgment, sale
quantities by (``setl_id``, code) with their arrival times (sales may arrive before their settlement;
they are kept ``sale_memory_days`` after their business date), revocations seen before their
settlement, and day tallies (kept ``rejudge_horizon_days`` after judgment for late settlements).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.contract import DayFact, Findings, ForgetDay, JudgeDay, Params, Rule, RuleContext
from monitor.detectors.windows import DayWindows
from monitor.records import SaleMovement, Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

RULE = "data.incomplete"
ZERO = Decimal("0")
_NO_NEED = (ZERO, ZERO)


class IncompleteParams(Params):
    match_window_hours: float = Field(gt=0)
    min_complete_ratio: float = Field(gt=0, le=1)
    sale_memory_days: int = Field(default=10, ge=1)
    rejudge_horizon_days: int = Field(default=62, ge=1)
    max_samples: int = Field(default=10, ge=0)


@dataclass(slots=True)
class PendingSettlement:
    """A settled settlement waiting for its day's judgment: needed quantity and amount per code."""

    fixmedins_code: str
    setl_time: datetime
    needs: dict[str, tuple[Decimal, Decimal]]
    revoked: bool = False


@dataclass(slots=True)
class DayTally:
    pending: list[str] = field(default_factory=list)
    lines: int = 0
    matched: int = 0
    unmatched_amt: Decimal = Decimal("0")
    samples: list[str] = field(default_factory=list)
    judged: bool = False
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class ForgetSales:
    """Forget the 3505 sales of business ``day`` (its window + ``sale_memory_days`` are over)."""

    day: date


@dataclass(frozen=True, slots=True)
class ForgetRevoked:
    """Forget the revocations of business ``day`` that arrived before (or without) their settlement."""

    day: date


class Completeness(Rule):
    """``data.incomplete``: settlement drug lines without matching 3505 sales (EZ-DM 二(二))."""

    name: ClassVar[str] = "completeness"
    rule_ids: ClassVar[tuple[str, ...]] = (RULE,)
    streams: ClassVar[tuple[str, ...]] = ("settlements", "inventory")
    params: ClassVar[dict[str, type[Params]]] = {RULE: IncompleteParams}
    timers: ClassVar[tuple[type, ...]] = (JudgeDay, ForgetDay, ForgetSales, ForgetRevoked)
    state: ClassVar[tuple[str, ...]] = ("settlements", "sales", "sales_by_day", "revoked", "windows")

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        p: IncompleteParams = self.param_model(RULE)
        self.window = timedelta(hours=p.match_window_hours)
        self.min_ratio = Decimal(str(p.min_complete_ratio))
        self.sale_memory = timedelta(days=p.sale_memory_days)
        self.horizon = timedelta(days=p.rejudge_horizon_days)
        self.max_samples = p.max_samples
        #: setl_id → settlement awaiting judgment (institution key space: settlements are keyed by it).
        self.settlements: dict[str, PendingSettlement] = {}
        #: (setl_id, med_list_codg) → [(arrival, quantity)] of 3505 sales, in arrival order.
        self.sales: dict[tuple[str, str], list[tuple[datetime, Decimal]]] = {}
        self.sales_by_day: dict[date, list[tuple[str, str]]] = {}
        #: setl_ids revoked before (or without) their settlement arriving → business date (for expiry).
        self.revoked: dict[str, date] = {}
        self.windows: DayWindows[DayTally] = DayWindows(self.window, self.horizon, DayTally,
                                                       "completeness.settlement_beyond_rejudge_horizon")

    # ---------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        if isinstance(rec, Settlement):
            return self._on_settlement(rec, ctx)
        if isinstance(rec, SaleMovement) and rec.infno == "3505" and rec.setl_id:
            self._on_sale(rec, arrival, ctx)
        return []

    def _on_sale(self, rec: SaleMovement, arrival: datetime, ctx: RuleContext) -> None:
        assert rec.setl_id is not None
        key = (rec.setl_id, rec.med_list_codg)
        entries = self.sales.get(key)
        if entries is None:
            entries = self.sales[key] = []
            when = rec.sel_retn_time
            day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
            bucket = self.sales_by_day.get(day)
            if bucket is None:
                bucket = self.sales_by_day[day] = []
                ctx.schedule(day_end(day) + self.window + self.sale_memory, ForgetSales(day))
            bucket.append(key)
        entries.append((arrival, rec.sel_retn_cnt))

    def _on_settlement(self, rec: Settlement, ctx: RuleContext) -> Findings:
        code = rec.fixmedins_code
        setl_id = rec.setl_id
        when = rec.setl_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        if rec.setl_status == "revoked":
            pending = self.settlements.get(setl_id)
            if pending is not None:
                pending.revoked = True
            else:
                self.revoked[setl_id] = day
                ctx.schedule(day_end(day) + self.window + self.sale_memory, ForgetRevoked(day))
            return []
        if not rec.drugdetail:
            return []
        needs: dict[str, tuple[Decimal, Decimal]] = {}
        for line in rec.drugdetail:
            med = line.med_list_codg
            cnt, amt = needs.get(med, _NO_NEED)
            fee = line.det_item_fee_sumamt
            if fee is None:  # the line amount: det_item_fee_sumamt, else cnt × pric, else 0
                fee = line.cnt * line.pric if line.pric is not None else ZERO
            needs[med] = (cnt + line.cnt, amt + fee)
        # a revocation that arrived first: taken out of the memory of early revocations either way
        revoked = self.revoked.pop(setl_id, None) is not None
        pending = PendingSettlement(code, when, needs, revoked=revoked)
        tally = self.windows.open(code, day, ctx)
        if tally is None:
            return []
        if tally.judged:
            # A settlement uploaded after its day was judged: its window is over, judge it now.
            self._settle(setl_id, pending, tally)
            return self._judge(code, day, tally, ctx)
        self.settlements[setl_id] = pending
        tally.pending.append(setl_id)
        return []

    # ---------------------------------------------------------------------------------- timers
    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        if isinstance(key, ForgetSales):
            for skey in self.sales_by_day.pop(key.day, ()):
                self.sales.pop(skey, None)
            return []
        if isinstance(key, ForgetRevoked):
            for setl_id in [s for s, d in self.revoked.items() if d == key.day]:
                del self.revoked[setl_id]
            return []
        assert isinstance(key, (JudgeDay, ForgetDay))
        tally = self.windows.fire(key)
        if tally is None:
            return []
        for setl_id in tally.pending:
            pending = self.settlements.pop(setl_id, None)
            if pending is not None:
                self._settle(setl_id, pending, tally)
        tally.pending = []
        return self._judge(key.code, key.day, tally, ctx)

    # ---------------------------------------------------------------------------------- judgment
    def matched_at(self, setl_id: str, med_list_codg: str, need: Decimal) -> datetime | None:
        """Arrival time of the sale that brings the uploaded quantity to ``need``; None if never."""
        entries = self.sales.get((setl_id, med_list_codg))
        if not entries:
            return None
        total = ZERO
        for arrival, qty in entries if len(entries) == 1 else sorted(entries):
            total += qty
            if total >= need:
                return arrival
        return None

    def _settle(self, setl_id: str, pending: PendingSettlement, tally: DayTally) -> None:
        """Count one settlement's lines into its day (revoked ones cancel out and count nothing)."""
        if pending.revoked:
            return
        deadline = pending.setl_time + self.window
        needs = pending.needs
        for med, (cnt, amt) in sorted(needs.items()) if len(needs) > 1 else needs.items():
            tally.lines += 1
            at = self.matched_at(setl_id, med, cnt)
            if at is not None and at <= deadline:
                tally.matched += 1
            else:
                tally.unmatched_amt += amt
                if len(tally.samples) < self.max_samples:
                    tally.samples.append(f"setl_id={setl_id};med_list_codg={med}")

    def _judge(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        if tally.lines == 0:
            return []
        # the day's own numbers (institution_daily ``completeness``): lines matched in time, as judged
        fact = DayFact(code, day, {"settlement_lines": tally.lines, "matched_lines": tally.matched})
        if tally.flagged or Decimal(tally.matched) >= self.min_ratio * tally.lines:
            return [fact]
        tally.flagged = True
        ratio = Decimal(tally.matched) / Decimal(tally.lines)
        evidence: dict[str, Any] = {
            "business_date": day.isoformat(),
            "settlement_lines": tally.lines,
            "matched_lines": tally.matched,
            "unmatched_lines": tally.lines - tally.matched,
            "completeness": f"{ratio:.4f}",
            "min_completeness": f"{self.min_ratio:.4f}",
            "match_window_hours": self.window.total_seconds() / 3600,
            "unmatched_amount": str(tally.unmatched_amt),
            "sample_unmatched": list(tally.samples),
        }
        alert = ctx.alert(
            RULE, code, subject="day", window_start=day_start(day), window_end=day_end(day),
            evidence=evidence, vola_amt=tally.unmatched_amt,
            vola_cont=(f"{day} 结算药品明细 {tally.lines} 条，{self.window.total_seconds() / 3600:g} 小时内有"
                       f"进销存销售记录匹配的 {tally.matched} 条（{ratio:.2%} < {self.min_ratio:.0%}），"
                       "进销存数据疑似不完整"),
        )
        escalation = ctx.escalate(RULE, code, day, cause=f"day:{day.isoformat()}", alert=alert)
        return [fact, alert, escalation] if alert is not None else [fact, escalation]

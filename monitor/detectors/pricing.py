"""Prices — dual pricing (阴阳价格, AR-AGR 二(二)13, 三(二)2), listed prices (EZ-CONV 三) and the regional
modal price (NHSA-style data screening).

Insured unit price of a drug: the 3505 sale's ``finl_trns_pric`` when ``mdtrt_setl_type=1``, else the
settlement drug line's ``pric`` (``det_item_fee_sumamt / cnt`` when ``pric`` is absent). A settlement
priced by both counts once (the 3505 price wins). Self-pay unit price: 3505 with ``mdtrt_setl_type=2``.
Split-pack (拆零, ``trdn_flag=1``) prices are per split unit and are only compared with split-pack prices.

* ``price.dual`` — per institution, drug (``med_list_codg``), pack kind and business day: an insured
  unit price ``p`` above the self-pay price ``s`` by more than ``min_excess_ratio`` (1 %) **and**
  ``min_excess_amount`` (¥0.01): ``p > s·(1+1 %)`` and ``p − s > 0.01``. ``s`` is the *highest* self-pay
  price of that day, so a member discount given to one self-pay customer is not read as dual pricing.
  Self-pay dearer than insured is not a violation. The day is judged when event time reaches day end +
  ``judge_after_hours`` (24 h: by then every on-time upload of the day is in) and again when a record of
  it arrives later (up to ``rejudge_horizon_days``). Evidence: both prices, quantities and the overcharge
  Σ(p − s)·q over the insured sales above tolerance. Warning alert; the ``dual_price_escalation`` ladder
  issues INTERVIEW on the first case and escalates on a repeat after it (AR-AGR 三(二)2).
* ``price.dual_serious`` — an institution's dual-pricing days within ``window_days`` (30) up to the day
  just judged add up to an overcharge ≥ ``min_overcharge`` (¥500) or number ≥ ``min_days`` (3) — the
  gravity — **and** their 涉及药品金额 (insured amount Σ price × qty of the dual-priced lines) reaches
  ``min_involved_amount`` — the amount (AR-AGR 二(二)13 "涉及药品金额较大、情节严重") → critical
  alert; ladders REVIEW (suspend settlement, requires verification) and NO_RENEWAL (AR-AGR 二(二)13).
  Days that made one serious determination never count towards the next.
* ``price.above_listed`` — an insured whole-pack unit price above the catalogue ``listed_price`` by more
  than ``margin_ratio`` and ``margin_amount`` (defaults 0: any excess), for ``institution_types`` (EZ-CONV
  三 governs pharmacies). One alert per institution, drug and day.
* ``price.above_mode`` — an insured whole-pack unit price above the regional modal price of the drug by
  more than ``margin_ratio`` (20 %). The modal price is the price the most institutions sold the drug at
  (insured or self-pay, whole packs) within the last ``window_days`` (30) — one vote per institution and
  price, so one busy pharmacy cannot set the mode; ties go to the higher price; a mode needs at least
  ``min_institutions`` (3) votes. State per drug is bounded by prices × institutions seen in the window.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.contract import Delivery, Findings, ForgetDay, JudgeDay, Params, Placed, Rule, RuleContext
from monitor.detectors.windows import DayWindows
from monitor.records import SaleMovement, Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

CENT = Decimal("0.01")
#: record class → what pricing does with it (``Pricing.on_batch``): 1 a settlement, 2 a movement (a 3505
#: sale when its ``infno`` says so), 0 nothing — worked out once per class with ``isinstance``
_KINDS: dict[type, int] = {}


class DualParams(Params):
    min_excess_ratio: Decimal = Field(ge=0, lt=1)
    min_excess_amount: Decimal = Field(ge=0)
    judge_after_hours: float = Field(default=24, ge=0)
    rejudge_horizon_days: int = Field(default=7, ge=1)


class DualSeriousParams(Params):
    window_days: int = Field(ge=1)
    min_overcharge: Decimal = Field(gt=0)
    min_days: int = Field(ge=1)
    #: 涉及药品金额: the insured amount Σ price × qty of the dual-priced lines in the window must reach
    #: this as well ("涉及药品金额较大、情节严重" is amount *and* gravity)
    min_involved_amount: Decimal = Field(default=Decimal(0), ge=0)


class AboveListedParams(Params):
    margin_ratio: Decimal = Field(default=Decimal(0), ge=0)
    margin_amount: Decimal = Field(default=Decimal(0), ge=0)
    institution_types: list[Literal["1", "2"]] = Field(default=["2"], min_length=1)


class AboveModeParams(Params):
    margin_ratio: Decimal = Field(gt=0)
    window_days: int = Field(ge=1)
    min_institutions: int = Field(ge=1)


def exceeds(price: Decimal, ref: Decimal, ratio: Decimal, amount: Decimal) -> bool:
    """``price`` above ``ref`` by more than ``ratio`` (relative) and more than ``amount`` (absolute)."""
    return price > ref * (1 + ratio) and price - ref > amount


Obs = tuple[Decimal, Decimal]  # unit price, quantity
DayKey = tuple[str, str, date, bool]  # institution, drug, business day, split pack


@dataclass(slots=True)
class DualDay:
    sale: dict[str, list[Obs]] = field(default_factory=dict)  # insured 3505, by setl_id / docno
    setl: dict[str, list[Obs]] = field(default_factory=dict)  # settlement lines, by setl_id
    self_max: Decimal | None = None
    self_min: Decimal | None = None
    self_qty: Decimal = Decimal(0)
    self_n: int = 0
    judged: bool = False
    flagged: bool = False

    def insured(self) -> list[tuple[str, Obs]]:
        out = [(ref, o) for ref, obs in self.sale.items() for o in obs]
        out += [(ref, o) for ref, obs in self.setl.items() if ref not in self.sale for o in obs]
        return out


@dataclass(slots=True)
class InstDay:
    """The drug-days of one institution and business day: judged and forgotten together (two timers
    per institution-day, not per drug)."""

    keys: list[DayKey] = field(default_factory=list)
    judged: bool = False


class Pricing(Rule):
    name: ClassVar[str] = "pricing"
    rule_ids: ClassVar[tuple[str, ...]] = ("price.dual", "price.dual_serious", "price.above_listed",
                                           "price.above_mode")
    streams: ClassVar[tuple[str, ...]] = ("settlements", "inventory")
    params: ClassVar[dict[str, type[Params]]] = {
        "price.dual": DualParams,
        "price.dual_serious": DualSeriousParams,
        "price.above_listed": AboveListedParams,
        "price.above_mode": AboveModeParams,
    }
    timers: ClassVar[tuple[type, ...]] = (JudgeDay, ForgetDay)
    state: ClassVar[tuple[str, ...]] = ("days", "windows", "setl_days", "flag_days", "involved_days",
                                        "serious_through", "votes", "mode_cache", "mode_dirty", "alerted")

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        self.dual: DualParams | None = self.param_model("price.dual") if pack.enabled("price.dual") else None
        self.serious: DualSeriousParams | None = (
            self.param_model("price.dual_serious")
            if self.dual is not None and pack.enabled("price.dual_serious") else None)
        self.listed: AboveListedParams | None = (
            self.param_model("price.above_listed") if pack.enabled("price.above_listed") else None)
        self.mode: AboveModeParams | None = (
            self.param_model("price.above_mode") if pack.enabled("price.above_mode") else None)
        self.days: dict[DayKey, DualDay] = {}
        #: institution-days of dual pricing (judged and forgotten together: two timers per day, not per drug)
        self.windows: DayWindows[InstDay] | None = None
        if self.dual is not None:
            judge_after = timedelta(hours=self.dual.judge_after_hours)
            self.windows = DayWindows(judge_after, timedelta(days=self.dual.rejudge_horizon_days), InstDay,
                                      "price.dual_beyond_rejudge_horizon")
        self.setl_days: dict[str, list[DayKey]] = {}  # setl_id → days it priced (for revocations)
        #: institution → dual-pricing day → overcharge; and the last day a serious case consumed.
        self.flag_days: dict[str, dict[date, Decimal]] = {}
        #: institution → business day → 涉及药品金额 (insured amount of its dual-priced lines)
        self.involved_days: dict[str, dict[date, Decimal]] = {}
        self.serious_through: dict[str, date] = {}
        #: drug → price → institution → last day it sold at that price (the modal-price votes).
        self.votes: dict[str, dict[Decimal, dict[str, date]]] = {}
        self.mode_cache: dict[str, tuple[date, Decimal | None, int]] = {}
        #: drugs whose votes changed since their ``mode_cache`` entry was computed (a cached mode below
        #: ``min_institutions`` votes stays valid for its day until then).
        self.mode_dirty: set[str] = set()
        # Hot-path constants derived from the pack once (the rules still read only these thresholds).
        self.listed_types: frozenset[str] = frozenset(self.listed.institution_types if self.listed else ())
        self.listed_factor = 1 + self.listed.margin_ratio if self.listed else Decimal(1)
        self.mode_factor = 1 + self.mode.margin_ratio if self.mode else Decimal(1)
        #: business day → (rule, institution, drug) already alerted (bounded: recent days only).
        self.alerted: dict[date, set[tuple[str, str, str]]] = {}

    # ------------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        out: Findings = []
        if isinstance(rec, Settlement):
            self._settlement(rec, ctx, out)
        elif isinstance(rec, SaleMovement) and rec.infno == "3505":
            self._sale(rec, ctx, out)
        return out

    def on_batch(self, stream: str, batch: Sequence[Delivery], ctx: RuleContext) -> list[Placed]:
        """The batch path (``monitor.contract``): the findings of ``on_record`` one by one, placed
        (``Rule.each_delivery``: the rule's judgments and re-judgments due inside the batch fire at their
        instant). Prices are order-sensitive — a day re-judged by a late price, the modal price and its
        votes at each insured sale, the once-per-day alerts — so every record is still taken in arrival
        order, and the batch saves the per-record dispatch only: the record's kind is known per class,
        and the findings list is shared by the records that find nothing."""
        settlement, sale = self._settlement, self._sale
        kinds = _KINDS
        out: Findings = []

        def handle(d: Delivery) -> Findings | None:
            rec = d.record
            kind = kinds.get(type(rec))
            if kind is None:
                kind = kinds[type(rec)] = 1 if isinstance(rec, Settlement) else 2 * isinstance(rec, SaleMovement)
            if kind == 1:
                settlement(rec, ctx, out)  # type: ignore[arg-type]
            elif kind == 2 and rec.infno == "3505":  # type: ignore[union-attr]
                sale(rec, ctx, out)  # type: ignore[arg-type]
            else:
                return None
            if not out:
                return None
            found = out[:]
            out.clear()
            return found

        return self.each_delivery(batch, ctx, handle)

    def _settlement(self, st: Settlement, ctx: RuleContext, out: Findings) -> None:
        when = st.setl_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        if st.setl_status == "revoked":
            for key in self.setl_days.pop(st.setl_id, []):
                dd = self.days.get(key)
                if dd is not None:
                    dd.setl.pop(st.setl_id, None)
                    dd.sale.pop(st.setl_id, None)
            return
        code = st.fixmedins_code
        setl_id = st.setl_id
        days = self.days if self.dual is not None else None
        setl_days = self.setl_days
        for line in st.drugdetail:
            price = line.pric
            if price is None:
                if line.det_item_fee_sumamt is None:
                    continue
                price = (line.det_item_fee_sumamt / line.cnt).quantize(Decimal("0.000001"))
            split = line.trdn_flag == "1"
            drug = line.med_list_codg
            if days is not None:
                key = (code, drug, day, split)
                dd = days.get(key) or self._day(key, ctx)
                if dd is not None:
                    obs = dd.setl.get(setl_id)
                    if obs is None:
                        dd.setl[setl_id] = [(price, line.cnt)]
                    else:
                        obs.append((price, line.cnt))
                    keys = setl_days.get(setl_id)
                    if keys is None:
                        setl_days[setl_id] = [key]
                    elif key not in keys:
                        keys.append(key)
                    if dd.judged and not dd.flagged:
                        self._judge(key, dd, ctx, out)
            if not split:
                self._observe(code, drug, day, price, line.cnt, "setl_id", setl_id, True, ctx, out)

    def _sale(self, sale: SaleMovement, ctx: RuleContext, out: Findings) -> None:
        price = sale.finl_trns_pric
        if price is None or sale.mdtrt_setl_type is None:
            return
        when = sale.sel_retn_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        split = sale.trdn_flag == "1"
        insured = sale.mdtrt_setl_type == "1"
        code = sale.fixmedins_code
        drug = sale.med_list_codg
        setl_id = sale.setl_id
        cnt = sale.sel_retn_cnt
        if self.dual is not None:
            key = (code, drug, day, split)
            dd = self.days.get(key) or self._day(key, ctx)
            if dd is not None:
                if insured:
                    ref = setl_id or f"doc:{sale.rtal_docno or sale.fixmedins_bchno}"
                    obs = dd.sale.get(ref)
                    if obs is None:
                        dd.sale[ref] = [(price, cnt)]
                    else:
                        obs.append((price, cnt))
                    if setl_id:
                        keys = self.setl_days.get(setl_id)
                        if keys is None:
                            self.setl_days[setl_id] = [key]
                        elif key not in keys:
                            keys.append(key)
                else:
                    if dd.self_max is None:
                        dd.self_max = dd.self_min = price
                    else:
                        dd.self_max = max(dd.self_max, price)
                        dd.self_min = min(dd.self_min, price)  # type: ignore[type-var]
                    dd.self_qty += cnt
                    dd.self_n += 1
                if dd.judged and not dd.flagged:
                    self._judge(key, dd, ctx, out)
        if not split:
            if setl_id:
                self._observe(code, drug, day, price, cnt, "setl_id", setl_id, insured, ctx, out)
            else:
                self._observe(code, drug, day, price, cnt, "rtal_docno", sale.rtal_docno, insured, ctx, out)

    # ------------------------------------------------------------------------------------ price.dual
    def _day(self, key: DayKey, ctx: RuleContext) -> DualDay | None:
        dd = self.days.get(key)
        if dd is None:
            assert self.windows is not None
            inst = self.windows.open(key[0], key[2], ctx)
            if inst is None:
                return None
            dd = self.days[key] = DualDay(judged=inst.judged)
            inst.keys.append(key)
        return dd

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        assert isinstance(key, (JudgeDay, ForgetDay)) and self.windows is not None
        if isinstance(key, ForgetDay):
            inst = self.windows.get(key.code, key.day)
            self.windows.fire(key)
            for day_key in inst.keys if inst is not None else ():
                dd = self.days.pop(day_key, None)
                for setl_id in {*dd.setl, *dd.sale} if dd is not None else ():
                    keys = self.setl_days.get(setl_id)
                    if keys is not None and day_key in keys:
                        keys.remove(day_key)
                        if not keys:
                            del self.setl_days[setl_id]
            return []
        inst = self.windows.fire(key)
        if inst is None:
            return []
        out: Findings = []
        for day_key in inst.keys:
            dd = self.days[day_key]
            dd.judged = True
            if dd.self_max is not None:  # no self-pay price that day: nothing to compare (most days)
                self._judge(day_key, dd, ctx, out)
        return out

    def _judge(self, key: DayKey, dd: DualDay, ctx: RuleContext, out: Findings) -> None:
        assert self.dual is not None
        if dd.self_max is None:
            return
        ref = dd.self_max
        code, drug, day, split = key
        over = Decimal(0)
        hit_qty = Decimal(0)
        prices: list[Decimal] = []
        samples: list[str] = []
        involved = Decimal(0)
        for setl_id, (price, qty) in dd.insured():
            if exceeds(price, ref, self.dual.min_excess_ratio, self.dual.min_excess_amount):
                over += (price - ref) * qty
                involved += price * qty
                hit_qty += qty
                prices.append(price)
                if len(samples) < 5 and setl_id not in samples:
                    samples.append(setl_id)
        if not prices:
            return
        dd.flagged = True
        over = over.quantize(CENT)
        evidence: dict[str, Any] = {
            "business_date": day.isoformat(),
            "med_list_codg": drug,
            "split_pack": split,
            "insured_unit_price": str(max(prices)),
            "insured_unit_price_min": str(min(prices)),
            "selfpay_unit_price": str(ref),
            "selfpay_unit_price_min": str(dd.self_min),
            "insured_quantity": str(hit_qty),
            "selfpay_quantity": str(dd.self_qty),
            "selfpay_sales": dd.self_n,
            "overcharge": str(over),
            "involved_amount": str(involved.quantize(CENT)),
            "sample_records": [s if s.startswith("doc:") else f"setl_id={s}" for s in samples],
        }
        alert = ctx.alert(
            "price.dual", code, subject=f"{drug}|{'split' if split else 'pack'}",
            window_start=day_start(day), window_end=day_end(day), evidence=evidence,
            vola_cont=(f"{day} {drug} 医保价 {max(prices)} 高于自费价 {ref}（>1% 且 >¥0.01），"
                       f"多收 ¥{over}"),
            vola_amt=over,
        )
        if alert is not None:
            out.append(alert)
        out.append(ctx.escalate("price.dual", code, day, cause=f"{day.isoformat()}:{drug}", alert=alert))
        if self.serious is not None:
            self._escalate(code, day, over, involved.quantize(CENT), ctx, self.serious, out)

    def _escalate(self, code: str, day: date, over: Decimal, involved: Decimal, ctx: RuleContext,
                  p: DualSeriousParams, out: Findings) -> None:
        days = self.flag_days.setdefault(code, {})
        days[day] = days.get(day, Decimal(0)) + over
        inv = self.__dict__.setdefault("involved_days", {}).setdefault(code, {})
        inv[day] = inv.get(day, Decimal(0)) + involved
        for old in [d for d in inv if d not in days and d < day - timedelta(days=2 * p.window_days)]:
            del inv[old]
        lo = day - timedelta(days=p.window_days - 1)
        for old in [d for d in days if d < lo - timedelta(days=p.window_days)]:
            del days[old]  # memory bound: beyond any window a late day could still open
        consumed = self.serious_through.get(code)
        window = {d: a for d, a in days.items() if lo <= d <= day and (consumed is None or d > consumed)}
        total = sum(window.values(), Decimal(0))
        involved_total = sum((inv.get(d, Decimal(0)) for d in window), Decimal(0))
        if total < p.min_overcharge and len(window) < p.min_days:
            return
        if involved_total < p.min_involved_amount:
            return  # grave but small: 涉及药品金额 not 较大
        self.serious_through[code] = max(day, consumed) if consumed else day
        alert = ctx.alert(
            "price.dual_serious", code, subject="episode", window_start=day_start(min(window)),
            window_end=day_end(day),
            evidence={
                "days": [d.isoformat() for d in sorted(window)],
                "dual_price_days": len(window),
                "overcharge": str(total),
                "involved_amount": str(involved_total),
                "min_involved_amount": str(p.min_involved_amount),
                "window_days": p.window_days,
                "min_overcharge": str(p.min_overcharge),
                "min_days": p.min_days,
            },
            vola_cont=(f"{p.window_days} 天内阴阳价格 {len(window)} 天、多收 ¥{total}"
                       f"（≥¥{p.min_overcharge} 或 ≥{p.min_days} 天），涉及药品金额 ¥{involved_total}"
                       f"（≥¥{p.min_involved_amount}），情节严重"),
            vola_amt=total,
        )
        if alert is not None:
            out.append(alert)
        out.append(ctx.escalate("price.dual_serious", code, day, cause=f"serious:{day.isoformat()}", alert=alert))

    # ------------------------------------------------------------------- price.above_listed / _mode
    def _once(self, rule: str, code: str, drug: str, day: date) -> bool:
        """True the first time (rule, institution, drug) is seen on ``day``."""
        seen = self.alerted.get(day)
        if seen is None:
            seen = self.alerted[day] = set()
            if len(self.alerted) > 8:  # older days: the engine's alert ids still de-duplicate
                for old in sorted(self.alerted)[:-8]:
                    del self.alerted[old]
        ident = (rule, code, drug)
        if ident in seen:
            return False
        seen.add(ident)
        return True

    def _observe(self, code: str, drug: str, day: date, price: Decimal, qty: Decimal, ref_field: str,
                 ref_value: str | None, insured: bool, ctx: RuleContext, out: Findings) -> None:
        """A whole-pack unit price (split-unit prices are not comparable with per-pack listed or modal
        prices: callers pass whole packs only). The sample reference ``ref_field=ref_value`` is only
        formatted when an alert is raised."""
        mode = self.mode
        if mode is not None:
            prices = self.votes.get(drug)
            if prices is None:
                prices = self.votes[drug] = {}
            voters = prices.get(price)
            if voters is None:
                voters = prices[price] = {}
            last = voters.get(code)
            if last is None or day > last:
                voters[code] = day
                self.mode_dirty.add(drug)
        if not insured:
            return
        listed = self.listed
        if listed is not None:
            cat = ctx.registry.drugs.get(drug)
            if cat is not None and cat.listed_price is not None and price > cat.listed_price * self.listed_factor:
                self._above_listed(code, drug, day, price, qty, f"{ref_field}={ref_value}", ctx, listed,
                                   cat.listed_price, out)
        if mode is not None:
            cached = self.mode_cache.get(drug)
            if (cached is not None and cached[0] == day
                    and (cached[2] >= mode.min_institutions or drug not in self.mode_dirty)):
                modal, support = cached[1], cached[2]
            else:
                modal, support = self.modal_price(drug, day)
            if modal is not None and support >= mode.min_institutions and price > modal * self.mode_factor:
                self._above_mode(code, drug, day, price, qty, f"{ref_field}={ref_value}", ctx, mode, modal,
                                 support, out)

    def _above_listed(self, code: str, drug: str, day: date, price: Decimal, qty: Decimal, ref: str,
                      ctx: RuleContext, p: AboveListedParams, listed_price: Decimal, out: Findings) -> None:
        """``price`` is above ``listed_price·(1 + margin_ratio)``; the rest of the rule is checked here."""
        inst = ctx.registry.institution(code)
        if inst is None or inst.fixmedins_type not in self.listed_types:
            return
        if not exceeds(price, listed_price, p.margin_ratio, p.margin_amount):
            return
        if not self._once("price.above_listed", code, drug, day):
            return
        excess = ((price - listed_price) * qty).quantize(CENT)
        alert = ctx.alert(
            "price.above_listed", code, subject=drug, window_start=day_start(day), window_end=day_end(day),
            evidence={"business_date": day.isoformat(), "med_list_codg": drug, "unit_price": str(price),
                      "listed_price": str(listed_price), "quantity": str(qty), "excess": str(excess),
                      "sample_record": ref},
            vola_cont=f"{day} {drug} 医保结算单价 {price} 高于挂网价 {listed_price}",
            vola_amt=excess,
        )
        if alert is not None:
            out.append(alert)

    def modal_price(self, drug: str, day: date) -> tuple[Decimal | None, int]:
        """The modal price of ``drug`` over the window ending ``day`` and its number of votes."""
        assert self.mode is not None
        cached = self.mode_cache.get(drug)
        if (cached is not None and cached[0] == day
                and (cached[2] >= self.mode.min_institutions or drug not in self.mode_dirty)):
            return cached[1], cached[2]
        self.mode_dirty.discard(drug)
        lo = day - timedelta(days=self.mode.window_days - 1)
        best: tuple[int, Decimal] | None = None
        prices = self.votes.get(drug, {})
        for price in list(prices):
            voters = prices[price]
            if not voters or min(voters.values()) < lo:  # (C-level min/max: no Python scan on most prices)
                for code in [c for c, d in voters.items() if d < lo]:
                    del voters[code]
                if not voters:
                    del prices[price]
                    continue
            n = len(voters) if max(voters.values()) <= day else sum(1 for d in voters.values() if d <= day)
            if n and (best is None or (n, price) > best):
                best = (n, price)
        mode, support = (best[1], best[0]) if best else (None, 0)
        self.mode_cache[drug] = (day, mode, support)
        return mode, support

    def _above_mode(self, code: str, drug: str, day: date, price: Decimal, qty: Decimal, ref: str,
                    ctx: RuleContext, p: AboveModeParams, mode: Decimal, support: int, out: Findings) -> None:
        """``price`` is above the modal price ``mode`` (``support`` ≥ ``min_institutions`` votes) by
        more than ``margin_ratio``: one alert per institution, drug and day."""
        if not exceeds(price, mode, p.margin_ratio, Decimal(0)):
            return
        if not self._once("price.above_mode", code, drug, day):
            return
        excess = ((price - mode) * qty).quantize(CENT)
        alert = ctx.alert(
            "price.above_mode", code, subject=drug, window_start=day_start(day), window_end=day_end(day),
            evidence={"business_date": day.isoformat(), "med_list_codg": drug, "unit_price": str(price),
                      "modal_price": str(mode), "modal_votes": support,
                      "margin_ratio": str(p.margin_ratio), "window_days": p.window_days,
                      "quantity": str(qty), "excess": str(excess), "sample_record": ref},
            vola_cont=f"{day} {drug} 医保结算单价 {price} 高于区域众数价 {mode} 超过 {p.margin_ratio:.0%}",
            vola_amt=excess,
        )
        if alert is not None:
            out.append(alert)

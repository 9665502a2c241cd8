"""Full upload of prescriptions — EZ-DM 二(三); long prescriptions — EZ-CONV 五.

    "未能实现处方全量上传到医保电子处方平台的……中止协议。限期 1 个月内整改，整改达不到要求的，取消门诊统筹
    定点资格。" (EZ-DM 二(三))

* ``rx.not_uploaded`` — a settlement *needs* a prescription when one of its drug lines has
  ``rx_flag=1`` or it is a pharmacy 门诊统筹 purchase (``med_type`` in ``pooling_med_types``, default
  41, with ``hifp_pay`` > 0). It is *covered* when it carries the ``hi_rxno`` of a prescription that
  was uploaded (7101) for the same person (``psn_no``), with ``prsc_time`` ≤ ``setl_time`` ≤
  ``valid_end_time``, whose upload arrived no later than ``arrival_window_hours`` (24) after
  ``setl_time`` (exactly 24 h is in time), and that was not revoked (7104) before the settlement — a
  revocation is dated by its arrival; one arriving after ``setl_time`` does not un-cover it.
  This is a join keyed by ``hi_rxno`` (design §2): prescriptions are remembered by ``hi_rxno`` until
  ``rx_memory_days`` after their validity ends, and each settlement looks its one prescription up.
  Revoked settlements (2103/2208) need nothing.
  An institution-day (business date of ``setl_time``) is judged at day end + ``arrival_window_hours``
  and again when a settlement of it arrives later; coverage below ``min_coverage`` (100 %) raises the
  alert and triggers the ladder: in the ezhou pack ``SUSPEND_AGREEMENT`` with one calendar month to
  rectify; at that deadline any uncovered day in the last 7 → ``CANCEL_OUTPATIENT_POOLING``, else
  ``REINSTATE`` (the ledger's ``suspend_then_review``).
  Proportionate trigger: the alert is raised below ``min_coverage``, but the ladder is fed only when
  the day has at least ``trigger_min_needing`` prescription-requiring settlements and its coverage is
  below ``trigger_below_coverage`` (the pack says why); a smaller failure is a warning alert only.
  外配处方 (EZ-CONV 二 allows them; EZ-DM 二(三) binds the issuer to upload): a prescription issued by
  another institution that did not reach the platform in time (``not_uploaded``/``uploaded_late``) is
  the *issuer's* failure — it counts on the issuer's institution-day (when the issuer is known: the
  prescription arrived, late); the dispensing pharmacy, which did cite a ``hi_rxno``, gets a warning
  alert (``subject`` ``day:issuer``) and no trigger. A pharmacy that settled *without any* prescription
  reference (``no_hi_rxno``), or against a revoked, expired or another person's prescription, is charged.
* ``rx.over_12_weeks`` — an uploaded prescription with a line whose ``medc_days`` exceeds
  ``max_medc_days`` (84 = 12 weeks, EZ-CONV 五): a warning on the issuing institution, once per
  ``hi_rxno``.

Persons are compared by their keyed pseudonym (``ctx.pseudo.person``): no ``psn_no`` is kept in clear.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.contract import Delivery, Findings, ForgetDay, JudgeDay, Params, Placed, Rule, RuleContext
from monitor.detectors.windows import DayWindows
from monitor.records import Prescription, Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

NOT_UPLOADED = "rx.not_uploaded"
OVER_12_WEEKS = "rx.over_12_weeks"
#: record class → 1 a prescription, 2 a settlement, 0 neither (``Prescriptions.on_batch``; worked out once
#: per class with ``isinstance``)
_KINDS: dict[type, int] = {}


class NotUploadedParams(Params):
    arrival_window_hours: float = Field(gt=0)
    min_coverage: float = Field(gt=0, le=1)
    pooling_med_types: list[str] = Field(default=["41"])
    rx_memory_days: int = Field(default=10, ge=1)
    rejudge_horizon_days: int = Field(default=62, ge=1)
    max_samples: int = Field(default=10, ge=0)
    #: the ladder is fed only from this many prescription-requiring settlements in the day …
    trigger_min_needing: int = Field(default=1, ge=1)
    #: … and a coverage below this (the alert itself uses min_coverage)
    trigger_below_coverage: float = Field(default=1.0, gt=0, le=1)


class Over12WeeksParams(Params):
    max_medc_days: int = Field(ge=1)


@dataclass(slots=True)
class RxState:
    """What a settlement needs to know about one ``hi_rxno``."""

    person: str | None
    prsc_time: datetime
    valid_end_time: datetime
    arrival: datetime | None  # upload arrival; None = only a revocation was seen
    revoked_at: datetime | None = None
    issuer: str | None = None


@dataclass(slots=True)
class NeedRx:
    code: str
    setl_id: str
    setl_time: datetime
    person: str | None
    hi_rxno: str | None
    amount: Decimal
    revoked: bool = False


@dataclass(slots=True)
class DayTally:
    pending: list[str] = field(default_factory=list)
    needing: int = 0
    covered: int = 0
    uncovered_amt: Decimal = Decimal("0")
    reasons: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    judged: bool = False
    flagged: bool = False
    #: 外配处方 that the issuer did not upload in time: warned here, charged to the issuer
    issuer_failures: int = 0
    issuer_samples: list[str] = field(default_factory=list)
    warned: bool = False


@dataclass(frozen=True, slots=True)
class ForgetPrescriptions:
    """Forget the prescriptions remembered until ``day`` (validity end + ``rx_memory_days``)."""

    day: date


class Prescriptions(Rule):
    """``rx.not_uploaded`` (EZ-DM 二(三)) and ``rx.over_12_weeks`` (EZ-CONV 五)."""

    name: ClassVar[str] = "prescriptions"
    rule_ids: ClassVar[tuple[str, ...]] = (NOT_UPLOADED, OVER_12_WEEKS)
    streams: ClassVar[tuple[str, ...]] = ("settlements", "prescriptions")
    params: ClassVar[dict[str, type[Params]]] = {
        NOT_UPLOADED: NotUploadedParams,
        OVER_12_WEEKS: Over12WeeksParams,
    }
    timers: ClassVar[tuple[type, ...]] = (JudgeDay, ForgetDay, ForgetPrescriptions)
    state: ClassVar[tuple[str, ...]] = ("rx", "rx_by_day", "need", "revoked_setl", "windows")

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        p: NotUploadedParams = self.param_model(NOT_UPLOADED)
        self.window = timedelta(hours=p.arrival_window_hours)
        self.min_coverage = Decimal(str(p.min_coverage))
        self.pooling_med_types = frozenset(p.pooling_med_types)
        self.rx_memory = timedelta(days=p.rx_memory_days)
        self.horizon = timedelta(days=p.rejudge_horizon_days)
        self.max_samples = p.max_samples
        self.trigger_min_needing = p.trigger_min_needing
        self.trigger_below = Decimal(str(p.trigger_below_coverage))
        self.check_upload = pack.enabled(NOT_UPLOADED)
        self.max_days: int | None = None
        if pack.enabled(OVER_12_WEEKS):
            self.max_days = self.param_model(OVER_12_WEEKS).max_medc_days
        #: hi_rxno key space: the prescriptions, and the settlements that reference each.
        self.rx: dict[str, RxState] = {}
        self.rx_by_day: dict[date, list[str]] = {}
        self.need: dict[str, NeedRx] = {}
        self.revoked_setl: dict[str, date] = {}
        #: institution key space: day tallies.
        self.windows: DayWindows[DayTally] = DayWindows(self.window, self.horizon, DayTally,
                                                       "prescriptions.settlement_beyond_rejudge_horizon")

    # ---------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        if isinstance(rec, Prescription):
            return self._on_prescription(rec, arrival, ctx)
        if isinstance(rec, Settlement) and self.check_upload:
            return self._on_settlement(rec, ctx)
        return []

    def on_batch(self, stream: str, batch: Sequence[Delivery], ctx: RuleContext) -> list[Placed]:
        """The batch path (``monitor.contract``): the findings of ``on_record`` one by one, placed
        (``Rule.each_delivery``: day judgments due inside the batch fire at their instant). The join is
        order-sensitive — a settlement is covered by the prescriptions that arrived before its day is
        judged, a late settlement re-judges its day at once — so records are taken in arrival order; the
        batch saves the per-record dispatch (the record's kind known per class)."""
        kinds = _KINDS
        on_prescription, on_settlement = self._on_prescription, self._on_settlement
        check_upload = self.check_upload

        def handle(d: Delivery) -> Findings | None:
            rec = d.record
            kind = kinds.get(type(rec))
            if kind is None:  # first record of its class
                kind = kinds[type(rec)] = 1 if isinstance(rec, Prescription) else 2 * isinstance(rec, Settlement)
            if kind == 2:
                return on_settlement(rec, ctx) if check_upload else None  # type: ignore[arg-type]
            return on_prescription(rec, d.arrival, ctx) if kind else None  # type: ignore[arg-type]

        return self.each_delivery(batch, ctx, handle)

    def _on_prescription(self, rec: Prescription, arrival: datetime, ctx: RuleContext) -> Findings:
        state = self.rx.get(rec.hi_rxno)
        if rec.rx_status == "revoked":
            if state is None:
                state = self._remember(rec, None, ctx)
            if state.revoked_at is None or arrival < state.revoked_at:
                state.revoked_at = arrival
            return []
        if state is None:
            self._remember(rec, arrival, ctx)
        elif state.arrival is None or arrival < state.arrival:
            state.arrival = arrival
            state.person = ctx.person(rec.psn_no)
            state.prsc_time, state.valid_end_time = rec.prsc_time, rec.valid_end_time
        if self.max_days is not None:
            return self._long_prescription(rec, ctx)
        return []

    def _remember(self, rec: Prescription, arrival: datetime | None, ctx: RuleContext) -> RxState:
        state = self.rx[rec.hi_rxno] = RxState(ctx.person(rec.psn_no), rec.prsc_time,
                                               rec.valid_end_time, arrival, issuer=rec.fixmedins_code)
        forget = business_date(max(rec.valid_end_time, rec.prsc_time) + self.rx_memory)
        bucket = self.rx_by_day.get(forget)
        if bucket is None:
            bucket = self.rx_by_day[forget] = []
            ctx.schedule(day_start(forget), ForgetPrescriptions(forget))
        bucket.append(rec.hi_rxno)
        return state

    def needs_prescription(self, rec: Settlement) -> bool:
        """An Rx drug line, or a pharmacy 门诊统筹 purchase paid by the pooling fund."""
        for line in rec.drugdetail:
            if line.rx_flag == "1":
                return True
        return rec.med_type in self.pooling_med_types and rec.hifp_pay > 0

    def _on_settlement(self, rec: Settlement, ctx: RuleContext) -> Findings:
        when = rec.setl_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        if rec.setl_status == "revoked":
            pending = self.need.get(rec.setl_id)
            if pending is not None:
                pending.revoked = True
            else:
                self.revoked_setl[rec.setl_id] = day
            return []
        if not self.needs_prescription(rec):
            return []
        code = rec.fixmedins_code
        tally = self.windows.open(code, day, ctx)
        if tally is None:
            return []
        amount = rec.fund_pay_sumamt if rec.fund_pay_sumamt is not None else rec.hifp_pay
        need = NeedRx(code, rec.setl_id, rec.setl_time, ctx.person(rec.psn_no), rec.hi_rxno or None,
                      amount, revoked=self.revoked_setl.pop(rec.setl_id, None) is not None)
        if tally.judged:
            out = self._settle(need, tally, ctx)
            out.extend(self._judge(code, day, tally, ctx))
            return out
        self.need[rec.setl_id] = need
        tally.pending.append(rec.setl_id)
        return []

    # ---------------------------------------------------------------------------------- timers
    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        if isinstance(key, ForgetPrescriptions):
            for rxno in self.rx_by_day.pop(key.day, ()):
                self.rx.pop(rxno, None)
            return []
        assert isinstance(key, (JudgeDay, ForgetDay))
        code, day = key.code, key.day
        if isinstance(key, ForgetDay):
            if self.windows.get(code, day) is not None:
                horizon = day - timedelta(days=2)
                for setl_id in [s for s, d in self.revoked_setl.items() if d <= horizon]:
                    del self.revoked_setl[setl_id]
            self.windows.fire(key)
            return []
        tally = self.windows.fire(key)
        if tally is None:
            return []
        out: Findings = []
        for setl_id in tally.pending:
            need = self.need.pop(setl_id, None)
            if need is not None:
                out.extend(self._settle(need, tally, ctx))
        tally.pending = []
        out.extend(self._judge(code, day, tally, ctx))
        return out

    # ---------------------------------------------------------------------------------- judgment
    def why_uncovered(self, need: NeedRx) -> str | None:
        """None when covered, else the reason (a stable code used in evidence)."""
        if need.hi_rxno is None:
            return "no_hi_rxno"
        rx = self.rx.get(need.hi_rxno)
        if rx is None or rx.arrival is None:
            return "not_uploaded"
        if rx.arrival > need.setl_time + self.window:
            return "uploaded_late"
        if rx.revoked_at is not None and rx.revoked_at <= need.setl_time:
            return "revoked_before_settlement"
        if rx.person != need.person:
            return "other_person"
        if not rx.prsc_time <= need.setl_time <= rx.valid_end_time:
            return "outside_validity"
        return None

    def _issuer(self, need: NeedRx, reason: str, ctx: RuleContext) -> str | None:
        """Whose failure an upload failure of a cited prescription is: the issuer when it is another
        institution (known once its prescription arrived), else None (the settler's own)."""
        if reason not in ("not_uploaded", "uploaded_late") or need.hi_rxno is None:
            return None
        rx = self.rx.get(need.hi_rxno)
        if rx is not None and rx.issuer is not None:
            return rx.issuer if rx.issuer != need.code else None
        inst = ctx.registry.institution(need.code)
        # a pharmacy does not issue prescriptions: the unseen issuer is someone else (外配处方)
        return "?" if inst is not None and inst.is_pharmacy else None

    def _settle(self, need: NeedRx, tally: DayTally, ctx: RuleContext) -> Findings:
        if need.revoked:
            return []
        tally.needing += 1
        reason = self.why_uncovered(need)
        if reason is None:
            tally.covered += 1
            return []
        issuer = self._issuer(need, reason, ctx)
        if issuer is not None:
            # EZ-DM 二(三) binds the issuer; the dispensing pharmacy cited a prescription: warning only
            tally.covered += 1
            tally.issuer_failures += 1
            if len(tally.issuer_samples) < self.max_samples:
                tally.issuer_samples.append(f"setl_id={need.setl_id};hi_rxno={need.hi_rxno};reason={reason};"
                                            f"issuer={issuer if issuer != '?' else 'unknown'}")
            if issuer != "?":
                return self._charge_issuer(issuer, need, reason, ctx)
            return []
        tally.uncovered_amt += need.amount
        tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
        if len(tally.samples) < self.max_samples:
            tally.samples.append(f"setl_id={need.setl_id};reason={reason}")
        return []

    def _charge_issuer(self, issuer: str, need: NeedRx, reason: str, ctx: RuleContext) -> Findings:
        day = business_date(need.setl_time)
        tally = self.windows.open(issuer, day, ctx)
        if tally is None:
            return []
        tally.needing += 1
        tally.uncovered_amt += need.amount
        key = f"issued_{reason}"
        tally.reasons[key] = tally.reasons.get(key, 0) + 1
        if len(tally.samples) < self.max_samples:
            tally.samples.append(f"hi_rxno={need.hi_rxno};dispensed_by={need.code};reason={key}")
        if tally.judged:
            return self._judge(issuer, day, tally, ctx)
        return []

    def _warn_dispenser(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        if tally.warned or not tally.issuer_failures:
            return []
        tally.warned = True
        alert = ctx.alert(
            NOT_UPLOADED, code, subject="day:issuer", window_start=day_start(day), window_end=day_end(day),
            severity="warning",
            evidence={"business_date": day.isoformat(), "external_rx_not_uploaded": tally.issuer_failures,
                      "samples": list(tally.issuer_samples),
                      "charged_to": "issuer (EZ-DM 二(三)); 外配处方 allowed by EZ-CONV 二"},
            vola_cont=(f"{day} 外配处方 {tally.issuer_failures} 张未按时上传电子处方平台（开方机构责任），"
                       "调剂药店提示"),
        )
        return [alert] if alert is not None else []

    def _judge(self, code: str, day: date, tally: DayTally, ctx: RuleContext) -> Findings:
        out = self._warn_dispenser(code, day, tally, ctx) if tally.judged else []
        if tally.flagged or tally.needing == 0:
            return out
        if Decimal(tally.covered) >= self.min_coverage * tally.needing:
            return out
        ratio = Decimal(tally.covered) / Decimal(tally.needing)
        triggers = tally.needing >= self.trigger_min_needing and ratio < self.trigger_below
        if not triggers and not tally.judged:
            return out  # a small day is judged once complete (it may still grow to the minimum)
        tally.flagged = triggers
        evidence: dict[str, Any] = {
            "business_date": day.isoformat(),
            "settlements_needing_rx": tally.needing,
            "covered": tally.covered,
            "uncovered": tally.needing - tally.covered,
            "coverage": f"{ratio:.4f}",
            "min_coverage": f"{self.min_coverage:.4f}",
            "uncovered_by_reason": dict(sorted(tally.reasons.items())),
            "uncovered_fund_amount": str(tally.uncovered_amt),
            "sample_uncovered": list(tally.samples),
        }
        evidence["trigger_min_needing"] = self.trigger_min_needing
        evidence["trigger_below_coverage"] = f"{self.trigger_below:.4f}"
        if not triggers:
            # proportionate: under the pack's minimum volume the day is reported, not sanctioned
            minor = ctx.alert(
                NOT_UPLOADED, code, subject="day:minor", window_start=day_start(day), window_end=day_end(day),
                evidence=evidence, vola_amt=tally.uncovered_amt, severity="warning",
                vola_cont=(f"{day} 需处方的结算 {tally.needing} 笔，关联有效电子处方 {tally.covered} 笔"
                           f"（{ratio:.2%}），未达处理起点"
                           f"（≥{self.trigger_min_needing} 笔且 <{self.trigger_below:.0%}）"),
            )
            if minor is not None:
                out.append(minor)
            return out
        alert = ctx.alert(
            NOT_UPLOADED, code, subject="day", window_start=day_start(day), window_end=day_end(day),
            evidence=evidence, vola_amt=tally.uncovered_amt,
            vola_cont=(f"{day} 需处方的结算 {tally.needing} 笔，关联已上传有效电子处方的 {tally.covered} 笔"
                       f"（{ratio:.2%}），处方未全量上传医保电子处方平台"),
        )
        if alert is not None:
            out.append(alert)
        out.append(ctx.escalate(NOT_UPLOADED, code, day, cause=f"day:{day.isoformat()}", alert=alert))
        return out

    def _long_prescription(self, rec: Prescription, ctx: RuleContext) -> Findings:
        assert self.max_days is not None
        long_lines = [(d.med_list_codg, d.medc_days) for d in rec.rxdrugdetail if d.medc_days > self.max_days]
        if not long_lines:
            return []
        day = business_date(rec.prsc_time)
        longest = max(days for _, days in long_lines)
        alert = ctx.alert(
            OVER_12_WEEKS, rec.fixmedins_code, subject=f"rx:{rec.hi_rxno}",
            window_start=day_start(day), window_end=day_end(day),
            evidence={
                "hi_rxno": rec.hi_rxno,
                "hosp_rxno": rec.hosp_rxno,
                "psn": ctx.person(rec.psn_no),
                "prsc_time": rec.prsc_time.isoformat(),
                "max_medc_days": self.max_days,
                "longest_medc_days": longest,
                "lines": [{"med_list_codg": m, "medc_days": d} for m, d in long_lines],
            },
            vola_cont=f"处方 {rec.hi_rxno} 用药天数 {longest} 天，超过长处方上限 {self.max_days} 天（12 周）",
        )
        return [alert] if alert is not None else []

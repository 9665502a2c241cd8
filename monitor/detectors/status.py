"""Institution status — settling while sanctioned (EZ-DM 二) and the AR-AGR 二(二) non-renewal grounds.

* ``status.settled_while_suspended`` — a settled 门诊统筹 settlement (``hifp_pay`` > 0 and ``med_type`` in
  ``med_types``; EZ-DM counts 门诊慢特病 as part of 门诊统筹) dated on a day when a suspension,
  termination or cancellation ticket of this monitor is in force for the institution. The ledger is the
  source of truth (``Ledger.in_force``): a suspension covers ``[effective_from, effective_until)``; a
  terminal action covers every day from its ``effective_from``. One critical alert per institution-day,
  naming the tickets in force and a few settlement ids.
  Settling without the right to settle is wider than this monitor's tickets; a settlement counts when,
  on its business date:
  - a ticket of this monitor in force restricts 门诊统筹 (suspended/terminated/cancelled pooling) and it
    is a 门诊统筹 settlement — or the ticket restricts the *agreement* (``SUSPEND_AGREEMENT``,
    ``TERMINATE_AGREEMENT``) or stops settlement (``SUSPEND_SETTLEMENT``, AR-AGR 三(二)2 暂停医保结算) and
    it is any insured settlement, personal-account ones included;
  - the registry entry *in effect* (the one with the latest ``valid_from`` ≤ ``setl_time``, not the
    latest arrival — XY-TIER 第四条) says ``outpatient_pooling = false`` and it is 门诊统筹, or the date
    is after its ``agreement_end`` and it is any insured settlement;
  - an agency finding in ``agency_kinds`` (``agreement_suspended``, ``payment_suspended``) is in force:
    from its ``occurred_at`` for ``agency_in_force_months`` (the finding carries no end; reading in the
    pack) or until a later ``rectified`` finding of the institution; any insured settlement counts.
  The alert's evidence lists each ground (``grounds``).
* ``renewal.grounds`` — AR-AGR 二(二) "不再签订的情形" the data can show, judged per institution once the
  calendar year is over (event time past 31 December + ``judge_after_hours``): (3) no settlement in the
  year ("上年度协议期内未发生医保结算费用"; institutions whose agreement covers part of the year);
  (8) trace-code scanning not implemented ("未落实追溯码扫码和上传…未实现依码结算"): insured whole packs
  settled in the year with a sale trace-code scan per pack below ``trace_coverage_min`` (90 %);
  (13) serious dual pricing: a NO_RENEWAL ticket of the dual-pricing ladder in the year. Warning alert
  per institution and year and the ``renewal`` ladder (NO_RENEWAL, requires verification), which
  ``monitor renewal-report`` lists.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import add_months, business_date, day_end, day_start
from monitor.contract import Findings, Params, Rule, RuleContext
from monitor.policy.sanctions import STOPS_INSURED
from monitor.records import Finding, Settlement, TraceScan

if TYPE_CHECKING:
    from monitor.outputs import Ticket
    from monitor.policy.pack import Pack
    from monitor.records import Record


class SuspendedParams(Params):
    med_types: list[str] = Field(min_length=1)
    #: agency findings that stop every insured settlement while in force
    agency_kinds: list[str] = Field(default=["agreement_suspended", "payment_suspended"])
    agency_in_force_months: int = Field(default=1, ge=1)
    #: findings that end the agency suspensions in force for the institution
    agency_lifted_by: list[str] = Field(default=["rectified"])
    #: the registry's outpatient_pooling / agreement_end are checked too
    check_registry: bool = True
    #: med_types of 普通门诊统筹 proper (the registry flag is that designation; 门诊慢特病 is another one)
    registry_pooling_med_types: list[str] = Field(default=["11", "41"])


#: this monitor's actions that stop every insured settlement (the agreement's, and AR-AGR 三(二)2 暂停医保结算):
#: ``monitor.policy.sanctions`` defines what each action restricts
AGREEMENT_LEVEL = STOPS_INSURED


@dataclass(slots=True)
class AgencyStop:
    kind: str
    finding_id: str
    start: date
    until: date  # exclusive


class RenewalParams(Params):
    trace_coverage_min: Decimal = Field(gt=0, le=1)
    judge_after_hours: float = Field(default=24, ge=0)
    #: rule ids whose NO_RENEWAL tickets are ground 13 (serious dual pricing)
    dual_pricing_rules: list[str] = Field(default=["price.dual_serious"])


@dataclass(frozen=True, slots=True)
class YearEnd:
    """Judge ``renewal.grounds`` of a calendar year (after 31 December + ``judge_after_hours``)."""

    year: int


@dataclass(slots=True)
class DayHit:
    day: date
    settlements: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class YearTally:
    settlements: int = 0
    packs: Decimal = Decimal(0)
    codes: int = 0
    dual_tickets: list[str] = field(default_factory=list)


GROUND_ZH: dict[str, str] = {"ticket": "处理单执行期间", "registry": "定点登记无此资格", "finding": "经办机构暂停期间"}

GROUND_TEXT: dict[str, str] = {
    "3": "上年度协议期内未发生医保结算费用",
    "8": "未落实追溯码扫码和上传，未实现“依码结算、依码支付”",
    "13": "对医保和非医保患者采用“阴阳价格”，情节严重",
}


class Status(Rule):
    name: ClassVar[str] = "status"
    rule_ids: ClassVar[tuple[str, ...]] = ("status.settled_while_suspended", "renewal.grounds")
    streams: ClassVar[tuple[str, ...]] = ("settlements", "tracecodes", "findings")
    params: ClassVar[dict[str, type[Params]]] = {
        "status.settled_while_suspended": SuspendedParams,
        "renewal.grounds": RenewalParams,
    }
    timers: ClassVar[tuple[type, ...]] = (YearEnd,)
    state: ClassVar[tuple[str, ...]] = ("hits", "agency", "years")
    watches_tickets: ClassVar[bool] = True

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        self.susp: SuspendedParams | None = (
            self.param_model("status.settled_while_suspended")
            if pack.enabled("status.settled_while_suspended") else None)
        self.renew: RenewalParams | None = (
            self.param_model("renewal.grounds") if pack.enabled("renewal.grounds") else None)
        self.hits: dict[str, DayHit] = {}  # institution → its last day settled while sanctioned
        self.agency: dict[str, list[AgencyStop]] = {}  # institution → agency suspensions (findings)
        self.years: dict[int, dict[str, YearTally]] = {}

    # ------------------------------------------------------------------------------------- inputs
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        out: Findings = []
        if isinstance(rec, Settlement):
            if self.susp is not None and rec.setl_status == "settled":
                out = self._suspended(rec, ctx, self.susp)
            if self.renew is not None:
                self._tally_settlement(rec, ctx)
        elif isinstance(rec, Finding):
            if self.susp is not None:
                self._agency_finding(rec, self.susp)
        elif isinstance(rec, TraceScan) and self.renew is not None:
            if rec.trdn_flag != "1" and rec.setl_id:
                tally = self._tally(rec.fixmedins_code, business_date(rec.scan_time).year, ctx)
                if rec.scan_kind == "sale":
                    tally.codes += 1
                elif rec.scan_kind == "sale_return":
                    tally.codes -= 1
        return out

    def on_ticket(self, ticket: Ticket, ctx: RuleContext) -> Findings:
        if self.renew is None or ticket.action != "NO_RENEWAL":
            return []
        if any(r in self.renew.dual_pricing_rules for r in ticket.rule_ids):
            tally = self._tally(ticket.fixmedins_code, ticket.effective_from.year, ctx)
            tally.dual_tickets.append(ticket.ticket_id)
        return []

    # ------------------------------------------------------------------ status.settled_while_suspended
    def _agency_finding(self, f: Finding, p: SuspendedParams) -> None:
        day = business_date(f.occurred_at)
        stops = self.agency.get(f.fixmedins_code)
        if f.kind in p.agency_kinds:
            stops = self.agency.setdefault(f.fixmedins_code, [])
            if all(s.finding_id != f.finding_id for s in stops):
                stops.append(AgencyStop(f.kind, f.finding_id, day, add_months(day, p.agency_in_force_months)))
                stops.sort(key=lambda s: (s.start, s.finding_id))
        elif f.kind in p.agency_lifted_by and stops:
            for stop in stops:
                if stop.start <= day < stop.until:
                    stop.until = day  # lifted from that day (findings may arrive out of order: by date)
        if stops:
            horizon = day - timedelta(days=400)
            self.agency[f.fixmedins_code] = [s for s in stops if s.until >= horizon]

    def _grounds(self, st: Settlement, day: date, ctx: RuleContext, p: SuspendedParams) -> list[dict[str, Any]]:
        code = st.fixmedins_code
        pooling = st.hifp_pay > 0 and st.med_type in p.med_types
        insured = st.hifp_pay > 0 or st.acct_pay > 0
        grounds: list[dict[str, Any]] = []
        for s in ctx.sanctions.in_force(code, day):
            if pooling or (insured and s.action in AGREEMENT_LEVEL):
                grounds.append({"ground": "ticket", "action": s.action, "ticket_id": s.ticket_id,
                                "effective_from": s.effective_from.isoformat(),
                                "until": s.until.isoformat() if s.until else None})
        if p.check_registry:
            inst = ctx.registry.institution_on(code, st.setl_time)
            if inst is not None:
                if pooling and not inst.outpatient_pooling and st.med_type in p.registry_pooling_med_types:
                    grounds.append({"ground": "registry", "outpatient_pooling": False,
                                    "valid_from": inst.valid_from.isoformat()})
                if insured and day > inst.agreement_end:
                    grounds.append({"ground": "registry", "agreement_end": inst.agreement_end.isoformat(),
                                    "valid_from": inst.valid_from.isoformat()})
        if insured:
            for stop in self.agency.get(code, ()):
                if stop.start <= day < stop.until:
                    grounds.append({"ground": "finding", "kind": stop.kind, "finding_id": stop.finding_id,
                                    "from": stop.start.isoformat(), "until": stop.until.isoformat()})
        return grounds

    def _suspended(self, st: Settlement, ctx: RuleContext, p: SuspendedParams) -> Findings:
        if st.hifp_pay <= 0 and st.acct_pay <= 0:
            return []
        day = business_date(st.setl_time)
        grounds = self._grounds(st, day, ctx, p)
        if not grounds:
            return []
        hit = self.hits.get(st.fixmedins_code)
        if hit is not None and hit.day == day:
            hit.settlements += 1
            return []
        hit = self.hits[st.fixmedins_code] = DayHit(day, 1, [f"setl_id={st.setl_id}"])
        in_force = [g for g in grounds if g["ground"] == "ticket"]
        state = ctx.sanctions.state(st.fixmedins_code, day)
        alert = ctx.alert(
            "status.settled_while_suspended", st.fixmedins_code, subject="day",
            window_start=day_start(day), window_end=day_end(day),
            evidence={
                "business_date": day.isoformat(),
                "state": state,
                "in_force": [{k: v for k, v in g.items() if k != "ground"} for g in in_force],
                "grounds": grounds,
                "sample_records": hit.samples,
                "med_type": st.med_type,
                "hifp_pay": str(st.hifp_pay),
                "acct_pay": str(st.acct_pay),
            },
            vola_cont=(f"{day} 无结算资格（{'、'.join(sorted({GROUND_ZH[g['ground']] for g in grounds}))}）"
                       "仍发生医保结算"),
            vola_amt=st.hifp_pay + st.acct_pay,
        )
        return [alert] if alert is not None else []

    # ----------------------------------------------------------------------------- renewal.grounds
    def _tally(self, code: str, year: int, ctx: RuleContext) -> YearTally:
        assert self.renew is not None
        book = self.years.get(year)
        if book is None:
            book = self.years[year] = {}
            due = day_end(date(year, 12, 31)) + timedelta(hours=self.renew.judge_after_hours)
            ctx.schedule(due, YearEnd(year))
        tally = book.get(code)
        if tally is None:
            tally = book[code] = YearTally()
        return tally

    def _tally_settlement(self, st: Settlement, ctx: RuleContext) -> None:
        tally = self._tally(st.fixmedins_code, business_date(st.setl_time).year, ctx)
        sign = 1 if st.setl_status == "settled" else -1
        tally.settlements += sign
        packs = sum((line.cnt for line in st.drugdetail if line.trdn_flag != "1"), Decimal(0))
        tally.packs += sign * packs

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        assert isinstance(key, YearEnd) and self.renew is not None
        year = key.year
        book = self.years.pop(year, {})
        out: Findings = []
        first, last = date(year, 1, 1), date(year, 12, 31)
        codes = set(book)
        for code, inst in ctx.registry.institutions.items():
            if inst.agreement_start <= last and inst.agreement_end >= first:
                codes.add(code)
        for code in sorted(codes):
            tally = book.get(code, YearTally())
            grounds: list[str] = []
            if tally.settlements <= 0:
                grounds.append("3")
            coverage = (Decimal(tally.codes) / tally.packs) if tally.packs > 0 else None
            if coverage is not None and coverage < self.renew.trace_coverage_min:
                grounds.append("8")
            if tally.dual_tickets:
                grounds.append("13")
            if not grounds:
                continue
            alert = ctx.alert(
                "renewal.grounds", code, subject=str(year), window_start=day_start(first),
                window_end=day_end(last),
                evidence={
                    "year": year,
                    "grounds": [f"AR-AGR 二(二){g}" for g in grounds],
                    "settlements": tally.settlements,
                    "insured_whole_packs": str(tally.packs),
                    "sale_trace_codes": tally.codes,
                    "trace_coverage": f"{coverage:.4f}" if coverage is not None else None,
                    "trace_coverage_min": str(self.renew.trace_coverage_min),
                    "dual_pricing_tickets": tally.dual_tickets,
                },
                vola_cont="；".join(f"({g}) {GROUND_TEXT[g]}" for g in grounds),
            )
            if alert is not None:
                out.append(alert)
            if set(grounds) - {"13"}:  # (13) alone already has its NO_RENEWAL ticket (dual-pricing ladder)
                out.append(ctx.escalate("renewal.grounds", code, last, cause=f"year:{year}", alert=alert))
        return out

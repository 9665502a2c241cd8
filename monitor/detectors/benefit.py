"""Pharmacy outpatient-pooling benefit — EZ-CONV 二.

    "职工医保参保人员凭外配处方，在定点零售药店购药发生的合规费用，按照在职职工60%、退休人员68%的比例落实
    门诊统筹待遇。"

* ``benefit.overpaid`` — a settled pharmacy (``fixmedins_type`` 2) 门诊统筹 purchase (``med_type`` in
  ``med_types``, default 41; ``insutype`` in ``insutypes``, default 310) whose pooled-fund payment
  ``hifp_pay`` exceeds the benefit ratio of the in-scope amount ``inscp_scp_amt`` by more than
  ``tolerance`` (¥0.01): ``hifp_pay − ratio × inscp_scp_amt > 0.01``. The ratio is chosen by ``psn_type``
  prefix: ``11`` in service → 60 %, ``12`` retired → 68 % (``ratios``); other person types are not judged.
  Critical alert per settlement (amount at stake: the excess) and the ``benefit_review`` ladder (REVIEW,
  one per institution-day).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from monitor.clock import business_date
from monitor.contract import Findings, Params, Rule, RuleContext
from monitor.records import Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record


class OverpaidParams(Params):
    ratios: dict[str, Decimal] = Field(min_length=1, description="psn_type prefix → benefit ratio")
    tolerance: Decimal = Field(ge=0)
    med_types: list[str] = Field(default=["41"], min_length=1)
    insutypes: list[str] = Field(default=["310"], min_length=1)


class Benefit(Rule):
    name: ClassVar[str] = "benefit"
    rule_ids: ClassVar[tuple[str, ...]] = ("benefit.overpaid",)
    streams: ClassVar[tuple[str, ...]] = ("settlements",)
    params: ClassVar[dict[str, type[Params]]] = {"benefit.overpaid": OverpaidParams}

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        p: OverpaidParams = self.param_model("benefit.overpaid")
        self.p = p
        # longest prefix first, so "1201" could override "12" if a pack ever needs it
        self.ratios = sorted(p.ratios.items(), key=lambda kv: -len(kv[0]))

    def ratio(self, psn_type: str) -> Decimal | None:
        for prefix, value in self.ratios:
            if psn_type.startswith(prefix):
                return value
        return None

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        if not isinstance(rec, Settlement) or rec.setl_status != "settled":
            return []
        if rec.med_type not in self.p.med_types or rec.insutype not in self.p.insutypes:
            return []
        inst = ctx.registry.institution(rec.fixmedins_code)
        if inst is None:
            ctx.count("benefit.unregistered_institution")
            return []
        if not inst.is_pharmacy:
            return []
        ratio = self.ratio(rec.psn_type)
        if ratio is None:
            return []
        due = rec.inscp_scp_amt * ratio
        excess = rec.hifp_pay - due
        if excess <= self.p.tolerance:
            return []
        day = business_date(rec.setl_time)
        alert = ctx.alert(
            "benefit.overpaid", rec.fixmedins_code, subject=f"setl:{rec.setl_id}",
            window_start=rec.setl_time, window_end=rec.setl_time,
            evidence={
                "setl_id": rec.setl_id,
                "psn_type": rec.psn_type,
                "inscp_scp_amt": str(rec.inscp_scp_amt),
                "hifp_pay": str(rec.hifp_pay),
                "benefit_ratio": str(ratio),
                "due_hifp_pay": str(due.quantize(Decimal("0.01"))),
                "excess": str(excess.quantize(Decimal("0.01"))),
                "person": ctx.person(rec.psn_no),
            },
            vola_cont=(f"统筹支付 {rec.hifp_pay} 超过政策范围内金额 {rec.inscp_scp_amt} 的 {ratio:.0%}"
                       f"（应付 {due.quantize(Decimal('0.01'))}）"),
            vola_amt=excess.quantize(Decimal("0.01")),
        )
        escalation = ctx.escalate("benefit.overpaid", rec.fixmedins_code, day, cause=f"day:{day.isoformat()}",
                                  alert=alert)
        return [alert, escalation] if alert is not None else [escalation]

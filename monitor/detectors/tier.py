"""Settlement tiers — XY-TIER 第四条, 第十四条; LN-TIER 二, 四(三).

* ``tier.not_entitled`` — every settled settlement is classified into the services it uses:
  ``acct`` (personal account; every insured settlement), ``chronic`` (门诊慢特病: ``med_type`` in
  ``chronic_med_types``), ``two_diseases`` (居民“两病”: ``med_type`` in ``two_diseases_med_types``),
  ``pooling`` (门诊统筹: any other settlement the pooled fund pays, ``hifp_pay`` > 0), ``remote`` (异地就医:
  ``insuplc_admdvs`` outside the institution's city, compared on the first ``city_prefix_len`` digits) and
  ``special`` (门诊特药 / 双通道: a drug line whose catalogue entry is ``high_value``). Each service the
  institution's scheme governs must be allowed by its tier (``schemes.<XY|LN>.tiers``; pharmacies also
  never get ``pharmacy_excluded``, XY-TIER 第四条3 "零售药店除外"). A settlement using a service its tier
  does not allow → critical alert and the ``tier_review`` ladder (REVIEW, one per institution-day).
  Institutions without ``tier``/``tier_scheme`` are not graded and are skipped.

      XY (第四条): A acct · B +chronic · C +pooling, two_diseases (not pharmacies), remote · D +special
      LN (二):     I acct · II +pooling · III +chronic, two_diseases, special (remote is not graded)

* ``tier.downgrade`` — counters over ``interview``, ``payment_suspended``, ``payment_refused``,
  ``agreement_suspended`` and ``admin_penalty`` findings of one institution, within ``window``
  (``last_12_months``: 近1年内, the year up to and including the finding's date; ``calendar_year``: 年度内).
  A counter reaching its ``count`` downgrades by ``steps`` (or to the lowest tier when ``to_lowest``) and
  is consumed (its findings never count towards a second downgrade). The ticket (``DOWNGRADE_TIER``,
  ``new_tier``) is issued once per cause — the counter and the finding ids that made it. The tier is the
  registry's, lowered by the downgrades issued since that registry entry; a new registry entry (the agency
  executed the downgrade, or promoted) resets it. At the lowest tier no ticket is issued; an info alert
  records the consequence the scheme gives instead (XY 第十四条(五): A's promotion wait is extended by a
  year; LN 四(三): I is not promoted).

      XY 第十四条: (一) 2 interviews → −1; (二) 1 payment suspension or refusal → −1;
                   (三) 1 fine or agreement suspension → −1; (四) termination grounds → terminate (ladder)
      LN 四(三):   in a year 3 interviews, 2 payment suspensions, 2 refusals, 1 agreement suspension or
                   1 administrative penalty → down to I
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from monitor.clock import add_years, business_date, day_end, day_start
from monitor.contract import Findings, Params, RegistryView, Rule, RuleContext
from monitor.records import Finding, Institution, Settlement

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

Service = Literal["acct", "chronic", "pooling", "two_diseases", "remote", "special"]
SchemeName = Literal["XY", "LN"]

SERVICE_ZH: dict[str, str] = {
    "acct": "个人账户",
    "chronic": "门诊慢特病",
    "pooling": "门诊统筹",
    "two_diseases": "居民“两病”门诊用药",
    "remote": "异地就医",
    "special": "门诊特药/双通道",
}


class SchemeSpec(Params):
    """One grading scheme: its tiers from lowest to highest and what each may settle."""

    order: list[str] = Field(min_length=1, description="tiers, lowest first")
    tiers: dict[str, list[Service]]
    governed: list[Service] = Field(min_length=1, description="services the scheme grades")
    pharmacy_excluded: list[Service] = Field(default=[])
    basis: str

    @model_validator(mode="after")
    def _consistent(self) -> SchemeSpec:
        if set(self.order) != set(self.tiers):
            raise ValueError(f"order {self.order} and tiers {sorted(self.tiers)} name different tiers")
        return self


class NotEntitledParams(Params):
    chronic_med_types: list[str] = Field(min_length=1)
    two_diseases_med_types: list[str] = Field(default=[])
    city_prefix_len: int = Field(default=4, ge=2, le=6)
    schemes: dict[SchemeName, SchemeSpec] = Field(min_length=1)


class CounterSpec(Params):
    clause: str
    kinds: list[Literal["interview", "payment_suspended", "payment_refused", "agreement_suspended",
                        "admin_penalty"]] = Field(min_length=1)
    count: int = Field(ge=1)
    steps: int = Field(default=1, ge=1)
    to_lowest: bool = False


class DowngradeParams(Params):
    scheme: SchemeName
    order: list[str] = Field(min_length=2, description="tiers, lowest first")
    window: Literal["last_12_months", "calendar_year"]
    counters: dict[str, CounterSpec] = Field(min_length=1)
    at_lowest: str = Field(description="what the scheme does instead of a downgrade at the lowest tier")


def classify(st: Settlement, inst: Institution, registry: RegistryView, p: NotEntitledParams) -> set[str]:
    """The services a settlement uses (see the module docstring)."""
    services = {"acct"}
    if st.med_type in p.chronic_med_types:
        services.add("chronic")
    elif st.med_type in p.two_diseases_med_types:
        services.add("two_diseases")
    elif st.hifp_pay > 0:
        services.add("pooling")
    n = p.city_prefix_len
    if st.insuplc_admdvs and st.insuplc_admdvs[:n] != inst.admdvs[:n]:
        services.add("remote")
    for line in st.drugdetail:
        drug = registry.drugs.get(line.med_list_codg)
        if drug is not None and drug.high_value:
            services.add("special")
            break
    return services


def allowed(scheme: SchemeSpec, tier: str, is_pharmacy: bool) -> set[str]:
    ok = set(scheme.tiers[tier]) | (set(Service.__args__) - set(scheme.governed))  # type: ignore[attr-defined]
    if is_pharmacy:
        ok -= set(scheme.pharmacy_excluded)
    return ok


@dataclass(slots=True)
class Counter:
    events: dict[str, date] = field(default_factory=dict)  # finding_id → date


class TierRules(Rule):
    name: ClassVar[str] = "tier"
    rule_ids: ClassVar[tuple[str, ...]] = ("tier.not_entitled", "tier.downgrade")
    streams: ClassVar[tuple[str, ...]] = ("settlements", "findings")
    params: ClassVar[dict[str, type[Params]]] = {
        "tier.not_entitled": NotEntitledParams,
        "tier.downgrade": DowngradeParams,
    }

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        self.entitled_on = pack.enabled("tier.not_entitled")
        self.downgrade_on = pack.enabled("tier.downgrade")
        self.ne: NotEntitledParams | None = self.param_model("tier.not_entitled") if self.entitled_on else None
        self.dg: DowngradeParams | None = self.param_model("tier.downgrade") if self.downgrade_on else None
        self.kinds: frozenset[str] = frozenset(
            k for c in (self.dg.counters.values() if self.dg else ()) for k in c.kinds)
        #: institution → counter name → findings counted and not yet consumed.
        self.counters: dict[str, dict[str, Counter]] = {}
        #: institution → (valid_from of the registry entry it applies to, tier after our downgrades).
        self.lowered: dict[str, tuple[datetime, str]] = {}
        #: the last institution-day reviewed, per institution (one REVIEW trigger a day is enough).
        self.reviewed: dict[str, date] = {}

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        if isinstance(rec, Settlement):
            if self.ne is not None and rec.setl_status == "settled":
                return self._entitlement(rec, ctx, self.ne)
        elif isinstance(rec, Finding) and self.dg is not None and rec.kind in self.kinds:
            return self._downgrade(rec, ctx, self.dg)
        return []

    # ---------------------------------------------------------------------------- tier.not_entitled
    def _entitlement(self, st: Settlement, ctx: RuleContext, p: NotEntitledParams) -> Findings:
        # the entry in effect when it settled (XY-TIER 第四条): a promotion uploaded before it takes
        # effect does not apply yet, nor does a lost right before its date
        inst = ctx.registry.institution_on(st.fixmedins_code, st.setl_time)
        if inst is None or inst.tier is None or inst.tier_scheme is None:
            return []
        scheme = p.schemes.get(inst.tier_scheme)
        if scheme is None:
            return []
        if inst.tier not in scheme.tiers:
            ctx.count("tier.unknown_tier")
            return []
        used = classify(st, inst, ctx.registry, p)
        missing = sorted(used - allowed(scheme, inst.tier, inst.is_pharmacy))
        if not missing:
            return []
        day = business_date(st.setl_time)
        alert = ctx.alert(
            "tier.not_entitled", st.fixmedins_code, subject=f"setl:{st.setl_id}",
            window_start=st.setl_time, window_end=st.setl_time,
            evidence={
                "setl_id": st.setl_id,
                "tier_scheme": inst.tier_scheme,
                "tier": inst.tier,
                "services": sorted(used),
                "not_entitled": missing,
                "med_type": st.med_type,
                "hifp_pay": str(st.hifp_pay),
                "scheme_basis": scheme.basis,
            },
            vola_cont=(f"{inst.tier}级机构结算了{'、'.join(SERVICE_ZH[s] for s in missing)}"
                       f"（{scheme.basis}）"),
            vola_amt=st.medfee_sumamt - st.psn_cash_pay,  # what insurance paid for it
        )
        out: Findings = [alert] if alert is not None else []
        if self.reviewed.get(st.fixmedins_code) != day:
            self.reviewed[st.fixmedins_code] = day
            out.append(ctx.escalate("tier.not_entitled", st.fixmedins_code, day, cause=f"day:{day.isoformat()}",
                                    alert=alert))
        return out

    # ---------------------------------------------------------------------------- tier.downgrade
    def _current_tier(self, inst: Institution) -> str | None:
        mine = self.lowered.get(inst.fixmedins_code)
        if mine is not None and mine[0] == inst.valid_from:
            return mine[1]
        return inst.tier

    def _in_window(self, p: DowngradeParams, when: date, today: date) -> bool:
        if p.window == "calendar_year":
            return when.year == today.year
        return add_years(today, -1) < when <= today

    def _window_with(self, p: DowngradeParams, events: dict[str, date], count: int,
                     day: date) -> list[str] | None:
        """``count`` findings (the earliest such set) that fall in one window and include the finding
        dated ``day``: one calendar year (LN 年度内), or twelve months ending on the latest of them
        (XY 近1年内). None when there is no such set."""
        ordered = sorted(events.items(), key=lambda kv: (kv[1], kv[0]))
        if p.window == "calendar_year":
            same = [k for k, d in ordered if d.year == day.year]
            return same[:count] if len(same) >= count else None
        for i in range(len(ordered)):
            end = ordered[i][1]
            group = [k for k, d in ordered[: i + 1] if self._in_window(p, d, end)]
            if len(group) >= count and day <= end and any(events[k] == day for k in group):
                return group[-count:]
        return None

    def _downgrade(self, f: Finding, ctx: RuleContext, p: DowngradeParams) -> Findings:
        out: Findings = []
        inst = ctx.registry.institution(f.fixmedins_code)
        if inst is None or inst.tier_scheme != p.scheme:
            return out
        tier = self._current_tier(inst)
        if tier not in p.order:
            ctx.count("tier.unknown_tier")
            return out
        day = business_date(f.occurred_at)
        book = self.counters.setdefault(f.fixmedins_code, {})
        for name, spec in p.counters.items():
            if f.kind not in spec.kinds:
                continue
            counter = book.setdefault(name, Counter())
            if f.finding_id in counter.events:
                continue
            counter.events[f.finding_id] = day
            # Findings arrive in any order (#12): the window is judged on the findings' own dates, never
            # on the arriving one's — a late, older finding must not erase newer ones. Memory: findings
            # more than a year before the newest are out of every window that can still be judged.
            newest = max(counter.events.values())
            counter.events = {k: d for k, d in counter.events.items() if add_years(newest, -1) <= d}
            group = self._window_with(p, counter.events, spec.count, day)
            if group is None:
                continue
            ids = sorted(group, key=lambda k: (counter.events[k], k))
            first = min(counter.events[k] for k in ids)
            last = max(counter.events[k] for k in ids)
            for k in ids:  # consumed: these findings never count towards another downgrade
                del counter.events[k]
            out.extend(self._issue(ctx, p, inst, tier, name, spec, ids, first, max(last, day)))
            tier = self._current_tier(inst) or tier
        return out

    def _issue(self, ctx: RuleContext, p: DowngradeParams, inst: Institution, tier: str, name: str,
               spec: CounterSpec, ids: list[str], first: date, day: date) -> Findings:
        idx = p.order.index(tier)
        target = p.order[0] if spec.to_lowest else p.order[max(0, idx - spec.steps)]
        evidence = {
            "tier_scheme": p.scheme,
            "tier": tier,
            "new_tier": target,
            "counter": name,
            "clause": spec.clause,
            "findings": ids,
            "count": len(ids),
            "window": p.window,
        }
        start, end = day_start(first), day_end(day)
        if target == tier:
            evidence["consequence"] = p.at_lowest
            lowest = ctx.alert("tier.downgrade", inst.fixmedins_code, subject=f"{name}:{','.join(ids)}",
                               window_start=start, window_end=end, evidence=evidence, severity="info",
                               vola_cont=f"{tier}级机构触发{spec.clause}，已是最低级：{p.at_lowest}")
            return [lowest] if lowest is not None else []
        alert = ctx.alert("tier.downgrade", inst.fixmedins_code, subject=f"{name}:{','.join(ids)}",
                          window_start=start, window_end=end, evidence=evidence,
                          vola_cont=f"{spec.clause}：{len(ids)} 次，{tier}级降至{target}级",
                          vola_amt=Decimal("0"))
        self.lowered[inst.fixmedins_code] = (inst.valid_from, target)
        escalation = ctx.escalate("tier.downgrade", inst.fixmedins_code, day, cause=f"{name}:{','.join(ids)}",
                                  alert=alert, new_tier=target)
        return [alert, escalation] if alert is not None else [escalation]

"""Planted violations and look-alikes, with their ground-truth labels (``labels.jsonl``).

Every rule of design §5 gets at least one planted case on an institution chosen for it (a busy,
ungraded pharmacy with 门诊统筹 unless the rule needs otherwise), which is otherwise clean, so that one
rule's plant does not trip another. Look-alikes — things that resemble a violation but are not one —
are labelled too (``kind: "lookalike"``) so that a detector that flags them loses precision visibly.

Label (one JSON object a line; the first line is ``kind: "meta"`` with the period):
``kind`` (``violation``/``lookalike``), ``rule_id``, ``fixmedins_code``, ``window_start``/``window_end``
(business dates, inclusive), ``depends_on`` (rules that must also be implemented for this label to be
scored, e.g. ``status.settled_while_suspended`` needs the suspension that ``upload.not_realtime``
issues), ``aliases`` (other ids a ticket may carry for it, e.g. ``finding:infostd_substandard``),
``expected_tickets`` (``action``, ``effective_from``, optional ``effective_until``/``rectify_by``/
``reapply_after``, and ``slack_days``: 0 where the ladder is pinned by the shipped pack, more where the
date depends on when a detector not yet written determines the case), and ``note``.

While a sanction is expected to be in force the institution settles no 门诊统筹 (or nothing insured,
for an agreement suspension or termination), as a compliant institution would — so that
``status.settled_while_suspended`` is planted only where meant.

Plants are placed on fixed day offsets; a plant whose days do not fit the period (all its days must be
≤ days − 3, so its windows close before the end) is left out and so has no label. With fewer
institutions than plants, institutions are reused round-robin and isolation is no longer guaranteed.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor.clock import add_months, add_years
from monitor.simulate.catalogue import Person, money
from monitor.simulate.city import Inst, Restriction
from monitor.simulate.generator import DAY, HOUR, DayMods, Tx

if TYPE_CHECKING:
    from monitor.simulate.generator import City

#: Slack (days) on guessed ticket dates of rules whose detectors determine a case at a time the pack
#: does not pin yet (e.g. at day end, or 72 h later); 0 for the shipped, pinned ladders.
GUESS = 3
#: Minimum insured settlements a day of a plant's host: enough records that every day-level ratio
#: (50 % late, 80 % complete, 67 % trace coverage) is well past its threshold.
PLANT_RATE = 12.0


class Planter:
    def __init__(self, city: City) -> None:
        self.city = city
        self.rng = city.rng
        self.n = city.cfg.days
        self.labels: list[dict[str, Any]] = []
        #: the region whose pack judges the city (its own ladders decide the expected tickets)
        self.region = city.cfg.profile
        #: a plant host's grade: plain where the region grades nothing (or mixes, as Ezhou does); the
        #: region's own scheme where it grades everyone, at a tier that allows all the plant needs
        self.host_grade: tuple[str | None, str | None] = {
            "xianyang": ("XY", "C"), "liaoning": ("LN", "III")}.get(self.region, (None, None))
        plain = [i for i in city.insts if i.is_pharmacy and i.scheme is None and i.pooling and not i.special]
        other = [i for i in city.insts if i.is_pharmacy and i not in plain]
        self.rng.shuffle(plain)
        self.rng.shuffle(other)
        self.pharmacies = plain + other or list(city.insts)
        self.clinics = [i for i in city.insts if not i.is_pharmacy] or list(city.insts)
        self.rng.shuffle(self.clinics)
        self._next_ph = 0
        self._next_cl = 0

    # ------------------------------------------------------------------------------------ helpers
    def on(self, day: int) -> date:
        return self.city.date_of(day)

    def day_of(self, when: date) -> int:
        return (when - self.city.cfg.start).days

    def fits(self, *days: int) -> bool:
        return all(0 <= d <= self.n - 3 for d in days)

    def pharmacy(self, role: str, rate: float = PLANT_RATE) -> Inst:
        inst = self.pharmacies[self._next_ph % len(self.pharmacies)]
        self._next_ph += 1
        return self._claim(inst, role, rate)

    def clinic(self, role: str, rate: float = 12.0) -> Inst:
        inst = self.clinics[self._next_cl % len(self.clinics)]
        self._next_cl += 1
        return self._claim(inst, role, rate)

    def _claim(self, inst: Inst, role: str, rate: float) -> Inst:
        inst.role = role if inst.role == "background" else f"{inst.role}+{role}"
        if inst.is_pharmacy:
            # A plant host is a plain pharmacy (ungraded, 门诊统筹, no 双通道) unless the plant says otherwise.
            inst.scheme, inst.tier = self.host_grade
            inst.pooling = True
            if inst.special:
                inst.special = False
                inst.drugs = [d for d in inst.drugs if not self.city.drugs[d].high_value]
        inst.rate = max(inst.rate, rate)
        return inst

    def host(self) -> Inst:
        """A pharmacy of its own for a look-alike."""
        return self.pharmacy("lookalike", rate=10.0)

    def force(self, inst: Inst, day: int, hour: int, minute: int, kind: str, **opts: Any) -> None:
        t = day * DAY + hour * HOUR + minute * 60
        self.city.forced.setdefault((inst.index, day, hour), []).append(Tx(t, kind, opts))

    def mods(self, inst: Inst, day: int) -> DayMods:
        return self.city.mods.setdefault((inst.index, day), DayMods())

    def restrict(self, inst: Inst, start: int, end: int | None, kind: str = "pooling") -> None:
        inst.restrictions.append(Restriction(start, end, kind))

    def ticket(self, action: str, effective: date, slack: int = 0, **extra: date | bool) -> dict[str, Any]:
        out: dict[str, Any] = {"action": action, "effective_from": effective.isoformat()}
        for key, value in extra.items():
            out[key] = value.isoformat() if isinstance(value, date) else value
        out["slack_days"] = slack
        return out

    def label(self, rule_id: str, inst: Inst, d0: int, d1: int | None = None, *, kind: str = "violation",
              tickets: list[dict[str, Any]] | None = None, depends_on: tuple[str, ...] = (),
              aliases: tuple[str, ...] = (), note: str = "") -> None:
        self.labels.append({
            "kind": kind, "rule_id": rule_id, "fixmedins_code": inst.code,
            "window_start": self.on(d0).isoformat(),
            "window_end": self.on(d1 if d1 is not None else d0).isoformat(),
            "depends_on": list(depends_on), "aliases": list(aliases), "expected_tickets": tickets or [],
            "note": note,
        })

    def person(self, retired: bool | None = None, insutype: str = "310", remote: bool = False) -> Person:
        city = self.city

        def ok(p: Person) -> bool:
            if (p.insuplc_admdvs != city.city_admdvs) != remote or p.insutype != insutype:
                return False
            return retired is None or p.retired == retired

        return city.pick_person(ok)

    def ordinary(self, inst: Inst, procured: bool | None = None, rx: str | None = None) -> int:
        drugs = self.city.drugs
        cands = [d for d in inst.drugs if not drugs[d].high_value
                 and (procured is None or drugs[d].procured == procured)
                 and (rx is None or drugs[d].rx_flag == rx)]
        if not cands:
            cands = [d for d in inst.drugs if not drugs[d].high_value]
        return cands[self.rng.randrange(len(cands))]

    # ------------------------------------------------------------------------------------ ladders
    def realtime(self, inst: Inst, day: int, again: int | None, slack: int = 0) -> list[dict[str, Any]]:
        """EZ-DM 二(一) as the shipped ``realtime`` ladder runs it: the day is judged at day end + 24 h
        (D+2), the suspension starts the next day (D+3) for one calendar month; at its end any
        not-real-time day among its last 7 → terminate, else reinstate (effective the deadline)."""
        start = self.on(day + 3)
        until = add_months(start, 1)
        out = [self.ticket("SUSPEND_OUTPATIENT_POOLING", start, slack, effective_until=until)]
        out.append(self.ticket("TERMINATE_OUTPATIENT_POOLING" if again is not None else "REINSTATE", until, slack))
        self.restrict(inst, day + 1, None if again is not None else self.day_of(until) + 3)
        return out

    # ------------------------------------------------------------------------------------ plants
    def upload(self) -> None:
        # A: one not-real-time day (every 2nd upload record > 24 h late) → suspend, then reinstate.
        if self.fits(4):
            a = self.pharmacy("upload.not_realtime:reinstate")
            self.mods(a, 4).late_every = 2
            tickets = self.realtime(a, 4, None)
            self.label("upload.late", a, 4, note="every 2nd upload record of the day 25–34 h late")
            self.label("upload.not_realtime", a, 4, tickets=tickets, note="50 % late records")
        # B: a second not-real-time day in the last 7 days of the suspension → terminate.
        day = 5
        until_day = self.day_of(add_months(self.on(day + 3), 1))
        if self.fits(day, until_day - 3):
            b = self.pharmacy("upload.not_realtime:terminate")
            again = until_day - 3
            self.mods(b, day).late_every = 2
            self.mods(b, again).late_every = 3
            tickets = self.realtime(b, day, again)
            self.label("upload.late", b, day)
            self.label("upload.not_realtime", b, day, tickets=tickets, note="suspended, then late again")
            self.label("upload.late", b, again)
            self.label("upload.not_realtime", b, again,
                       note="within the last 7 days of the suspension: terminate at its end")
        # Look-alikes: late but under the threshold (5 % late; and 4 late records < min 5).
        if self.fits(6):
            c = self.pharmacy("upload.late:under_ratio")
            self.mods(c, 6).late_every = 8
            self.mods(c, 6).late_settlements_only = True
            self.label("upload.late", c, 6, note="every 8th settlement late: a few % of the day's records")
            self.label("upload.not_realtime", c, 6, kind="lookalike", note="late records well under 10 %")
        if self.fits(7):
            d = self.pharmacy("upload.late:under_min")
            d.rate = 2.0
            self.mods(d, 7).late_first = 4
            self.mods(d, 7).late_settlements_only = True
            for hour in (9, 11, 14, 16):
                self.force(d, 7, hour, 20, "settle", pooling=False)
            self.label("upload.late", d, 7, note="4 late records")
            self.label("upload.not_realtime", d, 7, kind="lookalike", note="4 late records < min 5")

    def completeness(self) -> None:
        if not self.fits(8):
            return
        p = self.pharmacy("data.incomplete")
        self.mods(p, 8).missing_sale_every = 5
        tickets = [self.ticket("REVIEW", self.on(11), GUESS, requires_verification=True)]
        if self.fits(16):
            self.city.finding(p, 16, "data_incomplete_verified", "经核实：结算明细未上传进销存销售记录")
            start = self.on(17)
            tickets.append(self.ticket("SUSPEND_OUTPATIENT_POOLING", start, GUESS,
                                       effective_until=add_months(start, 6)))
            self.restrict(p, 16, self.day_of(add_months(start, 6)) + GUESS)
        self.label("data.incomplete", p, 8, tickets=tickets,
                   note="every 5th settlement line has no 3505 sale (completeness ≈ 80 % < 98 %)")

    def negative_stock(self) -> None:
        if not self.fits(9):
            return
        p = self.pharmacy("inventory.negative_stock")
        drug = self.ordinary(p)
        self.force(p, 9, 15, 20, "selfpay", lines=[(drug, 1)], phantom=True)
        tickets = [self.ticket("REVIEW", self.on(9), GUESS, requires_verification=True)]
        self.label("inventory.negative_stock", p, 9, tickets=tickets,
                   note=f"a 3505 sale of {self.city.drugs[drug].med_list_codg} 3 packs beyond its batch's balance")
        if self.fits(15):
            self.city.finding(p, 15, "data_falsified_verified", "经核实：虚构进销存销售记录")
            start = self.on(16)
            cancel = self.ticket("CANCEL_OUTPATIENT_POOLING", start, GUESS, reapply_after=add_years(start, 3))
            self.label("findings.data_falsified_verified", p, 15, tickets=[cancel],
                       aliases=("finding:data_falsified_verified",), note="EZ-DM 二(二): cancel, reapply after 3 years")
            self.restrict(p, 15, None)

    def trace(self) -> None:
        city = self.city
        if self.fits(10):
            p = self.pharmacy("trace.missing")
            self.mods(p, 10).trace_missing_every = 3
            tickets = self.realtime(p, 10, None, slack=1)
            self.label("trace.missing", p, 10, tickets=tickets,
                       note="every 3rd insured whole-pack sale without its trace codes (coverage ≈ 67 % < 90 %)")
        if self.fits(11):
            # Across two pharmacies: the second sells a code the first sold on day 3 (回流药).
            first, later = self.pharmacy("trace.duplicate:first"), self.pharmacy("trace.duplicate:later")
            later.drugs, later.price = list(first.drugs), dict(first.price)
            city.watch_sold.add((first.index, 3))
            dup = _DupCode(first.index, 3)
            self.force(later, 11, 11, 5, "settle", dup_from=dup)
            self.label("trace.duplicate", later, 11,
                       tickets=[self.ticket("REVIEW", self.on(11), GUESS, requires_verification=True)],
                       note=f"sells a whole-pack code {first.code} sold on {self.on(3)}")
        if self.fits(12):
            same = self.pharmacy("trace.duplicate:same")
            city.watch_sold.add((same.index, 4))
            self.force(same, 12, 16, 40, "settle", dup_from=_DupCode(same.index, 4))
            self.label("trace.duplicate", same, 12,
                       tickets=[self.ticket("REVIEW", self.on(12), GUESS, requires_verification=True)],
                       note=f"re-sells a code it sold on {self.on(4)} without a return")
        # Look-alikes: sold → returned (2103 + 3506 + sale_return scan) → sold again; split packs.
        if self.fits(6):
            h = self.host()
            drug = self.ordinary(h, rx="0")
            self.force(h, 6, 10, 10, "settle", lines=[(drug, 1)], pooling=False, revoke=True)
            self.force(h, 6, 14, 0, "settle", lines=[(drug, 1)], pooling=False)
            self.label("trace.duplicate", h, 6, kind="lookalike", note="a code sold, returned and sold again")
            self.label("data.incomplete", h, 6, kind="lookalike", note="a revoked settlement and its 3506 return")

    def prescriptions(self) -> None:
        if self.fits(6):
            p = self.pharmacy("rx.not_uploaded")
            self.mods(p, 6).no_rx_every = 4
            # ≥ 10 prescription-requiring settlements that day (the pack's minimum volume), 3 more without
            # any prescription reference: the pharmacy's own failure (EZ-DM 二(三))
            for minute in range(0, 50, 5):
                self.force(p, 6, 11, minute, "settle", pooling=True, person=self.person(retired=False))
            for minute in (5, 25, 45):
                self.force(p, 6, 15, minute, "settle", pooling=True, rx="none",
                           person=self.person(retired=False))
            # 外配处方 its issuer uploaded 30 h late: charged to the issuer (a warning under the minimum
            # volume); the pharmacy, which cited it, is not charged for it
            issuer = self.clinic("rx.not_uploaded:issuer")
            self.force(p, 6, 16, 10, "settle", pooling=True, rx="late", issuer=issuer,
                       person=self.person(retired=False))
            self.label("rx.not_uploaded", issuer, 6,
                       note="issuer of a 外配处方 uploaded 30 h late (warning: under the minimum volume)")
            start = self.on(8)
            rectify = add_months(start, 1)
            tickets = [self.ticket("SUSPEND_AGREEMENT", start, GUESS, rectify_by=rectify),
                       self.ticket("REINSTATE", rectify, GUESS)]
            self.restrict(p, 7, self.day_of(rectify) + GUESS, "insured")
            self.label("rx.not_uploaded", p, 6, tickets=tickets,
                       note="settlements without any prescription reference on a day of ≥ 10 needing one")
        if self.fits(5):
            c = self.clinic("rx.over_12_weeks")
            drug = self.ordinary(c, rx="1")
            self.force(c, 5, 9, 30, "settle", lines=[(drug, 3)], pooling=False, medc_days=90)
            self.label("rx.over_12_weeks", c, 5, note="a prescription line with medc_days 90 > 84")
            c2 = self.clinic("rx.over_12_weeks:lookalike")
            drug2 = self.ordinary(c2, rx="1")
            self.force(c2, 5, 10, 30, "settle", lines=[(drug2, 3)], pooling=False, medc_days=84)
            self.label("rx.over_12_weeks", c2, 5, kind="lookalike", note="medc_days exactly 84")

    def prices(self) -> None:
        city = self.city
        if self.fits(9):
            p = self.pharmacy("price.dual:once")
            drug = self.ordinary(p, procured=False)
            high = _pct(p.price[drug], 108)
            self._dual_day(p, drug, 9, high)
            self.label("price.dual", p, 9, tickets=[self.ticket("INTERVIEW", self.on(9), GUESS)],
                       note=f"{city.drugs[drug].med_list_codg}: insured {high} > self-pay {p.price[drug]}")
        if self.fits(8, 12, 15):
            s = self.pharmacy("price.dual:serious")
            drug = self.ordinary(s, procured=False)
            high = _pct(s.price[drug], 108)
            # 涉及药品金额 ≥ ¥1 000 over the three days (AR-AGR 二(二)13: amount and gravity)
            qty = max(2, -(-1200 // int(high * 9)) if high >= 1 else 2)
            for day in (8, 12, 15):
                self._dual_day(s, drug, day, high, qty)
            self.label("price.dual", s, 8, tickets=[self.ticket("INTERVIEW", self.on(8), GUESS)])
            self.label("price.dual", s, 12)
            self.label("price.dual_serious", s, 8, 15, note="dual pricing on 3 days within 30 (AR-AGR 二(二)13)")
            self.label("price.dual", s, 15, note="third dual-price day within 30 days: critical",
                       tickets=[self.ticket("REVIEW", self.on(15), GUESS),
                                self.ticket("NO_RENEWAL", self.on(15), GUESS)])
        if self.fits(10):
            a = self.pharmacy("price.above_listed")
            drug = self.ordinary(a, procured=False)
            price = _pct(city.drugs[drug].listed_price, 102)
            for hour, minute in ((9, 15), (11, 40), (17, 5)):
                self.force(a, 10, hour, minute, "settle", lines=[(drug, 1)], prices={drug: price}, pooling=False)
            self.force(a, 10, 18, 30, "selfpay", lines=[(drug, 1)], prices={drug: price})
            self.label("price.above_listed", a, 10,
                       note=f"insured {price} > listed {city.drugs[drug].listed_price} (2 %); < mode + 20 %")
        if self.fits(14, 15):
            m = self.pharmacy("price.above_mode")
            drug = self.ordinary(m, procured=True)
            price = _pct(city.drugs[drug].standard_price, 135)
            for day in (14, 15):
                for hour, minute in ((9, 45), (15, 10)):
                    self.force(m, day, hour, minute, "settle", lines=[(drug, 1)], prices={drug: price}, pooling=False)
                self.force(m, day, 19, 0, "selfpay", lines=[(drug, 1)], prices={drug: price})
            self.label("price.above_mode", m, 14, 15,
                       note=f"insured {price} = regional standard +35 %; under listed {city.drugs[drug].listed_price}")
        if self.fits(11):
            h = self.host()
            drug = self.ordinary(h)
            self.force(h, 11, 10, 20, "settle", lines=[(drug, 1)], pooling=False)
            self.force(h, 11, 10, 50, "selfpay", lines=[(drug, 1)], prices={drug: _pct(h.price[drug], 110)})
            self.label("price.dual", h, 11, kind="lookalike", note="self-pay dearer than insured")

    def _dual_day(self, inst: Inst, drug: int, day: int, high: Decimal, qty: int = 2) -> None:
        for hour, minute in ((9, 20), (11, 5), (16, 45)):
            self.force(inst, day, hour, minute, "settle", lines=[(drug, qty)], prices={drug: high}, pooling=False)
        for hour, minute in ((10, 30), (18, 15)):
            self.force(inst, day, hour, minute, "selfpay", lines=[(drug, 1)])

    def benefit(self) -> None:
        if self.fits(7):
            p = self.pharmacy("benefit.overpaid")
            for hour in (9, 11, 15, 17):
                self.force(p, 7, hour, 12, "settle", pooling=True, hifp_ratio="0.75",
                           person=self.person(retired=False))
            self.label("benefit.overpaid", p, 7, tickets=[self.ticket("REVIEW", self.on(7), GUESS)],
                       note="hifp_pay = 75 % of inscp_scp_amt for in-service employees (cap 60 %)")
        if self.fits(8):
            h = self.host()
            self.force(h, 8, 10, 0, "settle", pooling=True, hifp_ratio="0.68", person=self.person(retired=True))
            self.force(h, 8, 10, 30, "settle", pooling=True, hifp_ratio="0.60", person=self.person(retired=False))
            self.force(h, 8, 11, 0, "settle", pooling=True, hifp_ratio="0.65", person=self.person(insutype="390"))
            self.label("benefit.overpaid", h, 8, kind="lookalike",
                       note="exactly 68 % retired, exactly 60 % in service, 65 % for a resident (390)")

    def tiers(self) -> None:
        cases = (
            (6, "XY", "A", {"pooling": True}, "门诊统筹 at an XY tier-A pharmacy (personal account only)"),
            (7, "LN", "II", {"med_type": "14", "pooling": False}, "门诊慢特病 at an LN tier-II pharmacy"),
            (8, "XY", "B", {"remote": True, "pooling": False}, "异地就医 at an XY tier-B pharmacy"),
        )
        for day, scheme, tier, opts, note in cases:
            self.not_entitled(day, scheme, tier, opts, note)
        self.entitled_lookalike("XY", "C", {"remote": True}, "异地就医 at XY tier C (allowed)")

    def not_entitled(self, day: int, scheme: str, tier: str, opts: dict[str, Any], note: str,
                     **review: bool) -> None:
        """A pharmacy of ``scheme``/``tier`` settling twice on ``day`` what its tier does not allow (``opts``:
        the settlement's fields, ``remote`` for an 异地就医 person), labelled ``tier.not_entitled`` with a
        REVIEW ticket (``review``: its extra fields) — and, where it settles 门诊统筹 with no pooling right in
        its registry, ``status.settled_while_suspended``."""
        if not self.fits(day):
            return
        p = self.pharmacy(f"tier.not_entitled:{scheme}{tier}")
        p.scheme, p.tier = scheme, tier
        p.pooling = tier not in ("A", "B", "I")
        kw = dict(opts)
        remote = bool(kw.pop("remote", False))
        for hour in (10, 15):
            self.force(p, day, hour, 30, "settle", force=True,
                       person=self.person(retired=False, remote=remote), **kw)
        self.label("tier.not_entitled", p, day, tickets=[self.ticket("REVIEW", self.on(day), GUESS, **review)],
                   note=note)
        if kw.get("pooling") and not p.pooling:
            # its registry entry says outpatient_pooling = false: settling without the right (issue 12.5)
            self.label("status.settled_while_suspended", p, day,
                       note="门诊统筹 settled by an institution whose registry has outpatient_pooling=false")

    def entitled_lookalike(self, scheme: str, tier: str, opts: dict[str, Any], note: str) -> None:
        """The look-alike of ``not_entitled``: on day 9 a pharmacy of a tier that may settle it settles
        once (personal account), which must raise nothing."""
        if not self.fits(9):
            return
        c = self.pharmacy("tier.not_entitled:lookalike")
        c.scheme, c.tier, c.pooling = scheme, tier, True
        kw = dict(opts)
        remote = bool(kw.pop("remote", False))
        self.force(c, 9, 10, 30, "settle", person=self.person(retired=False, remote=remote), pooling=False, **kw)
        self.label("tier.not_entitled", c, 9, kind="lookalike", note=note)

    def suspended(self) -> None:
        """A pharmacy suspended by the real-time ladder that keeps settling 门诊统筹 during it."""
        if not self.fits(4, 10, 11):
            return
        p = self.pharmacy("status.settled_while_suspended")
        self.mods(p, 4).late_every = 2
        tickets = self.realtime(p, 4, None)
        self.label("upload.late", p, 4)
        self.label("upload.not_realtime", p, 4, tickets=tickets)
        for day in (10, 11):
            for hour in (10, 16):
                self.force(p, day, hour, 5, "settle", pooling=True, force=True, person=self.person(retired=False))
        self.label("status.settled_while_suspended", p, 10, 11, depends_on=("upload.not_realtime",),
                   note="门诊统筹 settled while the EZ-DM 二(一) suspension is in force")

    def findings(self) -> None:
        city = self.city
        if self.fits(5, 12):
            p = self.pharmacy("complaints.repeated")
            p.agreement_start = add_years(city.cfg.start, -1)
            city.finding(p, 5, "complaint_verified", "参保人投诉：串换药品，经查属实")
            city.finding(p, 12, "complaint_verified", "参保人投诉：拒绝刷卡，经查属实")
            start = self.on(13)
            self.label("complaints.repeated", p, 5, 12, aliases=("finding:complaint_verified",),
                       tickets=[self.ticket("SUSPEND_OUTPATIENT_POOLING", start, GUESS,
                                            effective_until=add_months(start, 1)),
                                self.ticket("REINSTATE", add_months(start, 1), GUESS)],  # fixed term ends
                       note="2 verified complaints in one agreement year")
            self.restrict(p, 12, self.day_of(add_months(start, 1)) + GUESS)
            # Look-alikes: one complaint resent (same finding_id); two complaints in different years.
            q = self.pharmacy("complaints.repeated:resent", rate=5.0)
            city.finding(q, 6, "complaint_verified", "参保人投诉，经查属实", resend=True)
            self.label("complaints.repeated", q, 6, kind="lookalike", note="one complaint, delivered twice")
            r = self.pharmacy("complaints.repeated:two_years", rate=5.0)
            r.agreement_start = add_years(city.cfg.start + timedelta(days=8), -1)
            city.finding(r, 4, "complaint_verified", "参保人投诉，经查属实")
            city.finding(r, 11, "complaint_verified", "参保人投诉，经查属实")
            self.label("complaints.repeated", r, 4, 11, kind="lookalike",
                       note="two complaints either side of the agreement-year anniversary")
        if self.fits(6, 13):
            c = self.pharmacy("cloud_monitor.repeated")
            city.finding(c, 6, "cloud_monitor_notice", "医保云监控预警通报")
            city.finding(c, 13, "cloud_monitor_notice", "医保云监控预警通报（第二次）")
            self.label("cloud_monitor.repeated", c, 6, 13, aliases=("finding:cloud_monitor_notice",),
                       tickets=[self.ticket("CANCEL_OUTPATIENT_POOLING", self.on(14), GUESS)],
                       note="2 cloud-monitoring notices in one agreement term")
            self.restrict(c, 13, None)
        if self.fits(9):
            i = self.pharmacy("findings.infostd_substandard")
            city.finding(i, 9, "infostd_substandard", "信息化建设不达标")
            start = self.on(10)
            self.label("findings.infostd_substandard", i, 9, aliases=("finding:infostd_substandard",),
                       tickets=[self.ticket("SUSPEND_OUTPATIENT_POOLING", start, GUESS,
                                            effective_until=add_months(start, 6))])
            self.restrict(i, 9, self.day_of(add_months(start, 6)) + GUESS)
        if self.fits(11):
            t = self.pharmacy("findings.agreement_terminated")
            city.finding(t, 11, "agreement_terminated", "医保服务协议已解除")
            self.label("findings.agreement_terminated", t, 11, aliases=("finding:agreement_terminated",),
                       tickets=[self.ticket("CANCEL_OUTPATIENT_POOLING", self.on(12), GUESS)])
            self.restrict(t, 11, None, "insured")

    def findings_lookalikes(self) -> None:
        """#12 look-alikes of the findings-driven ladders: findings uploaded out of order, a renewal
        uploaded mid-term, and a quiet pharmacy's uncoded pack under the minimum volume. (A rejected ticket
        is planted by the regional profiles: the inspector's case file, built from tickets alone, does not
        know of a rejection — tests/test_inspect_city compares it with the ledger on this city.) Planted only
        when each gets a pharmacy of its own: on a reused institution a look-alike proves nothing."""
        city = self.city
        if self._next_ph + 3 > len(self.pharmacies):
            return
        if self.fits(4, 13):
            # EZ-DM 二(一): the older complaint (day 4) is uploaded after the newer (day 10), on day 13
            p = self.pharmacy("complaints.repeated:out_of_order")
            p.agreement_start = add_years(city.cfg.start, -1)
            city.finding(p, 10, "complaint_verified", "参保人投诉，经查属实")
            city.finding(p, 4, "complaint_verified", "参保人投诉，经查属实（后到）", arrive=13)
            start = self.on(14)
            self.label("complaints.repeated", p, 4, 10, aliases=("finding:complaint_verified",),
                       tickets=[self.ticket("SUSPEND_OUTPATIENT_POOLING", start, 1,
                                            effective_until=add_months(start, 1)),
                                self.ticket("REINSTATE", add_months(start, 1), 1)],
                       note="2 verified complaints of one agreement year, the older uploaded last")
            self.restrict(p, 10, self.day_of(add_months(start, 1)) + GUESS)
        if self.fits(5, 14):
            # EZ-DM 二(二) 协议期内 two notices; the next term's registry entry is uploaded between them
            c = self.pharmacy("cloud_monitor.repeated:renewal")
            c.agreement_end = self.on(40)
            c.agreement_start = add_years(c.agreement_end, -3) + timedelta(days=1)
            nxt = c.agreement_end + timedelta(days=1)
            city.finding(c, 5, "cloud_monitor_notice", "医保云监控预警通报")
            city.registry_update(c, 9, agreement_start=nxt, agreement_end=add_years(nxt, 3) - timedelta(days=1))
            city.finding(c, 14, "cloud_monitor_notice", "医保云监控预警通报（第二次）")
            self.label("cloud_monitor.repeated", c, 5, 14, aliases=("finding:cloud_monitor_notice",),
                       tickets=[self.ticket("CANCEL_OUTPATIENT_POOLING", self.on(15), 1)],
                       note="2 notices in one term, the renewal for the next term uploaded between them")
            self.restrict(c, 14, None)
        if self.fits(9):
            q = self.pharmacy("trace.missing:quiet", rate=0.0)
            q.rate = 0.0
            drug = self.ordinary(q)
            self.mods(q, 9).trace_missing_every = 3
            for hour in (10, 13, 16):
                self.force(q, 9, hour, 0, "settle", lines=[(drug, 1)], pooling=False)
            self.label("trace.missing", q, 9,
                       note="quiet: 1 of 3 packs uncoded — an alert, under the minimum volume for the ladder")

    def splits(self) -> None:
        if self.fits(5):
            h = self.host()
            drug = self.ordinary(h)
            for hour in (9, 14):
                self.force(h, 5, hour, 40, "settle", split=drug, pooling=False)
            self.label("trace.missing", h, 5, kind="lookalike", note="split-pack (拆零) sales without codes")


class _DupCode:
    """Resolved at generation time: a code that institution ``inst`` sold on ``day`` (day < use)."""

    def __init__(self, inst: int, day: int) -> None:
        self.inst = inst
        self.day = day


def _pct(value: Decimal, percent: int) -> Decimal:
    return money(value * percent / 100)


def plant_all(city: City) -> list[dict[str, Any]]:
    """Plan every plant and look-alike on ``city`` (before generation) and return their labels: the
    Ezhou plants, or those of the profile's own region (``monitor.simulate.regions``)."""
    from monitor.simulate.regions import PLANTERS

    regional = PLANTERS.get(city.cfg.profile)
    if regional is not None:
        rp = regional(city)
        rp.plant()
        rp.labels.sort(key=lambda lb: (lb["rule_id"], lb["window_start"], lb["fixmedins_code"], lb["kind"]))
        return rp.labels
    p = Planter(city)
    p.upload()
    p.suspended()
    p.completeness()
    p.negative_stock()
    p.trace()
    p.prescriptions()
    p.prices()
    p.benefit()
    p.tiers()
    p.findings()
    p.splits()
    p.findings_lookalikes()
    p.labels.sort(key=lambda lb: (lb["rule_id"], lb["window_start"], lb["fixmedins_code"], lb["kind"]))
    return p.labels

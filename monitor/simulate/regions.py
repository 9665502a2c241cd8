"""Plants of the three regions other than Ezhou, each for its own pack's rules and ladders (#12).

Each planter plants only what its region's pack adopts and expects the tickets its own ladders issue,
worked out from the clauses and the shipped pack (never from the engine). Times, as the packs pin them:
a day-judged rule is judged at day end + 24 h (day D → D+2 00:00) and an ``effective = "next_day"``
ladder's ticket takes effect on D+3; a finding uploaded on day U triggers at its upload, next-day
tickets take effect on U+1, same-day ones on U. Ticket ids follow design §4 (``TK-`` + hash of ladder,
institution, action, cause, effective_from): the planter names one only to reject it.

Look-alikes every region gets (issue #12 acceptance): a quiet institution (a slip under the pack's
minimum volume), a rejected ticket, a renewal uploaded mid-term (autonomous-region), out-of-order
findings (an older finding uploaded after a newer one).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitor.clock import add_months, add_years
from monitor.outputs import make_id
from monitor.simulate.city import Inst
from monitor.simulate.plants import GUESS, Planter, _pct


class RegionalPlanter(Planter):
    """Plants shared by the three regions (each one's own clauses are in its pack)."""

    # -------------------------------------------------------------------------------- shared plants
    def late_uploads(self, ladder: bool) -> None:
        """Half of a day's 进销存 and trace-code uploads > 24 h late (``upload.not_realtime``); under XY it
        raises alerts only. Look-alike: only settlements late, which XY-TIER 第五条3 does not bind."""
        if self.fits(4):
            a = self.pharmacy("upload.not_realtime")
            self.mods(a, 4).late_every = 2
            self.label("upload.late", a, 4, note="every 2nd upload record 25–34 h late")
            self.label("upload.not_realtime", a, 4, note="50 % of the day's 进销存/追溯码 records late")
        if self.fits(6):
            c = self.pharmacy("upload.late:settlements_only")
            self.mods(c, 6).late_every = 2
            self.mods(c, 6).late_settlements_only = True
            self.label("upload.late", c, 6, kind="lookalike", note="only settlements late (not 第五条3's streams)")
            self.label("upload.not_realtime", c, 6, kind="lookalike", note="only settlements late")

    def silent_trace_stream(self, day: int, tickets: list[dict[str, Any]] | None = None) -> Inst | None:
        """A day of ordinary business whose sale scans are never uploaded: trace codes silent."""
        if not self.fits(day):
            return None
        p = self.pharmacy("upload.silent_stream")
        self.mods(p, day).no_scans = True
        for hour in (9, 10, 11, 14, 15, 16):
            self.force(p, day, hour, 10, "settle", pooling=False)
        self.label("upload.silent_stream", p, day, note="settles, no sale scan uploaded all day")
        self.label("trace.missing", p, day, tickets=tickets or [], note="no insured whole pack has its code")
        return p

    def trace_missing(self, day: int, tickets: list[dict[str, Any]]) -> Inst | None:
        if not self.fits(day):
            return None
        p = self.pharmacy("trace.missing")
        self.mods(p, day).trace_missing_every = 3
        self.label("trace.missing", p, day, tickets=tickets,
                   note="every 3rd insured whole-pack sale without its trace codes (coverage ≈ 67 %)")
        return p

    def quiet_trace_slip(self, day: int) -> None:
        """A quiet pharmacy: 3 insured whole packs a day, one of them uncoded — an alert below the pack's
        minimum volume (10 packs) feeds no ladder; labelled as violation of trace.missing without tickets."""
        if not self.fits(day):
            return
        q = self.pharmacy("trace.missing:quiet", rate=0.0)
        q.rate = 0.0
        drug = self.ordinary(q)
        self.mods(q, day).trace_missing_every = 3
        for hour in (10, 13, 16):
            self.force(q, day, hour, 0, "settle", lines=[(drug, 1)], pooling=False)
        self.label("trace.missing", q, day, note="quiet: 1 of 3 packs uncoded, under the minimum volume (no ticket)")

    def trace_duplicate(self, day: int, verify: bool) -> None:
        if not self.fits(4, day):
            return
        from monitor.simulate.plants import _DupCode

        same = self.pharmacy("trace.duplicate")
        self.city.watch_sold.add((same.index, 4))
        self.force(same, day, 16, 40, "settle", dup_from=_DupCode(same.index, 4))
        self.label("trace.duplicate", same, day,
                   tickets=[self.ticket("REVIEW", self.on(day), GUESS, requires_verification=verify)],
                   note=f"re-sells a code it sold on {self.on(4)} without a return")

    def plant(self) -> None:
        """Plan the region's plants and look-alikes (each region's own)."""
        raise NotImplementedError

    def tier_cases(self, scheme: str) -> None:
        table: dict[str, tuple[tuple[int, str, dict[str, Any], str], ...]] = {
            "XY": ((6, "A", {"pooling": True}, "门诊统筹 at an XY tier-A pharmacy (personal account only)"),
                   (8, "B", {"remote": True, "pooling": False}, "异地就医 at an XY tier-B pharmacy")),
            "LN": ((6, "I", {"pooling": True}, "门诊统筹 at an LN tier-I pharmacy (personal account only)"),
                   (7, "II", {"med_type": "14", "pooling": False}, "门诊慢特病 at an LN tier-II pharmacy")),
        }
        for day, tier, opts, note in table[scheme]:
            self.not_entitled(day, scheme, tier, opts, note, requires_verification=True)
        allowed: dict[str, tuple[str, dict[str, Any], str]] = {
            "XY": ("C", {"remote": True}, "异地就医 at XY tier C (allowed)"),
            "LN": ("III", {"med_type": "14"}, "门诊慢特病 at LN tier III (allowed)")}
        self.entitled_lookalike(scheme, *allowed[scheme])

    def downgrade(self, scheme: str, tier: str, new_tier: str, kinds: list[tuple[str, int, int]],
                  note: str, restrict_pooling: bool) -> None:
        """Findings ``(kind, occurred day, upload day)`` that reach a downgrade counter; the ticket takes
        effect the day after the counting finding is uploaded."""
        days = [d for _, occurred, up in kinds for d in (occurred, up)]
        if not self.fits(*days):
            return
        p = self.pharmacy(f"tier.downgrade:{scheme}{tier}")
        p.scheme, p.tier = scheme, tier
        for kind, occurred, up in kinds:
            self.city.finding(p, occurred, kind, f"{kind}（{note}）", arrive=up)
        last_up = max(up for _, _, up in kinds)
        first = min(occurred for _, occurred, _ in kinds)
        self.label("tier.downgrade", p, first, max(occurred for _, occurred, _ in kinds),
                   tickets=[self.ticket("DOWNGRADE_TIER", self.on(last_up + 1), 1)], note=note)
        if restrict_pooling:
            self.restrict(p, last_up, None)
        for kind, occurred, _ in kinds:
            if kind in ("payment_suspended", "agreement_suspended"):  # the agency's own stop, 1 month (pack)
                self.restrict(p, occurred, occurred + 32, "insured")

    def downgrade_lookalike(self, scheme: str, tier: str, kind: str, n: int, note: str) -> None:
        if not self.fits(5 + 3 * n):
            return
        p = self.pharmacy(f"tier.downgrade:{scheme}{tier}:lookalike")
        p.scheme, p.tier = scheme, tier
        for i in range(n):
            self.city.finding(p, 5 + 3 * i, kind, f"{kind}（{note}）")
        self.label("tier.downgrade", p, 5, 5 + 3 * (n - 1), kind="lookalike", note=note)

    def terminated(self, day: int, reapply_years: int | None, rejected: bool = True) -> None:
        """An agency termination (finding ``agreement_terminated``) → TERMINATE_AGREEMENT the next day;
        the institution stops insured settlement. Look-alike: a termination whose ticket the agency
        rejects (``ticket_rejected``) restricts nothing — the pharmacy settling on afterwards is not
        settling without the right."""
        if not self.fits(day, day + 6):
            return
        t = self.pharmacy("findings.agreement_terminated")
        rec = self.city.finding(t, day, "agreement_terminated", "医保服务协议已解除")
        start = self.on(day + 1)
        extra: dict[str, Any] = {"reapply_after": add_years(start, reapply_years)} if reapply_years else {}
        self.label("findings.agreement_terminated", t, day, aliases=("finding:agreement_terminated",),
                   tickets=[self.ticket("TERMINATE_AGREEMENT", start, 1, **extra)])
        self.restrict(t, day, None, "insured")
        if not rejected:
            return
        r = self.pharmacy("findings.agreement_terminated:rejected")
        rec = self.city.finding(r, day, "agreement_terminated", "医保服务协议已解除（误报）")
        ticket_id = make_id("TK", "agreement_terminated", r.code, "TERMINATE_AGREEMENT", rec["finding_id"],
                            start.isoformat())
        self.city.finding(r, day + 2, "ticket_rejected", "处理单驳回", ref_ticket_id=ticket_id)
        self.restrict(r, day, day + 3, "insured")
        self.label("findings.agreement_terminated", r, day, aliases=("finding:agreement_terminated",),
                   tickets=[self.ticket("TERMINATE_AGREEMENT", start, 1, **extra),
                            self.ticket("VOID", self.on(day + 2), 1)],
                   note="the agency rejects this ticket two days later (the engine voids it)")
        self.label("status.settled_while_suspended", r, day + 3, day + 6, kind="lookalike",
                   note="settles on after its termination ticket was rejected")


# ------------------------------------------------------------------------------------------ xianyang
class XianyangPlanter(RegionalPlanter):
    """XY-TIER: 第五条3 uploads and 进销存 (alerts; 第十一条 reviews of data leads), 第四条 tiers, 第十四条
    downgrades (近1年内), 第十三条/第十四条(四) termination with a 3-year ban."""

    def plant(self) -> None:
        self.late_uploads(ladder=False)
        if self.fits(8):
            p = self.pharmacy("data.incomplete")
            self.mods(p, 8).missing_sale_every = 5
            self.label("data.incomplete", p, 8,
                       tickets=[self.ticket("REVIEW", self.on(11), GUESS, requires_verification=True)],
                       note="every 5th settlement line has no 3505 sale (第五条3 台账…准确)")
        if self.fits(9):
            p = self.pharmacy("inventory.negative_stock")
            drug = self.ordinary(p)
            self.force(p, 9, 15, 20, "selfpay", lines=[(drug, 1)], phantom=True)
            self.label("inventory.negative_stock", p, 9,
                       tickets=[self.ticket("REVIEW", self.on(9), GUESS, requires_verification=True)],
                       note="a 3505 sale beyond its batch's balance")
        self.trace_missing(10, [])  # 第五条2/3: an alert; XY-TIER has no ladder for it
        self.silent_trace_stream(11)
        self.quiet_trace_slip(7)
        self.trace_duplicate(12, verify=True)
        if self.fits(10):  # 第五条3 实时: a 3505 record without upload time is not on time (data quality)
            u = self.pharmacy("upload.time_unknown")
            self.mods(u, 10).no_upload_time_every = 2
            self.label("upload.time_unknown", u, 10,
                       note="every 2nd insured 3505 sale without inf_time (> 5 % of the day's 进销存+追溯码 records)")
        self.tier_cases("XY")
        # 第十四条(一) 2 interviews in the last 12 months: the first (day 5) is uploaded after the second
        # (occurred day 9, uploaded day 9) — out of order, on day 12; D → C (C allows what D does here)
        self.downgrade("XY", "D", "C", [("interview", 5, 12), ("interview", 9, 9)],
                       "近1年内约谈两次，较早的一次后到", restrict_pooling=False)
        # 第十四条(二) one payment suspension: −1
        self.downgrade("XY", "D", "C", [("payment_suspended", 7, 7)], "暂停结算一次", restrict_pooling=False)
        self.downgrade_lookalike("XY", "D", "interview", 1, "近1年内约谈一次（未达两次）")
        self.terminated(13, reapply_years=3)


# ------------------------------------------------------------------------------------------ liaoning
class LiaoningPlanter(RegionalPlanter):
    """LN-TIER: 三(一)3 依码结算 with 四(三)1 限期整改 → 解除, 二 tiers, 四(三)2–5 downgrades (年度内),
    四(三)6 termination."""

    def plant(self) -> None:
        # 四(三)1: the notice (REVIEW) the day after the judgment, rectify within a month; a clean
        # deadline issues nothing; an uncoded day in its last 7 → TERMINATE_AGREEMENT (verification).
        start = self.on(7)
        rectify = add_months(start, 1)
        self.trace_missing(4, [self.ticket("REVIEW", start, 0, rectify_by=rectify)])
        day = 5
        start_b = self.on(day + 3)
        deadline = add_months(start_b, 1)
        again = self.day_of(deadline) - 3
        if self.fits(day, again):
            b = self.pharmacy("trace.missing:terminate")
            self.mods(b, day).trace_missing_every = 3
            self.mods(b, again).trace_missing_every = 3
            self.label("trace.missing", b, day,
                       tickets=[self.ticket("REVIEW", start_b, 0, rectify_by=deadline),
                                self.ticket("TERMINATE_AGREEMENT", deadline, 0, requires_verification=True)],
                       note="uncoded again within the last 7 days of the rectification: 解除")
            self.label("trace.missing", b, again, note="within the rectification's last 7 days")
            self.restrict(b, self.day_of(deadline), None, "insured")
        self.quiet_trace_slip(8)
        self.trace_duplicate(12, verify=False)
        self.tier_cases("LN")
        # 四(三)2 年度内约谈达3次 → I; the second interview (day 6) is uploaded last, out of order
        self.downgrade("LN", "III", "I", [("interview", 3, 3), ("interview", 6, 12), ("interview", 9, 9)],
                       "年度内约谈三次，其中一次后到", restrict_pooling=True)
        # 四(三)4 中止医保协议达1次 → I
        self.downgrade("LN", "III", "I", [("agreement_suspended", 8, 8)], "中止医保协议一次", restrict_pooling=True)
        self.downgrade_lookalike("LN", "III", "interview", 2, "年度内约谈两次（未达三次）")
        self.terminated(13, reapply_years=None)


# --------------------------------------------------------------------------------- autonomous-region
class AutonomousRegionPlanter(RegionalPlanter):
    """AR-AGR: 三(二)2 阴阳价格 escalation (约谈 → 暂停医保结算 → 解除), 二(二)13 serious dual pricing
    (REVIEW, NO_RENEWAL once per agreement term), 三(三) two agreement suspensions → 解除 + 3-year ban,
    二(二)8 trace codes."""

    RECTIFY_DAYS = 7  # the pack's rectify_days

    def interview(self, day: int) -> list[dict[str, Any]]:
        return [self.ticket("INTERVIEW", self.on(day + 3), 0,
                            rectify_by=self.on(day + 3) + timedelta(days=self.RECTIFY_DAYS))]

    def plant(self) -> None:
        self.dual_once(9)
        self.escalation(4)
        self.serious_with_renewal(8)
        self.rejected_interview(6)
        self.settled_during_settlement_suspension(3)
        self.repeated_suspensions()
        self.trace_missing(10, [])  # 二(二)8: a ground for non-renewal judged at the year's end; alert now
        self.quiet_trace_slip(7)
        self.trace_duplicate(12, verify=True)
        self.terminated(13, reapply_years=3)
        if self.fits(11):
            h = self.host()
            drug = self.ordinary(h)
            self.force(h, 11, 10, 20, "settle", lines=[(drug, 1)], pooling=False)
            self.force(h, 11, 10, 50, "selfpay", lines=[(drug, 1)], prices={drug: _pct(h.price[drug], 110)})
            self.label("price.dual", h, 11, kind="lookalike", note="self-pay dearer than insured")

    def _dual(self, inst: Inst, drug: int, day: int, qty: int = 2) -> None:
        self._dual_day(inst, drug, day, _pct(inst.price[drug], 108), qty)

    def dual_once(self, day: int) -> None:
        if self.fits(day):
            p = self.pharmacy("price.dual:once")
            self._dual(p, self.ordinary(p, procured=False), day)
            self.label("price.dual", p, day, tickets=self.interview(day), note="insured 8 % dearer than self-pay")

    def escalation(self, d1: int) -> None:
        """三(二)2 视整改情况: dual pricing at d1 → INTERVIEW; again after its rectify_by → 暂停医保结算 for a
        month, then REINSTATE; again after that → 解除医保服务协议 (verification, 3-year ban)."""
        d2 = d1 + 3 + self.RECTIFY_DAYS + 1
        suspend = self.on(d2 + 3)
        until = add_months(suspend, 1)
        d3 = self.day_of(until) + 2
        if not self.fits(d1, d2):
            return
        p = self.pharmacy("price.dual:escalation")
        drug = self.ordinary(p, procured=False)
        self._dual(p, drug, d1)
        self._dual(p, drug, d2)
        self.label("price.dual", p, d1, tickets=self.interview(d1), note="第一次：约谈主要负责人")
        self.label("price.dual", p, d2, note="整改期满后再次发现：暂停医保结算 1 个月",
                   tickets=[self.ticket("SUSPEND_SETTLEMENT", suspend, 0, effective_until=until,
                                        rectify_by=suspend + timedelta(days=self.RECTIFY_DAYS)),
                            self.ticket("REINSTATE", until, 0)])
        self.restrict(p, d2 + 1, self.day_of(until) + 1, "insured")
        if self.fits(d3):
            self._dual(p, drug, d3)
            start = self.on(d3 + 3)
            self.label("price.dual", p, d3, note="暂停结算期满后又再次发现：解除医保服务协议",
                       tickets=[self.ticket("TERMINATE_AGREEMENT", start, 0, requires_verification=True,
                                            reapply_after=add_years(start, 3))])
            self.restrict(p, d3 + 1, None, "insured")

    def serious_with_renewal(self, d: int) -> None:
        """二(二)13: 3 dual-pricing days (涉及药品金额 ≥ ¥1 000) → REVIEW + NO_RENEWAL; a second serious
        episode in the same agreement term, after the next term's registry entry was uploaded, gives a
        REVIEW but no second NO_RENEWAL. All six days fall before the interview's rectify_by (same case
        for the escalation)."""
        days = [d, d + 1, d + 2, d + 3, d + 4, d + 5]
        if not self.fits(*days):
            return
        s = self.pharmacy("price.dual:serious")
        drug = self.ordinary(s, procured=False)
        high = _pct(s.price[drug], 108)
        qty = max(2, -(-1200 // int(high * 9)) if high >= 1 else 2)
        s.agreement_end = self.on(d + 30)
        s.agreement_start = add_years(s.agreement_end, -3) + timedelta(days=1)
        next_start = s.agreement_end + timedelta(days=1)
        self.city.registry_update(s, d + 4, agreement_start=next_start,
                                  agreement_end=add_years(next_start, 3) - timedelta(days=1))
        for day in days:
            self._dual_day(s, drug, day, high, qty)
        self.label("price.dual", s, d, tickets=self.interview(d))
        for day in days[1:]:
            self.label("price.dual", s, day)
        self.label("price.dual_serious", s, d, d + 2, note="3 days, 涉及药品金额 ≥ ¥1 000",
                   tickets=[self.ticket("REVIEW", self.on(d + 5), 0, requires_verification=True),
                            self.ticket("NO_RENEWAL", self.on(d + 5), 0, requires_verification=True)])
        self.label("price.dual_serious", s, d + 3, d + 5,
                   note="a second serious case in the same term, after the renewal upload: no second NO_RENEWAL",
                   tickets=[self.ticket("REVIEW", self.on(d + 8), 0, requires_verification=True)])

    def rejected_interview(self, d: int) -> None:
        """Look-alike of the escalation: the interview is rejected, so dual pricing again after its
        rectification time is a first case again (INTERVIEW, not 暂停结算)."""
        d2 = d + 3 + self.RECTIFY_DAYS + 2
        if not self.fits(d, d2):
            return
        r = self.pharmacy("price.dual:rejected_interview")
        drug = self.ordinary(r, procured=False)
        self._dual(r, drug, d)
        self._dual(r, drug, d2)
        code = self.city.drugs[drug].med_list_codg
        first = self.on(d + 3)
        ticket_id = make_id("TK", "dual_price_escalation", r.code, "INTERVIEW", f"{self.on(d)}:{code}",
                            first.isoformat())
        self.city.finding(r, d + 4, "ticket_rejected", "约谈处理单驳回", ref_ticket_id=ticket_id)
        self.label("price.dual", r, d, tickets=[*self.interview(d), self.ticket("VOID", self.on(d + 4), 1)],
                   note="its INTERVIEW is rejected (the engine voids it)")
        self.label("price.dual", r, d2, tickets=self.interview(d2),
                   note="again after the rejected interview: a first case (INTERVIEW), not 暂停医保结算")

    def settled_during_settlement_suspension(self, d1: int) -> None:
        """暂停医保结算 stops every insured settlement: personal-account settlements during it are flagged."""
        d2 = d1 + 3 + self.RECTIFY_DAYS
        suspend = self.on(d2 + 3)
        until = add_months(suspend, 1)
        during = d2 + 6
        if not self.fits(d1, d2, during + 1):
            return
        p = self.pharmacy("status.settled_while_suspended")
        drug = self.ordinary(p, procured=False)
        self._dual(p, drug, d1)
        self._dual(p, drug, d2)
        self.label("price.dual", p, d1, tickets=self.interview(d1))
        self.label("price.dual", p, d2,
                   tickets=[self.ticket("SUSPEND_SETTLEMENT", suspend, 0, effective_until=until,
                                        rectify_by=suspend + timedelta(days=self.RECTIFY_DAYS)),
                            self.ticket("REINSTATE", until, 0)])
        self.restrict(p, d2 + 1, self.day_of(until) + 1, "insured")
        for day in (during, during + 1):
            for hour in (10, 16):
                self.force(p, day, hour, 5, "settle", pooling=False, force=True)
        self.label("status.settled_while_suspended", p, during, during + 1, depends_on=("price.dual",),
                   note="personal-account settlements while 暂停医保结算 is in force")

    def repeated_suspensions(self) -> None:
        """三(三) 协议有效期内累计2次及以上被中止医保服务协议 → 即时解除 (same day), 3-year ban. The first
        suspension (occurred day 4) is uploaded after the second (day 9), on day 12: out of order."""
        if not self.fits(4, 12):
            return
        q = self.pharmacy("suspensions.repeated")
        self.city.finding(q, 9, "agreement_suspended", "中止医保服务协议（第二次）")
        self.city.finding(q, 4, "agreement_suspended", "中止医保服务协议（第一次，后到）", arrive=12)
        start = self.on(12)
        self.label("suspensions.repeated", q, 4, 9, aliases=("finding:agreement_suspended",),
                   tickets=[self.ticket("TERMINATE_AGREEMENT", start, 0, reapply_after=add_years(start, 3))],
                   note="two agreement suspensions in one term, the older uploaded last")
        self.restrict(q, 4, None, "insured")
        one = self.pharmacy("suspensions.repeated:once")
        self.city.finding(one, 6, "agreement_suspended", "中止医保服务协议（一次）")
        self.restrict(one, 6, 6 + 32, "insured")
        self.label("suspensions.repeated", one, 6, kind="lookalike", note="one agreement suspension")


PLANTERS: dict[str, type[RegionalPlanter]] = {
    "xianyang": XianyangPlanter, "liaoning": LiaoningPlanter, "autonomous-region": AutonomousRegionPlanter,
}

"""Drug trace codes (药品追溯码): 依码结算、依码支付 — LN-TIER 三(一)3, AR-AGR 二(二)8, EZ-DM 二(一).

* ``trace.duplicate`` — a whole-pack (``trdn_flag=0``) code scanned as ``sale`` again without a
  ``sale_return`` of it in between, at the same or any other institution. The *later* sale (by
  ``scan_time``) is the violation: a critical alert on the later seller with both sales as evidence,
  and ``trace.duplicate`` triggered for that institution-day (a ``REVIEW`` in the ezhou pack). A code
  sold → returned → sold is clean; sold → sold is a duplicate, and so is a third sale after that. The
  same scan resent (same institution and second) is the same sale, never a duplicate. Split-pack
  (``trdn_flag=1``) scans are exempt: one code legitimately covers several split sales.
  Out-of-order uploads: a code seen sold twice with no known return in between becomes a *suspect*;
  every later scan of it is collected, and ``settle_hours`` (24, the upload limit) after the later
  sale the scans are replayed in scan-time order — so a return uploaded after the resale, or an
  original sale uploaded after its return and the resale, clears it. A sale older than a remembered
  return is the sale that return undid. The remembered state says whether a sale followed a return
  (``SOLD_AFTER_RETURN``), so a late earlier sale pairs with that return.
* ``trace.missing`` — insured (``mdtrt_setl_type=1``, or a ``setl_id`` when the type is absent)
  whole-pack 3505 sales with fewer linked sale scans (by ``setl_id`` or ``rtal_docno``, and
  ``med_list_codg``) than packs sold. Per institution-day, judged at day end + ``judge_after_hours``
  (scans uploaded in time have all arrived): pack coverage = Σ min(codes, packs) / Σ packs. Below
  ``alert_below_coverage`` → alert; below ``not_realtime_below_coverage`` (90 %) the day is a
  not-real-time day of the trace stream and ``trace.missing`` is triggered into the EZ-DM 二(一)
  ``realtime`` ladder — only when the day has at least ``trigger_min_packs`` insured whole packs
  (proportionate: one uncoded pack is an alert, not a suspension; the pack says why).
  The day is judged on its uploads, not between two records of one upload: a sale arriving after the
  judgment is counted one second later (a ``Recount(code, day)`` timer), so the sale scans uploaded in
  the same second as their 3505 line count for it.
* Malformed codes (not 1–100 letters/digits) never reach this detector: ``records.TraceScan`` rejects
  them and the shells dead-letter the record with the reason.

State budget (design §6: ≤ 64 bytes per remembered code at 10⁷ codes). The codes live in the engine's
store (``monitor.state``, table ``trace_codes``): in memory a ``monitor.state.packed.PackedTable``, an
open-addressing hash table over flat arrays — key = 64-bit BLAKE2b of the code (a collision between two
real codes has probability ≈ n²/2⁶⁵, ~3·10⁻⁶ at 10⁷ codes), value = institution index (30 bits) | scan
second since 2000-01-01 CST (32 bits) | state (2 bits), plus a 4-byte expiry per slot; between 37.5 % and
75 % full once grown, so 20 bytes / load ≈ 27–53 bytes per code (``bench/trace_state.py`` measures it);
RocksDB in the worker. Each entry expires ``horizon_days`` (default 3 years) after the code's last scan,
on event time (the store's TTL replaces the old sweep; ``sweep_every_days`` is no longer used), so a
checkpoint writes only the codes that changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from hashlib import blake2b as _blake2b
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.contract import Findings, ForgetDay, JudgeDay, Params, Rule, RuleContext
from monitor.detectors.windows import DayWindows
from monitor.records import SaleMovement, TraceScan
from monitor.state import U64, MemoryStore, StateStore, Table, to_seconds

#: the store table of remembered codes (``monitor.state``)
CODES_TABLE = "trace_codes"

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

DUPLICATE = "trace.duplicate"
MISSING = "trace.missing"
_ONE_SECOND = timedelta(seconds=1)

EPOCH = datetime(2000, 1, 1, tzinfo=CST)
SOLD = 1
RETURNED = 2
#: sold, and a return of the code is known at or before that sale (pairs with one late earlier sale)
SOLD_AFTER_RETURN = 3
_TIME_BITS = 32
_TIME_MASK = (1 << _TIME_BITS) - 1
_INST_SHIFT = 2 + _TIME_BITS
_MAX_INST = (1 << (64 - _INST_SHIFT)) - 1


def code_key(code: str) -> int:
    """64-bit key of a trace code; 0 and 1 are reserved (empty and deleted slots)."""
    key = int.from_bytes(hashlib.blake2b(code.encode(), digest_size=8).digest(), "big")
    return key if key > 1 else key + 2


def pack_value(inst: int, when: datetime, state: int) -> int:
    seconds = min(max(int((when - EPOCH).total_seconds()), 0), _TIME_MASK)
    return (inst << _INST_SHIFT) | (seconds << 2) | state


def unpack_value(value: int) -> tuple[int, datetime, int]:
    """(institution index, scan time, state)."""
    return (value >> _INST_SHIFT, EPOCH + timedelta(seconds=(value >> 2) & _TIME_MASK), value & 3)



# ----------------------------------------------------------------------------------------- timer keys
@dataclass(frozen=True, slots=True)
class SettleSuspect:
    """Judge the suspect code of key ``key`` (``code_key``): every scan of it up to the later sale is in."""

    key: int


@dataclass(frozen=True, slots=True)
class ForgetLinks:
    """Forget the sale scans' links of business ``day`` (``scan_memory_days`` after its judgment)."""

    day: date


@dataclass(frozen=True, slots=True)
class Recount:
    """Count the sales of ``(code, day)`` that arrived after its judgment, once their upload second is over."""

    code: str
    day: date


#: timer tuples of checkpoints written before the typed keys (574ae32): kind → today's key
_LEGACY_TIMERS: dict[str, Callable[..., Hashable]] = {
    "suspect": SettleSuspect, "forget_links": ForgetLinks, "judge": JudgeDay, "forget": ForgetDay, "recount": Recount}


class DuplicateParams(Params):
    horizon_days: int = Field(ge=1)
    #: False where the national trace tier runs (its trace.resold owns repeats across institutions)
    cross_institution: bool = True
    settle_hours: float = Field(default=24, ge=0)
    sweep_every_days: int = Field(default=7, ge=1)


class MissingParams(Params):
    judge_after_hours: float = Field(gt=0)
    alert_below_coverage: float = Field(gt=0, le=1)
    not_realtime_below_coverage: float = Field(gt=0, le=1)
    scan_memory_days: int = Field(default=3, ge=1)
    rejudge_horizon_days: int = Field(default=62, ge=1)
    max_samples: int = Field(default=10, ge=0)
    #: the ladder is fed only from this many insured whole packs in the day (alerts from any number)
    trigger_min_packs: int = Field(default=1, ge=1)


#: (scan time, kind: 1 sale / 0 return / −1 a return known only to precede the next sale, institution,
#:  rtal_docno, setl_id, med_list_codg)
ScanEvent = tuple[datetime, int, str, str | None, str | None, str]


@dataclass(slots=True)
class Suspect:
    """A code seen sold twice without a known return in between, awaiting its judgment."""

    code: str
    events: list[ScanEvent]


#: an insured whole-pack sale awaiting its day's judgment: (setl link key, docno link key, packs,
#:  setl_id, rtal_docno, med_list_codg — the last three only to format a sample reference)
PendingSale = tuple[tuple[str, ...] | None, tuple[str, ...] | None, Decimal, str | None, str | None, str]


@dataclass(slots=True)
class MissingDay:
    #: sales awaiting judgment
    pending: list[PendingSale] = field(default_factory=list)
    sales: int = 0
    packs: Decimal = Decimal("0")
    coded: Decimal = Decimal("0")
    short_sales: int = 0
    samples: list[str] = field(default_factory=list)
    judged: bool = False
    alert_id: str | None = None
    alerted: bool = False
    triggered: bool = False
    #: arrival of the day's latest sale (a judgment due in that same second waits for it to end)
    last_sale_at: datetime | None = None


def _num(value: Decimal) -> str:
    """A quantity without trailing zeros or an exponent: 10.0000 → '10', 2.50 → '2.5'."""
    return f"{value.normalize():f}"


class TraceCodes(Rule):
    """``trace.duplicate`` and ``trace.missing``."""

    name: ClassVar[str] = "tracecodes"
    rule_ids: ClassVar[tuple[str, ...]] = (DUPLICATE, MISSING)
    streams: ClassVar[tuple[str, ...]] = ("tracecodes", "inventory")
    params: ClassVar[dict[str, type[Params]]] = {DUPLICATE: DuplicateParams, MISSING: MissingParams}
    timers: ClassVar[tuple[type, ...]] = (SettleSuspect, ForgetLinks, JudgeDay, ForgetDay, Recount)
    state: ClassVar[tuple[str, ...]] = ("suspects", "codes", "inst_index", "inst_codes", "linked",
                                        "linked_by_day", "windows")

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        self.dup_enabled = pack.enabled(DUPLICATE)
        self.missing_enabled = pack.enabled(MISSING)
        d: DuplicateParams = self.param_model(DUPLICATE) if DUPLICATE in pack.rules else DuplicateParams(
            horizon_days=1096)
        self.horizon = timedelta(days=d.horizon_days)
        self.sweep_every = timedelta(days=d.sweep_every_days)
        self.dup_settle = timedelta(hours=d.settle_hours)
        self.dup_cross = d.cross_institution
        #: codes under suspicion (rare): every scan of them until judged, by code key
        self.suspects: dict[int, Suspect] = {}
        #: trace-code key space: code key → packed (institution, scan second, state), in the engine's
        #: store (``bind_state``), each entry expiring ``horizon_days`` after its last scan (event time)
        self.codes: Table[int, int] = MemoryStore().table(CODES_TABLE, U64, U64)
        self._horizon_s = d.horizon_days * 86400
        self.inst_index: dict[str, int] = {}
        self.inst_codes: list[str] = []
        if self.missing_enabled:
            m: MissingParams = self.param_model(MISSING)
            self.judge_after = timedelta(hours=m.judge_after_hours)
            self.alert_below = Decimal(str(m.alert_below_coverage))
            self.realtime_below = Decimal(str(m.not_realtime_below_coverage))
            self.scan_memory = timedelta(days=m.scan_memory_days)
            self.trigger_min_packs = Decimal(m.trigger_min_packs)
            self.rejudge = timedelta(days=m.rejudge_horizon_days)
            self.max_samples = m.max_samples
        #: institution key space: linked sale scans per document and drug, and day tallies.
        self.linked: dict[tuple[str, ...], int] = {}
        self.linked_by_day: dict[date, list[tuple[str, ...]]] = {}
        #: institution-day tallies of trace.missing (judged at day end + judge_after_hours, re-judged by
        #: late sales until rejudge_horizon_days later)
        self.windows: DayWindows[MissingDay] = self._day_windows()

    def _day_windows(self) -> DayWindows[MissingDay]:
        return DayWindows(self.judge_after if self.missing_enabled else timedelta(0),
                          self.rejudge if self.missing_enabled else timedelta(0), MissingDay,
                          "trace.sale_beyond_rejudge_horizon")

    # ------------------------------------------------------------------- checkpoints of older versions
    def __setstate__(self, state: dict[str, Any]) -> None:
        """A checkpoint written before the typed timer keys (574ae32) holds the institution-day tallies
        as ``days``: they become the ``DayWindows`` of this version, in the same place."""
        if "windows" in state or "days" not in state:
            self.__dict__.update(state)
            return
        for name, value in state.items():
            if name == "days":
                self.windows = self._day_windows()
                self.windows.days = value
            else:
                setattr(self, name, value)

    @staticmethod
    def legacy_timer(key: Hashable) -> Hashable:
        """The typed key of a timer a checkpoint written before 574ae32 holds as a tuple
        (``("suspect", key)``, ``("forget_links", day)``, ``("judge"|"forget"|"recount", code, day)``);
        any other key as it is. The engine's restore converts the heap with it
        (``monitor.state.checkpoint``), so ``on_timer`` only ever sees typed keys."""
        if isinstance(key, tuple) and key and isinstance(key[0], str) and key[0] in _LEGACY_TIMERS:
            return _LEGACY_TIMERS[key[0]](*key[1:])
        return key

    def bind_state(self, store: StateStore) -> None:
        """Keep the trace-code histories in the engine's store (called by the engine once it has one)."""
        self.codes = store.table(CODES_TABLE, U64, U64)

    # ---------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        # Hot path (README "Issue #16, session 5"): the scans ``_dedup`` leaves alone (stock-in, split
        # pack: 40 % of a city's scans) do not reach it, and the class is compared before ``isinstance``.
        if type(rec) is TraceScan or isinstance(rec, TraceScan):
            kind = rec.scan_kind
            if kind != "stock_in" and self.dup_enabled and rec.trdn_flag != "1":
                self._dedup(rec, ctx)
            if kind == "sale" and self.missing_enabled:
                self._link(rec, ctx)
        elif isinstance(rec, SaleMovement) and self.missing_enabled and rec.infno == "3505":
            self._on_sale(rec, ctx)
        return []  # a record only remembers; findings come from the timers

    # ------------------------------------------------------------------------------- duplicates
    def _inst(self, code: str) -> int:
        idx = self.inst_index.get(code)
        if idx is None:
            idx = self.inst_index[code] = len(self.inst_codes)
            if idx > _MAX_INST:
                raise OverflowError("more institutions than the trace-code table can index")
            self.inst_codes.append(code)
        return idx

    def _dedup(self, rec: TraceScan, ctx: RuleContext) -> None:
        if rec.trdn_flag == "1":
            return  # split pack: one code covers several sales (exempt)
        kind = rec.scan_kind
        if kind == "stock_in":
            return
        key = int.from_bytes(_blake2b(rec.drug_trac_codg.encode(), digest_size=8).digest(), "big")
        if key < 2:
            key += 2  # code_key, inlined: 0 and 1 are reserved
        is_sale = kind == "sale"
        suspect = self.suspects.get(key)
        if suspect is not None:
            suspect.events.append((rec.scan_time.replace(microsecond=0), 1 if is_sale else 0,
                                   rec.fixmedins_code, rec.rtal_docno, rec.setl_id, rec.med_list_codg))
            return
        seller = rec.fixmedins_code
        inst = self.inst_index.get(seller)
        if inst is None:
            inst = self._inst(seller)
        # Times are kept to the second: ``secs`` is the scan time truncated to the second, in seconds
        # since EPOCH (pack_value, inlined; comparing seconds is comparing the truncated times).
        delta = rec.scan_time - EPOCH
        secs = delta.days * 86400 + delta.seconds
        kept = min(max(secs, 0), _TIME_MASK)
        mine = (inst << _INST_SHIFT) | (kept << 2)
        codes = self.codes
        expires = kept + self._horizon_s  # TTL: horizon_days after this scan (LN-TIER 三(一)3 memory)
        old = codes.get(key)
        if old is None:
            codes.set_at(key, mine | (SOLD if is_sale else RETURNED), expires)
            return
        old_inst = old >> _INST_SHIFT
        old_secs = (old >> 2) & _TIME_MASK
        old_state = old & 3
        if not is_sale:
            if secs >= old_secs:
                codes.set_at(key, mine | RETURNED, expires)
            elif old_state == SOLD:
                # a late return dated before the remembered sale: it undid an earlier sale
                codes.set_at(key, (old >> 2 << 2) | SOLD_AFTER_RETURN, old_secs + self._horizon_s)
            return
        if old_state == RETURNED:
            if secs >= old_secs:
                codes.set_at(key, mine | SOLD_AFTER_RETURN, expires)
            return  # else: the sale that this return undid, uploaded late
        if old_inst == inst and old_secs == secs:
            return  # the same sale resent
        when = rec.scan_time.replace(microsecond=0)
        old_time = EPOCH + timedelta(seconds=old_secs)
        event: ScanEvent = (when, 1, seller, rec.rtal_docno, rec.setl_id, rec.med_list_codg)
        # Sold while remembered as sold: a duplicate unless a return in between is still to arrive, or
        # (SOLD_AFTER_RETURN) this is the earlier sale that the remembered return undid. Decide once
        # every scan of the code up to the later sale must have arrived, in scan-time order.
        base: list[ScanEvent] = []
        if old_state == SOLD_AFTER_RETURN:
            base.append((old_time, -1, "", None, None, ""))  # a return at or before the remembered sale
        base.append((old_time, 1, self.inst_codes[old_inst], None, None, ""))
        self.suspects[key] = Suspect(rec.drug_trac_codg, [*base, event])
        ctx.schedule(max(when, old_time) + self.dup_settle, SettleSuspect(key))

    def _judge_suspect(self, key: int, ctx: RuleContext) -> Findings:
        suspect = self.suspects[key]
        latest = max(ev[0] for ev in suspect.events)
        if ctx.now < latest + self.dup_settle:  # a later scan joined: wait for it to settle too
            ctx.schedule(latest + self.dup_settle, SettleSuspect(key))
            return []
        del self.suspects[key]
        out: Findings = []
        last_sale: ScanEvent | None = None
        returned = False
        after_return = False
        final: ScanEvent | None = None
        for ev in sorted(suspect.events, key=lambda e: (e[0], e[1])):
            final = ev
            if ev[1] <= 0:
                returned = True
                continue
            if last_sale is not None and not returned:
                if last_sale[2] == ev[2] and last_sale[0] == ev[0]:
                    continue  # the same sale resent
                out.extend(self._report(suspect.code, (last_sale[2], last_sale[0]), (ev[2], ev[0]),
                                        {"rtal_docno": ev[3], "setl_id": ev[4], "med_list_codg": ev[5] or None},
                                        ctx))
            after_return = returned
            last_sale, returned = ev, False
        assert final is not None
        expires = to_seconds(final[0]) + self._horizon_s
        if final[1] <= 0:
            self.codes.set_at(key, pack_value(self._inst(final[2] or (last_sale[2] if last_sale else "")),
                                              final[0], RETURNED), expires)
        else:
            self.codes.set_at(key, pack_value(self._inst(final[2]), final[0],
                                              SOLD_AFTER_RETURN if after_return else SOLD), expires)
        return out

    def _report(self, code: str, first: tuple[str, datetime], later: tuple[str, datetime],
                later_refs: dict[str, Any], ctx: RuleContext) -> Findings:
        seller, when = later
        if not self.dup_cross and first[0] != seller:
            ctx.count("trace.duplicate_left_to_trace_tier")  # trace.resold of the national tier
            return []
        day = business_date(when)
        first_sale = {"fixmedins_code": first[0], "scan_time": first[1].isoformat()}
        later_sale = {"fixmedins_code": seller, "scan_time": when.isoformat(),
                      **{k: v for k, v in later_refs.items() if v is not None}}
        alert = ctx.alert(
            DUPLICATE, seller, subject=f"code:{code}:{when.isoformat()}",
            window_start=day_start(day), window_end=day_end(day),
            evidence={
                "drug_trac_codg": code,
                "cross_institution": first[0] != seller,
                "first_sale": first_sale,
                "later_sale": later_sale,
            },
            vola_cont=(f"追溯码 {code} 已于 {first[1]:%Y-%m-%d %H:%M:%S} 在 {first[0]} 销售且未退货，"
                       f"{when:%Y-%m-%d %H:%M:%S} 再次销售（疑似回流药、串换或虚假销售）"),
        )
        if alert is None:
            return []
        # the ladder is fed only when this alert is new (a repeated finding escalates once)
        return [alert, ctx.escalate(DUPLICATE, seller, day, cause=f"day:{day.isoformat()}", alert=alert,
                                    only_with_alert=True)]

    # ---------------------------------------------------------------------------------- missing
    def _link(self, rec: TraceScan, ctx: RuleContext) -> None:
        when = rec.scan_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        bucket = self.linked_by_day.get(day)
        if bucket is None:
            bucket = self.linked_by_day[day] = []
            ctx.schedule(day_end(day) + self.judge_after + self.scan_memory, ForgetLinks(day))
        linked = self.linked
        med = rec.med_list_codg
        # link keys: by settlement and drug, and by retail document and drug
        if rec.setl_id:
            key: tuple[str, ...] = ("S", rec.setl_id, med)
            n = linked.get(key)
            if n is None:
                bucket.append(key)
                linked[key] = 1
            else:
                linked[key] = n + 1
        if rec.rtal_docno:
            key = ("R", rec.fixmedins_code, rec.rtal_docno, med)
            n = linked.get(key)
            if n is None:
                bucket.append(key)
                linked[key] = 1
            else:
                linked[key] = n + 1

    def _on_sale(self, rec: SaleMovement, ctx: RuleContext) -> None:
        if rec.trdn_flag == "1" or rec.sel_retn_cnt <= 0:
            return  # split packs are exempt from per-pack counting
        setl_type = rec.mdtrt_setl_type
        if (setl_type != "1") if setl_type is not None else not rec.setl_id:
            return  # insured: mdtrt_setl_type=1, or a setl_id when the type is absent
        code = rec.fixmedins_code
        when = rec.sel_retn_time
        day = when.date() if when.tzinfo is CST else business_date(when)  # business_date, inlined
        tally = self.windows.open(code, day, ctx)
        if tally is None:
            return
        setl_id, docno, med = rec.setl_id, rec.rtal_docno, rec.med_list_codg
        # the sample reference is formatted only if the sale turns out short of codes (see _count)
        item: PendingSale = (("S", setl_id, med) if setl_id else None,
                             ("R", code, docno, med) if docno else None,
                             rec.sel_retn_cnt, setl_id, docno, med)
        tally.pending.append(item)
        tally.last_sale_at = ctx.now
        if tally.judged:
            # after the judgment: counted once this upload second is over (its scans may follow it)
            ctx.schedule(ctx.now + _ONE_SECOND, Recount(code, day))

    def _count(self, item: PendingSale, tally: MissingDay) -> None:
        s_key, r_key, packs, setl_id, docno, med = item
        codes = max(self.linked.get(s_key, 0) if s_key else 0, self.linked.get(r_key, 0) if r_key else 0)
        coded = min(Decimal(codes), packs)
        tally.sales += 1
        tally.packs += packs
        tally.coded += coded
        if coded < packs:
            tally.short_sales += 1
            if len(tally.samples) < self.max_samples:
                ref = f"setl_id={setl_id}" if setl_id else f"rtal_docno={docno}"
                tally.samples.append(f"{ref};med_list_codg={med};packs={_num(packs)};codes={codes}")

    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        if isinstance(key, SettleSuspect):
            return self._judge_suspect(key.key, ctx)
        if isinstance(key, ForgetLinks):
            for lkey in self.linked_by_day.pop(key.day, ()):
                self.linked.pop(lkey, None)
            return []
        if isinstance(key, ForgetDay):
            self.windows.fire(key)
            return []
        assert isinstance(key, (JudgeDay, Recount))
        code, day = key.code, key.day
        tally = self.windows.get(code, day)
        if tally is None or (isinstance(key, Recount) and not tally.judged):
            return []
        if tally.last_sale_at is not None and tally.last_sale_at >= ctx.now:
            # a sale of this upload second is in: its scans may follow it within the second
            ctx.schedule(ctx.now + _ONE_SECOND, key)
            return []
        for item in tally.pending:
            self._count(item, tally)
        tally.pending = []
        self.windows.fire(JudgeDay(code, day))  # judged from now on: a late sale is recounted
        return self._judge(code, day, tally, ctx)

    def _judge(self, code: str, day: date, tally: MissingDay, ctx: RuleContext) -> Findings:
        if tally.packs <= 0 or tally.triggered:
            return []
        coverage = tally.coded / tally.packs
        if coverage >= self.alert_below:
            return []
        out: Findings = []
        alert = None
        # proportionate: a day with fewer insured whole packs than trigger_min_packs is reported only
        not_realtime = coverage < self.realtime_below and tally.packs >= self.trigger_min_packs
        if not tally.alerted:
            tally.alerted = True
            evidence: dict[str, Any] = {
                "business_date": day.isoformat(),
                "insured_whole_pack_sales": tally.sales,
                "packs": _num(tally.packs),
                "packs_with_code": _num(tally.coded),
                "sales_short_of_codes": tally.short_sales,
                "coverage": f"{coverage:.4f}",
                "not_realtime_below": f"{self.realtime_below:.4f}",
                "not_realtime": not_realtime,
                "trigger_min_packs": _num(self.trigger_min_packs),
                "sample_short": list(tally.samples),
            }
            alert = ctx.alert(
                MISSING, code, subject="day", window_start=day_start(day), window_end=day_end(day),
                evidence=evidence,
                vola_cont=(f"{day} 医保整盒销售 {_num(tally.packs)} 盒，关联追溯码 {_num(tally.coded)}"
                           f" 个（{coverage:.2%}）" + ("，追溯码数据未实时上传" if not_realtime else "")),
            )
            tally.alert_id = alert.alert_id if alert else None
            if alert is not None:
                out.append(alert)
        if not_realtime:
            tally.triggered = True
            # the ticket names the day's alert: this one if it is new now, else the one of an earlier
            # judgment of the day
            out.append(ctx.escalate(MISSING, code, day, cause=f"trace:day:{day.isoformat()}", alert=alert)
                       if alert is not None else
                       ctx.escalate(MISSING, code, day, cause=f"trace:day:{day.isoformat()}",
                                    alert_id=tally.alert_id))
        return out

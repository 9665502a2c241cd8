"""Negative stock: sales the books cannot have supplied — EZ-DM 二(二) (虚假 进销存 data).

    "医保结算数据、进销存数据经查实有虚假的，取消门诊统筹服务，三年内不能再次申报门诊统筹定点资格。"

* ``inventory.negative_stock`` — a running balance per batch (``fixmedins_code``, ``med_list_codg``,
  ``fixmedins_bchno``): set by a 3501 stocktake (``inv_cnt`` as of 00:00 of ``invdate``), + 3503
  purchases, − 3504 purchase returns, − 3505 sales, + 3506 sale returns, ± 3502 changes by
  ``inv_chg_type`` (``records.INV_CHG_SIGN``). A 3505 sale that takes a *balanced* batch below
  −``tolerance`` (0; split-pack sales ``trdn_flag=1``: below −``split_pack_tolerance``, a fraction of a
  pack, since an opened pack is counted in units) raises the alert (a suspicion of false data, to be
  verified) and triggers ``inventory.negative_stock`` for that institution-day (``REVIEW`` in the ezhou
  pack; the verified finding ``data_falsified_verified`` cancels the designation, reapply after 3
  years). One alert per episode: further sales while the batch stays negative add nothing; an inflow or
  a stocktake that brings it back to ≥ −tolerance ends the episode (a stocktake re-baselines it).
* A batch is *balanced* once a stocktake or a purchase of it is seen. Movements of a batch never seen
  in a stocktake or purchase are not judged; they are counted as data quality
  (``inventory.movement_without_baseline``), never reported as negative stock. Movements dated before
  the batch's first stocktake/purchase are not judged either (``inventory.movement_before_baseline``).
* Movements are applied in **business-time order**, not arrival order: each waits ``settle_hours`` (24,
  the real-time upload limit) after its business time before it is folded into the balance, so a
  purchase at 09:00 uploaded after the 09:05 sale it supplied does not make that sale negative. A
  movement arriving after its time was folded is applied at once (counted as
  ``inventory.movement_after_fold``); a late stocktake re-baselines the batch.
* A 3507 deletion (``retract``) names a movement by institution, ``fixmedins_bchno`` and
  ``inv_data_type``; the latest such movement not yet retracted is undone (a resent deletion, with no
  movement of that name uploaded since the last deletion, is a duplicate): taken out of the pending
  movements if it still waits (it is never judged), else its quantity is reversed in the balance (an
  alert it already raised stays: it was raised on what was uploaded then); a folded stocktake cannot be
  undone (counted ``inventory.retract_stocktake_folded``). Counted ``inventory.retracted``.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from pydantic import Field

from monitor.clock import business_date, day_end, day_start
from monitor.contract import Findings, Params, Rule, RuleContext
from monitor.records import INV_CHG_SIGN, PurchaseMovement, SaleMovement, StockChange, Stocktake

if TYPE_CHECKING:
    from monitor.policy.pack import Pack
    from monitor.records import Record

RULE = "inventory.negative_stock"

# movement kinds, in the order they apply at the same instant
STOCKTAKE, DELTA, SALE = 0, 1, 2

BatchKey = tuple[str, str, str]


class SettleBatch(NamedTuple):
    """Fold a lot's movements whose ``settle_hours`` are over (the key of ``batches``)."""

    code: str
    med_list_codg: str
    fixmedins_bchno: str


#: record class → which movement (``on_record``'s dispatch; a subclass is looked up once by ``_kind_of``)
_SALE, _STOCKTAKE, _PURCHASE, _CHANGE = range(4)
_KIND_OF: dict[type, int] = {SaleMovement: _SALE, Stocktake: _STOCKTAKE, PurchaseMovement: _PURCHASE,
                             StockChange: _CHANGE}
_tuple_new = tuple.__new__


def _kind_of(rec: object) -> int | None:
    """The movement kind of a record whose class ``_KIND_OF`` does not name (None: not a movement)."""
    for cls, kind in ((SaleMovement, _SALE), (Stocktake, _STOCKTAKE), (PurchaseMovement, _PURCHASE),
                      (StockChange, _CHANGE)):
        if isinstance(rec, cls):
            _KIND_OF[type(rec)] = kind
            return kind
    return None


class _Counts(Protocol):
    def count(self, name: str, n: int = 1) -> None: ...

#: how many of a lot's latest movements a 3507 deletion can still name; an older one is reported as
#: ``inventory.retract_unknown`` (a deletion corrects a recent upload, and the memory stays per lot)
RETRACTABLE_PER_LOT = 32
#: what an alert's evidence names a movement by: (infno, setl_id, rtal_docno, invdate of a stocktake)
Ref = tuple[str, str | None, str | None, date | None]
#: (business time, kind, arrival sequence, quantity (delta for DELTA/SALE: signed), split pack, ref, price)
Movement = tuple[datetime, int, int, Decimal, bool, Ref, Decimal | None]


def ref_text(move: Movement) -> str:
    """``3505:setl_id=…`` / ``3505:rtal_docno=…`` / ``3501:2026-01-01`` (formatted only for evidence)."""
    btime, _, _, _, _, (infno, setl_id, docno, invdate), _ = move
    if invdate is not None:
        return f"3501:{invdate}"
    return f"{infno}:" + (f"setl_id={setl_id}" if setl_id else f"rtal_docno={docno}" if docno else btime.isoformat())


class NegativeStockParams(Params):
    tolerance: float = Field(ge=0)
    split_pack_tolerance: float = Field(ge=0, lt=1)
    settle_hours: float = Field(ge=0)


@dataclass(slots=True)
class Batch:
    #: business time of the first stocktake or purchase seen: earlier movements are not judged
    since: datetime
    balance: Decimal = Decimal("0")
    folded_to: datetime | None = None
    negative: bool = False
    baseline: str = ""
    pending: list[Movement] = field(default_factory=list)


class NegativeStock(Rule):
    """``inventory.negative_stock`` (EZ-DM 二(二))."""

    name: ClassVar[str] = "inventory"
    rule_ids: ClassVar[tuple[str, ...]] = (RULE,)
    streams: ClassVar[tuple[str, ...]] = ("inventory",)
    params: ClassVar[dict[str, type[Params]]] = {RULE: NegativeStockParams}
    timers: ClassVar[tuple[type, ...]] = (SettleBatch,)
    state: ClassVar[tuple[str, ...]] = ("batches", "seq", "moves", "retracted", "deleted_through")

    def __init__(self, pack: Pack) -> None:
        super().__init__(pack)
        p: NegativeStockParams = self.param_model(RULE)
        self.tolerance = Decimal(str(p.tolerance))
        self.split_tolerance = Decimal(str(p.split_pack_tolerance))
        self.settle = timedelta(hours=p.settle_hours)
        #: institution key space (batches are per institution)
        self.batches: dict[BatchKey, Batch] = {}
        self.seq = 0
        #: (fixmedins_code, fixmedins_bchno) → the last ``RETRACTABLE_PER_LOT`` movements seen: (infno,
        #: seq, batch key or None if not judged, kind, signed quantity), for 3507 deletions (bounded like
        #: ``batches``: per lot, not per movement); seqs already retracted.
        self.moves: dict[tuple[str, str], list[tuple[str, int, BatchKey | None, int, Decimal]]] = {}
        self.retracted: set[int] = set()
        #: (code, bchno, first infno of the inv_data_type) → movement sequence when last deleted
        self.deleted_through: dict[tuple[str, str, str], int] = {}

    # ---------------------------------------------------------------------------------- records
    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        # Hot path (every 进销存 record; README "Issue #16, session 5"): one dict look-up for the kind of
        # movement, fields read once, the look-ups by plain tuple (a ``SettleBatch`` equals the tuple of
        # its fields), a timer key built only for a lot that is judged, no string formatting (the
        # evidence reference is formatted only when an alert is raised), and a timer only when the lot
        # had none pending.
        kind = _KIND_OF.get(type(rec))
        if kind is None:
            kind = _kind_of(rec)
            if kind is None:
                return []
        mv: Any = rec  # one of the four movement classes (``kind``)
        code: str = mv.fixmedins_code
        med: str = mv.med_list_codg
        bchno: str = mv.fixmedins_bchno
        infno: str = mv.infno
        invdate = None
        if kind == _SALE:
            if infno == "3505":
                kind, qty, establishes = SALE, -mv.sel_retn_cnt, False
            else:
                kind, qty, establishes = DELTA, mv.sel_retn_cnt, False
            btime: datetime = mv.sel_retn_time
        elif kind == _STOCKTAKE:
            kind, qty, establishes = STOCKTAKE, mv.inv_cnt, True
            invdate = mv.invdate
            btime = mv.business_time
        elif kind == _PURCHASE:
            purchase = infno == "3503"
            qty = mv.purc_retn_cnt
            kind, qty, establishes = DELTA, qty if purchase else -qty, purchase
            btime = mv.purc_retn_stoin_time
        else:
            kind, qty, establishes = DELTA, INV_CHG_SIGN[mv.inv_chg_type] * mv.cnt, False
            btime = mv.inv_chg_time
        batch = self.batches.get((code, med, bchno))
        seq = self.seq = self.seq + 1
        lot = (code, bchno)
        seen = self.moves.get(lot)
        if seen is None:
            seen = self.moves[lot] = []
        if batch is None or btime < batch.since:
            if not establishes:
                if batch is None:
                    ctx.count("inventory.movement_without_baseline")
                else:
                    # before the batch's first stocktake/purchase: already in that count, or unknowable
                    ctx.count("inventory.movement_before_baseline")
                seen.append((infno, seq, None, kind, qty))
                if len(seen) > RETRACTABLE_PER_LOT:
                    del seen[0]
                return []
        key: SettleBatch = _tuple_new(SettleBatch, (code, med, bchno))
        price = mv.finl_trns_pric if mv.finl_trns_pric is not None else mv.pric
        move: Movement = (btime, kind, seq, qty, mv.trdn_flag == "1", (infno, mv.setl_id, mv.rtal_docno, invdate),
                          price)
        if batch is None:
            batch = self.batches[key] = Batch(baseline=ref_text(move), since=btime)
        elif btime < batch.since:
            batch.since = btime
        seen.append((infno, seq, key, kind, qty))  # _remember, inlined
        if len(seen) > RETRACTABLE_PER_LOT:
            del seen[0]
        folded_to = batch.folded_to
        if folded_to is not None and btime < folded_to:
            ctx.count("inventory.movement_after_fold")
            return self._apply(key, batch, move, ctx)
        pending = batch.pending
        # (time, kind, seq) is unique, so plain tuple order is the application order
        if not pending:
            pending.append(move)
            ctx.schedule(btime + self.settle, key)
        elif pending[-1] < move:
            pending.append(move)
        else:
            bisect.insort(pending, move)
            # a timer is pending for this batch (due at its earlier head); an earlier head waits for it
        return []

    # ---------------------------------------------------------------------------------- 3507
    def retract(self, code: str, bchno: str, infnos: tuple[str, ...], ctx: _Counts) -> str:
        """Undo the latest movement of ``infnos`` uploaded under ``(code, bchno)`` (module docstring).
        Returns ``"retracted"``, ``"duplicate"`` (every such movement is already retracted: a resent
        3507) or ``"unknown"`` (no such movement seen)."""
        seen = [m for m in self.moves.get((code, bchno), ()) if m[0] in infnos]
        name = (code, bchno, infnos[0])
        # A resent deletion names the movement already deleted: only a movement uploaded after that
        # deletion (a re-upload under the same bchno) can be deleted again.
        after = self.deleted_through.get(name, 0)
        live = [m for m in seen if m[1] not in self.retracted and m[1] > after]
        if not live:
            return "duplicate" if name in self.deleted_through else "unknown"
        _, seq, key, kind, qty = live[-1]
        self.retracted.add(seq)
        self.deleted_through[name] = self.seq
        ctx.count("inventory.retracted")
        batch = self.batches.get(key) if key is not None else None
        if batch is None:
            return "retracted"  # never judged: nothing to undo
        kept = [m for m in batch.pending if m[2] != seq]
        if len(kept) != len(batch.pending):
            batch.pending[:] = kept  # still waiting: never folded, never judged (its timer finds less)
        elif kind == STOCKTAKE:
            ctx.count("inventory.retract_stocktake_folded")
        else:
            batch.balance -= qty
            if batch.negative and batch.balance >= -self.tolerance:
                batch.negative = False
        return "retracted"

    # ---------------------------------------------------------------------------------- timers
    def on_timer(self, key: Hashable, ctx: RuleContext) -> Findings:
        assert isinstance(key, SettleBatch)
        batch = self.batches.get(key)
        if batch is None:
            return []
        limit = ctx.now - self.settle
        done = 0
        out: Findings = []
        pending = batch.pending
        for move in pending:
            btime = move[0]
            if btime > limit:
                break
            if move[1] == SALE and batch.negative:
                batch.balance += move[3]  # _apply of a sale in an episode already reported: nothing more
            else:
                found = self._apply(key, batch, move, ctx)
                if found:
                    out.extend(found)
            folded_to = batch.folded_to
            if folded_to is None or btime > folded_to:
                batch.folded_to = btime
            done += 1
        del pending[:done]
        if pending:
            ctx.schedule(pending[0][0] + self.settle, key)
        return out

    # ---------------------------------------------------------------------------------- judgment
    def _apply(self, key: BatchKey, batch: Batch, move: Movement, ctx: RuleContext) -> Findings:
        btime, kind, _, qty, split, _, price = move
        if kind == STOCKTAKE:
            batch.balance = qty
            batch.negative = False
            batch.baseline = ref_text(move)
            return []
        before = batch.balance
        batch.balance += qty
        if kind != SALE:
            if batch.negative and batch.balance >= -self.tolerance:
                batch.negative = False
            return []
        tol = self.split_tolerance if split else self.tolerance
        if batch.balance >= -tol or batch.negative:
            return []
        batch.negative = True
        return self._report(key, batch, btime, before, -qty, ref_text(move), price, ctx)

    def _report(self, key: BatchKey, batch: Batch, when: datetime, before: Decimal, sold: Decimal, ref: str,
                price: Decimal | None, ctx: RuleContext) -> Findings:
        code, med, bchno = key
        day = business_date(when)
        shortfall = -batch.balance
        amount = (shortfall * price).quantize(Decimal("0.01")) if price is not None else Decimal("0")
        evidence: dict[str, Any] = {
            "med_list_codg": med,
            "fixmedins_bchno": bchno,
            "sale": ref,
            "sale_time": when.isoformat(),
            "balance_before": str(before),
            "sold": str(sold),
            "balance_after": str(batch.balance),
            "baseline": batch.baseline,
        }
        alert = ctx.alert(
            RULE, code, subject=f"batch:{med}:{bchno}:{when.isoformat()}",
            window_start=day_start(day), window_end=day_end(day), evidence=evidence, vola_amt=amount,
            vola_cont=(f"批次 {bchno}（{med}）库存 {before} 时销售 {sold}，结存 {batch.balance} 为负，"
                       "进销存数据疑似虚假"),
        )
        escalation = ctx.escalate(RULE, code, day, cause=f"day:{day.isoformat()}", alert=alert)
        return [alert, escalation] if alert is not None else [escalation]


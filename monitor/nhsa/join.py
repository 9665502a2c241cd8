"""The keyed join between the codec and the engine: 2207/2102 settlements with their 2204 lines by
``mdtrt_id``, and 2103/2208 revocations with the settlement they name by ``setl_id``.

Both shells feed the engine through ``apply(engine, item, arrival)`` (instead of ``Engine.process``)
and move idle time with ``advance(engine, now)`` (instead of ``Engine.advance``). Ordinary records pass
straight through (one dict look-up when nothing waits).

Contract
--------
* A settlement whose lines come from 2204 (``EnvelopeSettlement.has_lines`` False) is judged when its
  lines are there: at once if the 2204 of its ``(fixmedins_code, mdtrt_id)`` arrived first, else when it
  arrives; if none arrives within the grace window (pack setting ``nhsa_line_grace_minutes``, default
  60, measured in arrival/event time), it is judged without lines and counted
  ``settlements.lines_missing``. 2204 lines no settlement claimed within the window are counted
  ``settlements.lines_unclaimed`` (their number). A line resent (same ``feedetl_sn``) is kept once.
* A revocation (``Revocation``) becomes the remembered original with ``setl_status = revoked`` and the
  revocation's upload time — exactly what a flat revocation record carries. Originals are remembered
  ``nhsa_revocation_memory_days`` (default 35, by ``setl_time``) after they were judged. A revocation of a
  settlement not remembered is judged from the fields it carries (``setl_time`` else its upload time;
  types ``unknown``, amounts 0, no lines) and counted ``settlements.revocation_without_original``.
* State: one ``LineJoin`` kept *in the engine* (``engine.__dict__["nhsa_join"]``), a plain picklable
  object, so ``Engine.snapshot`` — the replay ``--state`` file and the worker's checkpoint — already
  covers it: a settlement waiting for its lines at a checkpoint waits on after a restart.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from monitor.clock import business_date
from monitor.engine import Engine, Output
from monitor.nhsa.items import INV_DATA_TYPE, EnvelopeSettlement, FeeLines, Retraction, Revocation
from monitor.records import DrugDetail, Record, Settlement

_PENDING = (FeeLines, EnvelopeSettlement, Revocation)
STATE_KEY = "nhsa_join"
_PLACEHOLDERS = {"psn_no": "unknown", "insutype": "unknown", "psn_type": "unknown", "med_type": "unknown",
                 "medfee_sumamt": "0", "inscp_scp_amt": "0", "hifp_pay": "0", "acct_pay": "0",
                 "psn_cash_pay": "0"}


class LineJoin:
    """The join's state (see the module docstring). Plain data: dicts, a heap, frozen records."""

    def __init__(self, grace: timedelta, memory_days: int) -> None:
        self.grace = grace
        self.memory_days = memory_days
        #: (fixmedins_code, mdtrt_id) → (lines, due): 2204 lines waiting for their settlement.
        self.lines: dict[tuple[str, str], tuple[list[DrugDetail], datetime]] = {}
        #: (fixmedins_code, mdtrt_id) → (settlement, arrival override, due): settlements waiting for lines.
        self.waiting: dict[tuple[str, str], tuple[Settlement, datetime | None, datetime]] = {}
        self.heap: list[tuple[datetime, int, str, tuple[str, str]]] = []
        self.seq = 0
        #: setl_id → the settled settlement (for revocations that carry only its id).
        self.settled: dict[str, Settlement] = {}
        self.settled_by_day: dict[date, list[str]] = {}
        self.pruned_through: date | None = None

    def _push(self, due: datetime, kind: str, key: tuple[str, str]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, kind, key))

    def _remember(self, st: Settlement) -> None:
        if self.memory_days <= 0 or st.setl_id in self.settled:
            return
        self.settled[st.setl_id] = st
        self.settled_by_day.setdefault(business_date(st.setl_time), []).append(st.setl_id)

    def _prune(self, now: datetime) -> None:
        today = business_date(now)
        if self.pruned_through == today:
            return
        self.pruned_through = today
        horizon = today - timedelta(days=self.memory_days)
        for day in [d for d in self.settled_by_day if d < horizon]:
            for setl_id in self.settled_by_day.pop(day):
                self.settled.pop(setl_id, None)

    def expire(self, engine: Engine, now: datetime | None) -> list[Output]:
        """Judge what waited past its window at event time ``now``."""
        out: list[Output] = []
        if now is None:
            return out
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, _, kind, key = heapq.heappop(heap)
            if kind == "settlement":
                held = self.waiting.get(key)
                if held is None or held[2] != due:
                    continue
                del self.waiting[key]
                st, arrival, _ = held
                engine.stats.quality["settlements.lines_missing"] += 1
                self._remember(st)
                out.extend(engine.process(st, arrival))
            else:
                have = self.lines.get(key)
                if have is None or have[1] != due:
                    continue
                del self.lines[key]
                engine.stats.quality["settlements.lines_unclaimed"] += len(have[0])
        if self.settled_by_day:
            self._prune(now)
        return out

    @staticmethod
    def _flags(engine: Engine, st: Settlement) -> Settlement:
        """Lines from a 2102 request or a 2204 upload carry no ``rx_flag``/``trdn_flag``: ``rx_flag`` is
        the catalogue's (medins.drugs), ``trdn_flag`` is ``1`` (拆零) when ``cnt`` is not a whole number
        of packs (else left unknown); each fill is counted."""
        changed = False
        lines = []
        quality = engine.stats.quality
        for line in st.drugdetail:
            update: dict[str, Any] = {}
            if line.rx_flag is None:
                drug = engine.registry.drugs.get(line.med_list_codg)
                if drug is not None and drug.rx_flag is not None:
                    update["rx_flag"] = drug.rx_flag
                    quality["settlements.line_rx_flag_from_catalogue"] += 1
                else:
                    quality["settlements.line_rx_flag_unknown"] += 1
            if line.trdn_flag is None and line.cnt != line.cnt.to_integral_value():
                update["trdn_flag"] = "1"
                quality["settlements.line_trdn_flag_from_cnt"] += 1
            if update:
                line = line.model_copy(update=update)
                changed = True
            lines.append(line)
        return st.model_copy(update={"drugdetail": lines}) if changed else st

    def offer(self, engine: Engine, item: FeeLines | EnvelopeSettlement | Revocation,
              arrival: datetime | None) -> list[Output]:
        when = arrival or item.arrival_time or engine.watermark.value
        out = self.expire(engine, when)
        if isinstance(item, FeeLines):
            key = (item.fixmedins_code, item.mdtrt_id)
            held = self.waiting.pop(key, None)
            if held is not None:
                st, st_arrival, _ = held
                joined = self._flags(engine, st.model_copy(update={"drugdetail": _merge([], item.lines)}))
                self._remember(joined)
                out.extend(engine.process(joined, st_arrival))
                return out
            lines = _merge(self.lines[key][0] if key in self.lines else [], item.lines)
            due = (when or _far_past()) + self.grace
            self.lines[key] = (lines, due)
            self._push(due, "lines", key)
            return out
        if isinstance(item, EnvelopeSettlement):
            st = item.settlement
            if st.setl_id in self.settled and not item.has_lines:
                self.lines.pop((st.fixmedins_code, st.mdtrt_id), None)  # a resent 2204 + 2207: the engine
                out.extend(engine.process(st, arrival))                 # counts the duplicate
                return out
            if item.has_lines:
                st = self._flags(engine, st)
                self._remember(st)
                out.extend(engine.process(st, arrival))
                return out
            key = (st.fixmedins_code, st.mdtrt_id)
            have = self.lines.pop(key, None)
            if have is not None:
                joined = self._flags(engine, st.model_copy(update={"drugdetail": have[0]}))
                self._remember(joined)
                out.extend(engine.process(joined, arrival))
                return out
            due = (when or st.setl_time) + self.grace
            if key in self.waiting:  # a second settlement of the same visit before lines: judge the first
                first, first_arrival, _ = self.waiting.pop(key)
                engine.stats.quality["settlements.lines_missing"] += 1
                self._remember(first)
                out.extend(engine.process(first, first_arrival))
            self.waiting[key] = (st, arrival, due)
            self._push(due, "settlement", key)
            return out
        out.extend(engine.process(self._revoked(engine, item), arrival))
        return out

    def _revoked(self, engine: Engine, rev: Revocation) -> Settlement:
        original = self.settled.get(rev.setl_id)
        if original is None:
            for st, _, _ in self.waiting.values():
                if st.setl_id == rev.setl_id:
                    original = st
                    break
        if original is not None:
            return original.model_copy(update={"setl_status": "revoked", "inf_time": rev.inf_time})
        engine.stats.quality["settlements.revocation_without_original"] += 1
        data: dict[str, Any] = dict(_PLACEHOLDERS)
        data.update(dict(rev.fields))
        data.setdefault("mdtrt_id", rev.setl_id)
        data.setdefault("setl_time", rev.inf_time)
        data["inf_time"] = rev.inf_time
        data["setl_status"] = "revoked"
        data["drugdetail"] = []
        return Settlement.model_validate(data)


def _merge(have: list[DrugDetail], new: tuple[DrugDetail, ...]) -> list[DrugDetail]:
    """Lines of one visit; a line resent (same ``feedetl_sn``) is kept once."""
    seen = {line.feedetl_sn for line in have if line.feedetl_sn is not None}
    out = list(have)
    for line in new:
        if line.feedetl_sn is not None and line.feedetl_sn in seen:
            continue
        if line.feedetl_sn is not None:
            seen.add(line.feedetl_sn)
        out.append(line)
    return out


def _far_past() -> datetime:
    from monitor.clock import CST
    return datetime(1970, 1, 1, tzinfo=CST)


def state(engine: Engine) -> LineJoin:
    """The engine's join state (created on first use; restored with the engine's snapshot)."""
    join = engine.__dict__.get(STATE_KEY)
    if join is None:
        join = LineJoin(timedelta(minutes=float(engine.pack.setting("nhsa_line_grace_minutes", 60))),
                        int(engine.pack.setting("nhsa_revocation_memory_days", 35)))
        engine.__dict__[STATE_KEY] = join
    assert isinstance(join, LineJoin)
    return join


#: Where ``retract`` leaves (raw, reason) of 3507s that name no movement seen, for the shell's dead letters.
REJECTED_KEY = "nhsa_rejected"


def retract(engine: Engine, item: Retraction, arrival: datetime | None) -> list[Output]:
    """3507: event time moves to its upload first (a movement whose settle window closed is judged as
    uploaded), then the inventory detector undoes the movement named. Counted ``inventory.retracted``;
    a resend of a done deletion is a duplicate; one naming a movement never seen is counted
    ``inventory.retract_unknown`` and left in ``take_rejected`` for the dead letters."""
    when = arrival or item.arrival_time
    if when is not None:
        engine.watermark.observe(when)
        engine._fire_due()
    engine.stats.records["inventory"] += 1
    det = engine._by_name.get("inventory")
    result = "unknown"
    if det is not None and hasattr(det, "retract"):
        result = det.retract(item.fixmedins_code, item.fixmedins_bchno, INV_DATA_TYPE[item.inv_data_type],
                             engine.ctx)
    if result == "duplicate":
        engine.stats.duplicates["inventory"] += 1
    elif result == "unknown":
        engine.stats.quality["inventory.retract_unknown"] += 1
        engine.__dict__.setdefault(REJECTED_KEY, []).append(
            (item.raw, f"infno 3507: no movement of inv_data_type {item.inv_data_type} under fixmedins_bchno "
                       f"{item.fixmedins_bchno!r} of {item.fixmedins_code} was seen (nothing to delete)"))
    return engine._drain()


def take_rejected(engine: Engine) -> list[tuple[bytes, str]]:
    """The (raw, reason) of 3507s that named no movement since the last call (see ``retract``)."""
    return engine.__dict__.pop(REJECTED_KEY, None) or []


def apply(engine: Engine, item: Record | FeeLines | EnvelopeSettlement | Revocation | Retraction,
          arrival: datetime | None = None) -> list[Output]:
    """``Engine.process`` for everything the codec makes (module docstring)."""
    if isinstance(item, Retraction):
        return retract(engine, item, arrival)
    if not isinstance(item, _PENDING):
        join = engine.__dict__.get(STATE_KEY)
        if join is None or not join.heap or join.heap[0][0] > (arrival or item.arrival_time or join.heap[0][0]):
            return engine.process(item, arrival)
        out = join.expire(engine, arrival or item.arrival_time)
        out.extend(engine.process(item, arrival))
        return out
    return state(engine).offer(engine, item, arrival)


def plain(engine: Engine, item: object, arrival: datetime | None = None) -> bool:
    """Whether ``apply(engine, item, arrival)`` is just ``engine.process(item, arrival)``: a record (no
    join item) while no join window is due by its arrival. Such items may go to ``Engine.process_batch``
    together; the join's state changes only through the other items, so the answer holds until one
    of them is applied."""
    if isinstance(item, _JOIN_TYPES):
        return False
    join = engine.__dict__.get(STATE_KEY)
    if join is None or not join.heap:
        return True
    when = arrival or item.arrival_time  # type: ignore[attr-defined]
    return when is not None and join.heap[0][0] > when


_JOIN_TYPES = (FeeLines, EnvelopeSettlement, Revocation, Retraction)


def apply_batch(engine: Engine, items: Sequence[tuple[Any, datetime | None]]) -> list[Output]:
    """``apply`` of each ``(item, arrival)`` in order, the runs of ``plain`` records through
    ``Engine.process_batch`` (the same outputs in the same order as one by one)."""
    out: list[Output] = []
    records: list[Record] = []
    arrivals: list[datetime | None] = []
    for item, arrival in items:
        if plain(engine, item, arrival):
            records.append(item)
            arrivals.append(arrival)
            continue
        if records:
            out.extend(engine.process_batch(records, arrivals))
            records, arrivals = [], []
        out.extend(apply(engine, item, arrival))
    if records:
        out.extend(engine.process_batch(records, arrivals))
    return out


def advance(engine: Engine, now: datetime) -> list[Output]:
    """``Engine.advance`` that first judges settlements whose line window closed by ``now``."""
    join = engine.__dict__.get(STATE_KEY)
    out = join.expire(engine, now) if isinstance(join, LineJoin) else []
    out.extend(engine.advance(now))
    return out

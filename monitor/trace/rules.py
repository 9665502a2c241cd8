"""National trace-code rules (药品追溯码, the 2025 campaign's 一码多售 / 回流 / 串换 checks): pure, no I/O.

The trace tier owns one key space, the trace code ``drug_trac_codg`` (design §2 "Two tiers"): a code's
history needs no other code, so any number of workers share the codes by partition. Two stages:

* the **code stage** (keyed by ``drug_trac_codg``) keeps each code's scans and judges
  ``trace.resold``, ``trace.reentered`` and ``trace.never_stocked``;
* the **product stage** (keyed by the code's product identifier, its leading ``prefix_digits`` digits)
  learns which drug a product identifier is from stock-in scans and judges ``trace.product_mismatch``.

Every rule is judged at a **deadline in event time** (arrival = ``inf_time``, else ``scan_time``), once
the stage's watermark has passed it, over the scans of the key that **arrived at or before the
deadline** — so the judgment does not depend on how scans from different source partitions
interleave on the way to the stage, only on what had been uploaded by then (the replay shell and any
Faust worker group give the same findings). A scan's settle deadline is ``arrival + settle_hours``
(24 h: a return uploaded within EZ-DM 二(一)'s real-time limit still clears a resale).

A pair of scans is judged once, at the settle deadline of the member that arrived later (ties: both,
with the same known scans, so the same finding). Finding ids are deterministic from the rule, the code
and the charged scan, so a redelivered scan or a re-judged pair yields the same id.

Rules (thresholds in the pack's ``rules."trace.*".params``; see the pack for the clause of each):

* ``trace.resold`` — two consecutive whole-pack (``trdn_flag=0``) sales of the code, by scan time, at
  **different** institutions, with no ``sale_return`` scan between them; the later seller is charged.
  Split packs are exempt (either sale split). Same-institution repeats stay with the city engine's
  ``trace.duplicate``.
* ``trace.reentered`` (回流) — a ``stock_in`` scan after the code's last whole-pack sale with no return
  between; the institution that scanned it in is charged (a split-pack sale leaves the box on the shelf).
* ``trace.never_stocked`` — a sale by an institution that has no ``stock_in`` scan of the code
  uploaded by ``window_days`` after the sale's arrival; judged when that window closes, once per code
  and institution.
* ``trace.product_mismatch`` (串换) — a sale whose ``med_list_codg`` differs from the one drug that the
  code's product identifier was learned as: ``min_votes`` stock-in scans from at least
  ``min_institutions`` institutions, uploaded by the sale's settle deadline, name it (a second drug
  reaching the same votes makes the identifier ambiguous: no judgment, counted).

State is bounded: a code whose last scan is older than ``retention_days`` (3 years) is forgotten by a
sweep every ``sweep_every_days`` of event time; at most ``max_scans`` scans are kept per code.
"""

from __future__ import annotations

import heapq
import json
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from monitor.clock import CST, business_date, day_end, day_start
from monitor.outputs import make_id

RESOLD = "trace.resold"
REENTERED = "trace.reentered"
NEVER_STOCKED = "trace.never_stocked"
PRODUCT_MISMATCH = "trace.product_mismatch"
TRACE_RULES: tuple[str, ...] = (RESOLD, REENTERED, NEVER_STOCKED, PRODUCT_MISMATCH)

EPOCH = datetime(2000, 1, 1, tzinfo=CST)
SALE, RETURN, STOCK_IN = 0, 1, 2
KIND_OF = {"sale": SALE, "sale_return": RETURN, "stock_in": STOCK_IN}
KIND_NAME = {v: k for k, v in KIND_OF.items()}
_REGION = re.compile(r"^[A-Za-z](\d{6})")


def secs_of(when: datetime) -> int:
    """Whole seconds since 2000-01-01 CST (the stored time unit)."""
    delta = when - EPOCH
    return max(delta.days * 86400 + delta.seconds, 0)


def time_of(secs: int) -> datetime:
    return EPOCH + timedelta(seconds=secs)


def region_of(inst: str) -> str | None:
    """The 6-digit 行政区划 (admdvs) embedded in an NHSA institution code (``P42070200017`` → 420702).

    Reading: national 定点医药机构 codes start with the institution type letter and the admdvs of the
    registering region; a code of another shape has no derivable region (None)."""
    m = _REGION.match(inst)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------- params
class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResoldParams(_P):
    settle_hours: float = Field(default=24, ge=0)
    retention_days: int = Field(default=1096, ge=1)
    sweep_every_days: int = Field(default=7, ge=1)
    max_scans: int = Field(default=16, ge=2, le=255)


class ReenteredParams(_P):
    """No thresholds of its own: a stock-in is judged at the code stage's settle deadline
    (``trace.resold``'s ``settle_hours``)."""


class NeverStockedParams(_P):
    window_days: float = Field(default=90, gt=0)


class MismatchParams(_P):
    prefix_digits: int = Field(default=7, ge=1, le=20)
    min_votes: int = Field(default=3, ge=1, le=32)
    min_institutions: int = Field(default=2, ge=1, le=32)
    settle_hours: float = Field(default=24, ge=0)


@dataclass(frozen=True)
class TraceParams:
    """The thresholds of the four rules, read from a pack (defaults when a rule is absent)."""

    resold: bool = True
    reentered: bool = True
    never_stocked: bool = True
    mismatch: bool = True
    settle: int = 86400
    retention: int = 1096 * 86400
    sweep_every: int = 7 * 86400
    max_scans: int = 16
    window: int = 90 * 86400
    prefix_digits: int = 7
    min_votes: int = 3
    min_institutions: int = 2
    #: seconds an upload may claim to be ahead of event time (the pack's ``max_clock_skew_minutes``;
    #: ``monitor.trace.forward``)
    skew: int = 3600
    bases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_pack(cls, pack: Any) -> TraceParams:
        rules = pack.rules
        r = ResoldParams.model_validate(rules[RESOLD].params) if RESOLD in rules else ResoldParams()
        if REENTERED in rules:
            ReenteredParams.model_validate(rules[REENTERED].params)
        n = (NeverStockedParams.model_validate(rules[NEVER_STOCKED].params) if NEVER_STOCKED in rules
             else NeverStockedParams())
        m = (MismatchParams.model_validate(rules[PRODUCT_MISMATCH].params) if PRODUCT_MISMATCH in rules
             else MismatchParams())
        return cls(
            resold=pack.enabled(RESOLD), reentered=pack.enabled(REENTERED),
            never_stocked=pack.enabled(NEVER_STOCKED), mismatch=pack.enabled(PRODUCT_MISMATCH),
            settle=int(r.settle_hours * 3600), retention=r.retention_days * 86400,
            sweep_every=r.sweep_every_days * 86400, max_scans=r.max_scans, window=int(n.window_days * 86400),
            prefix_digits=m.prefix_digits, min_votes=m.min_votes, min_institutions=m.min_institutions,
            skew=int(float(pack.setting("max_clock_skew_minutes", 60)) * 60),
            bases={rid: "; ".join(rules[rid].basis) for rid in TRACE_RULES if rid in rules},
        )


# -------------------------------------------------------------------------------------------- scans
@dataclass(frozen=True, slots=True)
class Scan:
    """One scan of a code as the trace tier keeps it (no personal data: the record carries none)."""

    kind: int
    inst: str
    secs: int  # scan_time
    arrival: int  # inf_time, else scan_time
    split: bool = False  # trdn_flag = 1
    med: str = ""
    docno: str = ""

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.secs, self.kind, self.inst)

    def ident(self) -> tuple[int, str, int]:
        """A resent scan (same kind, institution and second) is the same scan."""
        return (self.kind, self.inst, self.secs)


def scan_from_record(rec: Any) -> Scan:
    """A ``records.TraceScan`` as a ``Scan``."""
    arrival = rec.inf_time or rec.scan_time
    return Scan(kind=KIND_OF[rec.scan_kind], inst=rec.fixmedins_code, secs=secs_of(rec.scan_time),
                arrival=secs_of(arrival), split=rec.trdn_flag == "1", med=rec.med_list_codg or "",
                docno=rec.rtal_docno or "")


_HEAD = struct.Struct(">BII")


def _put_str(out: bytearray, text: str) -> None:
    raw = text.encode()[:255]
    out.append(len(raw))
    out += raw


def encode_history(scans: list[Scan]) -> bytes:
    """Compact bytes of a code's scans (stored in the table; ``bench/trace_tier.py`` measures them)."""
    out = bytearray()
    for s in scans:
        out += _HEAD.pack(s.kind | (4 if s.split else 0), s.secs, s.arrival)
        _put_str(out, s.inst)
        _put_str(out, s.med if s.kind != RETURN else "")
        _put_str(out, s.docno if s.kind == SALE else "")
    return bytes(out)


def decode_history(raw: bytes) -> list[Scan]:
    scans: list[Scan] = []
    i, n = 0, len(raw)
    while i < n:
        flags, secs, arrival = _HEAD.unpack_from(raw, i)
        i += _HEAD.size
        parts = []
        for _ in range(3):
            ln = raw[i]
            parts.append(raw[i + 1:i + 1 + ln].decode())
            i += 1 + ln
        scans.append(Scan(flags & 3, parts[0], secs, arrival, bool(flags & 4), parts[1], parts[2]))
    return scans


# ------------------------------------------------------------------------------------------ findings
def _side(s: Scan, *, charged: bool) -> dict[str, Any]:
    """One side of a finding. The charged side in full (its own records); the other side masked to its
    institution code and region (another institution's documents are not the charged one's evidence)."""
    side: dict[str, Any] = {"fixmedins_code": s.inst, "region": region_of(s.inst)}
    if charged:
        side.update(scan_kind=KIND_NAME[s.kind], scan_time=time_of(s.secs).isoformat(),
                    uploaded_at=time_of(s.arrival).isoformat())
        if s.med:
            side["med_list_codg"] = s.med
        if s.docno:
            side["rtal_docno"] = s.docno
    return side


def make_finding(rule_id: str, code: str, charged: Scan, other: Scan | None, deadline: int,
                 params: TraceParams, facts: dict[str, Any], subject: str | None = None) -> dict[str, Any]:
    """A trace finding (the value of ``monitor.trace_findings``, keyed by the charged institution)."""
    day = business_date(time_of(charged.secs))
    fid = make_id("TF", rule_id, code, charged.inst, subject or f"{charged.kind}:{charged.secs}")
    return {
        "finding_id": fid,
        "rule_id": rule_id,
        "fixmedins_code": charged.inst,
        "region": region_of(charged.inst),
        "drug_trac_codg": code,
        "business_date": day.isoformat(),
        "window_start": day_start(day).isoformat(),
        "window_end": day_end(day).isoformat(),
        "detected_at": time_of(deadline).isoformat(),
        "charged": _side(charged, charged=True),
        "other": _side(other, charged=False) if other is not None else None,
        "evidence": facts,
        "basis": params.bases.get(rule_id, ""),
    }


# ------------------------------------------------------------------------------------------ storage
class KV(Protocol):
    """The key-value state of one stage partition (a dict in replay, a Faust table partition)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class DictKV:
    """In-memory KV (replay, tests)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k in sorted(k for k in self.data if k.startswith(prefix)):
            yield k, self.data[k]


OUTBOX_PREFIX = b"o"
CODE_PREFIX = b"c"
PRODUCT_PREFIX = b"p"
DUE_PREFIX = b"d"
META_KEY = b"m"
_DUE = struct.Struct(">IB")
_BUCKET = struct.Struct(">I")
_LEN = struct.Struct(">H")
JOB_SETTLE, JOB_NEVER, JOB_MISMATCH = 1, 2, 3
#: Seconds of event time per due bucket: the due judgments are stored as one table value per bucket (one
#: write per bucket and batch instead of one key per scheduled judgment).
DUE_BUCKET = 10


def due_entry(deadline: int, job: int, subject: str, scan: Scan) -> bytes:
    """A scheduled judgment; entries sort by deadline, then job, subject and scan."""
    return (_DUE.pack(deadline, job) + subject.encode() + b"\x00"
            + struct.pack(">BI", scan.kind, scan.secs) + scan.inst.encode())


def parse_due(entry: bytes) -> tuple[int, int, str, tuple[int, int, str]]:
    deadline, job = _DUE.unpack_from(entry, 0)
    rest = entry[_DUE.size:]
    subject, _, tail = rest.partition(b"\x00")
    kind, secs = struct.unpack_from(">BI", tail)
    return deadline, job, subject.decode(), (kind, secs, tail[5:].decode())


def bucket_key(bucket: int) -> bytes:
    return DUE_PREFIX + _BUCKET.pack(bucket)


def encode_bucket(entries: set[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(e)) + e for e in sorted(entries))


def decode_bucket(raw: bytes) -> set[bytes]:
    out: set[bytes] = set()
    i, n = 0, len(raw)
    while i < n:
        (ln,) = _LEN.unpack_from(raw, i)
        out.add(raw[i + 2:i + 2 + ln])
        i += 2 + ln
    return out


# -------------------------------------------------------------------------------------------- clock
class StageClock:
    """Watermark of a stage partition over its source partitions.

    Each source partition reports the latest arrival it forwarded (with every record, and in ticks);
    an ``idle`` source (read to its end) does not hold the watermark back. The watermark is the
    minimum over the sources that hold it back (the maximum when none does), and undefined until all
    ``sources`` have reported — so a deadline fires only when every source has forwarded all scans that
    arrived before it (each source forwards in its own arrival order).

    An idle claim is a statement about one moment (``sent``: the forwarder's wall clock, carried in the
    message): "everything in my source partition up to then is forwarded". It lets the watermark pass
    the source only while it is **at least as recent as the newest data** (scan or busy tick) that any
    source forwarded; an older claim holds the watermark at the source's last arrival. So a claim goes
    stale by itself when its owner dies: the survivors' newer scans do not judge cases while the dead
    owner's partition may hold uploads nobody has forwarded yet (seen: a kill -9 after part of the
    input, then the rest produced — the survivor judged resales whose returns sat unread in the dead
    worker's source partition). Live idle sources re-claim every tick, so this only delays judgments.
    Without ``sent`` (in-process tier) every claim counts, as before."""

    def __init__(self, sources: int, state: dict[str, list[float]] | None = None) -> None:
        self.sources = sources
        #: source → [latest arrival, idle, time of the idle claim, time of the newest data message]
        self.src: dict[str, list[float]] = {k: [*v, 0, 0][:4] for k, v in (state or {}).items()}

    def observe(self, source: str, arrival: int, idle: bool = False, sent: float | None = None) -> None:
        have = self.src.get(source)
        if have is None:
            have = self.src[source] = [arrival, int(idle), 0, 0]
        else:
            have[0] = max(have[0], arrival)
            have[1] = int(idle)
        if sent is not None:
            if idle:
                have[2] = max(have[2], sent)
            else:
                have[3] = max(have[3], sent)

    def value(self) -> int | None:
        if len(self.src) < self.sources:
            return None
        newest = max(v[3] for v in self.src.values())
        holding = [int(c) for c, idle, claimed, _ in self.src.values() if not idle or claimed < newest]
        return min(holding) if holding else int(max(c for c, *_ in self.src.values()))


# ------------------------------------------------------------------------------------------- stages
class Stage:
    """One partition of a stage: state in a KV, due judgments in event time, findings out.

    ``on_batch`` (and its one-scan / one-tick forms ``on_scan`` / ``on_tick``) and ``advance_to`` return
    the findings made due, in deadline order. The writes of one call are buffered and reach the KV once
    per key when it ends (a Faust table: one changelog message per key and batch), the meta last. The KV
    also holds the stage's meta (clock, last applied input offset, last sweep) under ``META_KEY``, written
    after everything else of the batch, so a KV prefix that holds a meta also holds that batch's effects;
    ``applied_offset`` lets a shell skip input the state already reflects and re-read what it lacks."""

    prefix: bytes = b""

    def __init__(self, params: TraceParams, kv: KV, sources: int = 1, outbox: bool = False) -> None:
        self.params = params
        self.kv = kv
        #: keep each finding under ``OUTBOX_PREFIX + finding_id`` (written before the meta key, so a
        #: recovered table that reflects an event also holds its findings) until the shell has delivered it
        self.outbox = outbox
        raw = kv.get(META_KEY)
        meta = json.loads(raw) if raw else {}
        self.clock = StageClock(sources, meta.get("clock"))
        self.applied_offset: int = meta.get("offset", -1)
        self.last_sweep: int | None = meta.get("sweep")
        self.forced: int | None = meta.get("forced")
        self.counts: Counter[str] = Counter()
        #: writes of the running batch (None: delete), flushed once per key by ``_flush``
        self._pending: dict[bytes, bytes | None] = {}
        #: due bucket → its entries; the heap holds every entry (stale ones are skipped when popped)
        self.buckets: dict[int, set[bytes]] = {}
        self._dirty: set[int] = set()
        self.due: list[bytes] = []
        for key, value in kv.scan_prefix(DUE_PREFIX):
            entries = decode_bucket(value)
            self.buckets[_BUCKET.unpack_from(key, 1)[0]] = entries
            self.due.extend(entries)
        heapq.heapify(self.due)

    # -- buffered KV (read-your-writes; one write per key per batch)
    def _get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self.kv.get(key)

    def _put(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value

    def _delete(self, key: bytes) -> None:
        self._pending[key] = None

    def _flush(self) -> None:
        for b in self._dirty:
            entries = self.buckets.get(b)
            if entries:
                self._pending[bucket_key(b)] = encode_bucket(entries)
            else:
                self.buckets.pop(b, None)
                self._pending[bucket_key(b)] = None
        self._dirty.clear()
        meta = self._pending.pop(META_KEY, None)
        kv = self.kv
        for key, value in self._pending.items():
            if value is None:
                kv.delete(key)
            else:
                kv.put(key, value)
        if meta is not None:
            kv.put(META_KEY, meta)
        self._pending.clear()

    # -- input
    def on_batch(self, scans: list[tuple[str, Scan]], claims: list[tuple[str, int, bool]],
                 sent: float | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """Apply ``scans`` (key, scan) in order, then the sources' ``claims`` (source, latest arrival
        forwarded, idle), then judge what became due (``offset``: the input message they came in)."""
        for key, scan in scans:
            self.apply(key, scan)
        for source, arrival, idle in claims:
            self.clock.observe(source, arrival, idle, sent)
        return self._after(offset)

    def on_scan(self, key: str, scan: Scan, source: str, offset: int | None = None,
                sent: float | None = None) -> list[dict[str, Any]]:
        return self.on_batch([(key, scan)], [(source, scan.arrival, False)], sent, offset)

    def on_tick(self, source: str, arrival: int, idle: bool, offset: int | None = None,
                sent: float | None = None) -> list[dict[str, Any]]:
        return self.on_batch([], [(source, arrival, idle)], sent, offset)

    def advance_to(self, secs: int) -> list[dict[str, Any]]:
        """Move event time to ``secs`` (replay ``--as-of``)."""
        self.forced = max(self.forced or 0, secs + 1)  # deadlines at ``secs`` fire
        return self._after(None)

    def watermark(self) -> int | None:
        wm = self.clock.value()
        if self.forced is not None:
            return max(wm or 0, self.forced)
        return wm

    def _after(self, offset: int | None) -> list[dict[str, Any]]:
        out = self._fire()
        if self.outbox:
            for f in out:
                self._put(OUTBOX_PREFIX + f["finding_id"].encode(),
                          json.dumps(f, ensure_ascii=False, sort_keys=True).encode())
        if offset is not None:
            self.applied_offset = offset
        self._put(META_KEY, json.dumps({"clock": self.clock.src, "offset": self.applied_offset,
                                        "sweep": self.last_sweep, "forced": self.forced}).encode())
        self._flush()
        return out

    def schedule(self, deadline: int, job: int, subject: str, scan: Scan) -> None:
        entry = due_entry(deadline, job, subject, scan)
        b = deadline // DUE_BUCKET
        entries = self.buckets.setdefault(b, set())
        if entry not in entries:
            entries.add(entry)
            self._dirty.add(b)
            heapq.heappush(self.due, entry)

    def _fire(self) -> list[dict[str, Any]]:
        wm = self.watermark()
        if wm is None:
            return []
        out: list[dict[str, Any]] = []
        due = self.due
        while due:
            deadline = _DUE.unpack_from(due[0], 0)[0]
            if deadline >= wm:
                break  # strictly past: every scan that arrived at the deadline's second is in
            entry = heapq.heappop(due)
            b = deadline // DUE_BUCKET
            entries = self.buckets.get(b)
            if entries is None or entry not in entries:
                continue  # a duplicate heap entry (re-scheduled after a recovery)
            entries.discard(entry)
            self._dirty.add(b)
            d, job, subject, ident = parse_due(entry)
            out.extend(self.judge(d, job, subject, ident))
        self.maybe_sweep(wm)
        return out

    def maybe_sweep(self, wm: int) -> None:
        pass

    # -- rules
    def apply(self, key: str, scan: Scan) -> None:
        raise NotImplementedError

    def judge(self, deadline: int, job: int, subject: str, ident: tuple[int, int, str]) -> list[dict[str, Any]]:
        raise NotImplementedError


def _find(scans: list[Scan], ident: tuple[int, int, str]) -> Scan | None:
    kind, secs, inst = ident
    for s in scans:
        if s.kind == kind and s.secs == secs and s.inst == inst:
            return s
    return None


class CodeStage(Stage):
    """``trace.resold``, ``trace.reentered``, ``trace.never_stocked`` over each code's scans."""

    prefix = CODE_PREFIX

    def history(self, code: str) -> list[Scan]:
        raw = self._get(CODE_PREFIX + code.encode())
        return decode_history(raw) if raw else []

    def apply(self, key: str, scan: Scan) -> None:
        scans = self.history(key)
        ident = scan.ident()
        if any(s.ident() == ident for s in scans):
            self.counts["trace.scan_resent"] += 1
            return
        scans.append(scan)
        scans.sort(key=lambda s: s.order)
        if len(scans) > self.params.max_scans:
            del scans[0]
            self.counts["trace.scans_dropped"] += 1
        self._put(CODE_PREFIX + key.encode(), encode_history(scans))
        self.schedule(scan.arrival + self.params.settle, JOB_SETTLE, key, scan)

    def judge(self, deadline: int, job: int, subject: str, ident: tuple[int, int, str]) -> list[dict[str, Any]]:
        scans = self.history(subject)
        x = _find(scans, ident)
        if x is None:
            return []  # forgotten (retention) or dropped
        known = [s for s in scans if s.arrival <= deadline]
        if job == JOB_NEVER:
            return self._never_final(subject, x, known, deadline)
        out: list[dict[str, Any]] = []
        idx = known.index(x)
        p = self.params
        if x.kind == SALE:
            prev = _prev_sale(known, idx)
            if p.resold and prev is not None and prev.arrival <= x.arrival:
                out.extend(self._resold(subject, prev, x, deadline))
            nxt = _next_sale(known, idx)
            if p.resold and nxt is not None and nxt.arrival < x.arrival:
                out.extend(self._resold(subject, x, nxt, deadline))
            if p.reentered:
                for later in _stock_ins_after(known, idx):
                    if later.arrival < x.arrival:
                        out.extend(self._reentered(subject, x, later, deadline))
            if p.never_stocked and not any(s.kind == STOCK_IN and s.inst == x.inst for s in known):
                self.schedule(x.arrival + p.window, JOB_NEVER, subject, x)
        elif x.kind == STOCK_IN and p.reentered:
            prev = _prev_sale(known, idx)
            if prev is not None and prev.arrival <= x.arrival:
                out.extend(self._reentered(subject, prev, x, deadline))
        return out

    def _resold(self, code: str, first: Scan, later: Scan, deadline: int) -> list[dict[str, Any]]:
        if first.inst == later.inst:
            return []  # same institution: the city engine's trace.duplicate
        if first.split or later.split:
            self.counts["trace.split_pack_exempt"] += 1
            return []
        facts = {"first_sale_time": time_of(first.secs).isoformat(), "settle_hours": self.params.settle / 3600,
                 "cross_region": region_of(first.inst) != region_of(later.inst)}
        return [make_finding(RESOLD, code, later, first, deadline, self.params, facts)]

    def _reentered(self, code: str, sale: Scan, stock_in: Scan, deadline: int) -> list[dict[str, Any]]:
        if sale.split:
            # reading: a split-pack (拆零) sale leaves the rest of the box on the shelf; a later scan of
            # the box is not a sold box coming back
            self.counts["trace.split_pack_exempt"] += 1
            return []
        facts = {"sale_time": time_of(sale.secs).isoformat(), "settle_hours": self.params.settle / 3600,
                 "same_institution": sale.inst == stock_in.inst}
        return [make_finding(REENTERED, code, stock_in, sale, deadline, self.params, facts)]

    def _never_final(self, code: str, sale: Scan, known: list[Scan], deadline: int) -> list[dict[str, Any]]:
        if any(s.kind == STOCK_IN and s.inst == sale.inst for s in known):
            return []
        elsewhere = next((s for s in known if s.kind == STOCK_IN), None)
        facts = {"window_days": self.params.window / 86400, "stocked_in_elsewhere": elsewhere is not None}
        return [make_finding(NEVER_STOCKED, code, sale, elsewhere, deadline, self.params, facts,
                             subject="code")]

    def maybe_sweep(self, wm: int) -> None:
        """Forget codes whose last scan is older than the retention (event time, every sweep_every)."""
        p = self.params
        if self.last_sweep is None:
            self.last_sweep = wm
            return
        if wm - self.last_sweep < p.sweep_every:
            return
        self.last_sweep = wm
        limit = wm - p.retention
        stale = [k for k, v in self.kv.scan_prefix(CODE_PREFIX)
                 if k not in self._pending  # written in this batch: just scanned
                 and max(max(s.secs, s.arrival) for s in decode_history(v)) < limit]
        for k in stale:
            self._delete(k)
        self.counts["trace.codes_expired"] += len(stale)


def _prev_sale(known: list[Scan], idx: int) -> Scan | None:
    """The sale before ``known[idx]`` with no return between (stock-ins do not break the chain)."""
    for s in reversed(known[:idx]):
        if s.kind == RETURN:
            return None
        if s.kind == SALE:
            return s
    return None


def _next_sale(known: list[Scan], idx: int) -> Scan | None:
    for s in known[idx + 1:]:
        if s.kind == RETURN:
            return None
        if s.kind == SALE:
            return s
    return None


def _stock_ins_after(known: list[Scan], idx: int) -> list[Scan]:
    """Stock-ins after the sale ``known[idx]`` before its next sale or a return."""
    out = []
    for s in known[idx + 1:]:
        if s.kind != STOCK_IN:
            break
        out.append(s)
    return out


_VOTE = struct.Struct(">I")


class ProductStage(Stage):
    """``trace.product_mismatch``: product identifier → drug, learned from stock-in scans.

    Per identifier and drug the earliest-uploaded ``4 × min_votes`` stock-in votes (arrival,
    institution, code) are kept: whether a drug has ``min_votes`` votes from ``min_institutions``
    institutions by a deadline depends only on the earliest ones, whatever order they were read in."""

    prefix = PRODUCT_PREFIX

    def product_of(self, code: str) -> str:
        return code[:self.params.prefix_digits]

    def votes(self, product: str) -> dict[str, list[list[Any]]]:
        raw = self._get(PRODUCT_PREFIX + product.encode())
        return json.loads(raw) if raw else {}

    def apply(self, key: str, scan: Scan) -> None:
        """``key`` is the code; the state is the code's product identifier's."""
        if scan.kind == STOCK_IN and scan.med:
            product = self.product_of(key)
            votes = self.votes(product)
            mine = votes.setdefault(scan.med, [])
            vote: list[Any] = [scan.arrival, scan.inst, key]
            if vote in mine:
                return
            mine.append(vote)
            mine.sort()
            del mine[4 * self.params.min_votes:]
            self._put(PRODUCT_PREFIX + product.encode(), json.dumps(votes, sort_keys=True).encode())
        elif scan.kind == SALE and scan.med:
            self.schedule(scan.arrival + self.params.settle, JOB_MISMATCH, key + "\x01" + scan.med, scan)

    def learned(self, product: str, deadline: int) -> tuple[list[str], dict[str, list[Any]]]:
        p = self.params
        votes = self.votes(product)
        meds = []
        for med, vs in sorted(votes.items()):
            early = [v for v in vs if v[0] <= deadline]
            if len(early) >= p.min_votes and len({v[1] for v in early}) >= p.min_institutions:
                meds.append(med)
        return meds, votes

    def judge(self, deadline: int, job: int, subject: str, ident: tuple[int, int, str]) -> list[dict[str, Any]]:
        if not self.params.mismatch:
            return []
        code, _, med = subject.partition("\x01")
        meds, votes = self.learned(self.product_of(code), deadline)
        if not meds:
            self.counts["trace.product_unknown"] += 1
            return []
        if len(meds) > 1:
            self.counts["trace.product_ambiguous"] += 1
            return []
        learned = meds[0]
        if learned == med:
            return []
        kind, secs, inst = ident
        sale = Scan(kind, inst, secs, 0, med=med)
        first_vote = next(v for v in votes[learned] if v[0] <= deadline)
        other = Scan(STOCK_IN, first_vote[1], 0, first_vote[0], med=learned)
        early = [v for v in votes[learned] if v[0] <= deadline]
        facts = {"product_id": self.product_of(code), "learned_med_list_codg": learned, "sold_med_list_codg": med,
                 "stock_in_votes": len(early), "voting_institutions": len({v[1] for v in early}),
                 "min_votes": self.params.min_votes, "min_institutions": self.params.min_institutions}
        finding = make_finding(PRODUCT_MISMATCH, code, sale, other, deadline, self.params, facts)
        finding["charged"].pop("uploaded_at", None)
        return [finding]


# ---------------------------------------------------------------------------------------- in-process
class InProcessTier:
    """Both stages in one process, one source (``monitor replay`` over several cities' folders)."""

    def __init__(self, params: TraceParams) -> None:
        self.params = params
        self.codes = CodeStage(params, DictKV())
        self.products = ProductStage(params, DictKV())

    def on_scan(self, code: str, scan: Scan) -> list[dict[str, Any]]:
        out = self.codes.on_scan(code, scan, "replay")
        out.extend(self.products.on_scan(code, scan, "replay"))
        return out

    def advance_to(self, secs: int) -> list[dict[str, Any]]:
        return [*self.codes.advance_to(secs), *self.products.advance_to(secs)]

    @property
    def counts(self) -> Counter[str]:
        return self.codes.counts + self.products.counts

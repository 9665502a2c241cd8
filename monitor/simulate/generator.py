"""The synthetic city generator: realistic clean traffic, planted violations, ground truth.

``simulate(config)`` writes the seven input files of design §3 (``institutions.jsonl`` … ``findings.jsonl``,
exact field names of ``monitor.records``) and ``labels.jsonl`` into ``config.out``.

Contract
--------
* **Deterministic**: one ``random.Random(seed)``, iteration over lists and insertion-ordered dicts only,
  no wall clock. Same config → byte-identical files.
* **Arrival order**: each file is in nondecreasing ``inf_time`` order (``writer.ArrivalWriter``).
* **Streaming**: the city is generated hour by hour (all institutions, then the next hour); lines are
  written as soon as no later record can arrive before them. Memory holds the institutions' state
  (stocked batches, counters) and the records still "in flight", never the run.
* **Clean background**: every background settlement line has matching 3505 sales (quantities add up,
  possibly across two batches), one 20-digit trace code per whole pack, an e-prescription uploaded
  before it when a line is Rx or it is pharmacy 门诊统筹; prices equal for insured and self-pay
  customers, ≤ the listed price and within 5 % of the regional standard; 门诊统筹 benefit within the
  60 %/68 % cap (EZ-CONV 二); only the services the institution's tier allows; stock replenished before
  it runs out (new batches become sellable only after their purchase record has arrived); upload
  delays mostly seconds to minutes with a tail of up to 8 hours (never > 24 h).
* **Plants** (``plants.py``) force specific transactions on chosen institutions and days and write one
  label per violation (and per look-alike) with the expected tickets.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from monitor.clock import CST
from monitor.simulate.catalogue import DrugInfo, Person, build_catalogue, money, person
from monitor.simulate.city import Batch, Inst, build_institutions
from monitor.simulate.writer import ArrivalWriter, dumps

HOUR = 3600
DAY = 86400
#: Generation slice (seconds): lines arriving before a slice's end are written when it is done.
SLICE = 900

#: Hourly shape of demand (index = hour of day): morning and early-evening peaks.
HOUR_WEIGHT: tuple[float, ...] = (
    0, 0, 0, 0, 0, 0, 0, 0.5, 1.0, 1.5, 1.6, 1.3, 0.9, 0.8, 1.0, 1.1, 1.2, 1.3, 1.5, 1.4, 1.0, 0.7, 0.4, 0,
)

PROFILES: dict[str, dict[str, Any]] = {
    # Ezhou: ~1 M people, a few hundred institutions, ~10^5 records a day at scale 1; ungraded institutions
    # beside both tier schemes (tier.not_entitled is borrowed from XY and LN).
    "ezhou": {"admdvs": "420700", "institutions": 300, "pack": "ezhou", "scheme": None},
    # The three other regions, each judged by its own pack with its own plants (plants.py): every
    # institution graded by the region's scheme (XY-TIER 第十七条 grades every existing one; LN-TIER 二),
    # none for autonomous-region (AR-AGR grades nothing). The city itself (districts, names, volumes) is
    # the same synthetic city; only the admdvs of its people and the grading change.
    "xianyang": {"admdvs": "610400", "institutions": 300, "pack": "xianyang", "scheme": "XY",
                 "districts": ("610402", "610403", "610404"), "city_name": "咸阳"},
    "liaoning": {"admdvs": "210100", "institutions": 300, "pack": "liaoning", "scheme": "LN",
                 "districts": ("210102", "210103", "210104"), "city_name": "沈阳"},
    # AR-AGR names no region; an autonomous region's capital stands in (the pack's region is "" = any)
    "autonomous-region": {"admdvs": "150100", "institutions": 300, "pack": "autonomous-region",
                          "scheme": "none", "districts": ("150102", "150103", "150104"), "city_name": "呼和浩特"},
}


def _city_options(profile: str) -> dict[str, Any]:
    """The profile's grading, districts and city name for ``build_institutions`` (Ezhou: the defaults)."""
    prof = PROFILES[profile]
    return {k: prof[k] for k in ("scheme", "districts", "city_name") if prof.get(k) is not None}


@dataclass
class SimConfig:
    out: Path
    profile: str = "ezhou"
    days: int = 60
    seed: int = 7
    institutions: int | None = None
    start: date = date(2026, 1, 1)
    scale: float = 1.0
    plants: bool = True

    @property
    def n_institutions(self) -> int:
        return self.institutions if self.institutions is not None else int(PROFILES[self.profile]["institutions"])


@dataclass
class SimResult:
    out: Path
    counts: dict[str, int]
    labels: int
    peak_in_flight: int

    @property
    def records(self) -> int:
        return sum(self.counts.values())


@dataclass
class Tx:
    """A forced transaction (a plant or a look-alike): ``kind`` is ``settle`` or ``selfpay``; ``opts``
    override the random choices of ``City.settle`` / ``City.selfpay``."""

    t: int
    kind: str
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class DayMods:
    """Whole-day misbehaviour of one institution (counter-based, so ratios are exact, not random)."""

    late_every: int = 0  # every n-th upload record of the day is late (> 24 h)
    late_first: int = 0  # only the first n upload records of the day are late
    late_settlements_only: bool = False  # lateness applies to settlement records only (exact counts)
    missing_sale_every: int = 0  # every n-th settlement line has no 3505 sale (data.incomplete)
    trace_missing_every: int = 0  # every n-th insured whole-pack sale has no trace codes
    no_rx_every: int = 0  # every n-th prescription-requiring settlement has no prescription uploaded
    no_rx_kind: str = "none"  # "none": no hi_rxno at all (the settler's failure); "missing": cited, never uploaded
    no_scans: bool = False  # no trace-code scan of the day's sales is uploaded at all (a silent stream)
    no_upload_time_every: int = 0  # every n-th insured 3505 sale of the day is uploaded without inf_time
    counter: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str, every: int) -> bool:
        if every <= 0:
            return False
        n = self.counter.get(name, 0) + 1
        self.counter[name] = n
        return n % every == 0


#: `` HH:MM:SS`` for every second of a day (timestamps are formatted a few times per record).
_CLOCK: tuple[str, ...] = tuple(f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY))


def _qty(quarters: int) -> str:
    """A pack quantity as NHSA sends it: ``2`` for whole packs, ``0.25``/``0.5``/``0.75`` for 拆零."""
    if quarters % 4 == 0:
        return str(quarters // 4)
    return str(Decimal(quarters) / 4)


class City:
    """The city's state while generating. Times are integer seconds since ``start`` 00:00 CST."""

    def __init__(self, cfg: SimConfig, writer: ArrivalWriter) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.w = writer
        self.city_admdvs = str(PROFILES[cfg.profile]["admdvs"])
        self.drugs: list[DrugInfo] = build_catalogue(self.rng)
        self.high_value = [d.index for d in self.drugs if d.high_value]
        self.insts: list[Inst] = build_institutions(self.rng, cfg.n_institutions, cfg.start, len(self.drugs),
                                                    self.high_value, cfg.scale,
                                                    **_city_options(cfg.profile))
        self.clinics = [i for i in self.insts if not i.is_pharmacy] or self.insts[:1]
        self.population = max(3000, 200 * len(self.insts))
        self.trace_serial: list[int] = [0] * len(self.drugs)
        self.day_names = [(cfg.start + timedelta(days=d)).isoformat() for d in range(cfg.days + 40)]
        self.forced: dict[tuple[int, int, int], list[Tx]] = {}  # (inst, day, hour) → forced transactions
        self.mods: dict[tuple[int, int], DayMods] = {}  # (inst, day) → misbehaviour
        self.findings: dict[int, list[dict[str, Any]]] = {}  # day → findings to upload that day
        self.sold: dict[tuple[int, int], list[tuple[int, str]]] = {}  # (inst, day) → (drug, code) sold
        self.watch_sold: set[tuple[int, int]] = set()
        self.findings_seq = 0
        #: day → registry entries uploaded that day (a renewal mid-term), pushed like findings
        self.registry_updates: dict[int, list[dict[str, Any]]] = {}
        self.day = 0
        self._price_factor_choices = (Decimal("0.95"), Decimal("0.97"), Decimal("1.03"), Decimal("1.05"))
        for inst in self.insts:
            chain = "（" in inst.name
            for d in inst.drugs:
                std = self.drugs[d].standard_price
                if chain or self.rng.random() < 0.75:
                    inst.price[d] = std
                else:
                    inst.price[d] = money(std * self._price_factor_choices[self.rng.randrange(4)])

    # --------------------------------------------------------------------------------------- time
    def ts(self, t: int) -> str:
        """Seconds since start → ``yyyy-MM-dd HH:mm:ss`` (Asia/Shanghai)."""
        day, rem = divmod(t, DAY)
        return self.day_names[day] + _CLOCK[rem]

    def date_of(self, day: int) -> date:
        return self.cfg.start + timedelta(days=day)

    def delay(self) -> int:
        """Upload delay: 90 % within 5 minutes, 8 % within the hour, 2 % 1–8 hours."""
        u = self.rng.random()
        if u < 0.90:
            return self.rng.randint(2, 300)
        if u < 0.98:
            return self.rng.randint(300, HOUR)
        return self.rng.randint(HOUR, 8 * HOUR)

    def upload_delay(self, inst: Inst, t: int, stream: str = "inventory") -> int:
        """Delay of a settlement/inventory/trace record; planted days make some of them late
        (25–34 h, and always before that business day is first judged at day end + 24 h)."""
        mods = self.mods.get((inst.index, t // DAY))
        if mods is not None and (mods.late_every or mods.late_first) and (
                stream == "settlements" or not mods.late_settlements_only):
            n = mods.counter.get("late_seen", 0) + 1
            mods.counter["late_seen"] = n
            late = (mods.late_every and n % mods.late_every == 0) or (mods.late_first and n <= mods.late_first)
            if late:
                judge_at = (t // DAY + 2) * DAY
                hi = max(25 * HOUR, min(34 * HOUR, judge_at - t - HOUR))
                return self.rng.randint(25 * HOUR, hi)
        return self.delay()

    def resend(self, stream: str, arrival: int, rec: dict[str, Any]) -> None:
        """At-least-once upstream: a few records arrive twice (same content, a little later)."""
        if self.rng.random() < 0.004:
            again = dict(rec)
            again["inf_time"] = self.ts(arrival + self.rng.randint(30, 900))
            self.w.push(stream, self._arrival_of(again), again)

    def _arrival_of(self, rec: dict[str, Any]) -> int:
        text = rec["inf_time"]
        moment = datetime.fromisoformat(text).replace(tzinfo=CST)
        return int((moment - datetime.combine(self.cfg.start, datetime.min.time(), tzinfo=CST)).total_seconds())

    # --------------------------------------------------------------------------------------- people
    def pick_person(self, pred: Callable[[Person], bool] | None = None) -> Person:
        start = self.rng.randrange(self.population)
        for k in range(self.population):  # a scan from a random person: rare kinds are found too
            p = person((start + k) % self.population, self.city_admdvs)
            if pred is None or pred(p):
                return p
        raise RuntimeError("no person matches")  # pragma: no cover - predicates are satisfiable

    # --------------------------------------------------------------------------------------- stock
    def new_batch(self, inst: Inst, d: int, packs: int, available_from: int) -> Batch:
        inst.batch_seq += 1
        drug = self.drugs[d]
        start = self.trace_serial[d]
        self.trace_serial[d] += packs
        b = Batch(bchno=f"B{inst.code}{inst.batch_seq:05d}", lot=f"L{drug.index:03d}{inst.batch_seq:05d}",
                  next_serial=start, end_serial=start + packs, available_from=available_from)
        inst.stock.setdefault(d, []).append(b)
        return b

    def code_of(self, d: int, serial: int) -> str:
        return f"{self.drugs[d].trace_prefix}{serial:012d}"

    def opening_stock(self) -> None:
        """A 3501 stocktake of every batch at the start (the balance baseline), uploaded before opening."""
        for inst in self.insts:
            for d in inst.drugs:
                packs = 3 + self.rng.randrange(3) if self.drugs[d].high_value else 20 + self.rng.randrange(40)
                self.new_batch(inst, d, packs, 0)
        self.stocktakes(0)

    def stocktakes(self, day: int) -> None:
        """Every institution's stocktake, uploaded one after another between 06:00 and 06:30 (in
        institution order, so each is written out at once and memory stays bounded)."""
        n = len(self.insts)
        for inst in self.insts:
            t = day * DAY + 6 * HOUR + (inst.index * 1800) // n
            self.stocktake(inst, day, t)
            self.w.advance(t)

    def stocktake(self, inst: Inst, day: int, t: int) -> None:
        for d, batches in inst.stock.items():
            for b in batches:
                rec = {
                    "infno": "3501", "fixmedins_code": inst.code, "med_list_codg": self.drugs[d].med_list_codg,
                    "fixmedins_hilist_id": f"YP{d:04d}", "fixmedins_bchno": b.bchno, "manu_lotnum": b.lot,
                    "rx_flag": self.drugs[d].rx_flag, "invdate": self.day_names[day],
                    "inv_cnt": _qty(b.quarters()), "inf_time": self.ts(t),
                }
                self.w.push("inventory", t, rec)

    def restock(self, inst: Inst, d: int, t: int) -> None:
        """Buy a new batch when whole packs run low: 3503 + one stock-in scan per pack."""
        have = sum(b.whole for b in inst.stock.get(d, ()))
        drug = self.drugs[d]
        low = 2 if drug.high_value else 12
        if have >= low:
            return
        packs = 3 + self.rng.randrange(3) if drug.high_value else 30 + self.rng.randrange(40)
        arrival = t + self.delay()
        b = self.new_batch(inst, d, packs, arrival + 60)
        inst.stock[d] = [x for x in inst.stock[d] if x.quarters() > 0 or x is b]
        rec = {
            "infno": "3503", "fixmedins_code": inst.code, "med_list_codg": drug.med_list_codg,
            "fixmedins_hilist_id": f"YP{d:04d}", "fixmedins_bchno": b.bchno, "manu_lotnum": b.lot,
            "finl_trns_pric": str(money(drug.standard_price * Decimal("0.7"))), "rx_flag": drug.rx_flag,
            "purc_retn_stoin_time": self.ts(t), "purc_retn_cnt": str(packs), "inf_time": self.ts(arrival),
        }
        self.w.push("inventory", arrival, rec)
        for serial in range(b.next_serial, b.end_serial):
            scan = {
                "drug_trac_codg": self.code_of(d, serial), "fixmedins_code": inst.code,
                "med_list_codg": drug.med_list_codg, "scan_kind": "stock_in", "trdn_flag": "0",
                "scan_time": self.ts(t), "fixmedins_bchno": b.bchno, "inf_time": self.ts(arrival),
            }
            self.w.push("tracecodes", arrival, scan)

    def take(self, inst: Inst, d: int, quarters: int, t: int, whole: bool
             ) -> list[tuple[Batch, int, list[str]]] | None:
        """Take stock for a sale: FIFO over sellable batches; whole packs pop their trace codes.
        Returns [(batch, quarters, codes)] or None when the drug is out of stock."""
        batches = [b for b in inst.stock.get(d, ()) if b.available_from <= t and b.quarters() > 0]
        batches.sort(key=lambda b: not b.returned)  # returned packs go back to the front of the shelf
        if sum((b.whole_at(t) * 4 if whole else b.quarters() - 4 * (b.whole - b.whole_at(t))) for b in batches
               ) < quarters:
            return None
        out: list[tuple[Batch, int, list[str]]] = []
        need = quarters
        for b in batches:
            if need <= 0:
                break
            if whole:
                n = min(need // 4, b.whole_at(t))
                if n <= 0:
                    continue
                codes = []
                for _ in range(n):
                    back = b.pop_returned(t)
                    if back is not None:
                        codes.append(back)
                    else:
                        codes.append(self.code_of(d, b.next_serial))
                        b.next_serial += 1
                out.append((b, n * 4, codes))
                need -= n * 4
            else:
                got = 0
                while got < need and (b.open_quarters > 0 or b.whole_at(t) > 0):
                    if b.open_quarters == 0:
                        if b.pop_returned(t) is None:
                            b.next_serial += 1
                        b.open_quarters = 4
                    k = min(need - got, b.open_quarters)
                    b.open_quarters -= k
                    got += k
                if got:
                    out.append((b, got, []))
                    need -= got
        return out

    # --------------------------------------------------------------------------------------- records
    def sale_record(self, inst: Inst, d: int, b: Batch, quarters: int, t: int, arrival: int, price: Decimal,
                    docno: str, insured: bool, whole: bool, setl_id: str | None = None,
                    p: Person | None = None, rxno: str | None = None, infno: str = "3505") -> dict[str, Any]:
        drug = self.drugs[d]
        rec: dict[str, Any] = {
            "infno": infno, "fixmedins_code": inst.code, "med_list_codg": drug.med_list_codg,
            "fixmedins_hilist_id": f"YP{d:04d}", "fixmedins_bchno": b.bchno, "manu_lotnum": b.lot,
            "rx_flag": drug.rx_flag, "trdn_flag": "0" if whole else "1", "finl_trns_pric": str(price),
            "sel_retn_cnt": _qty(quarters), "sel_retn_time": self.ts(t), "rtal_docno": docno,
            "mdtrt_setl_type": "1" if insured else "2",
        }
        if insured and p is not None:
            rec.update(setl_id=setl_id, psn_no=p.psn_no, certno=p.certno, psn_name=p.psn_name)
        if rxno:
            rec["rxno"] = rxno
        rec["inf_time"] = self.ts(arrival)
        return rec

    def scan_record(self, inst: Inst, d: int, code: str, kind: str, t: int, arrival: int, docno: str,
                    bchno: str, setl_id: str | None) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "drug_trac_codg": code, "fixmedins_code": inst.code, "med_list_codg": self.drugs[d].med_list_codg,
            "scan_kind": kind, "trdn_flag": "0", "scan_time": self.ts(t), "rtal_docno": docno,
            "fixmedins_bchno": bchno,
        }
        if setl_id:
            rec["setl_id"] = setl_id
        rec["inf_time"] = self.ts(arrival)
        return rec

    def prescription(self, issuer: Inst, p: Person, lines: list[tuple[int, int]], t: int, frontier: int,
                     medc_days: int | None = None, arrival: int | None = None) -> tuple[str, dict[str, Any], int]:
        """An e-prescription (7101) issued a little before ``t``, uploaded before the settlement."""
        issuer.rx_seq += 1
        hi_rxno = f"RX{issuer.code}{issuer.rx_seq:07d}"
        prsc = t - self.rng.randint(180, 3 * HOUR)
        up = max(prsc + self.rng.randint(5, 120), frontier) if arrival is None else arrival
        details = []
        for d, quarters in lines:
            days = medc_days if medc_days is not None else self.rng.choice((3, 5, 7, 7, 14, 28, 30))
            details.append({"med_list_codg": self.drugs[d].med_list_codg,
                            "drug_cnt": _qty(max(quarters, 1)), "medc_days": days})
        rec = {
            "hi_rxno": hi_rxno, "hosp_rxno": f"HR{issuer.rx_seq:08d}", "fixmedins_code": issuer.code,
            "psn_no": p.psn_no, "certno": p.certno, "psn_name": p.psn_name, "prsc_time": self.ts(prsc),
            "valid_end_time": self.ts(prsc + 3 * DAY), "rx_status": "uploaded", "rxdrugdetail": details,
            "inf_time": self.ts(up),
        }
        return hi_rxno, rec, up

    # --------------------------------------------------------------------------------------- transactions
    def settle(self, inst: Inst, t: int, frontier: int, opts: dict[str, Any]) -> None:
        """One insured settlement with its 3505 sales, trace scans and (when needed) prescription.

        ``opts`` (set by plants; random otherwise): ``person``, ``med_type``, ``pooling`` (门诊统筹 or
        not), ``lines`` [(drug, packs)], ``prices`` {drug: insured unit price}, ``split`` (one 拆零 line of
        that drug), ``hifp_ratio`` (share of the in-scope amount the fund pays), ``rx`` (``missing``: the
        prescription is never uploaded; ``late``: uploaded 30 h after), ``medc_days``, ``dup_from`` (scan
        a code another sale already scanned), ``revoke`` (2103 + 3506 once the upload has arrived),
        ``force`` (settle even while a sanction is expected in force).
        """
        day = t // DAY
        services = inst.services()
        if inst.restricted(day, "insured") and not opts.get("force"):
            return self.selfpay(inst, t, frontier, {})
        mods = self.mods.get((inst.index, day))
        # -- who and what kind of settlement
        if "person" in opts:
            p = opts["person"]
        else:
            remote_ok = "remote" in services
            p = self.pick_person(None if remote_ok else (lambda q: q.insuplc_admdvs == self.city_admdvs))
        med_type = opts.get("med_type")
        pooling = opts.get("pooling")
        if med_type is None:
            if "chronic" in services and p.insutype == "310" and self.rng.random() < 0.06:
                med_type = "14"
            else:
                med_type = "41" if inst.is_pharmacy else "11"
        if pooling is None:
            pooling = (med_type in ("41", "11") and "pooling" in services and inst.pooling
                       and not inst.restricted(day, "pooling") and self.rng.random() < 0.35)
        if med_type == "14" and inst.restricted(day, "pooling") and not opts.get("force"):
            med_type = "41" if inst.is_pharmacy else "11"
        # -- drug lines: (drug, quarters, whole, price)
        lines: list[tuple[int, int, bool, Decimal]] = []
        if "dup_from" in opts:
            src = opts["dup_from"]
            sold = [x for x in self.sold.get((src.inst, src.day), []) if x[0] in inst.price]
            if not sold:
                return None
            d, code = sold[0]
            opts = {**opts, "lines": [(d, 1)], "dup_code": code, "pooling": False}
        if "split" in opts:
            d = opts["split"]
            lines.append((d, 2, False, inst.price[d]))
        elif "lines" in opts:
            for d, packs in opts["lines"]:
                lines.append((d, packs * 4, True, opts.get("prices", {}).get(d, inst.price[d])))
        else:
            ordinary = [d for d in inst.drugs if not self.drugs[d].high_value]
            if "special" in services and inst.special and self.rng.random() < 0.02:
                hv = [d for d in inst.drugs if self.drugs[d].high_value]
                d = hv[self.rng.randrange(len(hv))]
                lines.append((d, 4, True, inst.price[d]))
            for _ in range(1 + (self.rng.random() < 0.45) + (self.rng.random() < 0.15)):
                d = ordinary[self.rng.randrange(len(ordinary))]
                if any(x[0] == d for x in lines):
                    continue
                if self.rng.random() < 0.08 and not self.drugs[d].rx_flag == "1":
                    lines.append((d, self.rng.randint(1, 3), False, inst.price[d]))
                else:
                    lines.append((d, 4 * self.rng.choice((1, 1, 1, 2, 2, 3)), True, inst.price[d]))
        # -- take stock
        taken: list[tuple[int, int, bool, Decimal, list[tuple[Batch, int, list[str]]]]] = []
        for d, quarters, whole, price in lines:
            parts = self.take(inst, d, quarters, t, whole)
            if parts is None:
                self.restock(inst, d, t)
                continue
            taken.append((d, quarters, whole, price, parts))
            self.restock(inst, d, t)
        if not taken:
            return None
        if opts.get("dup_code"):
            codes0 = taken[0][4][0][2]
            codes0[0] = opts["dup_code"]  # planted: a code already sold is scanned again
        # -- money (EZ-CONV 二 caps: 60 % in service, 68 % retired, of the in-scope amount)
        details = []
        total = Decimal("0")
        for i, (d, quarters, _whole, price, _parts) in enumerate(taken, start=1):
            amt = money(price * quarters / 4)
            total += amt
            details.append({"feedetl_sn": str(i), "med_list_codg": self.drugs[d].med_list_codg,
                            "cnt": _qty(quarters), "pric": str(price), "det_item_fee_sumamt": str(amt),
                            "rx_flag": self.drugs[d].rx_flag, "trdn_flag": "0" if _whole else "1"})
        inscp = total
        hifp = Decimal("0.00")
        if pooling or med_type == "14":
            if "hifp_ratio" in opts:
                ratio = Decimal(opts["hifp_ratio"])
            elif med_type == "14":
                ratio = Decimal("0.65")
            elif p.insutype == "390":
                ratio = Decimal("0.50")
            else:
                cap = Decimal("0.68") if p.retired else Decimal("0.60")
                ratio = cap if self.rng.random() < 0.5 else cap - Decimal("0.05")
            hifp = (inscp * ratio).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
            if hifp <= 0:
                hifp = Decimal("0.00")
                pooling = False
        rest = inscp - hifp
        acct = rest if p.insutype == "310" and self.rng.random() < 0.8 else Decimal("0.00")
        cash = rest - acct
        inst.setl_seq += 1
        inst.doc_seq += 1
        setl_id = f"ST{inst.code}{inst.setl_seq:07d}"
        docno = f"RD{inst.code}{inst.doc_seq:07d}"
        needs_rx = any(self.drugs[d].rx_flag == "1" for d, *_ in taken) or (
            inst.is_pharmacy and med_type == "41" and hifp > 0)
        hi_rxno = None
        if needs_rx:
            issuer = inst if not inst.is_pharmacy else opts.get("issuer") or self.clinics[
                self.rng.randrange(len(self.clinics))]
            rx_lines = [(d, q) for d, q, *_ in taken]
            miss = opts.get("rx") or (
                mods.no_rx_kind if mods is not None and mods.hit("no_rx", mods.no_rx_every) else None)
            if miss == "none":
                hi_rxno = None  # settled without any prescription reference
            elif miss == "missing":
                issuer.rx_seq += 1
                hi_rxno = f"RX{issuer.code}{issuer.rx_seq:07d}"  # never uploaded
            elif miss == "late":
                hi_rxno, rx_rec, up = self.prescription(issuer, p, rx_lines, t, frontier,
                                                        arrival=t + 30 * HOUR)
                self.w.push("prescriptions", up, rx_rec)
            else:
                hi_rxno, rx_rec, up = self.prescription(issuer, p, rx_lines, t, frontier,
                                                        medc_days=opts.get("medc_days"))
                self.w.push("prescriptions", up, rx_rec)
        arrival = t + self.upload_delay(inst, t, "settlements")
        setl: dict[str, Any] = {
            "setl_id": setl_id, "mdtrt_id": f"MD{inst.code}{inst.setl_seq:07d}", "fixmedins_code": inst.code,
            "psn_no": p.psn_no, "certno": p.certno, "psn_name": p.psn_name, "insutype": p.insutype,
            "psn_type": p.psn_type, "med_type": med_type, "setl_time": self.ts(t), "medfee_sumamt": str(total),
            "inscp_scp_amt": str(inscp), "hifp_pay": str(hifp), "fund_pay_sumamt": str(hifp),
            "acct_pay": str(acct), "psn_cash_pay": str(cash), "setl_status": "settled",
            "insuplc_admdvs": p.insuplc_admdvs, "drugdetail": details,
        }
        if hi_rxno:
            setl["hi_rxno"] = hi_rxno
        setl["inf_time"] = self.ts(arrival)
        self.w.push("settlements", arrival, setl)
        self.resend("settlements", arrival, setl)
        # -- 3505 sales and trace codes
        last_arrival = arrival
        for d, _quarters, whole, price, parts in taken:
            if mods is not None and mods.hit("missing_sale", mods.missing_sale_every):
                continue  # planted: the sale is never uploaded (EZ-DM 二(二))
            no_trace = whole and mods is not None and mods.hit("trace_missing", mods.trace_missing_every)
            for b, q, codes in parts:
                s_arr = t + self.upload_delay(inst, t)
                last_arrival = max(last_arrival, s_arr)
                sale = self.sale_record(inst, d, b, q, t, s_arr, price, docno, True, whole, setl_id, p, hi_rxno)
                if mods is not None and mods.hit("no_upload_time", mods.no_upload_time_every):
                    del sale["inf_time"]  # planted: uploaded without its upload time (design §2 silence)
                self.w.push("inventory", s_arr, sale)
                self.resend("inventory", s_arr, sale)
                if no_trace or (mods is not None and mods.no_scans):
                    continue
                for code in codes:
                    self.w.push("tracecodes", s_arr, self.scan_record(inst, d, code, "sale", t, s_arr, docno,
                                                                     b.bchno, setl_id))
                    if (inst.index, day) in self.watch_sold:
                        self.sold.setdefault((inst.index, day), []).append((d, code))
        if opts.get("revoke"):
            # revoked once the original has been uploaded, so the platform sees sale → return → resale
            self.revoke(inst, setl, taken, max(t + 20 * 60, last_arrival + 60), docno)
        return None

    def revoke(self, inst: Inst, setl: dict[str, Any], taken: list[Any], t: int, docno: str) -> None:
        """2103 revocation + 3506 sale returns + ``sale_return`` scans; codes go back on the shelf."""
        rev = dict(setl)
        rev["setl_status"] = "revoked"
        rev["inf_time"] = self.ts(t + 30)
        self.w.push("settlements", t + 30, rev)
        for d, _quarters, whole, price, parts in taken:
            for b, q, codes in parts:
                ret = self.sale_record(inst, d, b, q, t, t + 40, price, docno, True, whole, setl["setl_id"],
                                       None, None, infno="3506")
                ret.update(psn_no=setl["psn_no"], setl_id=setl["setl_id"])
                self.w.push("inventory", t + 40, ret)
                for code in codes:
                    self.w.push("tracecodes", t + 40,
                                self.scan_record(inst, d, code, "sale_return", t, t + 40, docno, b.bchno,
                                                 setl["setl_id"]))
                if whole:
                    b.returned.extend((t + 40, code) for code in codes)
                else:
                    b.open_quarters += q

    def breakage(self, inst: Inst, t: int) -> None:
        """A 3502 stock change ``104`` 盘损: one damaged pack written off (its code is never sold)."""
        ordinary = [d for d in inst.drugs if not self.drugs[d].high_value]
        d = ordinary[self.rng.randrange(len(ordinary))]
        batches = [b for b in inst.stock.get(d, ()) if b.available_from <= t and b.whole_at(t) >= 5]
        if not batches:
            return
        b = batches[0]
        if b.pop_returned(t) is None:
            b.next_serial += 1
        arrival = t + self.delay()
        drug = self.drugs[d]
        self.w.push("inventory", arrival, {
            "infno": "3502", "fixmedins_code": inst.code, "med_list_codg": drug.med_list_codg,
            "fixmedins_hilist_id": f"YP{d:04d}", "fixmedins_bchno": b.bchno, "inv_chg_type": "104",
            "pric": str(inst.price[d]), "cnt": "1", "rx_flag": drug.rx_flag, "trdn_flag": "0",
            "inv_chg_time": self.ts(t), "inf_time": self.ts(arrival),
        })

    def selfpay(self, inst: Inst, t: int, frontier: int, opts: dict[str, Any]) -> None:
        """A self-pay (mdtrt_setl_type 2) retail sale at the shelf price, scanned like any sale."""
        if not opts and self.rng.random() < 0.01:
            self.breakage(inst, t)
        if "lines" in opts:
            lines = [(d, packs * 4, True) for d, packs in opts["lines"]]
        else:
            ordinary = [d for d in inst.drugs if not self.drugs[d].high_value]
            d = ordinary[self.rng.randrange(len(ordinary))]
            whole = self.rng.random() >= 0.1
            lines = [(d, 4 * self.rng.choice((1, 1, 2)) if whole else self.rng.randint(1, 3), whole)]
        inst.doc_seq += 1
        docno = f"RD{inst.code}{inst.doc_seq:07d}"
        for d, quarters, whole in lines:
            if opts.get("phantom"):
                # planted negative stock: a sale of more than the batch holds (EZ-DM 二(二) 虚假)
                batches = [b for b in inst.stock.get(d, ()) if b.available_from <= t and b.quarters() > 0]
                if not batches:
                    continue
                b = batches[0]
                q = b.quarters() + 12
                inst.stock[d] = [x for x in inst.stock[d] if x is not b]
                arrival = t + self.delay()
                self.w.push("inventory", arrival, self.sale_record(inst, d, b, q, t, arrival, inst.price[d],
                                                                   docno, False, True))
                self.restock(inst, d, t)
                continue
            parts = self.take(inst, d, quarters, t, whole)
            self.restock(inst, d, t)
            if parts is None:
                continue
            price = opts.get("prices", {}).get(d, inst.price[d])
            for b, q, codes in parts:
                arrival = t + self.upload_delay(inst, t)
                sale = self.sale_record(inst, d, b, q, t, arrival, price, docno, False, whole)
                self.w.push("inventory", arrival, sale)
                self.resend("inventory", arrival, sale)
                day_mods = self.mods.get((inst.index, t // DAY))
                for code in codes if day_mods is None or not day_mods.no_scans else ():
                    self.w.push("tracecodes", arrival,
                                self.scan_record(inst, d, code, "sale", t, arrival, docno, b.bchno, None))

    def finding(self, inst: Inst, day: int, kind: str, note: str, resend: bool = False,
                arrive: int | None = None, ref_ticket_id: str | None = None) -> dict[str, Any]:
        """A finding that occurred on ``day`` and is uploaded on ``arrive`` (default the same day; a later
        day makes it arrive out of order)."""
        self.findings_seq += 1
        up = day if arrive is None else arrive
        rec = {"finding_id": f"FD{self.cfg.start.year}{self.findings_seq:06d}", "fixmedins_code": inst.code,
               "kind": kind, "occurred_at": f"{self.day_names[day]} 10:00:00", "note": note,
               "inf_time": f"{self.day_names[up]} 10:05:00"}
        if ref_ticket_id is not None:
            rec["ref_ticket_id"] = ref_ticket_id
        self.findings.setdefault(up, []).append(rec)
        if resend:
            again = dict(rec)
            again["inf_time"] = f"{self.day_names[day]} 10:35:00"
            self.findings[up].append(again)
        return rec

    def registry_update(self, inst: Inst, day: int, **over: Any) -> None:
        """Upload a new registry entry of ``inst`` on ``day`` (valid from that day), e.g. a renewal."""
        rec = dict(inst.record(f"{self.day_names[day]} 00:00:00"))
        rec.update({k: v.isoformat() if isinstance(v, date) else v for k, v in over.items()})
        rec["inf_time"] = f"{self.day_names[day]} 10:01:00"
        self.registry_updates.setdefault(day, []).append(rec)

    # --------------------------------------------------------------------------------------- the run
    def run_hour(self, day: int, hour: int, weekday: int) -> None:
        """One hour of the city, in ``SLICE``-second slices: every institution's transactions of the
        slice, then every line arriving before the slice's end is written out."""
        month_start = self.date_of(day).day <= 3
        for q in range(HOUR // SLICE):
            base = day * DAY + hour * HOUR + q * SLICE
            end = base + SLICE
            for inst in self.insts:
                planned = self.forced.get((inst.index, day, hour))
                forced = [tx for tx in planned if base <= tx.t < end] if planned else []
                is_open = inst.open_hour <= hour < inst.close_hour
                if not is_open and not forced:
                    continue
                events: list[Tx] = forced
                if is_open:
                    weight = HOUR_WEIGHT[hour]
                    if inst.is_pharmacy:
                        weight *= 1.15 if weekday >= 5 else 1.0
                    else:
                        weight *= 0.6 if weekday >= 5 else 1.0
                    if month_start:
                        weight *= 1.25
                    lam = inst.rate * (1 + inst.selfpay_ratio) * weight / max(inst.close_hour - inst.open_hour, 1)
                    share = inst.selfpay_ratio / (1 + inst.selfpay_ratio)
                    t = float(base)
                    while lam > 0:
                        t += self.rng.expovariate(lam / HOUR)
                        if t >= end:
                            break
                        kind = "selfpay" if self.rng.random() < share else "settle"
                        events.append(Tx(int(t), kind, {"revoke": self.rng.random() < 0.003}))
                    if forced:
                        events.sort(key=lambda e: e.t)
                for ev in events:
                    if ev.kind == "settle":
                        self.settle(inst, ev.t, base, ev.opts)
                    else:
                        self.selfpay(inst, ev.t, base, ev.opts)
            if hour == 10 and q == 0:
                for rec in self.registry_updates.get(day, []):
                    self.w.push("institutions", self._arrival_of(rec), rec)
                for rec in self.findings.get(day, []):
                    self.w.push("findings", self._arrival_of(rec), rec)
            self.w.advance(end)

    def run(self) -> None:
        cfg = self.cfg
        for d in self.drugs:
            self.w.write_now("drugs", d.record())
        valid_from = f"{(cfg.start - timedelta(days=31)).isoformat()} 00:00:00"
        for inst in self.insts:
            self.w.write_now("institutions", inst.record(valid_from))
        self.opening_stock()
        for day in range(cfg.days):
            self.day = day
            if day > 0 and self.date_of(day).day == 1:
                self.stocktakes(day)
            weekday = self.date_of(day).weekday()
            for hour in range(6, 24):
                self.run_hour(day, hour, weekday)


def simulate(cfg: SimConfig) -> SimResult:
    """Generate the city into ``cfg.out``: seven JSONL inputs + ``labels.jsonl``. See the module doc."""
    from monitor.simulate.plants import plant_all

    writer = ArrivalWriter(cfg.out)
    city = City(cfg, writer)
    labels = plant_all(city) if cfg.plants else []
    meta = {
        "kind": "meta", "profile": cfg.profile, "seed": cfg.seed, "institutions": len(city.insts),
        "days": cfg.days, "start": cfg.start.isoformat(),
        "end": (cfg.start + timedelta(days=cfg.days)).isoformat(),
        "as_of": f"{(cfg.start + timedelta(days=cfg.days)).isoformat()} 00:00:00",
    }
    try:
        city.run()
    finally:
        writer.close()
    with (cfg.out / "labels.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(dumps(meta) + "\n")
        for label in labels:
            fh.write(dumps(label) + "\n")
    return SimResult(cfg.out, dict(writer.counts), len(labels), writer.peak_in_flight)

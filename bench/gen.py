"""Benchmark input: the design §3 files for a city-month or a province-day slice.

``simulated_city_month`` runs the product's synthetic city (``monitor.simulate``, issue 3: realistic
traffic with planted violations) for the headline city-month replay and its peak RSS
(``source = "monitor.simulate"`` in the results). Its smallest city-month is ~1.4 × 10⁵ records (every
institution trades and the plants are there at any ``scale``), and a 10⁴-institution day starts with
~3.5 × 10⁵ opening-stocktake records, so the inputs whose *size* must be chosen — the province-day slice,
the 1×/4×/16× scaling series, the Kafka runs and the smoke test (``--records``) — come from
``generate`` below: the same files and field names, shaped like the traffic a city or a province sends
(design §1: a city ≈ a few hundred institutions and 10⁵ records/day; a province ≈ 10⁴ institutions
and 10⁷ records/day):

* every sale is an insured settlement (1–3 drug lines, 1–2 packs each) or a self-pay sale, with one 3505
  movement per line and one trace-code scan per pack (unique codes); 40 % of insured sales are 门诊统筹
  (fund pays half) and carry the same person's e-prescription (7101), uploaded just before;
* institutions start with a 3501 stocktake per drug batch and restock with 3503 purchases;
* uploads arrive 5–300 s after the business time; 3 % of institutions upload half a day's records
  30 h late one day a week (so the EZ-DM 二(一) ladder fires); 0.5 % of records are resent
  (at-least-once upstream, design §3).

A slice keeps the *shape* (institutions, days, mix) and scales the record count: ``records`` is the
budget, the density per institution-day follows from it. Output is deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.clock import CST


@dataclass(frozen=True)
class Shape:
    """What a slice looks like: how many institutions over how many days."""

    name: str
    institutions: int
    days: int
    start: date = date(2026, 3, 1)


CITY_MONTH = Shape("city-month", institutions=300, days=30)
PROVINCE_DAY = Shape("province-day", institutions=10_000, days=1)
SHAPES: dict[str, Shape] = {s.name: s for s in (CITY_MONTH, PROVINCE_DAY)}

#: Records one sale event yields on average (¾ settlement + ~1.6 sale lines + ~2.1 scans + ¼ rx).
_RECORDS_PER_EVENT = 4.7


@dataclass(frozen=True)
class InputInfo:
    folder: Path
    shape: str
    records: int
    by_stream: dict[str, int]
    source: str
    as_of: datetime


class _Clock:
    """Fast ``yyyy-MM-dd HH:mm:ss`` rendering of seconds since the slice start (strftime is slow)."""

    def __init__(self, start: date) -> None:
        self.start = datetime(start.year, start.month, start.day, tzinfo=CST)
        self._days: dict[int, str] = {}

    def fmt(self, secs: int) -> str:
        d, rem = divmod(secs, 86400)
        day = self._days.get(d)
        if day is None:
            day = self._days[d] = (self.start + timedelta(days=d)).strftime("%Y-%m-%d")
        h, rem = divmod(rem, 3600)
        m, s = divmod(rem, 60)
        return f"{day} {h:02d}:{m:02d}:{s:02d}"


def _write(folder: Path, stream: str, rows: list[tuple[int, int, dict[str, Any]]]) -> int:
    rows.sort(key=lambda r: (r[0], r[1]))
    with (folder / f"{stream}.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n" for _, _, rec in rows)
    return len(rows)


def generate(folder: Path, shape: Shape, records: int, seed: int = 7) -> InputInfo:
    """Write ``institutions/drugs/settlements/inventory/tracecodes/prescriptions.jsonl`` into ``folder``."""
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    clock = _Clock(shape.start)
    span = shape.days * 86400
    codes = [f"P4207{i:07d}" if i % 5 else f"H4207{i:07d}" for i in range(shape.institutions)]
    late = set(rnd.sample(codes, max(1, shape.institutions * 3 // 100)))
    drugs = [f"XA{i:02d}AAA{i:03d}" for i in range(40)]
    prices = {d: 10 + (i * 7) % 90 for i, d in enumerate(drugs)}
    seq = 0
    out: dict[str, list[tuple[int, int, dict[str, Any]]]] = {
        s: [] for s in ("settlements", "inventory", "tracecodes", "prescriptions")}

    def emit(stream: str, btime: int, rec: dict[str, Any], code: str, lag: int | None = None) -> None:
        nonlocal seq
        seq += 1
        arrival = btime + (lag if lag is not None else rnd.randint(5, 300))
        if code in late and btime // 86400 % 7 == 3 and rnd.random() < 0.5:  # one bad upload day a week
            arrival = btime + 30 * 3600
        rec["inf_time"] = clock.fmt(arrival)
        out[stream].append((arrival, seq, rec))
        if rnd.random() < 0.005:  # resent by an at-least-once upstream, a little later
            seq += 1
            again = dict(rec, inf_time=clock.fmt(arrival + 600))
            out[stream].append((arrival + 600, seq, again))

    # opening stocktake (3501) of the institutions' batches on the first day; a slice keeps it to ≤ 10 % of
    # its budget (a province-day slice has 10⁴ institutions but a fiftieth of a province's records)
    batches_per_inst = 4
    for code in codes[: max(1, records // 10 // batches_per_inst)]:
        for b in range(batches_per_inst):
            drug = drugs[(int(code[5:]) + b * 11) % len(drugs)]
            emit("inventory", 60 + b, {
                "infno": "3501", "fixmedins_code": code, "med_list_codg": drug, "fixmedins_hilist_id": f"H{drug}",
                "fixmedins_bchno": f"{code}-B{b}", "invdate": shape.start.isoformat(), "inv_cnt": "500",
            }, code, lag=120)

    events = max(1, int(max(0, records - len(out["inventory"]) - shape.institutions) / _RECORDS_PER_EVENT))
    n_trace = 0
    for ev in range(events):
        code = codes[rnd.randrange(len(codes))]
        t = rnd.randrange(8 * 3600, span - 3600) if shape.days == 1 else rnd.randrange(0, span - 3600)
        t = (t // 86400) * 86400 + 8 * 3600 + (t % 86400) % (13 * 3600)  # opening hours 08–21
        inst = int(code[5:])
        insured = rnd.random() < 0.75
        setl_id = f"S{ev:09d}"
        lines = []
        for ln, b in enumerate(rnd.sample(range(batches_per_inst), 1 + (rnd.random() < 0.4) + (rnd.random() < 0.2))):
            drug = drugs[(inst + b * 11) % len(drugs)]
            cnt = 1 + (rnd.random() < 0.3)
            lines.append((ln, b, drug, cnt))
        docno = f"R{ev:09d}"
        rxno = None
        pooling = insured and rnd.random() < 0.4  # 门诊统筹: needs an uploaded prescription (EZ-DM 二(三))
        psn_no = f"4200{ev % 99991:010d}"
        if pooling:
            rxno = f"RX{ev:09d}"
            emit("prescriptions", t - 120, {
                "hi_rxno": rxno, "hosp_rxno": f"HRX{ev:09d}", "fixmedins_code": f"H4207{(inst // 5) * 5:07d}",
                "psn_no": psn_no, "prsc_time": clock.fmt(t - 120),
                "valid_end_time": clock.fmt(t + 3 * 86400), "rx_status": "uploaded",
                "rxdrugdetail": [{"med_list_codg": d, "drug_cnt": str(c), "medc_days": 7} for _, _, d, c in lines],
            }, code)
        if insured:
            total = sum(prices[d] * c for _, _, d, c in lines)
            hifp = round(total * 0.5, 2) if pooling else 0
            emit("settlements", t, {
                "setl_id": setl_id, "mdtrt_id": f"M{ev:09d}", "fixmedins_code": code,
                "psn_no": psn_no, "certno": f"420702{1950 + ev % 50}0101{ev % 10000:04d}",
                "psn_name": "测试", "insutype": "310", "psn_type": "1101" if ev % 3 else "1201",
                "med_type": "41" if code[0] == "P" else "11", "setl_time": clock.fmt(t),
                "medfee_sumamt": f"{total:.2f}", "inscp_scp_amt": f"{total:.2f}", "hifp_pay": f"{hifp:.2f}",
                "acct_pay": f"{total - hifp:.2f}", "psn_cash_pay": "0.00", "setl_status": "settled",
                "hi_rxno": rxno, "insuplc_admdvs": "420702",
                "drugdetail": [{"feedetl_sn": str(ln + 1), "med_list_codg": d, "cnt": str(c),
                                "pric": f"{prices[d]:.2f}", "det_item_fee_sumamt": f"{prices[d] * c:.2f}",
                                "rx_flag": "0", "trdn_flag": "0"}
                               for ln, _, d, c in lines],
            }, code)
        for _ln, b, drug, cnt in lines:
            emit("inventory", t + 1, {
                "infno": "3505", "fixmedins_code": code, "med_list_codg": drug, "fixmedins_hilist_id": f"H{drug}",
                "fixmedins_bchno": f"{code}-B{b}", "sel_retn_time": clock.fmt(t + 1), "sel_retn_cnt": str(cnt),
                "finl_trns_pric": f"{prices[drug]:.2f}", "mdtrt_setl_type": "1" if insured else "2",
                "setl_id": setl_id if insured else None, "rtal_docno": docno, "trdn_flag": "0", "rx_flag": "0",
            }, code)
            for _ in range(cnt):
                n_trace += 1
                emit("tracecodes", t + 2, {
                    "drug_trac_codg": f"8{n_trace:019d}", "fixmedins_code": code, "med_list_codg": drug,
                    "scan_kind": "sale", "trdn_flag": "0", "scan_time": clock.fmt(t + 2),
                    "setl_id": setl_id if insured else None, "rtal_docno": docno, "fixmedins_bchno": f"{code}-B{b}",
                }, code)
        if rnd.random() < 0.01:  # restock
            b = rnd.randrange(batches_per_inst)
            drug = drugs[(inst + b * 11) % len(drugs)]
            emit("inventory", t + 5, {
                "infno": "3503", "fixmedins_code": code, "med_list_codg": drug, "fixmedins_hilist_id": f"H{drug}",
                "fixmedins_bchno": f"{code}-B{b}", "purc_retn_stoin_time": clock.fmt(t + 5), "purc_retn_cnt": "100",
                "finl_trns_pric": f"{prices[drug] * 0.7:.2f}",
            }, code)

    by_stream = {s: _write(folder, s, rows) for s, rows in out.items()}
    reg = [(0, i, {
        "fixmedins_code": c, "fixmedins_name": f"机构{c[-4:]}", "fixmedins_type": "2" if c[0] == "P" else "1",
        "admdvs": "420702", "outpatient_pooling": True, "agreement_start": "2026-01-01",
        "agreement_end": "2026-12-31", "designated_since": "2020-01-01", "tier": None, "tier_scheme": None,
        "valid_from": "2025-12-01 00:00:00"}) for i, c in enumerate(codes)]
    by_stream["institutions"] = _write(folder, "institutions", reg)
    by_stream["drugs"] = _write(folder, "drugs", [(0, i, {
        "med_list_codg": d, "name": f"药品{i}", "spec": "10片/盒", "listed_price": f"{prices[d] * 1.1:.2f}",
        "rx_flag": "0", "high_value": False}) for i, d in enumerate(drugs)])
    as_of = clock.start + timedelta(days=shape.days + 40)  # past every judgment and one-month ladder review
    info = InputInfo(folder, shape.name, sum(by_stream.values()), by_stream, "bench.gen", as_of)
    (folder / "manifest.json").write_text(json.dumps({
        "shape": shape.name, "records": info.records, "by_stream": by_stream, "source": info.source,
        "as_of": as_of.isoformat(), "seed": seed}, indent=1))
    return info


def load_or_generate(root: Path, shape: Shape, records: int, seed: int = 7) -> InputInfo:
    """Reuse a slice generated earlier with the same parameters (generation is not what we measure)."""
    folder = root / f"{shape.name}-{records}-{seed}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return InputInfo(folder, m["shape"], m["records"], m["by_stream"], m["source"],
                         datetime.fromisoformat(m["as_of"]))
    return generate(folder, shape, records, seed)


def simulated_city_month(root: Path, scale: float, seed: int = 7) -> InputInfo:
    """A city-month (300 institutions, 30 days from 2026-03-01) from ``monitor.simulate`` at ``scale``
    (1.0 = Ezhou's ~10⁵ records/day); reused when generated before with the same parameters."""
    from monitor.simulate.generator import SimConfig, simulate

    folder = root / f"sim-city-month-{scale:g}-{seed}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return InputInfo(folder, m["shape"], m["records"], m["by_stream"], m["source"],
                         datetime.fromisoformat(m["as_of"]))
    start = date(2026, 3, 1)
    result = simulate(SimConfig(out=folder, days=CITY_MONTH.days, institutions=CITY_MONTH.institutions, seed=seed,
                                start=start, scale=scale))
    as_of = datetime(start.year, start.month, start.day, tzinfo=CST) + timedelta(days=CITY_MONTH.days + 40)
    info = InputInfo(folder, CITY_MONTH.name, result.records, dict(result.counts), "monitor.simulate", as_of)
    manifest.write_text(json.dumps({"shape": info.shape, "records": info.records, "by_stream": info.by_stream,
                                    "source": info.source, "as_of": as_of.isoformat(), "scale": scale,
                                    "seed": seed}, indent=1))
    return info

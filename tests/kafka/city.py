"""A small synthetic city for the Kafka-shell tests (until monitor.simulate lands): deterministic
from a seed, every file sorted by upload time, and planted violations whose evidence spans days.

* on ``late_days`` (counted from ``start``) each "late" pharmacy uploads 6 settlements of the day (and
  their sales and trace codes) 30 h late → ``upload.late`` + ``upload.not_realtime`` → SUSPEND (EZ-DM 二(一)),
  and a month later TERMINATE or REINSTATE, depending on the days after.
* some insured sales carry a pharmacy 门诊统筹 settlement without a prescription, trace codes are sold
  twice across institutions, and a few dual prices — whatever detectors exist judge them.
* ``rejected_day``: the last pharmacy gets an agency finding (信息标准化不达标 → SUSPEND 6 months, EZ-DM 二(一))
  that the agency rejects two days later (``ticket_rejected`` → the engine's VOID ticket).
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from builders import institution, write_jsonl

from monitor.clock import CST
from monitor.outputs import make_id

FMT = "%Y-%m-%d %H:%M:%S"


def _t(moment: datetime) -> str:
    return moment.strftime(FMT)


def build_city(folder: Path, *, seed: int = 7, institutions: int = 6, days: int = 45, per_day: int = 20,
               start: date = date(2026, 1, 5), late_days: tuple[int, ...] = (3, 4, 40),
               rejected_day: int | None = 10) -> dict[str, int]:
    """Write ``institutions/drugs/settlements/inventory/tracecodes/prescriptions/findings.jsonl``; returns
    counts."""
    rnd = random.Random(seed)
    codes = [f"P4207020{i:04d}" for i in range(institutions)]
    late_codes = set(codes[: max(1, institutions // 3)])
    drugs = [f"XA01AAA{i:03d}" for i in range(8)]
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in ("institutions", "drugs", "settlements",
                                                              "inventory", "tracecodes", "prescriptions",
                                                              "findings")}
    for code in codes:
        out["institutions"].append(institution(code))
    for d in drugs:
        out["drugs"].append({"med_list_codg": d, "name": f"药品{d[-3:]}", "spec": "10片/盒",
                             "listed_price": "30.00", "rx_flag": "1" if d.endswith(("1", "5")) else "0"})
    trace_seq = 0
    sold_codes: list[str] = []
    for day_no in range(days):
        day = start + timedelta(days=day_no)
        for code in codes:
            base = datetime(day.year, day.month, day.day, 9, 0, tzinfo=CST)
            for k in range(per_day):
                setl_time = base + timedelta(minutes=20 * k + rnd.randrange(15))
                late = code in late_codes and day_no in late_days and k < 6
                up = setl_time + (timedelta(hours=30) if late else timedelta(seconds=30 + rnd.randrange(60)))
                drug = rnd.choice(drugs)
                setl_id = f"S{code[-4:]}{day:%m%d}{k:02d}"
                price = "30.00" if rnd.random() > 0.05 else "33.00"
                pooled = rnd.random() < 0.3
                rec: dict[str, Any] = {
                    "setl_id": setl_id, "mdtrt_id": f"M{setl_id}", "fixmedins_code": code,
                    "psn_no": f"4200{rnd.randrange(10**8):08d}", "insutype": "310", "psn_type": "1101",
                    "med_type": "41" if pooled else "11", "setl_time": _t(setl_time), "inf_time": _t(up),
                    "medfee_sumamt": price, "inscp_scp_amt": price,
                    "hifp_pay": "15.00" if pooled else "0.00", "acct_pay": "0.00" if pooled else price,
                    "psn_cash_pay": "15.00" if pooled else "0.00", "setl_status": "settled",
                    "drugdetail": [{"feedetl_sn": "1", "med_list_codg": drug, "cnt": "1", "pric": price,
                                    "det_item_fee_sumamt": price, "rx_flag": "0", "trdn_flag": "0"}],
                }
                if pooled and rnd.random() < 0.8:
                    rxno = f"RX{setl_id}"
                    rec["hi_rxno"] = rxno
                    prsc = setl_time - timedelta(minutes=30)
                    out["prescriptions"].append({
                        "hi_rxno": rxno, "hosp_rxno": f"H{rxno}", "fixmedins_code": "H420702000001",
                        "psn_no": rec["psn_no"], "prsc_time": _t(prsc), "inf_time": _t(prsc + timedelta(minutes=1)),
                        "valid_end_time": _t(prsc + timedelta(days=3)), "rx_status": "uploaded",
                        "rxdrugdetail": [{"med_list_codg": drug, "drug_cnt": "1",
                                          "medc_days": 90 if rnd.random() < 0.05 else 7}],
                    })
                out["settlements"].append(rec)
                out["inventory"].append({
                    "infno": "3505", "fixmedins_code": code, "med_list_codg": drug, "fixmedins_hilist_id": drug,
                    "fixmedins_bchno": f"B{code[-4:]}{drug[-3:]}", "sel_retn_time": _t(setl_time),
                    "sel_retn_cnt": "1", "rtal_docno": f"R{setl_id}", "mdtrt_setl_type": "1",
                    "setl_id": setl_id, "pric": price, "finl_trns_pric": price, "inf_time": _t(up),
                })
                if sold_codes and rnd.random() < 0.01:
                    trac = rnd.choice(sold_codes)  # the same box sold again (trace.duplicate)
                else:
                    trace_seq += 1
                    trac = f"8{trace_seq:019d}"
                    sold_codes.append(trac)
                out["tracecodes"].append({
                    "drug_trac_codg": trac, "fixmedins_code": code, "med_list_codg": drug, "scan_kind": "sale",
                    "trdn_flag": "0", "scan_time": _t(setl_time), "setl_id": setl_id,
                    "rtal_docno": f"R{setl_id}", "inf_time": _t(up),
                })
    if rejected_day is not None and rejected_day + 2 < days:
        code, day = codes[-1], start + timedelta(days=rejected_day)
        at = datetime(day.year, day.month, day.day, 8, 0, tzinfo=CST)
        out["findings"].append({"finding_id": "F-INFOSTD", "fixmedins_code": code, "kind": "infostd_substandard",
                                "occurred_at": _t(at), "inf_time": _t(at)})
        ticket = make_id("TK", "infostd", code, "SUSPEND_OUTPATIENT_POOLING", "F-INFOSTD",
                         (day + timedelta(days=1)).isoformat())
        out["findings"].append({"finding_id": "F-REJECT", "fixmedins_code": code, "kind": "ticket_rejected",
                                "occurred_at": _t(at + timedelta(days=2)), "inf_time": _t(at + timedelta(days=2)),
                                "ref_ticket_id": ticket})
    counts = {}
    for stream, recs in out.items():
        if not recs and stream == "findings":
            continue
        if stream not in ("institutions", "drugs"):
            recs.sort(key=lambda r: r["inf_time"])
        write_jsonl(folder, stream, recs)
        counts[stream] = len(recs)
    return counts

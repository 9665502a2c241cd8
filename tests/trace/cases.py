"""Two cities' trace scans with planted cross-city cases and their look-alikes, and the expected findings.

Ezhou institutions are ``P420702…``, Wuhan ``P420102…``. Every background box is stocked in and sold by
one pharmacy (clean). Planted (expected, as (rule, charged institution, code)):

* resold: a whole pack sold in Ezhou, sold again in Wuhan 2 days later (no return) → ``trace.resold`` on
  the Wuhan seller (who never stocked it in either → ``trace.never_stocked`` too);
* reentered: sold in Ezhou, scanned into stock in Wuhan → ``trace.reentered`` on the Wuhan pharmacy;
* never stocked: a Wuhan sale of a code nobody scanned in → ``trace.never_stocked``;
* product mismatch: product 8123456 learned as drug M-A from 3 stock-ins at 2 Ezhou pharmacies; a Wuhan
  pharmacy stocks in and sells a code of it as drug M-B → ``trace.product_mismatch``.

Look-alikes (no finding): sold → returned → sold elsewhere; split packs sold in both cities; a code seen
only at stock-in; a code of product 8123456 sold as M-A; a resale whose return is uploaded late but within
the 24 h settle window; a resale inside one institution (left to the city engine's trace.duplicate).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from monitor.clock import CST

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=CST)
E1, E2, E3 = "P42070200001", "P42070200002", "P42070200003"
W1, W2 = "P42010200001", "P42010200002"
AS_OF = BASE + timedelta(days=100)


def _scan(code: str, inst: str, kind: str, when: datetime, med: str = "XA01", split: bool = False,
          lag: timedelta = timedelta(minutes=5), n: int = 0) -> dict[str, object]:
    rec: dict[str, object] = {
        "drug_trac_codg": code, "fixmedins_code": inst, "med_list_codg": med, "scan_kind": kind,
        "trdn_flag": "1" if split else "0", "scan_time": f"{when:%Y-%m-%d %H:%M:%S}",
        "inf_time": f"{when + lag:%Y-%m-%d %H:%M:%S}",
    }
    if kind == "sale":
        rec["rtal_docno"] = f"D{inst[-3:]}{n:06d}"
    return rec


def build(root: Path, background: int = 200) -> set[tuple[str, str, str]]:
    """Write ``root/ezhou/tracecodes.jsonl`` and ``root/wuhan/tracecodes.jsonl``; return the expected set."""
    city: dict[str, list[dict[str, object]]] = {"ezhou": [], "wuhan": []}

    def put(rec: dict[str, object]) -> None:
        city["ezhou" if str(rec["fixmedins_code"]).startswith("P420702") else "wuhan"].append(rec)

    t = BASE
    for i in range(background):  # clean boxes: stocked in, sold by the same pharmacy
        inst = (E1, E2, W1, W2)[i % 4]
        code = f"6{i:019d}"
        put(_scan(code, inst, "stock_in", t + timedelta(minutes=i)))
        put(_scan(code, inst, "sale", t + timedelta(hours=3, minutes=i), n=i))
    day = timedelta(days=1)
    # planted: resold across cities
    put(_scan("70000000000000000001", E1, "stock_in", BASE))
    put(_scan("70000000000000000001", E1, "sale", BASE + timedelta(hours=2), n=1))
    put(_scan("70000000000000000001", W1, "sale", BASE + 2 * day, n=2))
    # look-alike: returned in between
    put(_scan("70000000000000000002", E1, "stock_in", BASE))
    put(_scan("70000000000000000002", E1, "sale", BASE + timedelta(hours=2), n=3))
    put(_scan("70000000000000000002", E1, "sale_return", BASE + timedelta(hours=5)))
    put(_scan("70000000000000000002", W1, "stock_in", BASE + day))
    put(_scan("70000000000000000002", W1, "sale", BASE + 2 * day, n=4))
    # look-alike: split packs
    put(_scan("70000000000000000003", E2, "stock_in", BASE, split=True))
    put(_scan("70000000000000000003", E2, "sale", BASE + timedelta(hours=1), split=True, n=5))
    put(_scan("70000000000000000003", W2, "stock_in", BASE + day, split=True))
    put(_scan("70000000000000000003", W2, "sale", BASE + 2 * day, split=True, n=6))
    # look-alike: stock-in only
    put(_scan("70000000000000000004", E3, "stock_in", BASE))
    # planted: reentered (回流) in Wuhan
    put(_scan("70000000000000000005", E2, "stock_in", BASE))
    put(_scan("70000000000000000005", E2, "sale", BASE + timedelta(hours=4), n=7))
    put(_scan("70000000000000000005", W2, "stock_in", BASE + 3 * day))
    # planted: never stocked in anywhere
    put(_scan("70000000000000000006", W1, "sale", BASE + timedelta(hours=6), n=8))
    # planted: product mismatch — product 8123456 is M-A (3 stock-ins, 2 institutions)
    for j, inst in enumerate((E1, E2, E1)):
        code = f"8123456{j:013d}"
        put(_scan(code, inst, "stock_in", BASE + timedelta(minutes=j), med="M-A"))
    put(_scan("81234560000000000000", E1, "sale", BASE + 2 * day, med="M-A", n=9))  # look-alike
    put(_scan("81234560000000000009", W2, "stock_in", BASE + 2 * day, med="M-B"))
    put(_scan("81234560000000000009", W2, "sale", BASE + 2 * day + timedelta(hours=1), med="M-B", n=10))
    # look-alike: the return of the first sale is uploaded 20 h late (within the 24 h settle)
    put(_scan("70000000000000000007", E3, "stock_in", BASE))
    put(_scan("70000000000000000007", E3, "sale", BASE + timedelta(hours=1), n=11))
    put(_scan("70000000000000000007", E3, "sale_return", BASE + timedelta(hours=2), lag=timedelta(hours=20)))
    put(_scan("70000000000000000007", W1, "stock_in", BASE + timedelta(hours=3)))
    put(_scan("70000000000000000007", W1, "sale", BASE + timedelta(hours=4), n=12))
    # look-alike: sold twice by one institution (the city engine's trace.duplicate)
    put(_scan("70000000000000000008", E2, "stock_in", BASE))
    put(_scan("70000000000000000008", E2, "sale", BASE + timedelta(hours=1), n=13))
    put(_scan("70000000000000000008", E2, "sale", BASE + timedelta(hours=7), n=14))
    # time moves on (every institution of both cities uploads again: a jump the intake clock accepts,
    # monitor.trace.forward), so the never-stocked windows close
    for j, inst in enumerate((E1, W1, E2, E3, W2)):
        put(_scan(f"6999999999999999999{j}", inst, "stock_in", AS_OF))
    for name, recs in city.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        recs.sort(key=lambda r: str(r["inf_time"]))
        (d / "tracecodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return {
        ("trace.resold", W1, "70000000000000000001"),
        ("trace.never_stocked", W1, "70000000000000000001"),
        ("trace.reentered", W2, "70000000000000000005"),
        ("trace.never_stocked", W1, "70000000000000000006"),
        ("trace.product_mismatch", W2, "81234560000000000009"),
    }

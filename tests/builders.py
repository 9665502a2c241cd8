"""Hand-made input records for table-driven tests (NHSA field names, design §3)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PHARMACY = "P42070200001"
CLINIC = "H42070200002"


def institution(code: str = PHARMACY, **over: Any) -> dict[str, Any]:
    rec = {
        "fixmedins_code": code,
        "fixmedins_name": f"测试药房{code[-3:]}",
        "fixmedins_type": "2" if code.startswith("P") else "1",
        "admdvs": "420702",
        "outpatient_pooling": True,
        "agreement_start": "2026-01-01",
        "agreement_end": "2026-12-31",
        "designated_since": "2020-05-01",
        "tier": None,
        "tier_scheme": None,
        "valid_from": "2025-12-01 00:00:00",
    }
    rec.update(over)
    return rec


def settlement(setl_id: str, setl_time: str, inf_time: str | None = None, code: str = PHARMACY,
               **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "setl_id": setl_id,
        "mdtrt_id": f"M{setl_id}",
        "fixmedins_code": code,
        "psn_no": "42000011112222",
        "certno": "420702198001011234",
        "psn_name": "张三",
        "insutype": "310",
        "psn_type": "1101",
        "med_type": "41",
        "setl_time": setl_time,
        "medfee_sumamt": "30.00",
        "inscp_scp_amt": "30.00",
        "hifp_pay": "0.00",
        "acct_pay": "30.00",
        "psn_cash_pay": "0.00",
        "setl_status": "settled",
        "drugdetail": [{"feedetl_sn": "1", "med_list_codg": "XA01AAA001", "cnt": "1", "pric": "30.00",
                        "det_item_fee_sumamt": "30.00", "rx_flag": "0", "trdn_flag": "0"}],
    }
    if inf_time is not None:
        rec["inf_time"] = inf_time
    rec.update(over)
    return rec


def sale(bchno: str, sel_time: str, inf_time: str | None = None, code: str = PHARMACY, cnt: str = "1",
         **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "infno": "3505", "fixmedins_code": code, "med_list_codg": "XA01AAA001",
        "fixmedins_hilist_id": "H001", "fixmedins_bchno": bchno, "sel_retn_time": sel_time,
        "sel_retn_cnt": cnt, "rtal_docno": f"R{bchno}", "mdtrt_setl_type": "2",
    }
    if inf_time is not None:
        rec["inf_time"] = inf_time
    rec.update(over)
    return rec


def write_jsonl(folder: Path, stream: str, records: Iterable[dict[str, Any] | str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stream}.jsonl"
    with path.open("ab") as fh:
        for rec in records:
            if isinstance(rec, bytes):
                fh.write(rec + b"\n")
            elif isinstance(rec, str):
                fh.write(rec.encode() + b"\n")
            else:
                fh.write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- pricing, benefit, tier, status and findings rules (issue 5) ------------------------------------
def finding(finding_id: str, kind: str, occurred_at: str, code: str = PHARMACY, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"finding_id": finding_id, "fixmedins_code": code, "kind": kind,
                           "occurred_at": occurred_at}
    rec.update(over)
    return rec


def drug(med_list_codg: str = "XA01AAA001", listed_price: str | None = "30.00", high_value: bool = False,
         **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"med_list_codg": med_list_codg, "name": "测试药", "listed_price": listed_price,
                           "high_value": high_value}
    rec.update(over)
    return rec


def run_engine(records: Iterable[tuple[str, dict[str, Any]]], policy: str = "ezhou",
               as_of: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the pure engine over ``(stream, record)`` pairs in the order given (the caller orders them by
    arrival); return (alerts, tickets) as JSON-ready dicts."""
    from monitor.clock import parse_time
    from monitor.engine import Engine
    from monitor.outputs import Alert, Ticket
    from monitor.policy.pack import load_pack
    from monitor.records import InvalidRecord, parse_value

    engine = Engine(load_pack(policy))
    out = []
    for stream, rec in records:
        for parsed in parse_value(stream, json.dumps(rec, ensure_ascii=False).encode()):
            assert not isinstance(parsed, InvalidRecord), parsed.reason
            out.extend(engine.process(parsed))
    if as_of is not None:
        out.extend(engine.advance(parse_time(as_of)))
    alerts = [o.model_dump(mode="json") for o in out if isinstance(o, Alert)]
    tickets = [o.model_dump(mode="json") for o in out if isinstance(o, Ticket)]
    return alerts, tickets


def alert(rule: str, day: str, amt: str, code: str = PHARMACY) -> Any:
    """A hand-made ``Alert`` of ``rule`` whose window starts at 00:00 of ``day`` with ``vola_amt`` ``amt``
    (e.g. ``price.dual``'s overcharge, AR-AGR 二(二)13); its id differs per rule, day and amount."""
    from datetime import datetime
    from decimal import Decimal

    from monitor.clock import CST
    from monitor.outputs import Alert

    start = datetime.fromisoformat(day).replace(tzinfo=CST)
    return Alert(alert_id=f"AL-{rule}-{day}-{amt}", rule_id=rule, fixmedins_code=code, admdvs="420702",
                 severity="warning", window_start=start, window_end=start, detected_at=start, evidence={},
                 basis="AR-AGR 二(二)13", policy="ezhou@1", jr_id="x", rule_name="阴阳价格", vola_cont="x",
                 vola_amt=Decimal(amt), sev_deg="1", vola_evid="x", vola_bhvr_type="x")

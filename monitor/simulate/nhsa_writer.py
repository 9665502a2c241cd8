"""``monitor simulate --format nhsa``: the same synthetic city, written as the platform's messages.

``write_nhsa(flat_dir, out_dir, seed)`` rewrites the flat files of design §3 (``simulate`` output) into
what institutions' systems send (issue #13, notes/nhsa-fields.md "How real uploads vary"), line for
line in the same arrival order, so that replaying either gives the same alerts and tickets:

* every upload is an envelope ``{infno, msgid, inf_time, fixmedins_code | medins_code, input, output?}``
  (Hunan's ``infon`` now and then; ``input`` sometimes a JSON string);
* 进销存 rows under the interface's wrapper (``invinfo``, ``purcinfo``, ``selinfo``, ``data``,
  ``selinfoDetail`` arrays on 3505A), flags as numbers, ``""`` for absent optional fields, upper-case
  ``MDTRT_SETL_TYPE`` now and then; each movement's trace scans embedded as ``drugtracinfo`` (a list,
  one object, or a JSON string) — scans that match no movement stay in ``tracecodes.jsonl``;
* pharmacies settle with 2102 (request ``drugdetail`` without flags + response ``setlinfo``, regional
  names ``med_fee_sumamt``/``cert_no``/``psnCash_pay``), clinics with a 2204 ``feedetail`` upload
  followed by the 2207 (``setlinfo`` only; lines joined by ``mdtrt_id``); revocations are 2103/2208
  with ``setl_id``, ``mdtrt_id``, ``psn_no`` only;
* prescriptions as 7101 (``psn_no`` under ``mdtrtinfo``, ``hi_rxno`` in the response) or the
  prescription centre's camelCase A0002;
* times as ``yyyy-MM-dd HH:mm:ss``, ``yyyyMMddHHmmss``, ISO-8601 with offset or epoch milliseconds.

Registry and findings files are copied unchanged (no platform interface in issue #13). The variant of
each message is drawn from ``random.Random(seed)``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.clock import CST
from monitor.simulate.writer import dumps

_COPIED = ("institutions", "drugs", "findings", "labels")
_WRAPPER = {"3501": ("invinfo",), "3502": ("invinfo", "data"), "3503": ("purcinfo",), "3504": ("purcinfo",),
            "3505": ("selinfo", "selinfo", "data"), "3506": ("selinfo", "data")}
_SCAN_INFNO = {"sale": ("3505",), "sale_return": ("3506",), "stock_in": ("3503",)}
_MOVE_TIME = {"3501": "invdate", "3502": "inv_chg_time", "3503": "purc_retn_stoin_time",
              "3504": "purc_retn_stoin_time", "3505": "sel_retn_time", "3506": "sel_retn_time"}


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


class _Variants:
    """Deterministic choices of the field's variance."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed * 7919 + 13)
        self.seq = 0

    def time(self, text: str) -> Any:
        moment = datetime.fromisoformat(text).replace(tzinfo=CST)
        u = self.rng.random()
        if u < 0.55:
            return text
        if u < 0.75:
            return moment.strftime("%Y%m%d%H%M%S")
        if u < 0.9:
            return int(moment.timestamp() * 1000)
        return moment.isoformat()

    def flag(self, value: str) -> Any:
        return int(value) if self.rng.random() < 0.5 else value

    def amount(self, value: str) -> Any:
        # as a JSON number now and then (only where that keeps the written scale: 8.10 would read 8.1)
        numeric = "." in value and not value.endswith("0") and len(value) < 12
        return json.loads(value, parse_float=float) if numeric and self.rng.random() < 0.3 else value

    def node(self, value: Any) -> Any:
        """A node as itself or (now and then) as a JSON string."""
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if self.rng.random() < 0.1 else value

    def envelope(self, infno: str, code: str, inf_time: str, inp: dict[str, Any],
                 out: dict[str, Any] | None = None) -> dict[str, Any]:
        self.seq += 1
        stamp = datetime.fromisoformat(inf_time).strftime("%Y%m%d%H%M%S")
        env: dict[str, Any] = {"infon" if self.rng.random() < 0.05 else "infno": infno,
                               "msgid": f"{code}{stamp}{self.seq % 10000:04d}",
                               "inf_time": self.time(inf_time)}
        env["medins_code" if self.rng.random() < 0.1 else "fixmedins_code"] = code
        env["infver"] = "V1.0"
        env["input"] = self.node(inp)
        if out is not None:
            env["output"] = out
        return env


def _scan_key(scan: dict[str, Any], infno: str) -> tuple[Any, ...]:
    return (infno, scan["fixmedins_code"], scan["med_list_codg"], scan.get("fixmedins_bchno"),
            scan["inf_time"], scan["scan_time"], scan.get("rtal_docno"))


def _move_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    infno = rec["infno"]
    return (infno, rec["fixmedins_code"], rec["med_list_codg"], rec.get("fixmedins_bchno"), rec["inf_time"],
            rec.get(_MOVE_TIME[infno]), rec.get("rtal_docno"))


class _Converter:
    def __init__(self, flat: Path, seed: int) -> None:
        self.v = _Variants(seed)
        self.pharmacies = {r["fixmedins_code"] for r in _lines(flat / "institutions.jsonl")
                           if r.get("fixmedins_type") == "2"}
        self.scans: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for scan in _lines(flat / "tracecodes.jsonl"):
            for infno in _SCAN_INFNO[scan["scan_kind"]]:
                self.scans.setdefault(_scan_key(scan, infno), []).append(scan)
        self.embedded = 0

    # -------------------------------------------------------------------------------------- inventory
    def movement(self, rec: dict[str, Any]) -> dict[str, Any]:
        v = self.v
        infno = rec["infno"]
        row: dict[str, Any] = {}
        for key, value in rec.items():
            if key in ("infno", "inf_time", "fixmedins_code"):
                continue
            if key in ("rx_flag", "trdn_flag"):
                row[key] = v.flag(value)
            elif key == "mdtrt_setl_type":
                row["MDTRT_SETL_TYPE" if v.rng.random() < 0.2 else key] = v.flag(value)
            elif key in ("inv_chg_time", "purc_retn_stoin_time", "sel_retn_time"):
                row[key] = v.time(value)
            elif key in ("finl_trns_pric", "pric", "sel_retn_cnt", "cnt", "purc_retn_cnt", "inv_cnt"):
                row[key] = v.amount(value)
            else:
                row[key] = value
        row.setdefault("fixmedins_hilist_name", "")
        row["memo"] = ""
        if infno == "3505" and "setl_id" not in rec:
            row.update(setl_id="", psn_no="", certno="")  # self-pay: the fields are there, empty
        scans = self.scans.pop(_move_key(rec), None)
        if scans:
            self.embedded += len(scans)
            codes = [{"drug_trac_codg": s["drug_trac_codg"]} for s in scans]
            u = v.rng.random()
            if len(codes) == 1 and u < 0.3:
                row["drugtracinfo"] = codes[0]
            elif u < 0.4:
                row["drugtracinfo"] = json.dumps(codes, separators=(",", ":"))  # declared as a String
            else:
                row["drugtracinfo"] = codes
        elif infno in ("3505", "3506") and v.rng.random() < 0.3:
            row["drug_trac_codg"] = ""  # older versions: the inline field, empty
        wrappers = _WRAPPER[infno]
        wrapper = wrappers[v.rng.randrange(len(wrappers))]
        if infno == "3505" and v.rng.random() < 0.1:
            return v.envelope("3505A", rec["fixmedins_code"], rec["inf_time"], {"selinfoDetail": [row]})
        return v.envelope(infno, rec["fixmedins_code"], rec["inf_time"], {wrapper: row})

    # ------------------------------------------------------------------------------------ settlements
    def _line(self, line: dict[str, Any], mdtrt_id: str | None, fee_time: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if mdtrt_id is not None:
            out["mdtrt_id"] = mdtrt_id
        for key in ("feedetl_sn", "med_list_codg", "cnt", "pric", "det_item_fee_sumamt"):
            if key in line:
                out[key] = self.v.amount(line[key]) if key in ("cnt", "pric", "det_item_fee_sumamt") else line[key]
        out["medins_list_codg"] = line["med_list_codg"]
        out["rxno"] = ""
        if fee_time is not None:
            out["fee_ocur_time"] = self.v.time(fee_time)
        return out

    def settlement(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        v = self.v
        code = rec["fixmedins_code"]
        pharmacy = code in self.pharmacies
        if rec["setl_status"] == "revoked":
            ident = {"setl_id": rec["setl_id"], "mdtrt_id": rec["mdtrt_id"], "psn_no": rec["psn_no"]}
            if pharmacy:
                return [v.envelope("2103", code, rec["inf_time"], {"data": ident})]
            return [v.envelope("2208", code, rec["inf_time"], {"data" if v.rng.random() < 0.5 else "mdtrtinfo": ident})]
        setl: dict[str, Any] = {}
        for key, value in rec.items():
            if key in ("drugdetail", "setl_status", "inf_time"):
                continue
            if key == "setl_time":
                setl[key] = v.time(value)
            elif key in ("medfee_sumamt", "inscp_scp_amt", "hifp_pay", "acct_pay", "psn_cash_pay",
                         "fund_pay_sumamt"):
                setl[key] = v.amount(value)
            else:
                setl[key] = value
        if v.rng.random() < 0.2:  # regional names of one province's settlement output
            setl["med_fee_sumamt"] = setl.pop("medfee_sumamt")
            setl["psnCash_pay"] = setl.pop("psn_cash_pay")
            if "certno" in setl:
                setl["cert_no"] = setl.pop("certno")
        setl.update(balc="", clr_type="", medins_setl_id="")
        if "fixmedins_code" in setl and v.rng.random() < 0.3:
            setl["fixmedins_code"] = ""  # a response leaves it empty: the envelope has it
        lines = rec["drugdetail"]
        if pharmacy:
            inp = {"mdtrtinfo": {"psn_no": rec["psn_no"], "med_type": rec["med_type"], "mdtrt_id": rec["mdtrt_id"]},
                   "drugdetail": [self._line(line, None, None) for line in lines]}
            return [v.envelope("2102", code, rec["inf_time"], inp, {"setlinfo": setl, "setldetail": []})]
        fee = {"feedetail": [self._line(line, rec["mdtrt_id"], rec["setl_time"]) for line in lines]}
        data = {"psn_no": rec["psn_no"], "mdtrt_id": rec["mdtrt_id"], "med_type": rec["med_type"],
                "insutype": rec["insutype"]}
        return [v.envelope("2204", code, rec["inf_time"], fee),
                v.envelope("2207", code, rec["inf_time"], {"data": data}, {"setlinfo": setl})]

    # ---------------------------------------------------------------------------------- prescriptions
    def prescription(self, rec: dict[str, Any]) -> dict[str, Any]:
        v = self.v
        details = [{"med_list_codg": d["med_list_codg"], "drug_cnt": v.amount(str(d["drug_cnt"])),
                    "medc_days": d["medc_days"]} for d in rec["rxdrugdetail"]]
        if v.rng.random() < 0.2:  # the prescription centre, camelCase
            inp = {"hospRxno": rec["hosp_rxno"], "prscTime": v.time(rec["prsc_time"]),
                   "valiEndTime": v.time(rec["valid_end_time"]),
                   "mdtrtinfo": {"psnNo": rec["psn_no"], "certno": rec.get("certno", ""),
                                 "psnName": rec.get("psn_name", "")},
                   "rxdrugdetail": [{"medListCodg": d["med_list_codg"], "drugCnt": d["drug_cnt"],
                                     "medcDays": d["medc_days"]} for d in details]}
            return v.envelope("A0002", rec["fixmedins_code"], rec["inf_time"], inp, {"hiRxno": rec["hi_rxno"]})
        inp = {"hosp_rxno": rec["hosp_rxno"], "rx_type_code": "1", "prsc_time": v.time(rec["prsc_time"]),
               "valid_end_time": v.time(rec["valid_end_time"]),
               "mdtrtinfo": {"psn_no": rec["psn_no"], "certno": rec.get("certno", ""),
                             "psn_name": rec.get("psn_name", "")},
               "rxdrugdetail": details}
        return v.envelope("7101", rec["fixmedins_code"], rec["inf_time"], inp, {"hi_rxno": rec["hi_rxno"]})


def write_nhsa(flat: Path, out: Path, seed: int) -> dict[str, int]:
    """Rewrite the flat city in ``flat`` as platform messages into ``out`` (module docstring); returns
    the number of lines written per file."""
    out.mkdir(parents=True, exist_ok=True)
    conv = _Converter(flat, seed)
    counts: dict[str, int] = {}
    for name in _COPIED:
        if (flat / f"{name}.jsonl").exists() and flat != out:
            shutil.copyfile(flat / f"{name}.jsonl", out / f"{name}.jsonl")
    jobs = (("inventory", lambda r: [conv.movement(r)]), ("settlements", conv.settlement),
            ("prescriptions", lambda r: [conv.prescription(r)]))
    for stream, convert in jobs:
        src = flat / f"{stream}.jsonl"
        tmp = out / f"{stream}.jsonl.tmp"
        n = 0
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for rec in _lines(src):
                for env in convert(rec):
                    fh.write(dumps(env) + "\n")
                    n += 1
        tmp.replace(out / f"{stream}.jsonl")
        counts[stream] = n
    left = [s for group in conv.scans.values() for s in group]
    left.sort(key=lambda s: s["inf_time"])
    tmp = out / "tracecodes.jsonl.tmp"
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for scan in _flat_scans_in_order(flat, left):
            fh.write(dumps(scan) + "\n")
    tmp.replace(out / "tracecodes.jsonl")
    counts["tracecodes"] = len(left)
    counts["trace_codes_embedded"] = conv.embedded
    return counts


def _flat_scans_in_order(flat: Path, left: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The scans that stayed flat, in their original file order."""
    if not left:
        return
    wanted = {dumps(s) for s in left}
    for scan in _lines(flat / "tracecodes.jsonl"):
        if dumps(scan) in wanted:
            yield scan

"""Issue #13's silent distortions, through the replay shell: each is now read right or counted.

Written against the shell (``monitor.replay.run_replay`` with a recording observer), not the codec, so
that each test also runs on the code before the codec (where it fails: checked once, see the report).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from builders import PHARMACY, institution

from monitor.clock import CST
from monitor.contract import Findings, Rule, RuleContext
from monitor.engine import Engine
from monitor.policy.pack import load_pack
from monitor.records import Record, SaleMovement, TraceScan
from monitor.replay import run_replay


class Recorder(Rule):
    name: ClassVar[str] = "test.recorder"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("inventory", "tracecodes", "settlements")

    def __init__(self, pack: Any) -> None:
        super().__init__(pack)
        self.seen: list[Record] = []

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        self.seen.append(rec)
        return []


def replay_lines(tmp: Path, inventory: list[str]) -> tuple[Engine, Recorder]:
    inp = tmp / "in"
    inp.mkdir()
    (inp / "institutions.jsonl").write_text(json.dumps(institution(PHARMACY)) + "\n", encoding="utf-8")
    (inp / "inventory.jsonl").write_text("".join(line + "\n" for line in inventory), encoding="utf-8")
    pack = load_pack("ezhou")
    engine = Engine(pack)
    rec = engine.attach(Recorder(pack))
    assert isinstance(rec, Recorder)
    run_replay(inp, engine, [])
    return engine, rec


def sale_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "infno": "3505", "fixmedins_code": PHARMACY, "med_list_codg": "XA01", "fixmedins_hilist_id": "YP0001",
        "fixmedins_bchno": "B0001", "rx_flag": "0", "trdn_flag": "0", "finl_trns_pric": "12.50",
        "sel_retn_cnt": "1", "sel_retn_time": "2021-05-12 10:00:00", "rtal_docno": "RD0001",
        "mdtrt_setl_type": "1", "setl_id": "ST0001", "psn_no": "42000011112222",
        "inf_time": "2021-05-12 10:05:00",
    }
    row.update(over)
    return row


def sales(rec: Recorder) -> list[SaleMovement]:
    return [r for r in rec.seen if isinstance(r, SaleMovement)]


def test_yyyymmddhhmmss_is_a_local_time_not_epoch_seconds(tmp_path: Path) -> None:
    """``"20210512100000"`` was read as a Unix timestamp (year 2610)."""
    _, rec = replay_lines(tmp_path, [json.dumps(sale_row(sel_retn_time="20210512100000"))])
    (sale,) = sales(rec)
    assert sale.sel_retn_time == datetime(2021, 5, 12, 10, 0, tzinfo=CST)


def test_epoch_seconds_digit_string_is_dead_lettered(tmp_path: Path) -> None:
    """A 10-digit time is ambiguous (epoch seconds?): refused with the reason, never guessed."""
    inp = [json.dumps(sale_row(sel_retn_time="1620784800"))]
    engine, rec = replay_lines(tmp_path, inp)
    assert sales(rec) == []
    assert engine.stats.records.get("inventory", 0) == 0


def test_upper_case_mdtrt_setl_type_is_read(tmp_path: Path) -> None:
    """``MDTRT_SETL_TYPE`` in upper case was ignored: the sale's insured flag became unknown."""
    row = sale_row()
    row["MDTRT_SETL_TYPE"] = row.pop("mdtrt_setl_type")
    _, rec = replay_lines(tmp_path, [json.dumps(row)])
    (sale,) = sales(rec)
    assert sale.mdtrt_setl_type == "1"


def test_camel_case_flat_keys_are_read_like_upper_case(tmp_path: Path) -> None:
    """A flat record with camelCase keys (``fixmedinsCode``, ``mdtrtSetlType``) is normalized like one with
    upper-case keys (its required keys camelCase: the flat parse fails and the codec reads it)."""
    row = sale_row()
    camel = {"fixmedinsCode": row.pop("fixmedins_code"), "medListCodg": row.pop("med_list_codg"),
             "mdtrtSetlType": row.pop("mdtrt_setl_type")}
    _, rec = replay_lines(tmp_path, [json.dumps({**row, **camel})])
    (sale,) = sales(rec)
    assert (sale.fixmedins_code, sale.med_list_codg, sale.mdtrt_setl_type) == (
        camel["fixmedinsCode"], camel["medListCodg"], "1")


def test_drugtracinfo_in_a_sale_row_becomes_trace_scans(tmp_path: Path) -> None:
    """``drugtracinfo`` inside a 3505 row was dropped: the codes that prove the sale were lost."""
    row = sale_row(drugtracinfo=[{"drug_trac_codg": "81000000000000000001"},
                                 {"drug_trac_codg": "81000000000000000002"}])
    _, rec = replay_lines(tmp_path, [json.dumps(row)])
    scans = [r for r in rec.seen if isinstance(r, TraceScan)]
    assert sorted(s.drug_trac_codg for s in scans) == ["81000000000000000001", "81000000000000000002"]
    assert all(s.scan_kind == "sale" and s.setl_id == "ST0001" for s in scans)


def test_date_only_sale_time_is_counted_not_silently_midnight(tmp_path: Path) -> None:
    """A date-only ``sel_retn_time`` became midnight without a word: now a data-quality figure."""
    engine, rec = replay_lines(tmp_path, [json.dumps(sale_row(sel_retn_time="2021-05-12"))])
    assert len(sales(rec)) == 1
    assert engine.stats.quality["inventory.date_only_time.sel_retn_time"] == 1

"""3507 商品信息删除 (issue #13 point 2): a deletion retracts the movement it names.

The fixture ``3507.json`` is written from notes/nhsa-fields.md (3507: ``fixmedins_bchno`` + ``inv_data_type``
1 盘存, 2 库存变更, 3 采购, 4 销售). Balances worked out by hand: a stocktake of 1 unit, the 3505 fixture
sells 2 (batch B0001, 2026-01-06 10:30) → −1, a negative-stock alert (EZ-DM 二(二)) unless deleted."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from builders import PHARMACY, institution

from monitor.clock import CST
from monitor.engine import Engine
from monitor.nhsa import advance as nhsa_advance
from monitor.nhsa import apply, stream_decoder
from monitor.nhsa.codec import Codec
from monitor.outputs import Alert
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord
from monitor.replay import replay_dir

FIXTURES = Path(__file__).parent / "fixtures" / "nhsa"
AS_OF = datetime(2026, 1, 20, tzinfo=CST)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def stocktake(cnt: str) -> dict[str, Any]:
    env = fixture("3501")
    env["input"]["invinfo"][0]["inv_cnt"] = cnt
    return env


def sale(cnt: int, docno: str, when: str, inf_time: str) -> dict[str, Any]:
    env = fixture("3505")
    row = env["input"]["selinfo"]
    row.update(sel_retn_cnt=cnt, rtal_docno=docno, sel_retn_time=when, setl_id=f"ST{docno}")
    row.pop("drugtracinfo")
    env["inf_time"] = inf_time
    return env


def deletion(inf_time: str, bchno: str = "B0001", kind: Any = 4) -> dict[str, Any]:
    env = fixture("3507")
    env["inf_time"] = inf_time
    env["input"]["data"].update(fixmedins_bchno=bchno, inv_data_type=kind)
    return env


def run(messages: list[dict[str, Any]]) -> tuple[list[Alert], Engine, list[Any]]:
    """Messages in upload order through the codec and the join, as both shells feed them."""
    engine = Engine(load_pack("ezhou"))
    decode = stream_decoder(engine)
    out: list[Any] = []
    invalid: list[Any] = []
    for stream, raw in [("institutions", institution(PHARMACY)), *(("uploads", m) for m in messages)]:
        for item in decode(stream, json.dumps(raw, ensure_ascii=False).encode()):
            if isinstance(item, InvalidRecord):
                invalid.append(item)
                continue
            out.extend(apply(engine, item))
    out.extend(nhsa_advance(engine, AS_OF))
    return [o for o in out if isinstance(o, Alert) and o.rule_id == "inventory.negative_stock"], engine, invalid


def test_a_sale_then_its_3507_gives_the_alerts_of_no_sale() -> None:
    with_sale, _, _ = run([stocktake("1"), sale(2, "RD1", "2026-01-06 10:30:00", "2026-01-06 10:31:00")])
    assert len(with_sale) == 1  # the case is negative without the deletion
    deleted, engine, invalid = run([stocktake("1"), sale(2, "RD1", "2026-01-06 10:30:00", "2026-01-06 10:31:00"),
                                    fixture("3507")])
    no_sale, _, _ = run([stocktake("1")])
    assert [a.alert_id for a in deleted] == [a.alert_id for a in no_sale] == []
    assert invalid == []
    assert engine.stats.quality["inventory.retracted"] == 1
    assert engine.stats.quality["inventory.retract_unknown"] == 0


def test_fixture_decodes_to_a_retraction() -> None:
    from monitor.nhsa.items import Retraction  # here, so that the other tests run (and fail) on older code

    (item,) = Codec().decode(None, (FIXTURES / "3507.json").read_bytes(), Counter())
    assert isinstance(item, Retraction)
    assert (item.fixmedins_code, item.fixmedins_bchno, item.inv_data_type) == (PHARMACY, "B0001", "4")
    assert item.inf_time == datetime(2026, 1, 6, 11, 0, tzinfo=CST)
    (bad,) = Codec().decode(None, json.dumps(deletion("2026-01-06 11:00:00", kind=9)).encode(), Counter())
    assert isinstance(bad, InvalidRecord) and "inv_data_type '9'" in bad.reason


def test_a_resent_3507_retracts_once() -> None:
    # stock 3; sales A 2, B 2 (−1) ; 3507 for B sent twice; later sale C 2: 3 − 2 − 2 = −1 → one alert on C.
    # Were the resend a second deletion (of A), C would leave 3 − 2 = 1 and no alert.
    alerts, engine, _ = run([
        stocktake("3"),
        sale(2, "RDA", "2026-01-06 10:00:00", "2026-01-06 10:01:00"),
        sale(2, "RDB", "2026-01-06 10:30:00", "2026-01-06 10:31:00"),
        deletion("2026-01-06 11:00:00"), deletion("2026-01-06 11:00:05"),
        sale(2, "RDC", "2026-01-06 12:00:00", "2026-01-06 12:01:00"),
    ])
    assert [a.evidence["sale"] for a in alerts] == ["3505:setl_id=STRDC"]
    assert engine.stats.quality["inventory.retracted"] == 1
    assert engine.stats.duplicates["inventory"] == 1


def test_a_3507_after_the_sale_was_judged_reverses_the_balance() -> None:
    # the sale of 2 from 1 was folded (24 h) and alerted (−1); deleted on 01-08 the batch is back to 1 and
    # the episode ends, so a sale of 2 on 01-09 (1 − 2 = −1) is a new alert. Without the reversal the batch
    # would stay at −1 in its episode and the second sale (−3) would add nothing.
    alerts, engine, _ = run([
        stocktake("1"), sale(2, "RD1", "2026-01-06 10:30:00", "2026-01-06 10:31:00"),
        deletion("2026-01-08 09:00:00"),
        sale(2, "RD2", "2026-01-09 10:00:00", "2026-01-09 10:01:00"),
    ])
    assert [a.evidence["balance_after"] for a in alerts] == ["-1", "-1"]
    assert engine.stats.quality["inventory.retracted"] == 1


def test_a_3507_of_a_movement_never_seen_is_counted_and_dead_lettered(tmp_path: Path) -> None:
    _, engine, _ = run([stocktake("1"), deletion("2026-01-06 11:00:00", bchno="B9999")])
    assert engine.stats.quality["inventory.retract_unknown"] == 1
    assert engine.stats.quality["inventory.retracted"] == 0
    src = tmp_path / "in"
    src.mkdir()
    (src / "institutions.jsonl").write_text(json.dumps(institution(PHARMACY), ensure_ascii=False) + "\n")
    (src / "uploads.jsonl").write_text("\n".join(json.dumps(m, ensure_ascii=False) for m in [
        stocktake("1"), deletion("2026-01-06 11:00:00", bchno="B9999")]) + "\n")
    result = replay_dir(src, tmp_path / "out", load_pack("ezhou"), as_of=AS_OF)
    letters = [json.loads(line) for line in (tmp_path / "out" / "dlq.jsonl").read_text().splitlines()]
    assert len(letters) == 1 and "B9999" in letters[0]["error"] and "3507" in letters[0]["error"]
    assert "B9999" in letters[0]["value"]
    assert result.engine.stats.quality["inventory.retract_unknown"] == 1


def test_the_retractable_movements_of_a_lot_stay_bounded() -> None:
    # a lot that keeps selling for months must not grow the detector's 3507 memory per movement (state is
    # checkpointed): only the latest RETRACTABLE_PER_LOT stay deletable, and the latest is still deleted.
    from monitor.detectors.inventory import RETRACTABLE_PER_LOT, NegativeStock

    many = RETRACTABLE_PER_LOT + 8
    sales = [sale(1, f"RD{i}", f"2026-01-06 10:{i:02d}:00", f"2026-01-06 10:{i:02d}:30") for i in range(many)]
    _, engine, invalid = run([stocktake(str(many)), *sales, deletion("2026-01-06 11:00:00")])
    (detector,) = [d for d in engine.detectors if isinstance(d, NegativeStock)]
    assert invalid == []
    assert max(len(moves) for moves in detector.moves.values()) == RETRACTABLE_PER_LOT
    assert engine.stats.quality["inventory.retracted"] == 1

"""The 2204 ↔ 2207 join by mdtrt_id (grace window, counts, checkpoints) and revocations by setl_id."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from builders import CLINIC, PHARMACY, institution
from test_nhsa_distortions import Recorder

from monitor.clock import CST
from monitor.engine import Engine
from monitor.nhsa import apply, decoder
from monitor.nhsa.join import advance
from monitor.policy.pack import load_pack
from monitor.records import Drug, Institution, Settlement

FIXTURES = Path(__file__).parent / "fixtures" / "nhsa"


def fixture(name: str, **inf: Any) -> dict[str, Any]:
    env: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    env.update(inf)
    return env


def start() -> tuple[Engine, Recorder]:
    pack = load_pack("ezhou")
    engine = Engine(pack)
    rec = engine.attach(Recorder(pack))
    assert isinstance(rec, Recorder)
    for code in (PHARMACY, CLINIC):
        engine.process(Institution.model_validate(institution(code)))
    for med, flag in (("XA01", "1"), ("XA02", "0")):
        engine.process(Drug.model_validate({"med_list_codg": med, "name": med, "rx_flag": flag}))
    return engine, rec


def feed(engine: Engine, env: dict[str, Any]) -> None:
    for item in decoder(engine.pack).decode(None, json.dumps(env).encode(), Counter()):
        apply(engine, item)


def settlements(rec: Recorder) -> list[Settlement]:
    return [r for r in rec.seen if isinstance(r, Settlement)]


def test_lines_first_then_settlement_joined_at_once_with_catalogue_rx_flag() -> None:
    engine, rec = start()
    feed(engine, fixture("2204"))
    assert settlements(rec) == []
    feed(engine, fixture("2207"))
    (st,) = settlements(rec)
    assert st.setl_id == "ST0002" and [(d.feedetl_sn, d.rx_flag, d.trdn_flag) for d in st.drugdetail] == [
        ("1", "1", None), ("2", "0", "1")]  # rx_flag from medins.drugs; 0.5 packs = 拆零
    assert engine.stats.quality["settlements.line_rx_flag_from_catalogue"] == 2
    assert engine.stats.quality["settlements.line_trdn_flag_from_cnt"] == 1


def test_settlement_first_waits_for_its_lines_within_the_window() -> None:
    engine, rec = start()
    feed(engine, fixture("2207"))
    assert settlements(rec) == []  # waits: its lines are still to come
    feed(engine, fixture("2204", inf_time="2026-01-07 09:40:00"))
    (st,) = settlements(rec)
    assert len(st.drugdetail) == 2 and engine.stats.quality["settlements.lines_missing"] == 0


def test_lines_that_never_come_are_counted_and_late_lines_too() -> None:
    engine, rec = start()
    feed(engine, fixture("2207"))  # uploaded 09:06; window 60 min
    advance(engine, datetime(2026, 1, 7, 10, 5, 59, tzinfo=CST))
    assert settlements(rec) == []
    advance(engine, datetime(2026, 1, 7, 10, 6, 0, tzinfo=CST))
    (st,) = settlements(rec)
    assert st.drugdetail == [] and engine.stats.quality["settlements.lines_missing"] == 1
    feed(engine, fixture("2204", inf_time="2026-01-07 11:00:00"))  # too late: kept, then counted
    advance(engine, datetime(2026, 1, 7, 12, 0, 0, tzinfo=CST))
    assert engine.stats.quality["settlements.lines_unclaimed"] == 2
    assert len(settlements(rec)) == 1


def test_resent_lines_are_kept_once() -> None:
    engine, rec = start()
    feed(engine, fixture("2204"))
    feed(engine, fixture("2204", inf_time="2026-01-07 09:05:30"))
    feed(engine, fixture("2207"))
    (st,) = settlements(rec)
    assert [d.feedetl_sn for d in st.drugdetail] == ["1", "2"]


def test_a_waiting_settlement_survives_a_checkpoint() -> None:
    engine, _ = start()
    feed(engine, fixture("2207"))
    restored = Engine.restore(engine.snapshot())
    rec = next(d for d in restored.detectors if isinstance(d, Recorder))
    feed(restored, fixture("2204", inf_time="2026-01-07 09:30:00"))
    (st,) = settlements(rec)
    assert st.setl_id == "ST0002" and len(st.drugdetail) == 2


def test_revocation_takes_the_original_settlement() -> None:
    engine, rec = start()
    feed(engine, fixture("2102"))
    feed(engine, fixture("2103"))
    original, revoked = settlements(rec)
    assert revoked.setl_status == "revoked" and revoked.setl_time == original.setl_time
    assert revoked.drugdetail == original.drugdetail and revoked.medfee_sumamt == original.medfee_sumamt
    assert revoked.inf_time == datetime(2026, 1, 6, 12, 0, 30, tzinfo=CST)


def test_revocation_of_an_unknown_settlement_is_judged_and_counted() -> None:
    engine, rec = start()
    feed(engine, fixture("2208"))
    (revoked,) = settlements(rec)
    assert revoked.setl_status == "revoked" and revoked.setl_id == "ST0002"
    assert revoked.setl_time == datetime(2026, 1, 7, 10, 0, tzinfo=CST)  # its own upload time
    assert engine.stats.quality["settlements.revocation_without_original"] == 1

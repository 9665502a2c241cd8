"""institution_daily's ``completeness`` is the data.incomplete rule's own number (EZ-DM 二(二)), handed
over as a ``DayFact`` when the rule judges the day — not a second reckoning under the same name."""

from __future__ import annotations

import json
from typing import Any

from builders import PHARMACY, institution, sale, settlement

from monitor.clock import parse_time
from monitor.engine import Engine
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, parse_value
from monitor.sinks.daily import DAILY_COLUMNS, DailyCollector


def _feed(engine: Engine, stream: str, rec: dict[str, Any]) -> None:
    for parsed in parse_value(stream, json.dumps(rec).encode()):
        assert not isinstance(parsed, InvalidRecord)
        engine.process(parsed)


def _row(col: DailyCollector) -> dict[str, Any]:
    rows = col.take_rows()
    mine = [dict(zip(DAILY_COLUMNS, r, strict=True)) for r in rows if r[0] == PHARMACY]
    assert len(mine) == 1
    return mine[0]


def test_completeness_is_the_rules_number_once_it_judged_the_day() -> None:
    engine = Engine(load_pack("ezhou"))
    col = engine.attach(DailyCollector(engine.pack))
    assert isinstance(col, DailyCollector)
    _feed(engine, "institutions", institution())
    line = {"feedetl_sn": "1", "med_list_codg": "A", "cnt": "2", "pric": "10.00", "rx_flag": "0", "trdn_flag": "0"}
    _feed(engine, "settlements", settlement("S1", "2026-03-02 09:00:00", "2026-03-02 09:10:00", drugdetail=[line]))
    # a sale of the same settlement and drug, but 1 pack of the 2 settled: the line is not complete
    _feed(engine, "inventory", sale("b1", "2026-03-02 09:00:00", "2026-03-02 09:20:00", med_list_codg="A",
                                    setl_id="S1", mdtrt_setl_type="1", cnt="1"))
    before = _row(col)
    assert (before["settlement_lines"], before["completeness"]) == (1, None)  # not judged yet: no number
    engine.advance(parse_time("2026-03-06 00:00:00"))  # day end + 72 h: the rule judges the day
    after = _row(col)
    assert (after["settlement_lines"], after["completeness"]) == (1, 0.0)  # the rule's: 0 of 1 in time
    assert after["version"] > before["version"]

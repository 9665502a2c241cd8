"""The rules' batch paths give what one by one gives (``monitor.contract``: ``on_batch`` promises the
same findings as ``on_record`` record by record; issue #16's batch evaluation).

Every rule that overrides ``on_batch`` runs here one by one and batched over the same records — a
simulated city, and hand-made cases aimed at what a batch path can get wrong: a late upload that opens a
day whose judgment falls inside the batch, late records reaching a day already judged (each may judge
it at once), records too old to be judged, records without an upload time — and must give the same
findings in the same order, and the same data-quality counts (``rule_harness.assert_batch_parity``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, institution, sale, settlement
from rule_harness import RuleHarness, alerts, assert_batch_parity

from monitor.clock import CST, parse_time
from monitor.contract import Rule
from monitor.detectors.prescriptions import Prescriptions
from monitor.detectors.upload import UploadTimeliness
from monitor.records import InvalidRecord, Record, parse_value
from monitor.simulate import SimConfig, simulate

#: pricing's batch path has its own case (tests/test_detectors_pricing.py): this city prices nothing wrong
BATCH_RULES: list[type[Rule]] = [UploadTimeliness, Prescriptions]
FMT = "%Y-%m-%d %H:%M:%S"
EARLIEST = datetime(2000, 1, 1, tzinfo=CST)


def _ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def _parse(stream: str, raw: dict[str, Any]) -> list[Record]:
    return [r for r in parse_value(stream, json.dumps(raw, ensure_ascii=False).encode())
            if not isinstance(r, InvalidRecord)]


def _in_arrival_order(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[Record, datetime | None]]:
    parsed = [(rec.arrival_time or EARLIEST, i, rec) for i, (stream, raw) in enumerate(items)
              for rec in _parse(stream, raw)]
    return [(rec, None) for _, _, rec in sorted(parsed, key=lambda p: (p[0], p[1]))]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Record, datetime | None]]:
    """A simulated city's records in arrival order (12 institutions, 10 days, planted cases)."""
    out = tmp_path_factory.mktemp("city")
    simulate(SimConfig(out=out, days=10, institutions=12, scale=0.05, seed=7))
    items: list[tuple[datetime, int, int, Record]] = []
    for order, path in enumerate(sorted(Path(out).glob("*.jsonl"))):
        if path.stem == "labels":
            continue
        for line, raw in enumerate(path.read_bytes().splitlines()):
            for rec in parse_value(path.stem, raw):
                if not isinstance(rec, InvalidRecord):
                    items.append((rec.arrival_time or EARLIEST, order, line, rec))
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    return [(it[3], None) for it in items]


@pytest.mark.parametrize("rule", BATCH_RULES, ids=lambda r: r.name)
def test_a_batch_rule_finds_on_a_city_what_it_finds_one_by_one(
        rule: type[Rule], city: list[tuple[Record, datetime | None]]) -> None:
    found = assert_batch_parity(rule, city, until="2026-03-31 00:00:00")
    assert alerts(found), "the city must give this rule something to find"


def _late_day() -> list[tuple[str, dict[str, Any]]]:
    """Day 1-10 of the pharmacy: 8 settlements uploaded on time, then 12 records of 1-10 uploaded 40 h
    late in one run (the first of them opens nothing: the day is open and judged by then), and a whole day
    1-11 uploaded 50 h late — its first record opens the day past its judgment time, so the judgment
    falls inside the batch; ten records of 1-12 uploaded 25 h late, before that day's judgment; plus records
    without an upload time and one 90 days late (too old)."""
    day = datetime(2026, 1, 10, 9, 0, tzinfo=CST)
    items: list[tuple[str, dict[str, Any]]] = [("institutions", institution(PHARMACY))]
    for i in range(8):
        t = day + timedelta(minutes=i)
        items.append(("settlements", settlement(f"OK{i}", _ts(t), _ts(t + timedelta(minutes=2)))))
    for i in range(12):
        t = day + timedelta(minutes=30 + i)
        items.append(("settlements", settlement(f"LATE{i}", _ts(t), _ts(t + timedelta(hours=40)))))
    second = day + timedelta(days=1)
    for i in range(9):
        t = second + timedelta(minutes=i)
        items.append(("settlements", settlement(f"D2{i}", _ts(t), _ts(t + timedelta(hours=50)))))
        items.append(("inventory", sale(f"BD2{i}", _ts(t), _ts(t + timedelta(hours=52)), setl_id=f"D2{i}",
                                        mdtrt_setl_type="1")))
    for i in range(4):
        t = second + timedelta(hours=2, minutes=i)
        items.append(("settlements", settlement(f"U{i}", _ts(t), None)))
    third = datetime(2026, 1, 12, 1, 0, tzinfo=CST)
    for i in range(10):  # late (25 h) but arriving before their day's judgment: summed in the batch
        t = third + timedelta(minutes=i)
        items.append(("settlements", settlement(f"D3{i}", _ts(t), _ts(t + timedelta(hours=25, seconds=(7 * i) % 10)))))
    old = day - timedelta(days=90)
    items.append(("settlements", settlement("OLD", _ts(old), _ts(day + timedelta(hours=41)))))
    return items


@pytest.mark.parametrize("rule", [UploadTimeliness], ids=lambda r: r.name)
def test_late_days_are_judged_inside_the_batch_as_one_by_one(rule: type[Rule]) -> None:
    records = _in_arrival_order(_late_day())
    found = assert_batch_parity(rule, records, until="2026-02-01 00:00:00")
    assert alerts(found)


def test_upload_batch_judges_a_late_day_after_its_first_record_not_after_the_whole_batch() -> None:
    """The day 1-11 uploaded 50 h late: one by one, its judgment fires right after its first record
    (due time long past) and each later late record re-judges it — so ``upload.late``'s evidence counts
    the records up to the judgment, and ``upload.not_realtime`` is found by the fifth late record. Batched,
    the judgment must not wait for the batch's end (it would count all nine)."""
    records = _in_arrival_order(_late_day())
    harness = RuleHarness(UploadTimeliness)
    found = alerts(harness.run(records, batched=True))
    late = {a.window_start.date().isoformat(): a for a in found if a.rule_id == "upload.late"}
    assert late["2026-01-11"].evidence["late"] == 1
    nr = [a for a in found if a.rule_id == "upload.not_realtime" and a.window_start.date().isoformat() == "2026-01-11"]
    assert len(nr) == 1 and nr[0].evidence["late"] == 5
    assert harness.counts["upload.late_beyond_rejudge_horizon"] == 1
    assert parse_time("2026-01-13 11:00:00") <= nr[0].detected_at

"""The institution-day facts (``institution_daily``, design §4) are an engine output (issue #14 point 3):
the engine's own tally (``monitor.detectors.daily``) emits ``InstitutionDay`` at event-time midnights, from
its records, the alerts it emitted and the rules' ``DayFact`` numbers; sinks only consume them."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, alert, institution, read_jsonl, sale, settlement
from prometheus_client import CollectorRegistry

from monitor.clock import business_date, parse_time
from monitor.engine import Engine, Output
from monitor.metrics import Metrics, MetricsSink
from monitor.outputs import InstitutionDay, make_id
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, parse_value
from monitor.replay import replay_dir
from monitor.sinks.clickhouse import ClickHouseSink
from monitor.state.checkpoint import CheckpointDir

LINE = {"feedetl_sn": "1", "med_list_codg": "A", "cnt": "2", "pric": "10.00", "rx_flag": "0", "trdn_flag": "0"}


def _feed(engine: Engine, stream: str, rec: dict[str, Any]) -> list[Output]:
    out: list[Output] = []
    for parsed in parse_value(stream, json.dumps(rec).encode()):
        assert not isinstance(parsed, InvalidRecord)
        out.extend(engine.process(parsed))
    return out


def _days(outputs: list[Output], code: str = PHARMACY) -> list[InstitutionDay]:
    return [o for o in outputs if isinstance(o, InstitutionDay) and o.fixmedins_code == code]


def test_a_day_comes_out_at_the_midnight_that_ends_it_and_again_only_when_it_changed() -> None:
    engine = Engine(load_pack("ezhou"))
    _feed(engine, "institutions", institution())
    early = _feed(engine, "settlements", settlement("S1", "2026-03-02 09:00:00", "2026-03-02 09:10:00",
                                                    drugdetail=[LINE]))
    early += engine.advance(parse_time("2026-03-02 23:59:59"))
    assert _days(early) == []  # the day is not over in event time: nothing yet
    first = _days(engine.advance(parse_time("2026-03-03 00:00:00")))
    assert [(d.day, d.version, d.records_settlements, d.lag_max_s) for d in first] == [
        (date(2026, 3, 2), 1, 1, 600.0)]
    assert first[0].day_id == make_id("DY", PHARMACY, "2026-03-02")  # institution + day, never a counter
    assert _days(engine.advance(parse_time("2026-03-04 00:00:00"))) == []  # unchanged: not again
    # a late upload of 03-02 (26 h after its business time) changes the day: version 2 at the next midnight
    late = _feed(engine, "settlements", settlement("S2", "2026-03-02 10:00:00", "2026-03-03 12:00:00",
                                                   drugdetail=[LINE]))
    assert _days(late) == []
    second = _days(engine.advance(parse_time("2026-03-05 00:00:00")))
    assert [(d.version, d.records_settlements, d.late, d.day_id) for d in second] == [
        (2, 2, 1, first[0].day_id)]


def test_completeness_is_the_rules_number_once_it_judged_the_day() -> None:
    """EZ-DM 二(二): ``completeness`` is the data.incomplete rule's ``DayFact`` (sold quantity within 72 h),
    ``None`` until the rule judged the day (day end + 72 h) — never a second reckoning under that name."""
    engine = Engine(load_pack("ezhou"))
    _feed(engine, "institutions", institution())
    _feed(engine, "settlements", settlement("S1", "2026-03-02 09:00:00", "2026-03-02 09:10:00", drugdetail=[LINE]))
    # a sale of the same settlement and drug, but 1 pack of the 2 settled: the line is not complete
    _feed(engine, "inventory", sale("b1", "2026-03-02 09:00:00", "2026-03-02 09:20:00", med_list_codg="A",
                                    setl_id="S1", mdtrt_setl_type="1", cnt="1"))
    before = _days(engine.advance(parse_time("2026-03-05 23:59:59")))
    assert before and {(d.settlement_lines, d.completeness) for d in before} == {(1, None)}  # not judged yet
    # judged at 03-06 00:00 (day end + 72 h), before that midnight's emission (its timer came first)
    after = _days(engine.advance(parse_time("2026-03-06 00:00:00")))
    assert [(d.settlement_lines, d.completeness, d.version) for d in after] == [(1, 0.0, before[-1].version + 1)]


def test_alerts_and_dual_price_overcharge_count_on_the_day_their_window_starts() -> None:
    """AR-AGR 二(二)13: the day's ``dual_price_overcharge`` is the sum of its ``price.dual`` alerts' amounts."""
    engine = Engine(load_pack("ezhou"))
    _feed(engine, "institutions", institution())
    _feed(engine, "settlements", settlement("S1", "2026-01-05 09:00:00", "2026-01-05 09:10:00"))
    for rule, amt in (("price.dual", "3.50"), ("price.dual", "1.25"), ("upload.late", "0")):
        assert engine.emit(alert(rule, "2026-01-05", amt))
    first = _days(engine.advance(parse_time("2026-01-06 00:00:00")))
    assert engine.emit(alert("price.dual", "2026-01-05", "0.25"))
    second = _days(engine.advance(parse_time("2026-01-07 00:00:00")))
    assert [(d.dual_price_overcharge, d.alerts, d.version) for d in first + second] == [
        (Decimal("4.75"), 3, 1), (Decimal("5.00"), 4, 2)]


def test_a_day_is_final_once_forgotten() -> None:
    """62 days after a day, an alert about it changes nothing (the row stays as last emitted); one day
    less, it still makes a new version."""
    engine = Engine(load_pack("ezhou"))
    _feed(engine, "institutions", institution())
    out = _feed(engine, "settlements", settlement("S1", "2026-01-05 09:00:00", "2026-01-05 09:10:00"))
    out += _feed(engine, "settlements", settlement("S2", "2026-01-06 09:00:00", "2026-01-06 09:10:00"))
    out += engine.advance(parse_time("2026-01-07 00:00:00"))
    assert [(d.day, d.version) for d in _days(out)] == [(date(2026, 1, 5), 1), (date(2026, 1, 6), 1)]
    out += engine.advance(parse_time("2026-03-08 00:00:00"))  # 01-05 + 62 days: forgotten; 01-06 not yet
    last = [d for d in _days(out) if d.day == date(2026, 1, 6)][-1]
    assert engine.emit(alert("upload.late", "2026-01-05", "0"))
    assert engine.emit(alert("upload.late", "2026-01-06", "0"))
    later = _days(engine.advance(parse_time("2026-03-09 00:00:00")))
    assert [(d.day, d.alerts, d.version) for d in later] == [(date(2026, 1, 6), last.alerts + 1, last.version + 1)]
    assert (PHARMACY, date(2026, 1, 5)) not in engine.daily.days


def test_a_forgotten_day_s_settlements_are_forgotten_with_it_and_only_then() -> None:
    """``setl_day`` (a sale trace code's settlement day) keeps a settlement while its day is kept: the
    tally skips rebuilding it until the horizon reaches its earliest day (``prune_floor``), and a tally
    restored from a checkpoint without that bound rebuilds at its next prune."""
    engine = Engine(load_pack("ezhou"))
    tally = engine.daily
    _feed(engine, "institutions", institution())
    _feed(engine, "settlements", settlement("S1", "2026-01-05 09:00:00", "2026-01-05 09:10:00"))
    _feed(engine, "settlements", settlement("S2", "2026-01-07 09:00:00", "2026-01-07 09:10:00"))
    engine.advance(parse_time("2026-03-07 00:00:00"))  # 01-05 + 61 days: both kept
    assert set(tally.setl_day) == {"S1", "S2"}
    engine.advance(parse_time("2026-03-08 00:00:00"))  # 01-05 + 62 days: S1's day forgotten
    assert set(tally.setl_day) == {"S2"}
    assert tally.prune_floor == date(2026, 1, 7).toordinal()
    del tally.__dict__["prune_floor"]  # as a tally checkpointed before the bound existed
    engine.advance(parse_time("2026-03-09 00:00:00"))
    assert set(tally.setl_day) == {"S2"}
    engine.advance(parse_time("2026-03-10 00:00:00"))  # 01-07 + 62 days
    assert tally.setl_day == {}


def _one_day(folder: Path) -> Path:
    from builders import write_jsonl

    write_jsonl(folder, "institutions", [institution()])
    write_jsonl(folder, "settlements", [settlement(f"S{i}", f"2026-01-05 1{i}:00:00", f"2026-01-05 1{i}:30:00")
                                        for i in range(4)])
    return folder


def test_no_sink_is_attached_to_the_engine_or_part_of_its_checkpoint(tmp_path: Path) -> None:
    """The ClickHouse and metrics sinks read the engine but leave nothing in it: the ``--state``
    checkpoint names no ``monitor.sinks`` class (it carried the old ``DailyCollector`` before)."""
    def failing() -> tuple[Any, str]:
        raise ConnectionError("no ClickHouse in this test")

    store = ClickHouseSink("chdb://unused", tmp_path / "buf", client_factory=failing)
    metrics = MetricsSink(Metrics(CollectorRegistry()))
    result = replay_dir(_one_day(tmp_path / "in"), tmp_path / "out", load_pack("ezhou"),
                        as_of=parse_time("2026-01-07 00:00:00"), state=tmp_path / "state",
                        extra_sinks=[store, metrics])
    engine = result.engine
    assert [d.name for d in engine.detectors if type(d).__module__.startswith("monitor.sinks")] == []
    assert b"monitor.sinks" not in engine.small_state()
    ckpt = CheckpointDir(tmp_path / "state", engine.pseudo, "replay", None)
    try:
        loaded = ckpt.load(engine.pack)
    finally:
        ckpt.close()
    assert loaded is not None
    restored, _ = loaded
    assert {type(d).__module__ for d in restored.detectors} == {type(d).__module__ for d in engine.detectors}
    assert restored.daily.tap.items is None  # the metrics tap is transient
    assert b"monitor.sinks" not in pickle.dumps(restored)
    # and the store got the day as an output: kept in its buffer while ClickHouse is down, not lost
    from monitor.sinks.outbox import Outbox

    assert store.failures >= 1
    buffered = Outbox(tmp_path / "buf" / "clickhouse-buffer.sqlite")
    try:
        assert [e.key for e in buffered.due(limit=10) if e.key.startswith("daily:")] == [
            f"daily:{PHARMACY}:2026-01-05"]
    finally:
        buffered.close()


# ------------------------------------------------------------------------------- a simulated city
@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from monitor.simulate import SimConfig, simulate

    root = tmp_path_factory.mktemp("daily-city")
    simulate(SimConfig(out=root / "in", days=8, seed=5, institutions=12, scale=0.1))
    meta = next(r for r in read_jsonl(root / "in" / "labels.jsonl") if r.get("kind") == "meta")
    result = replay_dir(root / "in", root / "out", load_pack("ezhou"), as_of=parse_time(meta["as_of"]))
    return root / "out", result


class _Rows:
    """A sink that keeps the ``InstitutionDay`` objects the engine emitted."""

    def __init__(self) -> None:
        self.days: list[InstitutionDay] = []

    def write(self, outputs: Any, dead: Any) -> None:
        self.days.extend(o for o in outputs if isinstance(o, InstitutionDay))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_every_row_the_tally_builds_is_what_pydantic_validation_builds(tmp_path: Path) -> None:
    """``daily._row`` skips re-validating the values the tally computed: on a simulated city every row is
    equal to its validated copy — same field values of the same types, in field order, every field set."""
    from monitor.simulate import SimConfig, simulate

    simulate(SimConfig(out=tmp_path / "in", days=6, seed=9, institutions=8, scale=0.1))
    meta = next(r for r in read_jsonl(tmp_path / "in" / "labels.jsonl") if r.get("kind") == "meta")
    rows = _Rows()
    replay_dir(tmp_path / "in", tmp_path / "out", load_pack("ezhou"), as_of=parse_time(meta["as_of"]),
               extra_sinks=[rows])
    assert len(rows.days) > 20 and any(d.completeness is not None for d in rows.days)
    for day in rows.days:
        checked = InstitutionDay.model_validate(dict(day.__dict__))
        assert list(day.__dict__) == list(InstitutionDay.model_fields)
        assert [(type(v), v) for v in day.__dict__.values()] == [(type(v), v) for v in checked.__dict__.values()]
        assert day.model_fields_set == checked.model_fields_set
        assert day.model_dump_json() == checked.model_dump_json() and hash(day) == hash(checked)


def _newest(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in read_jsonl(out / "institution_daily.jsonl"):
        key = (row["fixmedins_code"], row["day"])
        if key not in rows or rows[key]["version"] < row["version"]:
            rows[key] = row
    return rows


def test_a_city_s_days_add_up_to_what_the_engine_counted_and_emitted(city: tuple[Path, Any]) -> None:
    """On a simulated city, the newest row of every day sums to the engine's own counts: records admitted
    per stream (duplicates out), alerts by the day their window starts, ``price.dual`` amounts."""
    out, result = city
    rows = _newest(out)
    assert len(rows) > 50
    stats = result.engine.stats
    for stream in ("settlements", "inventory", "tracecodes", "prescriptions"):
        assert sum(r[f"records_{stream}"] for r in rows.values()) == stats.records[stream] - stats.duplicates[stream]
    alerts = read_jsonl(out / "alerts.jsonl")
    by_day = Counter((a["fixmedins_code"], business_date(datetime.fromisoformat(a["window_start"])).isoformat())
                     for a in alerts)
    assert {k: r["alerts"] for k, r in rows.items() if r["alerts"]} == dict(by_day)
    dual = sum((Decimal(a["vola_amt"]) for a in alerts if a["rule_id"] == "price.dual"), Decimal(0))
    assert sum((Decimal(r["dual_price_overcharge"]) for r in rows.values()), Decimal(0)) == dual
    # every version of a day is there once, numbered from 1 without a gap
    versions: dict[tuple[str, str], list[int]] = {}
    for row in read_jsonl(out / "institution_daily.jsonl"):
        versions.setdefault((row["fixmedins_code"], row["day"]), []).append(row["version"])
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def test_the_worker_shell_gets_the_same_days_as_replay(tmp_path: Path) -> None:
    """The Kafka shell's core (``monitor.streams.core.ShellCore``, no broker) hands the sinks the same
    ``InstitutionDay`` outputs as replay, from the engine, the way it hands them alerts."""
    from builders import write_jsonl

    from monitor.streams.core import Inbound, ShellCore

    recs = [settlement(f"S{i}", f"2026-01-05 1{i}:00:00", f"2026-01-05 1{i}:30:00") for i in range(4)]
    recs.append(settlement("NEXT", "2026-01-07 09:00:00", "2026-01-07 09:00:30"))  # event time passes 2 midnights
    write_jsonl(tmp_path / "in", "institutions", [institution()])
    write_jsonl(tmp_path / "in", "settlements", recs)
    replay_dir(tmp_path / "in", tmp_path / "out", load_pack("ezhou"), state=tmp_path / "state")  # no close
    replayed = read_jsonl(tmp_path / "out" / "institution_daily.jsonl")
    shell = ShellCore(Engine(load_pack("ezhou")))
    out = _feed(shell.engine, "institutions", institution())
    for offset, rec in enumerate(recs):
        shell.receive(Inbound("medins.settlements", 0, offset, PHARMACY.encode(), json.dumps(rec).encode(),
                              handle=offset))
    out += shell.release([("medins.settlements", 0)], lambda tp: False, force=True)
    days = [json.loads(d.model_dump_json()) for d in out if isinstance(d, InstitutionDay)]
    assert [(d["day"], d["version"], d["records_settlements"]) for d in days] == [("2026-01-05", 1, 4)]
    assert days == replayed

"""The Kafka shell's logic without a broker: arrival-order merge, positions across restarts, dead
letters, the dead-letter limit, clock skew, and the pinned names. Expected orders and positions are
worked out by hand from the contract in monitor/streams/core.py."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from builders import settlement

from monitor.clock import CST, Watermark
from monitor.contract import Findings, Rule, RuleContext
from monitor.outputs import Alert
from monitor.policy.pack import load_pack
from monitor.records import Record, Settlement
from monitor.streams.core import (
    Checkpoint,
    DeadLetterLimit,
    DeadLetterLimitExceeded,
    Inbound,
    ShellCore,
)

S = "medins.settlements"


class FakeEngine:
    """Records what the shell feeds it, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, datetime | None]] = []
        self.stats = type("Stats", (), {"quality": Counter()})()
        self.watermark = Watermark()
        self.advanced: list[datetime] = []
        self.pack = load_pack("ezhou")  # the shell's event clock reads its max_clock_skew_minutes

    def process(self, rec: Record, arrival: datetime | None = None) -> list[Any]:
        self.seen.append((getattr(rec, "setl_id", None) or getattr(rec, "hi_rxno", "?"), arrival))
        when = arrival or rec.arrival_time
        if when is not None:
            self.watermark.observe(when)
        return []

    def advance(self, now: datetime) -> list[Any]:
        self.advanced.append(now)
        self.watermark.observe(now)
        return []

    def snapshot(self) -> bytes:
        return pickle.dumps(self.seen)


class BatchFakeEngine(FakeEngine):
    """Takes runs of records (``Engine.process_batch``, walking them in order as the engine does) and
    writes down their lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def process_batch(self, records: Any, arrivals: Any = None) -> list[Any]:
        self.batches.append(len(records))
        out: list[Any] = []
        for i, rec in enumerate(records):
            out.extend(self.process(rec, arrivals[i] if arrivals is not None else None))
        return out


def setl(setl_id: str, minute: int) -> bytes:
    t = datetime(2026, 1, 10, 10, 0, tzinfo=CST) + timedelta(minutes=minute)
    return json.dumps(settlement(setl_id, t.strftime("%Y-%m-%d %H:%M:%S"),
                                 (t + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S"))).encode()


def msg(topic: str, partition: int, offset: int, value: bytes, handle: Any = None, **kw: Any) -> Inbound:
    return Inbound(topic, partition, offset, b"K", value, handle=handle or f"{topic}/{partition}/{offset}", **kw)


def never_waiting(tp: tuple[str, int]) -> bool:
    return False


def core() -> tuple[ShellCore, FakeEngine]:
    engine = FakeEngine()
    return ShellCore(engine), engine  # type: ignore[arg-type]


def test_partitions_merge_in_arrival_order() -> None:
    c, engine = core()
    for off, (sid, minute) in enumerate([("A1", 0), ("A2", 5), ("A3", 9)]):
        c.receive(msg(S, 0, off, setl(sid, minute)))
    for off, (sid, minute) in enumerate([("B1", 1), ("B2", 6)]):
        c.receive(msg(S, 1, off, setl(sid, minute)))
    c.release([(S, 0), (S, 1)], never_waiting)
    assert [s for s, _ in engine.seen] == ["A1", "B1", "A2", "B2", "A3"]


def test_merge_waits_for_a_partition_not_read_to_its_end() -> None:
    c, engine = core()
    c.receive(msg(S, 0, 0, setl("A1", 0)))
    c.receive(msg(S, 0, 1, setl("A2", 10)))
    behind = {(S, 1)}
    c.release([(S, 0), (S, 1)], lambda tp: tp in behind)
    assert engine.seen == []  # partition 1 may still hold something older than A1
    c.receive(msg(S, 1, 0, setl("B1", 5)))
    c.release([(S, 0), (S, 1)], lambda tp: tp in behind)
    assert [s for s, _ in engine.seen] == ["A1", "B1"]  # stops again once partition 1 is empty
    behind.clear()
    c.release([(S, 0), (S, 1)], lambda tp: tp in behind)
    assert [s for s, _ in engine.seen] == ["A1", "B1", "A2"]


def test_force_releases_despite_a_silent_partition() -> None:
    c, engine = core()
    c.receive(msg(S, 0, 0, setl("A1", 0)))
    c.release([(S, 0), (S, 1)], lambda tp: True, force=True)
    assert [s for s, _ in engine.seen] == ["A1"]


def test_equal_arrivals_break_ties_by_stream_then_producer_sequence() -> None:
    c, engine = core()
    c.receive(msg(S, 0, 0, setl("A1", 0), seq=(7,)))
    c.receive(msg(S, 1, 0, setl("B1", 0), seq=(3,)))
    c.release([(S, 0), (S, 1)], never_waiting)
    assert [s for s, _ in engine.seen] == ["B1", "A1"]


def test_acks_only_for_fully_applied_messages_and_positions_survive_restart() -> None:
    c, _ = core()
    array = b"[" + b",".join([setl("A1", 0), setl("A2", 1), setl("A3", 2)]) + b"]"
    c.receive(msg(S, 0, 0, setl("A0", -1), handle="h0"))
    c.receive(msg(S, 0, 1, array, handle="h1"))
    c.release([(S, 0)], never_waiting, limit=3)  # A0, A1, A2 — the array is cut after 2 of 3
    ckpt, handles = c.checkpoint()
    assert handles == ["h0"]  # the array message is not acknowledged yet
    assert ckpt.positions == {(S, 0): (1, 2)}
    # restart from the checkpoint: the consumer redelivers from its committed offset (0)
    restored = ShellCore(FakeEngine(), checkpoint=Checkpoint.loads(ckpt.dumps()))  # type: ignore[arg-type]
    assert restored.receive(msg(S, 0, 0, setl("A0", -1), handle="h0'")) == []
    restored.receive(msg(S, 0, 1, array, handle="h1'"))
    restored.release([(S, 0)], never_waiting)
    assert [s for s, _ in restored.engine.seen] == ["A3"]  # type: ignore[attr-defined]
    ckpt2, handles2 = restored.checkpoint()
    assert sorted(handles2) == ["h0'", "h1'"]
    assert ckpt2.positions == {(S, 0): (2, 0)}


def test_redelivery_of_a_queued_message_is_applied_once() -> None:
    c, engine = core()
    c.receive(msg(S, 0, 0, setl("A1", 0), handle="first"))
    c.receive(msg(S, 0, 0, setl("A1", 0), handle="again"))
    c.release([(S, 0)], never_waiting)
    assert [s for s, _ in engine.seen] == ["A1"]
    assert sorted(c.checkpoint()[1]) == ["again", "first"]


def test_dead_letters_carry_source_position_and_reason() -> None:
    c, engine = core()
    value = b"[" + setl("A1", 0) + b',{"setl_id": "X"}]'
    letters = c.receive(msg(S, 2, 41, value))
    assert len(letters) == 1
    d = letters[0]
    assert (d.source, d.partition, d.offset, d.index, d.key) == (S, 2, 41, 1, "K")
    # a bounded, masked copy and the digest of the whole value (issue #17: never the person in clear)
    assert d.value_sha256 == hashlib.sha256(value).hexdigest() and d.value_bytes == len(value)
    assert d.value is not None and d.value.startswith('[{"setl_id"') and "420702198001011234" not in d.value
    assert "mdtrt_id" in d.error  # a required field named
    c.release([(S, 2)], never_waiting)
    assert [s for s, _ in engine.seen] == ["A1"]  # the good element of the array still flows
    letters = c.receive(msg(S, 2, 42, b"\xff\xfe"))
    assert letters[0].value is None and letters[0].value_b64 == "//4="


def test_message_of_only_dead_letters_is_acknowledged() -> None:
    c, _ = core()
    c.receive(msg(S, 0, 0, b"{oops", handle="bad"))
    ckpt, handles = c.checkpoint()
    assert handles == ["bad"] and ckpt.positions == {(S, 0): (1, 0)}


@pytest.mark.parametrize(
    ("marks", "exceeded"),
    [
        ("BBBBB", False),  # window (10) not full yet
        ("GGGGGBBBBB", False),  # exactly half is not more than half
        ("GGGGBBBBBB", True),
        ("BBBBBBGGGGGGGGGG", False),  # the early bad ones slid out of the window
        ("GGGGGGGGGGBBBBBB", True),
    ],
)
def test_dead_letter_limit(marks: str, exceeded: bool) -> None:
    limit = DeadLetterLimit(window=10, max_ratio=0.5)
    for m in marks:
        limit.observe(m == "B")
    assert limit.exceeded is exceeded


def test_dead_letter_limit_stops_intake() -> None:
    engine = FakeEngine()
    c = ShellCore(engine, dlq_limit=DeadLetterLimit(window=4, max_ratio=0.5))  # type: ignore[arg-type]
    c.receive(msg(S, 0, 0, b"{"))
    c.receive(msg(S, 0, 1, b"{"))
    c.receive(msg(S, 0, 2, setl("A1", 0)))
    with pytest.raises(DeadLetterLimitExceeded):
        c.receive(msg(S, 0, 3, b"{"))


def test_upload_clock_ahead_of_the_broker_is_clamped() -> None:
    c, engine = core()
    broker_time = datetime(2026, 1, 10, 9, 0, tzinfo=CST)  # the record claims 10:00:30
    c.receive(msg(S, 0, 0, setl("A1", 0), timestamp=broker_time))
    c.receive(msg(S, 0, 1, setl("A2", 0), timestamp=broker_time + timedelta(hours=1)))
    c.release([(S, 0)], never_waiting)
    assert engine.seen == [("A1", broker_time), ("A2", None)]
    assert engine.stats.quality["settlements.clock_skew"] == 1


def test_tick_moves_event_time_as_broker_time_passes_beyond_the_usual_lag() -> None:
    """Records whose broker timestamps run 30 s after their upload times (the usual lag), then a few
    records a gateway held back (uploaded 10:20:30, on the broker at 12:00–12:04): idle event time moves
    to the broker's clock minus the usual lag, once nothing is queued."""
    c, engine = core()
    base = datetime(2026, 1, 10, 10, 0, 30, tzinfo=CST)  # setl(.., 0) is uploaded at 10:00:30
    for i in range(15):
        c.receive(msg(S, 0, i, setl(f"A{i}", i), timestamp=base + timedelta(minutes=i, seconds=30)))
    for i in range(5):
        late = settlement(f"B{i}", "2026-01-10 10:20:00", "2026-01-10 10:20:30")
        c.receive(msg(S, 1, i, json.dumps(late).encode(), timestamp=datetime(2026, 1, 10, 12, i, tzinfo=CST)))
    assert c.tick() == [] and engine.advanced == []  # records are still queued
    c.release([(S, 0), (S, 1)], never_waiting)
    c.tick()
    # the 0.9 quantile of the 20 broker stamps is the 18th (12:02), minus the median lag (30 s)
    assert engine.advanced == [datetime(2026, 1, 10, 12, 1, 30, tzinfo=CST)]


def test_attack_wall_clock_producer_stamps_do_not_move_event_time_to_today() -> None:
    """kcat (like aiokafka and kafka-python without an explicit timestamp) stamps every message with the
    producer's wall clock: loading January's uploads in December must not move event time to December
    (which would judge every pending day and fire every deadline at once)."""
    c, engine = core()
    today = datetime(2026, 12, 1, 22, 0, tzinfo=CST)
    for i in range(30):
        c.receive(msg(S, 0, i, setl(f"A{i}", i), timestamp=today + timedelta(milliseconds=i)))
    c.release([(S, 0)], never_waiting)
    c.tick()
    assert engine.advanced == []
    assert engine.watermark.value == datetime(2026, 1, 10, 10, 29, 30, tzinfo=CST)


def test_attack_wall_clock_stamps_on_records_without_inf_time_do_not_date_them_today() -> None:
    """A record without ``inf_time`` takes its Kafka timestamp as upload time — on the records' clock:
    minus the broker clock's usual lead over the uploads' own ``inf_time``, so a wall-clock producer's
    stamp (December) on a January record does not make it arrive in December."""
    c, engine = core()
    today = datetime(2026, 12, 1, 22, 0, tzinfo=CST)
    for i in range(30):
        c.receive(msg(S, 0, i, setl(f"A{i}", i), timestamp=today + timedelta(seconds=i)))
    bare = settlement("N1", "2026-01-10 10:31:00")  # no inf_time
    c.receive(msg(S, 0, 30, json.dumps(bare).encode(), timestamp=today + timedelta(seconds=31)))
    c.release([(S, 0)], never_waiting)
    # lead = median of (stamp − inf_time) over A0…A29 = sample A14's: (22:00:14 Dec 1) − (10:14:30 Jan 10);
    # N1's stamp 22:00:31 minus it is 10:14:47 Jan 10
    assert engine.seen[-1] == ("N1", datetime(2026, 1, 10, 10, 14, 47, tzinfo=CST))
    assert engine.watermark.value < datetime(2026, 1, 11, tzinfo=CST)


def test_attack_one_message_with_a_far_future_broker_timestamp_does_not_move_event_time() -> None:
    c, engine = core()
    for i in range(30):
        t = datetime(2026, 1, 10, 10, i, 30, tzinfo=CST)
        c.receive(msg(S, 0, i, setl(f"A{i}", i), timestamp=t if i != 7 else datetime(2099, 1, 1, tzinfo=CST)))
    c.release([(S, 0)], never_waiting)
    c.tick()
    assert engine.advanced == []


class FailingEngine(FakeEngine):
    """Raises on the record ``BOOM`` (a rule that cannot compute on what the models accepted)."""

    def process(self, rec: Record, arrival: datetime | None = None) -> list[Any]:
        if getattr(rec, "setl_id", None) == "BOOM":
            raise ArithmeticError("decimal overflow")
        return super().process(rec, arrival)


class FailingBatchEngine(FailingEngine, BatchFakeEngine):
    """``FailingEngine`` fed in runs: the failure comes out of ``process_batch``."""


@pytest.mark.parametrize("engine_kind", [FailingEngine, FailingBatchEngine], ids=["one-by-one", "in-runs"])
def test_attack_record_the_engine_fails_on_is_dead_lettered_and_the_rest_flows(engine_kind: type) -> None:
    """Issue 17: a worker that fails on a record dead-letters that record and goes on — also when the
    record is in the middle of a run handed to the engine in one call (issue 16)."""
    engine = engine_kind()
    c = ShellCore(engine)
    value = b"[" + setl("A1", 0) + b"," + setl("BOOM", 1) + b"," + setl("A2", 2) + b"]"
    assert c.receive(msg(S, 0, 7, value, handle="m7")) == []
    c.receive(msg(S, 0, 8, setl("A3", 3), handle="m8"))
    c.release([(S, 0)], never_waiting)
    assert [s for s, _ in engine.seen] == ["A1", "A2", "A3"]
    if engine_kind is FailingBatchEngine:
        assert engine.batches == [4, 2]  # the run, then what followed the record it failed on
    letters = c.take_letters()
    assert len(letters) == 1
    d = letters[0]
    assert (d.source, d.partition, d.offset, d.index) == (S, 0, 7, 1)
    assert d.error.startswith("engine failed on this record: ArithmeticError: decimal overflow")
    assert engine.stats.quality["settlements.engine_failed"] == 1
    ckpt, handles = c.checkpoint()
    assert handles == ["m7", "m8"] and ckpt.positions[(S, 0)] == (9, 0)  # the message is done, not stuck


def test_a_fetch_reaches_the_engine_as_one_run() -> None:
    """Issue 16: the records one release merges from every partition go to ``Engine.process_batch`` in
    one call, in merge order; without ``process_batch`` the engine gets them one by one, same order."""
    runs = BatchFakeEngine()
    for engine in (runs, FakeEngine()):
        c = ShellCore(engine)  # type: ignore[arg-type]
        for off, (sid, minute) in enumerate([("A1", 0), ("A2", 5), ("A3", 9)]):
            c.receive(msg(S, 0, off, setl(sid, minute)))
        c.receive(msg(S, 1, 0, b"[" + setl("B1", 1) + b"," + setl("B2", 6) + b"]"))
        c.release([(S, 0), (S, 1)], never_waiting)
        assert [s for s, _ in engine.seen] == ["A1", "B1", "A2", "B2", "A3"]
    assert runs.batches == [5]


def test_the_real_engine_takes_a_fetch_as_one_batch() -> None:
    """The real engine's batch rules see the run whole (``Engine.process_batch``, monitor.contract)."""
    from test_contract import _Batches

    from monitor.engine import Engine

    engine = Engine(load_pack("ezhou"))
    rule = engine.attach(_Batches(engine.pack))
    assert isinstance(rule, _Batches)
    c = ShellCore(engine)
    for off, (sid, minute) in enumerate([("A1", 0), ("A2", 5), ("A3", 9)]):
        c.receive(msg(S, 0, off, setl(sid, minute)))
    c.receive(msg(S, 1, 0, b"[" + setl("B1", 1) + b"," + setl("B2", 6) + b"]"))
    c.release([(S, 0), (S, 1)], never_waiting)
    assert rule.sizes == [5] and c.applied == 5


CRASH_CHILD = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_shell_core import BatchFakeEngine, FakeEngine, msg, setl, S, never_waiting
from monitor.streams.core import ShellCore
from monitor.streams.quarantine import open_journal

# a crash no exception reports (a C extension's segfault, the OOM killer); "runs": fed by process_batch
class DiesOnBoom(BatchFakeEngine if sys.argv[3] == "runs" else FakeEngine):
    def process(self, rec, arrival=None):
        if getattr(rec, "setl_id", None) == "BOOM":
            os.abort()
        return super().process(rec, arrival)

engine = DiesOnBoom()
core = ShellCore(engine, journal=open_journal(Path(sys.argv[1]), "app"))
for offset, sid in enumerate(["A1", "A2", "BOOM", "A3"]):
    core.receive(msg(S, 0, offset, setl(sid, offset)))
core.release([(S, 0)], never_waiting)
print(json.dumps({"seen": [s for s, _ in engine.seen], "letters": [l.model_dump() for l in core.take_letters()]}))
"""


@pytest.mark.parametrize("feed", ["one-by-one", "runs"])
def test_attack_record_that_kills_the_process_is_quarantined_by_position_on_restart(tmp_path: Any, feed: str) -> None:
    """A record that kills the worker outright (no exception to catch): the first restart applies it again
    (an operator's kill -9 also lands inside some record, which must not be lost); after the second
    death on the same record, the next start dead-letters it by position and goes on. Fed in runs
    (``Engine.process_batch``), the first death names only the run: the restart applies that run one
    record at a time, so the second death names the record, and the third start quarantines it as well."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "child.py"
    script.write_text(CRASH_CHILD)
    here = str(Path(__file__).parent)
    env = {**__import__("os").environ, "PYTHONPATH": here + ":" + str(Path(here).parent)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt"), here, feed], capture_output=True,
                              text=True, env=env, timeout=120)

    first, second, third = run(), run(), run()
    assert first.returncode != 0 and second.returncode != 0, (first.stderr, second.stderr)
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout)
    assert result["seen"] == ["A1", "A2", "A3"]
    [letter] = result["letters"]
    assert (letter["source"], letter["partition"], letter["offset"]) == (S, 0, 2)
    assert letter["error"].startswith("quarantined: the worker died 2 times")
    assert json.loads(letter["value"])["setl_id"] == "BOOM"


def test_names_are_pinned() -> None:
    from monitor.streams.app import AGENT_NAMES, TABLE_NAMES, TIMER_NAMES
    from monitor.streams.topics import INPUTS, topic_names

    assert topic_names() == [
        "medins.institutions", "medins.drugs", "medins.settlements", "medins.inventory",
        "medins.tracecodes", "medins.prescriptions", "medins.findings", "medins.uploads",
        "monitor.alerts", "monitor.tickets", "monitor.dlq",
    ]
    assert {s: t.key for s, t in INPUTS.items()} == {
        "institutions": "fixmedins_code", "drugs": "med_list_codg", "settlements": "fixmedins_code",
        "inventory": "fixmedins_code", "tracecodes": "fixmedins_code", "prescriptions": "hi_rxno",
        "findings": "fixmedins_code",
    }
    assert AGENT_NAMES == ()  # batch intake on Faust's consumer (monitor.streams.batch), no agent
    assert TIMER_NAMES == ("monitor-tick",)
    assert TABLE_NAMES == ()


# ------------------------------------------------------------------------- the Faust glue, without Faust
class _StubConsumer:
    def __init__(self, highwater: dict[tuple[str, int], int]) -> None:
        self.highwaters = highwater

    def assignment(self) -> set[Any]:
        from faust.types import TP as FaustTP

        return {FaustTP(t, p) for t, p in self.highwaters}

    def highwater(self, tp: Any) -> int | None:
        return self.highwaters.get((tp.topic, tp.partition))


class _StubProducer:
    async def send(self, *args: Any) -> Any:
        import asyncio

        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def flush(self) -> None:
        return None


def test_merge_stall_clock_starts_when_records_begin_to_wait(tmp_path: Any) -> None:
    """A slow start-up (group join, store connection) is not a stalled merge: the first batch after it
    waits for the partition that has not been fetched yet instead of being force-released out of order;
    a merge that really waits longer than MONITOR_MERGE_STALL_SECONDS is still released."""
    import asyncio
    import time
    from types import SimpleNamespace

    from monitor.settings import Settings
    from monitor.streams.app import WorkerShell
    from monitor.streams.checkpoint import CheckpointStore

    c, engine = core()
    app = SimpleNamespace(consumer=_StubConsumer({(S, 0): 1, (S, 1): 5}), producer=_StubProducer())
    settings = Settings(merge_stall_seconds=10, checkpoint_interval=1000)
    shell = WorkerShell(app, settings, c, CheckpointStore(tmp_path, "t"))  # type: ignore[arg-type]
    shell._last_progress = time.monotonic() - 60  # the worker took a minute to get its partitions
    message = SimpleNamespace(topic=S, partition=0, offset=0, key=b"K", value=setl("A1", 0), timestamp=None,
                              headers=[])

    async def run() -> None:
        await shell.on_messages([message])
        await shell.on_tick()
        assert engine.seen == []  # partition 1 (not fetched yet) may hold something older
        shell._last_progress -= 11  # now it has really waited longer than the stall limit
        await shell.on_tick()
        assert [s for s, _ in engine.seen] == ["A1"]

    asyncio.run(run())


class _FailsOnBoom(Rule):
    """An alert per settlement (subject: its ``setl_id``); raises inside ``on_record`` on ``BOOM``."""

    name: ClassVar[str] = "test.fails_on_boom"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements",)

    def on_record(self, rec: Record, arrival: datetime, ctx: RuleContext) -> Findings:
        assert isinstance(rec, Settlement)
        if rec.setl_id == "BOOM":
            raise ArithmeticError("decimal overflow")
        alert = ctx.alert("benefit.overpaid", rec.fixmedins_code, rec.setl_id, arrival, arrival,
                          {"setl_id": rec.setl_id}, "test")
        return [alert] if alert is not None else []


def test_a_record_failing_inside_a_run_keeps_the_outputs_before_it() -> None:
    """A run of 5 records into the real engine's ``process_batch``, record 2 raising inside a rule: the
    outputs of records 0–1 (already applied, ``exc.batch_outputs``) reach the release's outputs, record 2
    (``exc.batch_index``) is the one dead letter, records 3–4 are processed. Failed before the fix: the
    alerts of A1 and A2 were lost (applied in the engine, never written to a sink)."""
    from monitor.engine import Engine

    engine = Engine(load_pack("ezhou"))
    engine.attach(_FailsOnBoom(engine.pack))
    c = ShellCore(engine)
    for off, sid in enumerate(["A1", "A2", "BOOM", "A3", "A4"]):
        c.receive(msg(S, 0, off, setl(sid, off)))
    out = c.release([(S, 0)], never_waiting)
    assert [a.evidence["setl_id"] for a in out if isinstance(a, Alert) and a.rule_id == "benefit.overpaid"] == [
        "A1", "A2", "A3", "A4"]
    letters = c.take_letters()
    assert [(d.source, d.offset) for d in letters] == [(S, 2)]
    assert letters[0].error.startswith("engine failed on this record: ArithmeticError: decimal overflow")
    assert engine.stats.quality["settlements.engine_failed"] == 1
    assert c.applied == 5

"""``monitor trace-worker`` on the real broker (tansu): two workers in one group over 4 partitions, fed two
cities' planted cases and look-alikes with ``monitor produce``; one killed with SIGKILL mid-stream.

Reference: the in-process trace tier over the same folders (``monitor.trace.multicity.trace_findings``,
what ``monitor replay ROOT`` writes), itself checked against the planted cases in tests/trace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import Broker, Worker, free_port, kafka_env, wait_for

sys.path.insert(0, str(Path(__file__).parent.parent / "trace"))
from cases import AS_OF, BASE, E1, E3, W1, _scan, build

from monitor.policy.pack import load_pack
from monitor.trace.multicity import trace_findings
from monitor.trace.rules import TraceParams

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _split(root: Path, out1: Path, out2: Path, cut: str) -> None:
    """Each city's scans uploaded before ``cut`` into ``out1``, the rest into ``out2``."""
    for city in sorted(p for p in root.iterdir() if p.is_dir()):
        lines = (city / "tracecodes.jsonl").read_text().splitlines()
        for out, keep in ((out1, [ln for ln in lines if json.loads(ln)["inf_time"] < cut]),
                          (out2, [ln for ln in lines if json.loads(ln)["inf_time"] >= cut])):
            (out / city.name).mkdir(parents=True, exist_ok=True)
            (out / city.name / "tracecodes.jsonl").write_text("".join(ln + "\n" for ln in keep))


def _produce(env: dict[str, str], root: Path) -> None:
    for city in sorted(p for p in root.iterdir() if p.is_dir()):
        subprocess.run([sys.executable, "-m", "monitor.cli", "produce", str(city)], env=env, check=True,
                       capture_output=True)


GROUP = "medins-monitor-trace"  # <MONITOR_APP_ID>-trace
STAGE_TOPICS = ("monitor-trace-by-code", "monitor-trace-by-product")


class Group:
    """What the trace-workers' group has committed, read through plain consumers (notes/local-kafka.md:
    tansu's admin offset listing is malformed, its ListOffsets under-reports the end — so ends are the
    high-watermarks of fetch responses)."""

    def __init__(self, broker: Broker) -> None:
        from kafka import KafkaConsumer

        servers = f"127.0.0.1:{broker.port}"
        self.offsets = KafkaConsumer(bootstrap_servers=servers, group_id=GROUP, enable_auto_commit=False)
        self.reader = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)

    def ends(self, *topics: str) -> dict[Any, int]:
        """Each partition's high-watermark, from a fetch (the next offset to be written)."""
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t in topics for p in sorted(self.reader.partitions_for_topic(t) or ())]
        self.reader.assign(tps)
        self.reader.seek_to_end(*tps)  # ListOffsets: at worst the start of the last batch
        wait_for(lambda: (self.reader.poll(timeout_ms=100), all(self.reader.highwater(tp) is not None
                                                                for tp in tps))[1],
                 f"high-watermarks of {topics}", deadline=30, every=0)
        return {tp: self.reader.highwater(tp) for tp in tps}

    def committed(self, tp: Any) -> int:
        return self.offsets.committed(tp) or 0

    def read_all(self, ends: dict[Any, int]) -> bool:
        """Every offset below ``ends`` is committed by the group."""
        return all(self.committed(tp) >= end for tp, end in ends.items())

    def settled(self) -> None:
        """Wait until the group has forwarded (and committed) every upload on ``medins.tracecodes`` and
        then applied a message written after that on every stage partition: a tick sent once every
        source was read to its end, whose idle claims move each stage's watermark as far as this input
        can — so every finding the input makes is judged, sent (Faust flushes its producer before it
        commits) and on ``monitor.trace_findings``. Nothing more can come from this input."""
        wait_for(lambda: self.read_all(self.ends("medins.tracecodes")), "the group to forward every upload",
                 deadline=240, every=0.5)
        marks = {tp: end + 1 for tp, end in self.ends(*STAGE_TOPICS).items()}  # one message past the mark
        wait_for(lambda: self.read_all(marks), "the stages to apply a tick sent after that", deadline=240,
                 every=0.5)

    def owners(self) -> list[frozenset[str]]:
        """The source-partition sets claimed in the last 1.5 s of ticks (one set per live worker)."""
        from kafka import TopicPartition

        tp = TopicPartition(STAGE_TOPICS[0], 0)
        end = self.ends(STAGE_TOPICS[0])[tp]
        self.reader.assign([tp])
        self.reader.seek(tp, max(0, end - 40))
        now = time.time()
        seen = set()
        for records in self.reader.poll(timeout_ms=500).values():
            for m in records:
                v = json.loads(m.value)
                if not v["x"] and now - v["t"] < 1.5:
                    seen.add(frozenset(str(s[0]) for s in v["src"]))
        return list(seen)

    def close(self) -> None:
        self.offsets.close()
        self.reader.close()


class Findings:
    """Everything on monitor.trace_findings so far (a plain consumer, no group)."""

    def __init__(self, broker: Broker) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer("monitor.trace_findings", bootstrap_servers=f"127.0.0.1:{broker.port}",
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      consumer_timeout_ms=500)
        self.messages: list[tuple[bytes, dict[str, Any]]] = []

    def poll(self) -> list[tuple[bytes, dict[str, Any]]]:
        for msg in self.consumer:
            self.messages.append((msg.key, json.loads(msg.value)))
        return self.messages

    def by_id(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, f in self.poll():
            assert key.decode() == f["fixmedins_code"]  # keyed by the charged institution
            if f["finding_id"] in out:
                assert out[f["finding_id"]] == f  # a redelivered finding is the same finding
            out.setdefault(f["finding_id"], f)
        return out


@pytest.fixture
def trace_workers(broker: Broker, tmp_path: Path) -> Iterator[Callable[[int], list[Worker]]]:
    """``n`` trace-worker processes (not started) in one group; only the data dir and web port differ."""
    made: list[Worker] = []

    def make(n: int) -> list[Worker]:
        for i in range(n):
            env = kafka_env(broker, tmp_path / f"trace-{i}", MONITOR_PARTITIONS="4",
                            MONITOR_METRICS_PORT=str(free_port()))
            workdir = tmp_path / f"w{i}"
            workdir.mkdir()
            made.append(Worker(env, workdir))
        return made

    try:
        yield make
    finally:
        for w in made:
            w.stop()


def _start(w: Worker) -> None:
    w.runs += 1
    with w.log.open("wb") as fh:
        w.proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "trace-worker"], env=w.env, stdout=fh,
                                  stderr=subprocess.STDOUT, cwd=w.workdir, start_new_session=True)


def test_two_trace_workers_find_every_case_once_through_a_kill9(broker: Broker, trace_workers: Any,
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "in"
    expected = build(root, background=600)
    reference = trace_findings(sorted(p for p in root.iterdir() if p.is_dir()),
                               TraceParams.from_pack(load_pack("ezhou")))
    assert {(f["rule_id"], f["fixmedins_code"], f["drug_trac_codg"]) for f in reference} == expected
    part1, part2 = tmp_path / "part1", tmp_path / "part2"
    _split(root, part1, part2, f"{BASE.replace(hour=12):%Y-%m-%d %H:%M:%S}")
    a, b = trace_workers(2)
    _start(a)
    _start(b)
    env = a.env
    _produce(env, part1)
    found = Findings(broker)
    # mid-stream: part 1 is read (every code of it is stocked in or sold, none judged yet) by a group of
    # both workers, each ticking for two of the four source partitions — then one is killed
    group = Group(broker)
    wait_for(lambda: sorted(len(o) for o in group.owners()) == [2, 2], "a group of both trace-workers",
             deadline=240, every=0.5)
    wait_for(lambda: group.read_all(group.ends("medins.tracecodes")), "part 1 forwarded", deadline=240,
             every=0.5)
    a.kill9()
    _produce(env, part2)
    want = {f["finding_id"]: f for f in reference}
    try:
        wait_for(lambda: set(found.by_id()) >= set(want), "every planted case on monitor.trace_findings",
                 deadline=240, every=1.0)
    except AssertionError:
        have = found.by_id()
        missing = [(want[k]["rule_id"], want[k]["drug_trac_codg"]) for k in set(want) - set(have)]
        extra = [(have[k]["rule_id"], have[k]["drug_trac_codg"]) for k in set(have) - set(want)]
        raise AssertionError(f"missing {missing}, extra {extra}\n{b.tail()}") from None
    group.settled()  # nothing more may come
    group.close()
    got = found.by_id()
    assert got == want  # exactly the uninterrupted run's findings: no case lost, none extra, same content
    assert b.alive()


def test_findings_carry_both_sides_and_stable_ids(broker: Broker, trace_workers: Any, tmp_path: Path) -> None:
    """One worker; the input produced twice (an at-least-once upstream): the same ids, no new case."""
    root = tmp_path / "in"
    build(root, background=50)
    (w,) = trace_workers(1)
    _start(w)
    _produce(w.env, root)
    found = Findings(broker)
    wait_for(lambda: len(found.by_id()) >= 5, "five findings", deadline=240, every=1.0)
    group = Group(broker)
    group.settled()
    first = found.by_id()
    _produce(w.env, root)
    group.settled()  # the second copy is read and judged: nothing new
    group.close()
    assert found.by_id() == first
    resold = next(f for f in first.values() if f["rule_id"] == "trace.resold")
    assert resold["charged"]["fixmedins_code"] == resold["fixmedins_code"]
    assert set(resold["other"]) == {"fixmedins_code", "region"}
    assert AS_OF > BASE


def test_a_future_scan_in_a_partition_that_goes_quiet_is_clamped_and_judged(broker: Broker, trace_workers: Any,
                                                                              tmp_path: Path) -> None:
    """The intake clock holds a scan claiming an upload 200 days ahead until 3 institutions agree, else
    clamps it after 256 more scans of its source partition — which a partition that then goes quiet
    never brings. The worker clamps it once the partition stayed read to its end for
    ``MONITOR_TRACE_QUIET_SECONDS``: the box sold at E1 and again at E3 (whose clock runs 200 days
    ahead) is a resale all the same, judged at event time. Source partitions (murmur2 of the key over
    4): E3 and E6 → 0 (two institutions, so E3's claim needs another's agreement), W1 → 1, E1 → 2."""
    from kafka.partitioner.default import murmur2

    e6 = "P42070200006"
    assert [(murmur2(i.encode()) & 0x7FFFFFFF) % 4 for i in (E3, e6, W1, E1)] == [0, 0, 1, 2]
    day = timedelta(days=1)
    code = "70000000000000000031"
    recs = [_scan(code, E1, "stock_in", BASE), _scan(code, E1, "sale", BASE + timedelta(hours=1), n=1),
            _scan("70000000000000000032", E3, "stock_in", BASE),  # E3's partition has an event time
            _scan("70000000000000000035", e6, "stock_in", BASE),
            _scan(code, E3, "sale", BASE + 2 * day, n=2, lag=timedelta(days=200)),  # held: E3's last upload
            # time moves on in the other partitions (no upload of E3's partition after its future one)
            _scan("70000000000000000033", E1, "stock_in", BASE + 5 * day),
            _scan("70000000000000000034", W1, "stock_in", BASE + 5 * day)]
    root = tmp_path / "in"
    for city, insts in (("ezhou", (E1, E3, e6)), ("wuhan", (W1,))):
        (root / city).mkdir(parents=True)
        (root / city / "tracecodes.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in recs if r["fixmedins_code"] in insts), encoding="utf-8")
    (w,) = trace_workers(1)
    w.env["MONITOR_TRACE_QUIET_SECONDS"] = "1"
    _start(w)
    _produce(w.env, root)
    found = Findings(broker)
    wait_for(lambda: any(f["rule_id"] == "trace.resold" for f in found.by_id().values()) or not w.alive(),
             "the resale of the clamped scan", deadline=120, every=0.5)
    assert w.alive(), w.tail()
    group = Group(broker)
    group.settled()
    group.close()
    resold = [f for f in found.by_id().values() if f["rule_id"] == "trace.resold"]
    assert [(f["fixmedins_code"], f["drug_trac_codg"]) for f in resold] == [(E3, code)]
    assert resold[0]["other"]["fixmedins_code"] == E1
    # judged at event time (the clamped upload + 24 h), not 200 days ahead
    assert datetime.fromisoformat(resold[0]["detected_at"]) < BASE + 2 * day
    assert "quiet for" in w.log.read_text()  # the worker's clamp, not the window's

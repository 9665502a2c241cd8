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
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import Broker, Worker, free_port, kafka_env, wait_for

sys.path.insert(0, str(Path(__file__).parent.parent / "trace"))
from cases import AS_OF, BASE, build

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
    # mid-stream: part 1 is being read (every code of it is stocked in or sold, none judged yet) —
    # wait until both workers hold table state, then kill one
    wait_for(lambda: all(any((w.settings.data_dir / "trace").rglob("*.sst")) or
                         any((w.settings.data_dir / "trace").rglob("*.log")) for w in (a, b)),
             "both trace-workers to write their tables")
    time.sleep(3)
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
    time.sleep(3)  # nothing more may come
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
    first = found.by_id()
    _produce(w.env, root)
    time.sleep(8)
    assert found.by_id() == first
    resold = next(f for f in first.values() if f["rule_id"] == "trace.resold")
    assert resold["charged"]["fixmedins_code"] == resold["fixmedins_code"]
    assert set(resold["other"]) == {"fixmedins_code", "region"}
    assert AS_OF > BASE

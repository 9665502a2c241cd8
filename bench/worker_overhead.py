"""The Kafka shell's bookkeeping per record, without Kafka and without the engine (issue #16: ≤ 15 µs).

``ShellCore`` (``monitor.streams.core``) is driven as the Faust adapter drives it — ``receive_many``
over the messages of a fetched batch as the consumer hands them over (topic, partition, offset, key,
value, timestamp in seconds, the producer's ``seq`` header), then ``release`` (the arrival-order merge
over the partitions, the event clock, positions, runs for ``Engine.process_batch``) and ``checkpoint``
for the handles to acknowledge — over a null engine that only moves its watermark. The messages are a
city's business records (settlements, inventory, trace codes, prescriptions) spread over 4 partitions
per topic, one record per message or arrays of 100.

* ``parse`` — the intake's decode alone (``monitor.intake.decoder``) over the same values;
* ``shell`` — receive + release + checkpoint per record, parse included;
* bookkeeping = shell − parse (the row the target is about).

Run with the worker process's garbage-collector thresholds (``monitor.intake.GC_THRESHOLDS``).
CPU seconds of this process (``time.process_time``), best of ``runs`` (a microbenchmark on a shared
machine: the least-disturbed run is the one that measures the code).
"""

from __future__ import annotations

import gc
import json
import pickle
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.clock import CST, Watermark
from monitor.intake import GC_THRESHOLDS, decoder
from monitor.policy.pack import load_pack
from monitor.streams.core import ShellCore
from monitor.streams.topics import INPUTS

_STREAMS = ("settlements", "inventory", "tracecodes", "prescriptions")
PARTITIONS = 4
BATCH = 500  # messages per fetched batch (Faust's getmany hands over a few hundred at a time)


class NullEngine:
    """What ``ShellCore`` needs of an engine, doing nothing but keeping event time."""

    def __init__(self) -> None:
        self.pack = load_pack("ezhou")
        self.stats = type("Stats", (), {"quality": Counter()})()
        self.watermark = Watermark()

    def process(self, rec: Any, arrival: datetime | None = None) -> list[Any]:
        when = arrival or rec.arrival_time
        if when is not None:
            self.watermark.observe(when)
        return []

    def process_batch(self, records: Any, arrivals: Any = None) -> list[Any]:
        observe = self.watermark.observe
        for i, rec in enumerate(records):
            when = (arrivals[i] if arrivals is not None else None) or rec.arrival_time
            if when is not None:
                observe(when)
        return []

    def advance(self, now: datetime) -> list[Any]:
        self.watermark.observe(now)
        return []

    def snapshot(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Consumed:
    """What Faust's consumer hands the worker per message (``faust.types.ConsumerMessage``'s fields that
    ``ShellCore.receive_many`` reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None
    headers: tuple[tuple[str, bytes], ...]


def messages(folder: Path, records: int, per_message: int) -> list[Consumed]:
    """Up to ``records`` business records of ``folder`` as messages, in the files' (arrival) order per
    topic, partitioned by institution, with broker timestamps a few seconds after ``inf_time``."""
    lines: list[tuple[str, dict[str, Any]]] = []
    for stream in _STREAMS:
        path = folder / f"{stream}.jsonl"
        if path.exists():
            for raw in path.read_bytes().splitlines()[: records // len(_STREAMS) + 1]:
                if raw.strip():
                    lines.append((stream, json.loads(raw)))
    lines = lines[:records]
    by_tp: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for stream, rec in lines:
        part = hash(rec.get("fixmedins_code", "")) % PARTITIONS
        by_tp.setdefault((INPUTS[stream].name, part), []).append(rec)
    out: list[Consumed] = []
    seq = 0
    for (topic, part), recs in sorted(by_tp.items()):
        for offset, start in enumerate(range(0, len(recs), per_message)):
            chunk = recs[start:start + per_message]
            value = json.dumps(chunk[0] if per_message == 1 else chunk, ensure_ascii=False).encode()
            stamp = chunk[-1].get("inf_time")
            ts = (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST) + timedelta(seconds=5)
                  if isinstance(stamp, str) and len(stamp) == 19 else None)
            seqs = ",".join(str(seq + i) for i in range(len(chunk))).encode()
            seq += len(chunk)
            out.append(Consumed(topic, part, offset, b"K", value, ts.timestamp() if ts else None, (("seq", seqs),)))
    out.sort(key=lambda m: (m.timestamp or 0.0, m.topic, m.partition, m.offset))
    return out


def _never_waiting(tp: tuple[str, int]) -> bool:
    return False


def measure(folder: Path, records: int, per_message: int, runs: int = 3) -> dict[str, float]:
    """µs per record: ``parse``, ``shell`` and ``bookkeeping`` (module docstring), best of ``runs``."""
    msgs = messages(folder, records, per_message)
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return _measure(msgs, runs)
    finally:
        gc.set_threshold(*previous)


def _measure(msgs: list[Consumed], runs: int) -> dict[str, float]:
    n = 0
    best_parse = best_shell = float("inf")
    for _ in range(runs):
        engine = NullEngine()
        decode = decoder(engine)
        t0 = time.process_time()
        for m in msgs:
            decode("settlements" if "settlements" in m.topic else m.topic.split(".")[-1], m.value or b"")
        best_parse = min(best_parse, time.process_time() - t0)
        core = ShellCore(engine)  # type: ignore[arg-type]
        assigned = sorted({(m.topic, m.partition) for m in msgs})
        t0 = time.process_time()
        for start in range(0, len(msgs), BATCH):
            core.receive_many(msgs[start:start + BATCH])
            core.release(assigned, _never_waiting, limit=None)
            _, handles = core.checkpoint()
        best_shell = min(best_shell, time.process_time() - t0)
        n = core.applied
        pickle.dumps(handles)
    if n == 0:
        raise RuntimeError("no business records for the worker bench")
    parse, shell = best_parse / n * 1e6, best_shell / n * 1e6
    return {"records": float(n), "messages": float(len(msgs)), "parse": parse, "shell": shell,
            "bookkeeping": shell - parse}

"""Case 1 (replay core) and case 4 (scaling): records/s of ``monitor replay`` on one core.

* ``replay_rate`` runs the real shell (``monitor.replay.replay_dir``: read, parse, merge in arrival
  order, engine with every implemented detector of the default pack, ledger, ``alerts/tickets/dlq.jsonl``
  and ``summary.json``) and divides the input records by the wall time.
* ``baseline_rate`` is the ceiling for our own code: a bare loop that reads the same files and parses
  every line with the same models (``parse_value``), keeping the last record per institution in a dict.
* ``stages`` splits one instrumented run into parse (read + ``parse_value`` + arrival-order merge), detect
  (``Engine.process``/``advance`` without the ledger: dedup, timers, detectors, building alerts), ledger
  (``Ledger.on_trigger``/``on_timer``) and output (serialising and writing the JSONL files).
"""

from __future__ import annotations

import heapq
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.gen import InputInfo
from monitor.clock import CST
from monitor.engine import Engine, Output
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, Record, parse_value
from monitor.replay import input_files, replay_dir
from monitor.sinks.files import FileSink

#: Catalogue records without any time come first (as in the replay shell).
_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)


def replay_rate(info: InputInfo) -> tuple[float, dict[str, Any]]:
    """One timed run of the replay shell; returns (records/s, facts about the run)."""
    pack = load_pack("ezhou")
    out = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        t0 = time.perf_counter()
        result = replay_dir(info.folder, out, pack, as_of=info.as_of)
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    st = result.engine.stats
    n = sum(st.records.values()) + sum(result.dead_letters.values())
    facts = {
        "records": n, "seconds": elapsed, "alerts": sum(st.alerts.values()), "tickets": sum(st.tickets.values()),
        "duplicates": sum(st.duplicates.values()), "detectors": [d.name for d in result.engine.detectors],
    }
    return n / elapsed, facts


def baseline_rate(info: InputInfo) -> float:
    """The bare parse loop over the same files (read + ``parse_value`` + one dict update per record)."""
    last: dict[str, Record] = {}
    n = 0
    t0 = time.perf_counter()
    for path in input_files(info.folder):
        stream = path.stem
        with path.open("rb") as fh:
            for raw in fh:
                for rec in parse_value(stream, raw.rstrip(b"\r\n")):
                    n += 1
                    if not isinstance(rec, InvalidRecord):
                        last[getattr(rec, "fixmedins_code", stream)] = rec
    return n / (time.perf_counter() - t0)


def stages(info: InputInfo) -> dict[str, float]:
    """Seconds spent per stage in one instrumented run (see the module docstring)."""
    t0 = time.perf_counter()
    streams: list[list[tuple[Any, int, int, Record]]] = []
    for order, path in enumerate(input_files(info.folder)):
        items: list[tuple[Any, int, int, Record]] = []
        with path.open("rb") as fh:
            for line, raw in enumerate(fh):
                for rec in parse_value(path.stem, raw.rstrip(b"\r\n")):
                    if not isinstance(rec, InvalidRecord):
                        items.append((rec.arrival_time or _EARLIEST, order, line, rec))
        streams.append(items)
    merged = [item[3] for item in heapq.merge(*streams, key=lambda it: (it[0], it[1], it[2]))]
    t_parse = time.perf_counter() - t0

    engine = Engine(load_pack("ezhou"))
    spent = [0.0]
    ledger = engine.ledger

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            s = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - s
        return wrapper

    ledger.on_trigger = timed(ledger.on_trigger)  # type: ignore[method-assign]
    ledger.on_timer = timed(ledger.on_timer)  # type: ignore[method-assign]
    outputs: list[Output] = []
    t1 = time.perf_counter()
    for rec in merged:
        outputs.extend(engine.process(rec))
    outputs.extend(engine.advance(info.as_of))
    t_engine = time.perf_counter() - t1

    out = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        t2 = time.perf_counter()
        sink = FileSink(out)
        sink.write(outputs, [])
        sink.close()
        t_output = time.perf_counter() - t2
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"parse": t_parse, "detect": t_engine - spent[0], "ledger": spent[0], "output": t_output,
            "records": float(len(merged)), "outputs": float(len(outputs))}

"""Case 1 (replay core) and case 4 (scaling): records/s of ``monitor replay`` on one core.

Rates are records per **CPU second of this process** (``time.process_time``): the replay is
single-threaded, so that is its rate on one dedicated core, and on this shared machine other tenants'
load does not count against it. The wall-clock rate is kept in the JSON facts (``wall_rate``).

* ``replay_rate`` runs the real shell (``monitor.replay.replay_dir``: read, parse, merge in arrival
  order, engine with every implemented detector of the default pack, ledger, ``alerts/tickets/dlq.jsonl``
  and ``summary.json``) and divides the input records by the wall time.
* ``baseline_rate`` is the ceiling for our own code: a bare loop that reads the same files and parses
  every line with the same models (``parse_value``), keeping the last record per institution in a dict.
* ``floor_rate`` is the interpreter's floor for the replay's *shape*: the bare parse loop above, then
  ``rules`` (10: the ``ezhou`` pack's rule families) minimal rules over the parsed records — each one
  dict look-up of its (institution, business day) tally and two in-place updates per record, nothing
  else (no dedup, timers, alerts, arrival order). It says what one process of CPython can reach at best
  when every record is a Python object that every rule touches (issue #16's ≥ 100 000 target: 10 µs a
  record for everything).
* ``stages`` splits one instrumented run into parse (read + the shells' decoder, ``monitor.intake``),
  intake (arrival-order merge and event clock), detect (``Engine.process_batch``/``advance`` over the
  replay's runs, without the ledger: admission, dedup, timers, rules, applying findings), ledger
  (``Ledger.on_trigger``/``on_timer``) and output (serialising and writing the JSONL files); detect is
  split further by rule (``det:NAME``) and the engine's own rest (``det:(engine)``).
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.gen import InputInfo
from monitor.clock import CST
from monitor.contract import Rule
from monitor.engine import Engine, Output
from monitor.intake import GC_THRESHOLDS, decoder
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, Record, parse_value
from monitor.replay import RUN_RECORDS, input_files, new_clock, replay_dir
from monitor.sinks.files import FileSink

#: Catalogue records without any time come first (as in the replay shell).
_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)


class _NoLean:
    def decode(self, raw: bytes) -> None:
        return None


@contextlib.contextmanager
def models_only() -> Iterator[None]:
    """The parse as it was before the lean path (``records.parse_value_with_models`` for every value):
    the same-run baseline of issue #16's decode."""
    from monitor import records

    saved = dict(records._LEAN)
    records._LEAN.update({k: _NoLean() for k in saved})  # type: ignore[misc]
    try:
        yield
    finally:
        records._LEAN.update(saved)


def replay_rate(info: InputInfo) -> tuple[float, dict[str, Any]]:
    """One timed run of the replay shell; returns (records/s, facts about the run)."""
    pack = load_pack("ezhou")
    out = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        w0, t0 = time.perf_counter(), time.process_time()
        result = replay_dir(info.folder, out, pack, as_of=info.as_of)
        elapsed, wall = time.process_time() - t0, time.perf_counter() - w0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    st = result.engine.stats
    n = sum(st.records.values()) + sum(result.dead_letters.values())
    facts = {
        "records": n, "cpu_seconds": elapsed, "wall_rate": n / wall,
        "alerts": sum(st.alerts.values()), "tickets": sum(st.tickets.values()),
        "duplicates": sum(st.duplicates.values()), "detectors": [d.name for d in result.engine.detectors],
    }
    return n / elapsed, facts


def baseline_rate(info: InputInfo, parse: Callable[[str, bytes], list[Any]] = parse_value, rules: int = 0) -> float:
    """The bare parse loop over the same files (read + ``parse`` + one dict update per record);
    ``parse_value_with_models`` for the models-only ceiling. ``rules`` > 0: the CPython floor
    (``floor_rate``) — per record, each of that many minimal rules looks up its ``(fixmedins_code,
    business day)`` tally and updates it twice in place."""
    last: dict[str, Record] = {}
    tallies: list[dict[tuple[str, Any], list[int]]] = [{} for _ in range(rules)]
    n = 0
    t0 = time.process_time()
    for path in input_files(info.folder):
        stream = path.stem
        with path.open("rb") as fh:
            for raw in fh:
                for rec in parse(stream, raw.rstrip(b"\r\n")):
                    n += 1
                    if isinstance(rec, InvalidRecord):
                        continue
                    code = getattr(rec, "fixmedins_code", stream)
                    last[code] = rec
                    if tallies:
                        btime = rec.business_time
                        key = (code, btime.date() if btime is not None else None)
                        for tally in tallies:
                            t = tally.get(key)
                            if t is None:
                                t = tally[key] = [0, 0]
                            t[0] += 1
                            t[1] += n & 1
    return n / (time.process_time() - t0)


def floor_rate(info: InputInfo, rules: int = 10) -> float:
    """Records per CPU-second of the bare parse loop plus ``rules`` minimal per-record rules (module
    docstring; same files and parse as ``baseline_rate``), under the shells' garbage-collector thresholds
    (the tallies are many long-lived small objects, as the rules' state is)."""
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return baseline_rate(info, rules=rules)
    finally:
        gc.set_threshold(*previous)


def stages(info: InputInfo) -> dict[str, float]:
    """CPU seconds per stage in one instrumented run (see the module docstring), plus ``det:NAME`` —
    the share of detect spent in each rule's ``on_record``/``on_batch``/``on_timer`` (CPU time of the
    calls) — and ``det:(engine)``, the rest of detect: admission (time, de-duplication, registry),
    dispatch, timers' bookkeeping, applying findings, building nothing a rule asked for."""
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # as both shells run (the default thresholds doubled "parse")
    try:
        return _stages(info)
    finally:
        gc.set_threshold(*previous)


def _stages(info: InputInfo) -> dict[str, float]:
    pack = load_pack("ezhou")
    decode = decoder(Engine(pack))  # the shells' parse (monitor.intake): NHSA codec over the lean path
    t0 = time.process_time()
    streams: list[list[tuple[Any, int, int, Record]]] = []
    for order, path in enumerate(input_files(info.folder)):
        items: list[tuple[Any, int, int, Record]] = []
        stream = path.stem
        with path.open("rb") as fh:
            for line, raw in enumerate(fh):
                for rec in decode(stream, raw.rstrip(b"\r\n")):
                    if not isinstance(rec, InvalidRecord):
                        items.append((rec.arrival_time or _EARLIEST, order, line, rec))
        streams.append(items)
    t_parse = time.process_time() - t0
    # intake: the arrival-order merge and the event clock (monitor.intake), as the replay shell runs them
    t0 = time.process_time()
    clock = new_clock(pack)
    merged = []
    for item in heapq.merge(*streams, key=lambda it: (it[0], it[1], it[2])):
        rec = item[3]
        if rec.STREAM in ("institutions", "drugs"):
            merged.append(rec)
        else:
            merged.extend(r.item for r in clock.offer(rec, item[0], getattr(rec, "fixmedins_code", rec.STREAM)))
    merged.extend(r.item for r in clock.close(info.as_of))
    t_intake = time.process_time() - t0

    engine = Engine(pack)
    spent: dict[str, float] = {}

    inside: set[str] = set()  # rules whose timed call is running (a batch rule fires its timers inside it)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        spent[name] = 0.0
        owner = name.split(":")[1] if name.startswith("det:") else name

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if owner in inside:  # already counted by the enclosing call (each_delivery's on_timer)
                return fn(*args, **kwargs)
            inside.add(owner)
            s = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - s
                inside.discard(owner)
        return wrapper

    # Instance attributes shadow the methods for this run only (the engine looks them up on the
    # instance; whether a rule has a batch path it reads from the class, so that stays as it is).
    ledger = engine.ledger
    ledger.on_trigger = timed("ledger", ledger.on_trigger)  # type: ignore[method-assign]
    ledger.on_timer = timed("ledger_timer", ledger.on_timer)  # type: ignore[method-assign]
    for det in engine.detectors:
        det.on_record = timed(f"det:{det.name}", det.on_record)  # type: ignore[method-assign]
        det.on_timer = timed(f"det:{det.name}:timer", det.on_timer)  # type: ignore[method-assign]
        if isinstance(det, Rule) and type(det).on_batch is not Rule.on_batch:
            det.on_batch = timed(f"det:{det.name}:batch", det.on_batch)  # type: ignore[method-assign]
    outputs: list[Output] = []
    t1 = time.process_time()
    for at in range(0, len(merged), RUN_RECORDS):  # the replay shell's runs (monitor.replay)
        outputs.extend(engine.process_batch(merged[at:at + RUN_RECORDS]))
    outputs.extend(engine.advance(info.as_of))
    t_engine = time.process_time() - t1
    t_ledger = spent.pop("ledger") + spent.pop("ledger_timer")
    per_det: dict[str, float] = {}
    for name, secs in spent.items():
        base = name.split(":")[1]
        per_det[base] = per_det.get(base, 0.0) + secs
    per_det["(engine)"] = t_engine - t_ledger - sum(per_det.values())

    out = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        t2 = time.process_time()
        sink = FileSink(out)
        sink.write(outputs, [])
        sink.close()
        t_output = time.process_time() - t2
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"parse": t_parse, "intake": t_intake, "detect": t_engine - t_ledger, "ledger": t_ledger, "output": t_output,
            "records": float(len(merged)), "outputs": float(len(outputs)),
            **{f"det:{k}": v for k, v in per_det.items()}}

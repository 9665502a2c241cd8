"""The replay shell: JSONL files in, the same outputs as the Kafka shell out (the reference semantics).

``monitor replay INPUT_DIR --out OUT_DIR [--policy ezhou] [--as-of TIME] [--state FILE]``

INPUT_DIR holds any of ``settlements.jsonl``, ``inventory.jsonl``, ``tracecodes.jsonl``,
``prescriptions.jsonl``, ``findings.jsonl``, ``institutions.jsonl``, ``drugs.jsonl``: one JSON record (or a
JSON array of records) a line. The files are merged in arrival order (``inf_time``; a record without it
arrives at its business time; catalogue records without either come first), streaming: each file is read
once, in order. A line out of arrival order inside its file is judged by its own arrival time, but the
clock never runs backwards (as in the Kafka shell).

``--as-of`` moves event time past the last record so that due deadlines fire. ``--state FILE`` resumes
from and saves a checkpoint, appending to the outputs: replaying part 1 then part 2 of an input gives
the same files as replaying it whole.
"""

from __future__ import annotations

import base64
import gc
import heapq
import json
import operator
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.clock import CST
from monitor.detectors import unimplemented_rules
from monitor.engine import Engine, Output
from monitor.nhsa import UPLOADS, stream_decoder
from monitor.nhsa import advance as nhsa_advance
from monitor.nhsa import apply as nhsa_apply
from monitor.nhsa.items import Pending
from monitor.outputs import DeadLetter
from monitor.policy.pack import Pack
from monitor.privacy import Pseudonymizer
from monitor.records import STREAMS, InvalidRecord, Record, parse_value
from monitor.sinks import Sink
from monitor.sinks.config import bind_all
from monitor.sinks.files import FileSink

_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)


def dead_letter(source: str, raw: bytes, error: str, *, line: int | None = None, index: int | None = None,
                partition: int | None = None, offset: int | None = None, key: str | None = None) -> DeadLetter:
    """A dead letter with the original value (as text when UTF-8, else base64)."""
    try:
        text: str | None = raw.decode("utf-8")
        b64 = None
    except UnicodeDecodeError:
        text, b64 = None, base64.b64encode(raw).decode("ascii")
    return DeadLetter(source=source, line=line, index=index, partition=partition, offset=offset, key=key,
                      value=text, value_b64=b64, error=error)


@dataclass(order=True)
class _Item:
    arrival: datetime
    order: int
    line: int
    record: Record | Pending | None = field(compare=False)
    letter: DeadLetter | None = field(compare=False)
    skewed: bool = field(default=False, compare=False)


def _parse_lines(path: Path, order: int, decode: Any = parse_value) -> Iterator[_Item]:
    stream = path.stem
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            for parsed in decode(stream, raw):
                if isinstance(parsed, InvalidRecord):
                    yield _Item(_EARLIEST, order, line_no, None,
                                dead_letter(path.name, raw, parsed.reason, line=line_no, index=parsed.index))
                else:
                    yield _Item(parsed.arrival_time or _EARLIEST, order, line_no, parsed, None)


def _read_stream(path: Path, order: int, max_skew: timedelta, decode: Any = parse_value) -> Iterator[_Item]:
    """Items of one file in file order, with arrival times made usable for the merge:

    * a record whose ``inf_time`` is more than ``max_skew`` ahead of the next record's in the same file
      (files are written in upload order) has a wrong clock: its arrival is clamped to the next
      record's and it is counted as clock skew, so one institution's clock never moves time forward
      for the others (design §2);
    * a dead letter or a record without a time takes the arrival of the record before it.
    """
    last = _EARLIEST
    pending: _Item | None = None

    def settle(item: _Item, nxt: _Item | None) -> _Item:
        nonlocal last
        if item.arrival == _EARLIEST:
            item.arrival = last
        elif nxt is not None and nxt.arrival != _EARLIEST and item.arrival - nxt.arrival > max_skew:
            item.arrival, item.skewed = max(nxt.arrival, last), True
        last = max(last, item.arrival)
        return item

    for item in _parse_lines(path, order, decode):
        if item.record is None:
            item.arrival = last
            yield item
            continue
        if pending is not None:
            yield settle(pending, item)
        pending = item
    if pending is not None:
        yield settle(pending, None)


_MERGE_KEY = operator.attrgetter("arrival", "order", "line")


def input_files(input_dir: Path) -> list[Path]:
    return [input_dir / f"{s}.jsonl" for s in (*STREAMS, UPLOADS) if (input_dir / f"{s}.jsonl").exists()]


@dataclass
class ReplayResult:
    engine: Engine
    dead_letters: Counter[str]
    outputs: int

    def summary(self) -> dict[str, Any]:
        st = self.engine.stats
        wm = self.engine.watermark.value
        return {
            "policy": self.engine.pack.label,
            "watermark": wm.isoformat() if wm else None,
            "records": dict(sorted(st.records.items())),
            "duplicates": dict(sorted(st.duplicates.items())),
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "alerts_by_rule": dict(sorted(st.alerts.items())),
            "tickets_by_action": dict(sorted(st.tickets.items())),
            "quality": dict(sorted(st.quality.items())),
            "unimplemented_rules": unimplemented_rules(self.engine.pack),
        }


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.n = 0

    def tick(self, engine: Engine) -> None:
        self.n += 1
        if self.enabled and self.n % 20000 == 0:
            wm = engine.watermark.value
            sys.stderr.write(f"\r{self.n:>10,} records  event time {wm:%Y-%m-%d %H:%M}  "
                             f"alerts {sum(engine.stats.alerts.values()):,}  "
                             f"tickets {sum(engine.stats.tickets.values()):,}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.n >= 20000:
            sys.stderr.write("\n")


def run_replay(
    input_dir: Path,
    engine: Engine,
    sinks: Sequence[Sink],
    as_of: datetime | None = None,
    progress: bool = False,
    batch: int = 2000,
    interleave: Iterator[tuple[datetime, Callable[[], list[Output]]]] | None = None,
) -> ReplayResult:
    """Drive ``engine`` over the files of ``input_dir`` in arrival order, writing to ``sinks``.
    ``interleave``: (instant, action) in instant order, each run before the first record arriving after
    it (the national trace tier's findings, ``monitor.trace.multicity``)."""
    files = input_files(input_dir)
    max_skew = timedelta(minutes=float(engine.pack.setting("max_clock_skew_minutes", 60)))
    # Ordered by (arrival, file, line) as ``_Item``'s own ordering, but compared as plain tuples: the
    # dataclass's generated ``__lt__``/``__eq__`` cost ~1 µs per record in the merge (bench/).
    decode = stream_decoder(engine)  # platform envelopes and field variance (monitor.nhsa)
    merged = heapq.merge(*(_read_stream(p, i, max_skew, decode) for i, p in enumerate(files)), key=_MERGE_KEY)
    # The engine's state is many long-lived small objects: with the default thresholds the cyclic
    # collector re-scans it every few hundred allocations (~8 % of a replay, bench/). Nothing in the
    # engine relies on cycles being collected promptly, so collect young objects less often.
    previous = gc.get_threshold()
    gc.set_threshold(50_000, 20, 50)
    dead = Counter[str]()
    out: list[Output] = []
    letters: list[DeadLetter] = []
    total = 0
    bar = _Progress(progress)

    def flush_batch() -> None:
        nonlocal out, letters, total
        if out or letters:
            for sink in sinks:
                sink.write(out, letters)
            total += len(out)
            out, letters = [], []

    pending = next(interleave, None) if interleave is not None else None
    try:
        for item in merged:
            while pending is not None and pending[0] <= item.arrival:
                out.extend(pending[1]())
                pending = next(interleave, None) if interleave is not None else None
            if item.letter is not None:
                letters.append(item.letter)
                dead[item.letter.source] += 1
            else:
                assert item.record is not None
                if item.skewed:
                    engine.stats.quality[f"{item.record.STREAM}.clock_skew"] += 1
                out.extend(nhsa_apply(engine, item.record, item.arrival if item.skewed else None))
                bar.tick(engine)
            if len(out) + len(letters) >= batch:
                flush_batch()
        while pending is not None and (as_of is None or pending[0] <= as_of):
            out.extend(pending[1]())
            pending = next(interleave, None) if interleave is not None else None
        if as_of is not None:
            out.extend(nhsa_advance(engine, as_of))
        flush_batch()
        for sink in sinks:
            sink.flush()
    finally:
        gc.set_threshold(*previous)
    bar.done()
    return ReplayResult(engine, dead, total)


def replay_dir(
    input_dir: Path,
    out_dir: Path,
    pack: Pack,
    as_of: datetime | None = None,
    state: Path | None = None,
    progress: bool = False,
    pseudo: Pseudonymizer | None = None,
    extra_sinks: Sequence[Sink] = (),
    trace_findings: list[dict[str, Any]] | None = None,
) -> ReplayResult:
    """The whole ``monitor replay`` job: files in, ``alerts/tickets/dlq.jsonl`` + ``summary.json`` out."""
    resume = state is not None and state.exists()
    engine = Engine.restore(state.read_bytes()) if resume and state else Engine(pack, pseudo)
    if resume and engine.pack.label != pack.label:
        raise ValueError(f"checkpoint {state} was made with policy {engine.pack.label}, not {pack.label}")
    bind_all(extra_sinks, engine)  # sinks that observe the engine (ClickHouse institution_daily, metrics)
    files = FileSink(out_dir, append=resume)
    try:
        feed = None
        if trace_findings is not None:  # several cities: the national trace tier's findings (monitor.trace)
            from monitor.trace.multicity import feed_for
            feed = feed_for(lambda: engine, trace_findings)
        result = run_replay(input_dir, engine, [files, *extra_sinks], as_of=as_of, progress=progress,
                            interleave=feed)
    finally:
        files.close()
        for sink in extra_sinks:
            sink.close()
    if state is not None:
        tmp = state.with_suffix(state.suffix + ".tmp")
        tmp.write_bytes(engine.snapshot())
        tmp.replace(state)
    (out_dir / "summary.json").write_text(
        json.dumps(result.summary(), ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return result


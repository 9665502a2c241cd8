"""The replay shell: JSONL files in, the same outputs as the Kafka shell out (the reference semantics).

``monitor replay INPUT_DIR --out OUT_DIR [--policy ezhou] [--as-of TIME] [--state FILE]``

INPUT_DIR holds any of ``settlements.jsonl``, ``inventory.jsonl``, ``tracecodes.jsonl``,
``prescriptions.jsonl``, ``findings.jsonl``, ``institutions.jsonl``, ``drugs.jsonl``: one JSON record (or a
JSON array of records) a line. The files are merged in arrival order (``inf_time``; a record without it
arrives at its business time; catalogue records without either come first), streaming: each file is read
once, in order. A line out of arrival order inside its file is judged by its own arrival time, but the
clock never runs backwards (as in the Kafka shell).

Event time moves only on evidence (``monitor.watermark.EventClock``): a line more than the pack's
``max_clock_skew_minutes`` ahead of any of the next ``LOOKAHEAD`` lines of its file is clamped; a claim
that far ahead of event time waits until ``MONITOR_CLOCK_QUORUM`` institutions agree, else is clamped.

``--as-of`` moves event time past the last record so that due deadlines fire. ``--state FILE`` resumes
from and saves a checkpoint (signed, 0600, no secret; with the output sizes it covers), appending to the
outputs: replaying part 1 then part 2 of an input gives the same files as replaying it whole, and a
run killed before it saved its state is resumed exactly (outputs are cut back to the checkpoint).

Dead letters carry a bounded prefix of the value (personal fields masked) and its SHA-256; all dead
letters of one line share that one copy (only the first carries it). The raw bytes are kept only in the
operator's quarantine folder (``MONITOR_QUARANTINE_DIR``), never in ``dlq.jsonl``.
"""

from __future__ import annotations

import gc
import heapq
import json
import operator
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from monitor.clock import CST
from monitor.detectors import unimplemented_rules
from monitor.engine import CheckpointError, Engine, Output
from monitor.intake import (  # noqa: F401 — dead_letter, ValueCopy, mask_personal: re-exported for callers
    GC_THRESHOLDS,
    REGISTRY_STREAMS,
    ValueCopy,
    ahead_of_transport,
    arrival_key,
    claim_source,
    dead_letter,
    decoder,
    mask_personal,
    new_clock,
)
from monitor.nhsa import UPLOADS
from monitor.nhsa import advance as nhsa_advance
from monitor.nhsa import apply as nhsa_apply
from monitor.nhsa.items import Pending
from monitor.nhsa.join import plain as nhsa_plain
from monitor.nhsa.join import take_rejected
from monitor.outputs import DeadLetter
from monitor.policy.pack import Pack
from monitor.privacy import Pseudonymizer
from monitor.records import STREAMS, InvalidRecord, Record, parse_value
from monitor.sinks import Sink
from monitor.sinks.config import bind_all
from monitor.sinks.files import FileSink, Quarantine
from monitor.state.checkpoint import CheckpointDir, Written
from monitor.watermark import DEFAULT_QUORUM, EventClock, Released

_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)

@dataclass(order=True, slots=True)
class _Item:
    arrival: datetime
    order: int
    line: int
    record: Record | Pending | None = field(compare=False)
    letter: DeadLetter | None = field(compare=False)
    skewed: bool = field(default=False, compare=False)


#: Lines of its own file a line's arrival is checked against (files are written in upload order).
LOOKAHEAD = 8
#: Records handed to ``Engine.process_batch`` at most at once (the engine ends batches at timers itself).
RUN_RECORDS = 1024


def _parse_lines(path: Path, order: int, quarantine: Quarantine | None = None,
                 decode: Any = parse_value) -> Iterator[_Item]:
    stream = path.stem
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            raw = raw_line.rstrip(b"\r\n")
            if not raw or raw.isspace():  # (``not raw.strip()`` without copying the line)
                continue
            copy: ValueCopy | None = None  # one bounded copy per line, shared by its dead letters
            for parsed in decode(stream, raw):
                if isinstance(parsed, InvalidRecord):
                    first = copy is None
                    copy = copy or ValueCopy.of(raw, quarantine)
                    yield _Item(_EARLIEST, order, line_no, None,
                                dead_letter(path.name, raw, parsed.reason, line=line_no, index=parsed.index,
                                            copy=copy, first=first))
                else:
                    yield _Item(parsed.arrival_time or _EARLIEST, order, line_no, parsed, None)


def _read_stream(path: Path, order: int, max_skew: timedelta, quarantine: Quarantine | None = None,
                 decode: Any = parse_value) -> Iterator[_Item]:
    """Items of one file in file order, with arrival times made usable for the merge:

    * a record whose ``inf_time`` is more than ``max_skew`` ahead of the earliest of the next
      ``LOOKAHEAD`` records in the same file (files are written in upload order) has a wrong clock: its
      arrival is clamped to that one's and it is counted as clock skew — several consecutive future
      lines included — so one institution's clock never moves time forward for the others (design §2).
      A future line with no later line to contradict it (the end of a file) is left to ``EventClock``;
    * a dead letter or a record without a time takes the arrival of the record before it.
    """
    last = _EARLIEST
    pending: deque[_Item] = deque()
    # The look-ahead's earliest time as a sliding minimum: the pending items that have a time and no
    # later-read item with an earlier one, in file order (so their arrivals never decrease): ``lows[0]``
    # is the earliest arrival among the pending lines with a time — O(1) a line instead of a scan of the
    # look-ahead (a line without time, ``_EARLIEST``, never enters it: "the earliest of those with one").
    lows: deque[_Item] = deque()

    def settle(item: _Item) -> _Item:
        nonlocal last
        if lows and lows[0] is item:  # it leaves the look-ahead
            lows.popleft()
        if item.arrival == _EARLIEST:
            item.arrival = last
        elif lows:
            lo = lows[0].arrival
            if ahead_of_transport(item.arrival, lo, max_skew):
                item.arrival, item.skewed = max(lo, last), True
        if item.arrival > last:
            last = item.arrival
        return item

    for item in _parse_lines(path, order, quarantine, decode):
        if item.record is None:
            item.arrival = last
            yield item
            continue
        pending.append(item)
        arrival = item.arrival
        if arrival != _EARLIEST:
            while lows and lows[-1].arrival > arrival:
                lows.pop()
            lows.append(item)
        if len(pending) > LOOKAHEAD:
            yield settle(pending.popleft())
    while pending:
        yield settle(pending.popleft())


#: ``intake.arrival_key(arrival, file rank, line)`` of an item, read as one C call (bench/).
_MERGE_KEY = operator.attrgetter("arrival", "order", "line")
assert _MERGE_KEY(_Item(_EARLIEST, 1, 2, None, None)) == arrival_key(_EARLIEST, 1, 2)


def input_files(input_dir: Path) -> list[Path]:
    return [input_dir / f"{s}.jsonl" for s in (*STREAMS, UPLOADS) if (input_dir / f"{s}.jsonl").exists()]


@dataclass
class ReplayResult:
    engine: Engine
    dead_letters: Counter[str]
    outputs: int
    clock: EventClock[_Item] | None = None
    #: what the ``--state`` checkpoint of this run wrote (None without ``--state``)
    checkpoint: Written | None = None

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
        self.count(engine, 1)

    def count(self, engine: Engine, n: int) -> None:
        before, self.n = self.n, self.n + n
        if self.enabled and before // 20000 != self.n // 20000:
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
    clock: EventClock[_Item] | None = None,
    keep_held: bool = False,
    quarantine: Quarantine | None = None,
    interleave: Iterator[tuple[datetime, Callable[[], list[Output]]]] | None = None,
) -> ReplayResult:
    """Drive ``engine`` over the files of ``input_dir`` in arrival order, writing to ``sinks``.
    ``interleave``: (instant, action) in instant order, each run before the first record arriving after
    it (the national trace tier's findings, ``monitor.trace.multicity``).

    Records pass ``clock`` (``new_clock(engine.pack)`` by default) before the engine. At the end, what
    it still holds is released — accepted up to ``as_of``, else clamped — and the institution-days changed
    since their last emission are emitted (``Engine.close_days``) unless ``keep_held`` (a ``--state`` run
    without ``--as-of``: the next part may corroborate what is held and continues the same days)."""
    files = input_files(input_dir)
    clock = clock if clock is not None else new_clock(engine.pack)
    max_skew = clock.tolerance
    # Ordered by (arrival, file, line) as ``_Item``'s own ordering, but compared as plain tuples: the
    # dataclass's generated ``__lt__``/``__eq__`` cost ~1 µs per record in the merge (bench/).
    decode = decoder(engine)  # the intake's parse (monitor.intake): NHSA codec over the lean path
    merged = heapq.merge(*(_read_stream(p, i, max_skew, quarantine, decode) for i, p in enumerate(files)),
                         key=_MERGE_KEY)
    # The engine's state is many long-lived small objects: with the default thresholds the cyclic
    # collector re-scans it every few hundred allocations (~8 % of a replay, bench/). Nothing in the
    # engine relies on cycles being collected promptly, so collect young objects less often.
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    dead = Counter[str]()
    out: list[Output] = []
    letters: list[DeadLetter] = []
    total = 0
    bar = _Progress(progress)
    quality = engine.stats.quality

    def flush_batch() -> None:
        nonlocal out, letters, total
        if out or letters:
            for sink in sinks:
                sink.write(out, letters)
            total += len(out)
            out, letters = [], []

    # Records the engine takes as they are (``nhsa.join.plain``) wait in a run that goes to
    # ``Engine.process_batch`` whole (the same outputs in the same order as one by one); anything else
    # — a join item, a 3507, the trace tier's findings, the end — first lets the run go.
    run: list[Record] = []
    arrivals: list[datetime | None] = []

    def let_go() -> None:
        nonlocal run, arrivals
        if run:
            out.extend(engine.process_batch(run, arrivals))
            bar.count(engine, len(run))
            run, arrivals = [], []

    def take(rec: Record | Pending, arrival: datetime | None, line: int) -> None:
        if nhsa_plain(engine, rec, arrival):
            run.append(rec)  # type: ignore[arg-type]
            arrivals.append(arrival)
            if len(run) >= RUN_RECORDS:
                let_go()
            return
        let_go()
        out.extend(nhsa_apply(engine, rec, arrival))
        for raw, reason in take_rejected(engine):  # a 3507 naming no movement seen (nhsa.join.retract)
            letters.append(dead_letter(rec.STREAM, raw, reason, line=line))
            dead[rec.STREAM] += 1
        bar.tick(engine)

    def apply(released: list[Released[_Item]]) -> None:
        for rel in released:
            item = rel.item
            rec = item.record
            assert rec is not None
            if item.skewed or rel.skewed:
                quality[f"{rec.STREAM}.clock_skew"] += 1
                take(rec, rel.arrival, item.line)
            else:
                take(rec, None, item.line)

    pending = next(interleave, None) if interleave is not None else None
    try:
        for item in merged:
            if pending is not None and pending[0] <= item.arrival:
                let_go()
                while pending is not None and pending[0] <= item.arrival:
                    out.extend(pending[1]())
                    pending = next(interleave, None) if interleave is not None else None
            if item.letter is not None:
                letters.append(item.letter)
                dead[item.letter.source] += 1
            else:
                rec = item.record
                assert rec is not None
                if rec.STREAM in REGISTRY_STREAMS:  # never held, never moves time (engine contract)
                    take(rec, None, item.line)
                elif clock.accept(item.arrival, claim_source(rec)):  # released at once with its claim
                    if item.skewed:
                        quality[f"{rec.STREAM}.clock_skew"] += 1
                        take(rec, item.arrival, item.line)
                    else:
                        take(rec, None, item.line)
                else:
                    apply(clock.offer(item, item.arrival, claim_source(rec)))
            if len(out) + len(letters) >= batch:
                flush_batch()
        if as_of is not None or not keep_held:
            apply(clock.close(as_of))
        let_go()
        while pending is not None and (as_of is None or pending[0] <= as_of):
            out.extend(pending[1]())
            pending = next(interleave, None) if interleave is not None else None
        if as_of is not None:
            out.extend(nhsa_advance(engine, as_of))
        if as_of is not None or not keep_held:  # the end of the input closes the days it changed
            out.extend(engine.close_days())
        flush_batch()
        for sink in sinks:
            sink.flush()
    finally:
        gc.set_threshold(*previous)
    bar.done()
    return ReplayResult(engine, dead, total, clock)


T = TypeVar("T")


def fan_out(tasks: Sequence[Callable[[], T]], jobs: int, weights: Sequence[float] | None = None) -> list[T]:
    """Run independent ``tasks`` in up to ``jobs`` forked processes (``monitor replay --jobs``); the results
    come back in task order, so what a caller writes from them does not depend on ``jobs``. Tasks are
    dealt heaviest first to the least-loaded process (``weights``: e.g. input bytes). A task that raises
    makes ``fan_out`` raise ``RuntimeError`` with the task's traceback, after every process has ended.
    Fork, not spawn: a task sees its parent's objects (the keyed pseudonymizer included) without pickling."""
    if jobs <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    import multiprocessing
    import queue
    import traceback

    ctx = multiprocessing.get_context("fork")
    loads = [0.0] * min(jobs, len(tasks))
    shares: list[list[int]] = [[] for _ in loads]
    for i in sorted(range(len(tasks)), key=lambda i: -(weights[i] if weights else 1.0)):
        k = loads.index(min(loads))
        shares[k].append(i)
        loads[k] += weights[i] if weights else 1.0
    results: Any = ctx.Queue()

    def work(share: list[int]) -> None:
        for i in share:
            try:
                results.put((i, True, tasks[i]()))
            except BaseException:  # the parent reports it; the other tasks of this share still run
                results.put((i, False, traceback.format_exc()))

    procs = [ctx.Process(target=work, args=(share,), daemon=True) for share in shares]
    for proc in procs:
        proc.start()
    done: dict[int, Any] = {}
    failed: list[str] = []
    try:
        while len(done) + len(failed) < len(tasks):
            try:
                i, ok, value = results.get(timeout=0.5)
            except queue.Empty:
                if not any(proc.is_alive() for proc in procs) and results.empty():
                    raise RuntimeError(f"replay: a worker process died (exit codes "
                                       f"{[proc.exitcode for proc in procs]}) before its tasks finished") from None
                continue
            if ok:
                done[i] = value
            else:
                failed.append(f"task {i}:\n{value}")
    finally:
        for proc in procs:
            proc.join()
    if failed:
        raise RuntimeError("replay: " + "\n".join(failed))
    return [done[i] for i in range(len(tasks))]


#: Version of the replay state's shell part (``--state``): event clock + output sizes, in the envelope of
#: ``monitor.state.checkpoint`` (the engine and its store's deltas beside it).
REPLAY_STATE_VERSION = 4


def save_state(ckpt: CheckpointDir, engine: Engine, clock: EventClock[_Item], sizes: dict[str, int]) -> Written:
    """One incremental replay checkpoint in the ``--state`` folder (sealed, 0600, atomic: see
    ``monitor.state.checkpoint``): the outputs it covers, the event clock, and what changed."""
    return ckpt.save(engine, {"version": REPLAY_STATE_VERSION, "clock": clock, "outputs": sizes})


def load_replay_state(ckpt: CheckpointDir, pack: Pack) -> tuple[Engine, EventClock[_Item], dict[str, int]] | None:
    """Verify and read the replay checkpoint of a ``--state`` folder (``CheckpointError``/``KeyMismatch``
    when it cannot be used), or ``None`` when the folder holds none yet."""
    loaded = ckpt.load(pack)
    if loaded is None:
        return None
    engine, shell = loaded
    if not isinstance(shell, dict) or shell.get("version") != REPLAY_STATE_VERSION:
        raise CheckpointError(f"{ckpt.path} is not a replay state of version {REPLAY_STATE_VERSION}")
    clock = shell["clock"]
    if not isinstance(clock, EventClock):
        raise CheckpointError(f"{ckpt.path} holds no event clock")
    return engine, clock, dict(shell["outputs"])


def replay_dir(
    input_dir: Path,
    out_dir: Path,
    pack: Pack,
    as_of: datetime | None = None,
    state: Path | None = None,
    progress: bool = False,
    pseudo: Pseudonymizer | None = None,
    extra_sinks: Sequence[Sink] = (),
    quorum: int = DEFAULT_QUORUM,
    quarantine: Path | None = None,
    trace_findings: list[dict[str, Any]] | None = None,
    state_backend: str | None = None,
) -> ReplayResult:
    """The whole ``monitor replay`` job: files in, ``alerts/tickets/dlq.jsonl`` + ``summary.json`` out.

    With ``state`` (a folder, ``monitor.state.checkpoint``): resume from it when it holds a checkpoint
    (outputs cut back to the sizes it covers, then appended: a run killed before it saved is redone
    exactly), save what changed at the end. ``state_backend``: ``memory`` (default for a new folder) or
    ``rocksdb`` (the tables on disk: large replays)."""
    pseudo = pseudo or Pseudonymizer()
    ckpt = CheckpointDir(state, pseudo, "replay", state_backend) if state is not None else None
    loaded = load_replay_state(ckpt, pack) if ckpt is not None else None
    resume = loaded is not None
    sizes: dict[str, int] | None = None
    if loaded is not None:
        engine, clock, sizes = loaded
    else:
        engine = Engine(pack, pseudo, store=ckpt.store() if ckpt is not None else None)
        clock = new_clock(pack, quorum)
    bind_all(extra_sinks, engine)  # sinks that read the engine (ClickHouse: the registry; metrics: the tap)
    files = FileSink(out_dir, append=resume, truncate_to=sizes)
    try:
        feed = None
        if trace_findings is not None:  # several cities: the national trace tier's findings (monitor.trace)
            from monitor.trace.multicity import feed_for
            feed = feed_for(lambda: engine, trace_findings)
        result = run_replay(input_dir, engine, [files, *extra_sinks], as_of=as_of, progress=progress,
                            clock=clock, keep_held=state is not None,
                            quarantine=Quarantine(quarantine) if quarantine is not None else None,
                            interleave=feed)
    finally:
        files.close()
        for sink in extra_sinks:
            sink.close()
    if ckpt is not None:
        try:
            result.checkpoint = save_state(ckpt, engine, clock, files.sizes())
        finally:
            ckpt.close()
    (out_dir / "summary.json").write_text(
        json.dumps(result.summary(), ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return result

"""The Kafka shell's logic without Faust: arrival-order merge, positions, checkpoints, dead letters.

``ShellCore`` sits between the consumer (Faust in ``monitor.streams.app``; plain lists in tests) and the
pure ``Engine``. It owns everything that decides *what the engine sees, in which order, and what is
safe to acknowledge*; the Faust adapter only moves bytes and acks.

Contract
--------
* ``receive(msg)`` parses one message (one JSON record or a JSON array of records, raw bytes, no Faust
  deserializer), returns its dead letters (invalid records, with source topic/partition/offset/index
  and reason) and queues its valid records in a FIFO per topic-partition. A message at or below the
  checkpointed position is skipped (redelivery after a restart or rebalance); only the records of a
  partially applied message that were not applied yet are queued.
* ``release(waiting)`` merges the partition queues in arrival order — the head with the smallest
  ``(arrival, stream order, producer sequence, partition, offset, index)`` goes first — and feeds the
  engine, as long as every assigned partition either has a queued record or has been read to its end
  (``waiting(tp)`` is False). This is the replay shell's ``heapq.merge`` of files, so both shells give
  the engine the same sequence (design §2: replay is the reference semantics). ``force=True`` releases
  what is queued regardless (flow control when a partition never reports its end).
  Between the merge and the engine sits replay's event clock (``monitor.watermark.EventClock``,
  tolerance = the pack's ``max_clock_skew_minutes``, quorum = ``MONITOR_CLOCK_QUORUM``): a claim far
  ahead of event time waits for corroboration by other institutions (or is clamped after 256 records),
  so one clock never moves time for the city even when the Kafka timestamps are a producer's wall clock.
  The clock is part of the checkpoint; a record it holds counts as applied for positions and acks.
* ``checkpoint()`` returns a ``Checkpoint`` — the engine snapshot *and* the per-partition positions it
  reflects — plus the message handles that become safe to acknowledge once that checkpoint (and the
  outputs emitted before it) are durable. Acknowledging before that would let the consumer group commit
  past state that a crash loses.
* ``release`` applies each record inside a guard: a record whose processing raises is dead-lettered
  (reason ``engine failed on this record: …``, with its message's position and original value) and the
  merge goes on — the data failed, not the monitor. A record the process died on twice (a crash no
  exception reports) is dead-lettered by position on the next start (``monitor.streams.quarantine``).
  Dead letters made while releasing are taken with ``take_letters()``.
* ``tick()`` moves event time, while nothing is queued, to what the broker's clock says now *minus how
  far that clock runs ahead of the records' own arrival times* (``BrokerClock``: a high quantile of
  recent broker timestamps minus the median lag over the last ``BrokerClock.WINDOW`` records). So idle
  windows and deadlines fire as broker time passes, but a producer that stamps messages with its wall
  clock (kcat, aiokafka and kafka-python do when no timestamp is given; a historical load is then
  months "late") or one message with a broken timestamp never drags event time to today.

Positions are ``(offset, done)``: the next message to apply and how many of its records were already
applied (a JSON-array value may be cut by a checkpoint). The engine itself de-duplicates records
(design §3), so even a wrong position could not double-count a settlement; positions make recovery exact.
"""

from __future__ import annotations

import copy
import heapq
import pickle
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.clock import CST
from monitor.engine import Engine, Output
from monitor.intake import (
    REGISTRY_STREAMS,
    ahead_of_transport,
    arrival_key,
    claim_source,
    dead_letter,
    decoder,
    new_clock,
)
from monitor.nhsa import advance as nhsa_advance
from monitor.nhsa.items import Pending
from monitor.nhsa.join import take_rejected
from monitor.outputs import DeadLetter
from monitor.privacy import Pseudonymizer
from monitor.records import InvalidRecord, Record
from monitor.streams.quarantine import CrashJournal
from monitor.streams.topics import STREAM_OF_TOPIC, STREAM_ORDER
from monitor.trace.city import shell_apply, shell_decoder
from monitor.watermark import DEFAULT_QUORUM, EventClock, Released

TP = tuple[str, int]
#: Streams applied outside the event clock, as in replay: registry records never move time (monitor.intake).
_REGISTRY_STREAMS = REGISTRY_STREAMS
_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)
#: Streams whose broker timestamps move idle event time (registry uploads are not activity).
ACTIVITY_STREAMS = frozenset({"settlements", "inventory", "tracecodes", "prescriptions", "findings", "uploads"})
#: Bumped whenever the pickled engine state changes shape (2: pricing/tracecodes state of the hot-path
#: work, timer heap entries with a rank); an older checkpoint is refused, not misread.
CHECKPOINT_VERSION = 2


class DeadLetterLimitExceeded(RuntimeError):
    """Too many of the recent input records were invalid: a bad deploy, not bad data. Stop the worker."""


@dataclass(frozen=True)
class Inbound:
    """One consumed message, as bytes (the shell never lets Faust deserialize)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: datetime | None = None
    #: Producer sequence numbers (header ``seq``, set by ``monitor produce``): the input's total arrival
    #: order, one per record of the value (the last one repeats when a value has more records).
    seq: tuple[int, ...] | None = None
    #: Opaque handle the caller acknowledges when ``checkpoint`` says so (a Faust event).
    handle: Any = None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass
class Checkpoint:
    """Engine state plus the input positions it reflects (design §2 "checkpoints")."""

    engine: bytes
    positions: dict[TP, tuple[int, int]]
    last_arrival: dict[TP, datetime]
    max_broker_time: datetime | None
    #: The engine's watermark (event time) at the checkpoint, readable without restoring the engine.
    watermark: datetime | None = None
    version: int = CHECKPOINT_VERSION
    #: The release path's ``EventClock`` with the records it holds (their messages count as applied:
    #: they are in this checkpoint, not lost). ``None`` in a checkpoint written before it existed.
    clock: EventClock[tuple[TP, _Item]] | None = None

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> Checkpoint:
        ckpt = pickle.loads(blob)
        if not isinstance(ckpt, Checkpoint) or ckpt.version != CHECKPOINT_VERSION:
            raise TypeError("not a monitor checkpoint of this version")
        return ckpt


@dataclass
class _Message:
    offset: int
    pending: int  # records of this message not yet applied
    applied: int  # records of this message applied
    handles: list[Any] = field(default_factory=list)
    #: the original value and key, for the dead letter of a record the engine fails on (the bytes are
    #: the consumer message's own, already held by its handle: no copy)
    value: bytes | None = None
    key: str | None = None


@dataclass
class _Item:
    key: tuple[Any, ...]
    record: Record | Pending
    arrival: datetime | None  # override for the engine (clock-skew clamp), else None
    message: _Message
    last_after: datetime  # the partition's carried-forward arrival once this record is applied
    stream: str = ""
    index: int = 0  # position of the record in its message's value (0 for a single-record value)


class DeadLetterLimit:
    """Sliding window over the last ``window`` input records; trips when more than ``max_ratio`` of a
    full window were dead letters (arroyo's ``DlqLimit``)."""

    def __init__(self, window: int, max_ratio: float) -> None:
        self.window = window
        self.max_ratio = max_ratio
        self._marks: deque[bool] = deque(maxlen=window)
        self._bad = 0

    def observe(self, bad: bool) -> None:
        if len(self._marks) == self.window and self._marks[0]:
            self._bad -= 1
        self._marks.append(bad)
        self._bad += bad

    @property
    def exceeded(self) -> bool:
        return len(self._marks) == self.window and self._bad > self.max_ratio * self.window

    def describe(self) -> str:
        return f"{self._bad} of the last {len(self._marks)} input records were dead letters"


_EPOCH_MEMO: dict[datetime, float] = {}


def _epoch_seconds(when: datetime) -> float:
    """``when.timestamp()``, memoised: the records of one upload batch share their ``inf_time`` object."""
    hit = _EPOCH_MEMO.get(when)
    if hit is None:
        if len(_EPOCH_MEMO) >= 1 << 14:
            _EPOCH_MEMO.clear()
        hit = _EPOCH_MEMO[when] = when.timestamp()
    return hit


class BrokerClock:
    """What the broker's clock says about event time, robust to producers that stamp messages with
    their own wall clock and to single broken timestamps (module docstring, ``tick``).

    ``observe(broker_time, inf_time)`` takes one sample per valid business record: its Kafka timestamp
    and its own upload time (``None`` when it has none). ``lead()`` is the median of how far the broker
    timestamps run ahead of the uploads' own ``inf_time`` over the last ``WINDOW`` records that have one
    (never below zero; zero while none has). ``now()`` is the ``QUANTILE`` of the recent
    broker timestamps minus ``lead()``, or ``None`` before ``MIN_SAMPLES`` timestamps: event time moves
    only on evidence from many records.
    """

    WINDOW = 1001
    MIN_SAMPLES = 5
    QUANTILE = 0.9

    def __init__(self) -> None:
        self._stamps: deque[float] = deque(maxlen=self.WINDOW)
        self._lags: deque[float] = deque(maxlen=self.WINDOW)
        self._lead: timedelta | None = timedelta(0)
        self._now: datetime | None = None
        self._changed = False

    def observe(self, broker_time: datetime, inf_time: datetime | None, stamp: float | None = None) -> None:
        """One sample; ``stamp`` = ``broker_time.timestamp()`` when the caller has it (once per message)."""
        if stamp is None:
            stamp = broker_time.timestamp()
        self._stamps.append(stamp)
        if inf_time is not None:
            self._lags.append(stamp - _epoch_seconds(inf_time))
            self._lead = None
        self._changed = True

    def lead(self) -> timedelta:
        if self._lead is None:
            ordered = sorted(self._lags) or [0.0]
            self._lead = timedelta(seconds=max(0.0, ordered[len(ordered) // 2]))
        return self._lead

    def now(self) -> datetime | None:
        if len(self._stamps) < self.MIN_SAMPLES:
            return None
        if self._changed:
            stamps = sorted(self._stamps)
            self._now = datetime.fromtimestamp(stamps[int(self.QUANTILE * (len(stamps) - 1))], CST) - self.lead()
            self._changed = False
        return self._now


class ShellCore:
    """See the module docstring."""

    def __init__(self, engine: Engine, *,
                 dlq_limit: DeadLetterLimit | None = None, checkpoint: Checkpoint | None = None,
                 journal: CrashJournal | None = None, quorum: int = DEFAULT_QUORUM) -> None:
        self.engine = engine
        # Replay's event clock, same tolerance (the pack's max_clock_skew_minutes) and quorum
        # (MONITOR_CLOCK_QUORUM): one rule for future claims in both shells (monitor.watermark).
        restored = checkpoint.clock if checkpoint is not None else None
        self.event_clock: EventClock[tuple[TP, _Item]] = (
            restored if restored is not None else EventClock(new_clock(engine.pack).tolerance, quorum=quorum))
        self.journal = journal
        self.broker_clock = BrokerClock()
        self.letters: list[DeadLetter] = []  # made while releasing (engine failures, quarantine)
        self.engine_failures = 0
        #: the one clock-skew setting (monitor.intake): the pack's max_clock_skew_minutes
        self.clock_skew = self.event_clock.tolerance
        self.dlq_limit = dlq_limit or DeadLetterLimit(1000, 0.5)
        self.positions: dict[TP, tuple[int, int]] = dict(checkpoint.positions) if checkpoint else {}
        self.last_arrival: dict[TP, datetime] = dict(checkpoint.last_arrival) if checkpoint else {}
        self._applied_last: dict[TP, datetime] = dict(self.last_arrival)
        self.max_broker_time: datetime | None = checkpoint.max_broker_time if checkpoint else None
        self._queues: dict[TP, deque[_Item]] = {}
        self._messages: dict[TP, deque[_Message]] = {}
        self._next: dict[TP, int] = {}  # next offset expected from the consumer per partition
        self._completed: list[Any] = []
        self.dead_letters = 0
        self.applied = 0
        # platform envelopes and field variance (monitor.nhsa); monitor.trace_findings (monitor.trace.city)
        self._decode = shell_decoder(decoder(engine))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, pseudo: Pseudonymizer | None = None, **kw: Any) -> ShellCore:
        """Restore; ``pseudo`` = the current MONITOR_PII_KEY (``Engine.restore``: a rotated key is refused)."""
        return cls(Engine.restore(ckpt.engine, pseudo), checkpoint=ckpt, **kw)

    # ------------------------------------------------------------------------------------------ intake
    def receive(self, msg: Inbound) -> list[DeadLetter]:
        """Queue one message's records; return its dead letters (see the module docstring)."""
        tp = msg.tp
        pos_offset, pos_done = self.positions.get(tp, (-1, 0))
        expected = self._next.get(tp)
        if msg.offset < pos_offset or (expected is not None and msg.offset < expected):
            self._duplicate(tp, msg)
            return []
        self._next[tp] = msg.offset + 1
        stream = STREAM_OF_TOPIC[msg.topic]
        letters: list[DeadLetter] = []
        key_text = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        if msg.value is None:
            parsed: list[Record | InvalidRecord] = [InvalidRecord("empty value (tombstone)")]
        else:
            parsed = self._decode(stream, msg.value)
        skip = pos_done if msg.offset == pos_offset else 0
        entry = _Message(msg.offset, 0, skip, [msg.handle] if msg.handle is not None else [],
                         value=msg.value, key=key_text)
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        observe = (self.broker_clock.observe if msg.timestamp is not None else None)
        stamp = msg.timestamp.timestamp() if msg.timestamp is not None else None
        valid_index = 0
        for position, item in enumerate(parsed):
            if isinstance(item, InvalidRecord):
                self.dead_letters += 1
                self.dlq_limit.observe(True)
                letters.append(dead_letter(msg.topic, msg.value or b"", item.reason, index=item.index,
                                           partition=msg.partition, offset=msg.offset, key=key_text))
                continue
            self.dlq_limit.observe(False)
            valid_index += 1
            if valid_index <= skip:
                continue  # applied before the checkpoint this run resumed from
            seq = msg.seq[min(position, len(msg.seq) - 1)] if msg.seq else -1
            if observe is not None and item.STREAM in ACTIVITY_STREAMS:
                observe(msg.timestamp, item.inf_time, stamp)  # type: ignore[arg-type]  # not None here
            queue.append(self._item(tp, stream, msg, item, entry, seq, position))
            entry.pending += 1
        if msg.timestamp is not None and stream in ACTIVITY_STREAMS and (
                self.max_broker_time is None or msg.timestamp > self.max_broker_time):
            self.max_broker_time = msg.timestamp
        messages = self._messages.get(tp)
        if messages is None:
            messages = self._messages[tp] = deque()
        messages.append(entry)
        self._complete_front(tp)
        if self.dlq_limit.exceeded:
            raise DeadLetterLimitExceeded(self.dlq_limit.describe())
        return letters

    def _item(self, tp: TP, stream: str, msg: Inbound, rec: Record | Pending, entry: _Message, seq: int,
              index: int = 0) -> _Item:
        # As the replay shell: a record without its own arrival time sorts at the latest arrival seen
        # before it in the same source (file there, partition here).
        last = self.last_arrival.get(tp, _EARLIEST)
        own = rec.arrival_time
        override = None
        if rec.inf_time is None and msg.timestamp is not None and rec.STREAM in ACTIVITY_STREAMS:
            # no upload time of its own: the Kafka timestamp is its upload time (design §3), never its
            # business time (which would read every such record as uploaded on time) — read on the
            # records' clock: minus the broker clock's usual lead over the uploads' own inf_time, so a
            # producer stamping its wall clock (kcat) onto a historical load does not date it today.
            # Registry records (institutions, drugs) are not uploads: their Kafka timestamp never moves time.
            own = override = msg.timestamp - self.broker_clock.lead()
        sort_time = own if own is not None else last
        self.last_arrival[tp] = max(last, sort_time)
        if rec.inf_time is not None and msg.timestamp is not None and ahead_of_transport(
                rec.inf_time, msg.timestamp, self.clock_skew):
            # an upload clock ahead of its own message's timestamp never moves time forward for others
            # (design §2; monitor.intake: the same rule and tolerance as replay's look-ahead)
            override = msg.timestamp
            sort_time = msg.timestamp
            self.engine.stats.quality[f"{rec.STREAM}.clock_skew"] += 1
        key = arrival_key(sort_time, STREAM_ORDER[rec.STREAM], seq, msg.partition, msg.offset, entry.pending)
        return _Item(key, rec, override, entry, self.last_arrival[tp], rec.STREAM, index)

    def _duplicate(self, tp: TP, msg: Inbound) -> None:
        """A message delivered again (restart, rebalance): never applied twice; acked with the original."""
        for entry in self._messages.get(tp, ()):
            if entry.offset == msg.offset:
                entry.handles.append(msg.handle)
                return
        if msg.handle is not None:
            self._completed.append(msg.handle)

    def _complete_front(self, tp: TP) -> None:
        messages = self._messages.get(tp)
        while messages and messages[0].pending == 0:
            done = messages.popleft()
            self.positions[tp] = (done.offset + 1, 0)
            self._completed.extend(done.handles)
        if messages and messages[0].applied:
            self.positions[tp] = (messages[0].offset, messages[0].applied)

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: drop what was queued but not applied (it will be delivered again)."""
        for tp in tps:
            self._queues.pop(tp, None)
            self._messages.pop(tp, None)  # unapplied messages are never acked: they come again
            self._next.pop(tp, None)
            if tp in self._applied_last:
                self.last_arrival[tp] = self._applied_last[tp]
            else:
                self.last_arrival.pop(tp, None)

    # ------------------------------------------------------------------------------------------ merge
    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def next_offset(self, tp: TP) -> int | None:
        """The next offset this shell expects from ``tp`` (received or checkpointed), if known."""
        if tp in self._next:
            return self._next[tp]
        pos = self.positions.get(tp)
        return pos[0] if pos is not None else None

    def release(self, assigned: Iterable[TP], waiting: Callable[[TP], bool], force: bool = False,
                limit: int | None = None) -> list[Output]:
        """Apply queued records in arrival order while the merge is safe (module docstring)."""
        out: list[Output] = []
        queues = self._queues
        if not force and any(not queues.get(tp) and waiting(tp) for tp in assigned):
            return out
        heads = [(q[0].key, tp) for tp, q in queues.items() if q]
        heapq.heapify(heads)
        n = 0
        while heads and (limit is None or n < limit):
            _, tp = heapq.heappop(heads)
            queue = queues[tp]
            item = queue.popleft()
            self._applied_last[tp] = item.last_after
            out.extend(self._offer(tp, item))
            self.applied += 1
            n += 1
            item.message.pending -= 1
            item.message.applied += 1
            self._complete_front(tp)
            if queue:
                heapq.heappush(heads, (queue[0].key, tp))
            elif not force and waiting(tp):
                break  # this partition may still hold records older than the other heads
        return out

    def _offer(self, tp: TP, item: _Item) -> list[Output]:
        """Pass a merged record through the event clock (as replay does, ``monitor.watermark``) and apply
        what it releases. Registry records and the trace tier's findings bypass it (replay applies them
        outside the clock too). A held record's message counts as applied: the clock is in the checkpoint."""
        rec = item.record
        if rec.STREAM in _REGISTRY_STREAMS or rec.STREAM == "trace_findings":
            return self._apply(tp, item)
        claim = item.arrival if item.arrival is not None else rec.arrival_time
        clock = self.event_clock
        if claim is None or clock.value is None or claim <= clock.value + clock.tolerance:
            # plausible: released at once (EventClock's contract), so it needs no detached copy
            return self._apply_released(clock.offer((tp, item), claim, claim_source(rec)))
        # held items keep no consumer handle and no copy of the raw value (checkpoint size, personal data)
        detached = _Item(item.key, rec, item.arrival, _Message(item.message.offset, 0, 0, key=item.message.key),
                         item.last_after, item.stream, item.index)
        return self._apply_released(self.event_clock.offer((tp, detached), claim, claim_source(rec)),
                                    {id(detached): item})

    def _apply_released(self, released: list[Released[tuple[TP, _Item]]],
                        live: dict[int, _Item] | None = None) -> list[Output]:
        out: list[Output] = []
        for rel in released:
            tp, item = rel.item
            if live:
                item = live.get(id(item), item)  # the record just offered keeps its message's value
            if rel.skewed:  # clamped by the event clock (replay: same counter, same arrival)
                self.engine.stats.quality[f"{item.stream}.clock_skew"] += 1
                item = _Item(item.key, item.record, rel.arrival, item.message, item.last_after, item.stream,
                             item.index)
            out.extend(self._apply(tp, item))
        return out

    def _apply(self, tp: TP, item: _Item) -> list[Output]:
        """One record into the engine, guarded (module docstring): a failure of the record becomes its
        dead letter; a record the process died on twice is dead-lettered without being applied."""
        journal = self.journal
        message = item.message
        if journal is not None:
            pos = (tp[0], tp[1], message.offset, item.index)
            if journal.is_quarantined(pos):
                self._engine_letter(tp, item, f"quarantined: the worker died {journal.strikes_of(pos)} times "
                                              "while applying this record")
                return []
            journal.begin(*pos)
        try:
            out = shell_apply(self.engine, item.record, item.arrival)
            for _, reason in take_rejected(self.engine):  # a 3507 naming no movement seen (nhsa.join.retract)
                self.letters.append(dead_letter(tp[0], message.value or b"", reason, partition=tp[1],
                                                offset=message.offset, key=message.key))
            return out
        except Exception as exc:  # the record failed, not the monitor: dead-letter it and go on
            self._engine_letter(tp, item, f"engine failed on this record: {type(exc).__name__}: {exc}"[:500])
            return []
        finally:
            if journal is not None:
                journal.end()

    def _engine_letter(self, tp: TP, item: _Item, reason: str) -> None:
        message = item.message
        self.engine_failures += 1
        self.engine.stats.quality[f"{item.stream}.engine_failed"] += 1
        self.letters.append(dead_letter(tp[0], message.value or b"", reason, partition=tp[1],
                                        offset=message.offset, key=message.key,
                                        index=item.index if (message.value or b"").lstrip()[:1] == b"[" else None))

    def take_letters(self) -> list[DeadLetter]:
        """The dead letters made while releasing since the last call."""
        letters, self.letters = self.letters, []
        self.dead_letters += len(letters)
        return letters

    def tick(self) -> list[Output]:
        """Advance event time to ``BrokerClock.now()`` (module docstring); only when nothing is queued,
        so the clock never overtakes a record waiting in the merge."""
        if self.queued or self.engine.watermark.value is None:
            return []
        now = self.broker_clock.now()
        if now is None or now <= self.engine.watermark.value:
            return []
        # records the event clock held that broker time now corroborates go first, with their own arrival
        out = self._apply_released(self.event_clock.advance(now))
        out.extend(nhsa_advance(self.engine, now))
        return out

    # -------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self, full: bool = True) -> tuple[Checkpoint, list[Any]]:
        """The state to persist and the handles safe to acknowledge once it is durable. ``full``: with
        a self-contained engine snapshot; the worker passes False and saves the engine incrementally
        (``monitor.streams.checkpoint.CheckpointStore.save``)."""
        ckpt = Checkpoint(self.engine.snapshot() if full else b"", dict(self.positions), dict(self._applied_last),
                          self.max_broker_time, self.engine.watermark.value,
                          clock=copy.deepcopy(self.event_clock))
        handles, self._completed = self._completed, []
        return ckpt, handles

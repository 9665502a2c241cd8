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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, get_args, overload

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
from monitor.nhsa.join import STATE_KEY as JOIN_STATE
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
#: Streams that bypass the event clock: the registry's and the trace tier's findings (as in replay).
_UNCLOCKED = frozenset(REGISTRY_STREAMS) | {"trace_findings"}
#: The record models: what ``Engine.process_batch`` takes as it is (monitor.nhsa's parts do not).
_PLAIN = frozenset(get_args(Record))
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


class _Fed(Sequence[Any]):
    """A run's records from ``start`` for ``Engine.process_batch``, remembering how far the engine has
    taken them (``at``, relative to ``start``; -1 before the first): the record it raised on."""

    __slots__ = ("_records", "_start", "at")

    def __init__(self, records: list[Any], start: int) -> None:
        self._records = records
        self._start = start
        self.at = -1

    def __len__(self) -> int:
        return len(self._records) - self._start

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self._records[self._start:][i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.at = max(self.at, i)
        return self._records[self._start + i]

    def __iter__(self) -> Iterator[Any]:
        records = self._records
        for i in range(self._start, len(records)):
            self.at = i - self._start
            yield records[i]


class DeadLetterLimit:
    """Sliding window over the last ``window`` input records; trips when more than ``max_ratio`` of a
    full window were dead letters (arroyo's ``DlqLimit``). Keeps the ordinals of the dead letters only,
    so a run of valid records is one addition (``observe_valid``), not one mark each."""

    def __init__(self, window: int, max_ratio: float) -> None:
        self.window = window
        self.max_ratio = max_ratio
        self._seen = 0
        self._bad_at: deque[int] = deque()  # ordinals (1-based) of the dead letters in the window

    def observe(self, bad: bool) -> None:
        self._seen += 1
        if bad:
            self._bad_at.append(self._seen)
        self._trim()

    def observe_valid(self, n: int) -> None:
        """``n`` valid records in a row (= ``observe(False)`` ``n`` times)."""
        self._seen += n
        if self._bad_at:
            self._trim()

    def _trim(self) -> None:
        floor = self._seen - self.window
        bad = self._bad_at
        while bad and bad[0] <= floor:
            bad.popleft()

    @property
    def exceeded(self) -> bool:
        return self._seen >= self.window and len(self._bad_at) > self.max_ratio * self.window

    def describe(self) -> str:
        return f"{len(self._bad_at)} of the last {min(self._seen, self.window)} input records were dead letters"


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
        restored_max = checkpoint.max_broker_time if checkpoint else None
        #: the latest Kafka timestamp (seconds) of an activity record: ``max_broker_time``
        self._max_stamp: float | None = restored_max.timestamp() if restored_max is not None else None
        self._queues: dict[TP, deque[_Item]] = {}
        self._messages: dict[TP, deque[_Message]] = {}
        self._next: dict[TP, int] = {}  # next offset expected from the consumer per partition
        self._completed: list[Any] = []
        self.dead_letters = 0
        self.applied = 0
        self._run: list[tuple[TP, _Item]] = []  # plain records released for the next process_batch call
        self._engine_state: dict[str, Any] = getattr(engine, "__dict__", {})  # the NHSA line join lives here
        #: (first position, length) of the run the previous process died in: applied one record at a time
        self._suspect = journal.suspect if journal is not None else None
        self._suspect_left = 0
        # platform envelopes and field variance (monitor.nhsa); monitor.trace_findings (monitor.trace.city)
        self._decode = shell_decoder(decoder(engine))

    @property
    def max_broker_time(self) -> datetime | None:
        """The latest Kafka timestamp of an activity record received (part of the checkpoint)."""
        stamp = self._max_stamp
        return datetime.fromtimestamp(stamp, CST) if stamp is not None else None

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, pseudo: Pseudonymizer | None = None, **kw: Any) -> ShellCore:
        """Restore; ``pseudo`` = the current MONITOR_PII_KEY (``Engine.restore``: a rotated key is refused)."""
        return cls(Engine.restore(ckpt.engine, pseudo), checkpoint=ckpt, **kw)

    # ------------------------------------------------------------------------------------------ intake
    def receive(self, msg: Inbound) -> list[DeadLetter]:
        """Queue one message's records; return its dead letters (see the module docstring)."""
        ts = msg.timestamp
        letters = self._receive(msg.topic, msg.partition, msg.offset, msg.key, msg.value, ts,
                                ts.timestamp() if ts is not None else None, msg.seq, msg.handle)
        if self.dlq_limit.exceeded:
            raise DeadLetterLimitExceeded(self.dlq_limit.describe())
        return letters

    def receive_many(self, messages: Iterable[Any]) -> list[DeadLetter]:
        """``receive`` for the messages of one fetch as the consumer delivers them (Faust's
        ``ConsumerMessage``: ``topic``, ``partition``, ``offset``, ``key``, ``value``, ``timestamp`` in
        seconds or ``None``, ``headers`` as (name, bytes) pairs with the producer's ``seq``), each
        message its own handle — no ``Inbound`` per message."""
        letters: list[DeadLetter] = []
        receive = self._receive
        limit = self.dlq_limit
        for m in messages:
            seq = None
            headers = m.headers
            for hkey, hval in (headers.items() if isinstance(headers, dict) else headers or ()):
                if hkey == "seq" and hval:
                    seq = tuple(map(int, hval.split(b","))) if b"," in hval else (int(hval),)
            stamp = m.timestamp
            got = receive(m.topic, m.partition, m.offset, m.key, m.value, None, float(stamp) if stamp else None,
                          seq, m)
            if got:
                letters.extend(got)
            if limit.exceeded:
                raise DeadLetterLimitExceeded(limit.describe())
        return letters

    def _receive(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 ts: datetime | None, stamp: float | None, seqs: tuple[int, ...] | None,
                 handle: Any) -> list[DeadLetter]:
        """One message; ``stamp`` its Kafka timestamp in seconds, ``ts`` the same as a datetime if the
        caller has it (else it is made only when a record needs it)."""
        tp = (topic, partition)
        pos = self.positions.get(tp)
        expected = self._next.get(tp)
        if (pos is not None and offset < pos[0]) or (expected is not None and offset < expected):
            self._duplicate(tp, offset, handle)
            return []
        self._next[tp] = offset + 1
        stream = STREAM_OF_TOPIC[topic]
        key_text = key.decode("utf-8", "replace") if key is not None else None
        if value is None:
            parsed: list[Record | InvalidRecord] = [InvalidRecord("empty value (tombstone)")]
        else:
            parsed = self._decode(stream, value)
        skip = pos[1] if pos is not None and offset == pos[0] else 0
        entry = _Message(offset, 0, skip, [handle] if handle is not None else [], value, key_text)
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        letters: list[DeadLetter] = []
        limit = self.dlq_limit
        broker = self.broker_clock
        stamps, lags = broker._stamps, broker._lags
        last = self.last_arrival.get(tp, _EARLIEST)
        skew = self.clock_skew
        # the transport check below is exact; this float bound only spares the datetimes of the records
        # that are clearly not ahead (float error ≪ 10 ms)
        near_ahead = skew.total_seconds() - 0.01
        valid = run = 0
        for position, item in enumerate(parsed):
            if isinstance(item, InvalidRecord):
                limit.observe_valid(run)
                run = 0
                limit.observe(True)
                self.dead_letters += 1
                letters.append(dead_letter(topic, value or b"", item.reason, index=item.index,
                                           partition=partition, offset=offset, key=key_text))
                continue
            run += 1
            valid += 1
            if valid <= skip:
                continue  # applied before the checkpoint this run resumed from
            rec_stream = item.STREAM
            inf = item.inf_time
            activity = rec_stream in ACTIVITY_STREAMS
            lag = None
            if stamp is not None and activity:  # BrokerClock.observe, inline
                stamps.append(stamp)
                if inf is not None:
                    lag = stamp - _epoch_seconds(inf)
                    lags.append(lag)
                    broker._lead = None
                broker._changed = True
            # As the replay shell: a record without its own arrival time sorts at the latest arrival seen
            # before it in the same source (file there, partition here).
            own = item.arrival_time
            override = None
            if inf is None and stamp is not None and activity:
                # no upload time of its own: the Kafka timestamp is its upload time (design §3), never its
                # business time (which would read every such record as uploaded on time) — read on the
                # records' clock: minus the broker clock's usual lead over the uploads' own inf_time, so a
                # producer stamping its wall clock (kcat) onto a historical load does not date it today.
                # Registry records (institutions, drugs) are not uploads: their Kafka timestamp never moves
                # time.
                if ts is None:
                    ts = datetime.fromtimestamp(stamp, CST)
                own = override = ts - broker.lead()
            sort_time = own if own is not None else last
            if sort_time > last:
                last = sort_time
            if inf is not None and stamp is not None and (
                    lag is None or -lag > near_ahead):  # maybe ahead: the exact check (monitor.intake)
                if ts is None:
                    ts = datetime.fromtimestamp(stamp, CST)
                if ahead_of_transport(inf, ts, skew):
                    # an upload clock ahead of its own message's timestamp never moves time forward for
                    # others (design §2; monitor.intake: the same rule and tolerance as replay's look-ahead)
                    override = ts
                    sort_time = ts
                    self.engine.stats.quality[f"{rec_stream}.clock_skew"] += 1
            seq = seqs[position if position < len(seqs) else -1] if seqs else -1
            queue.append(_Item(arrival_key(sort_time, STREAM_ORDER[rec_stream], seq, partition, offset,
                                           entry.pending),
                               item, override, entry, last, rec_stream, position))
            entry.pending += 1
        if run:
            limit.observe_valid(run)
        self.last_arrival[tp] = last
        if stamp is not None and stream in ACTIVITY_STREAMS and (self._max_stamp is None or stamp > self._max_stamp):
            self._max_stamp = stamp
        messages = self._messages.get(tp)
        if messages is None:
            messages = self._messages[tp] = deque()
        messages.append(entry)
        if entry.pending == 0:
            self._complete_front(tp)
        return letters

    def _duplicate(self, tp: TP, offset: int, handle: Any) -> None:
        """A message delivered again (restart, rebalance): never applied twice; acked with the original."""
        for entry in self._messages.get(tp, ()):
            if entry.offset == offset:
                entry.handles.append(handle)
                return
        if handle is not None:
            self._completed.append(handle)

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
        heappop, heappush = heapq.heappop, heapq.heappush
        applied_last = self._applied_last
        accept = self.event_clock.accept
        journal = self.journal
        engine_state = self._engine_state
        touched: set[TP] = set()
        n = 0
        try:
            while heads and (limit is None or n < limit):
                _, tp = heappop(heads)
                touched.add(tp)
                queue = queues[tp]
                while True:  # this partition's records while they stay ahead of every other head
                    item = queue.popleft()
                    applied_last[tp] = item.last_after
                    rec = item.record
                    # the common path of _offer + _feed, inline: a plain record the event clock takes at
                    # once joins the run (nothing quarantined, no suspect run, no NHSA line window open)
                    if (type(rec) in _PLAIN and item.stream not in _UNCLOCKED
                            and (journal is None or not (journal.quarantined or self._suspect is not None))
                            and not ((join := engine_state.get(JOIN_STATE)) is not None and join.heap)
                            and accept(item.arrival if item.arrival is not None else rec.arrival_time,
                                       claim_source(rec))):
                        self._run.append((tp, item))
                    else:
                        self._offer(tp, item, out)
                    n += 1
                    message = item.message
                    message.pending -= 1
                    message.applied += 1
                    if not queue or (heads and not queue[0].key < heads[0][0]) or (limit is not None and n >= limit):
                        break
                if queue:
                    heappush(heads, (queue[0].key, tp))
                elif not force and waiting(tp):
                    break  # this partition may still hold records older than the other heads
        finally:
            self._flush_run(out)  # the engine has every offered record before positions move
            self.applied += n
            for tp in touched:
                self._complete_front(tp)
        return out

    def _offer(self, tp: TP, item: _Item, out: list[Output]) -> None:
        """Pass a merged record through the event clock (as replay does, ``monitor.watermark``) and feed
        what it releases to the engine. Registry records and the trace tier's findings bypass it (replay
        applies them outside the clock too). A held record's message counts as applied: the clock is in
        the checkpoint."""
        rec = item.record
        if item.stream in _UNCLOCKED:
            self._feed(tp, item, out)
            return
        claim = item.arrival if item.arrival is not None else rec.arrival_time
        clock = self.event_clock
        if clock.accept(claim, claim_source(rec)):  # released at once, nothing else with it
            self._feed(tp, item, out)
            return
        value = clock.value
        if claim is None or value is None or claim <= value + clock.tolerance:
            # plausible: released at once (EventClock's contract), so it needs no detached copy
            self._feed_released(clock.offer((tp, item), claim, claim_source(rec)), out)
            return
        # held items keep no consumer handle and no copy of the raw value (checkpoint size, personal data)
        detached = _Item(item.key, rec, item.arrival, _Message(item.message.offset, 0, 0, key=item.message.key),
                         item.last_after, item.stream, item.index)
        self._feed_released(clock.offer((tp, detached), claim, claim_source(rec)), out, {id(detached): item})

    def _feed_released(self, released: list[Released[tuple[TP, _Item]]], out: list[Output],
                       live: dict[int, _Item] | None = None) -> None:
        for rel in released:
            tp, item = rel.item
            if live:
                item = live.get(id(item), item)  # the record just offered keeps its message's value
            if rel.skewed:  # clamped by the event clock (replay: same counter, same arrival)
                self.engine.stats.quality[f"{item.stream}.clock_skew"] += 1
                item = _Item(item.key, item.record, rel.arrival, item.message, item.last_after, item.stream,
                             item.index)
            self._feed(tp, item, out)

    def _apply_released(self, released: list[Released[tuple[TP, _Item]]]) -> list[Output]:
        out: list[Output] = []
        try:
            self._feed_released(released, out)
        finally:
            self._flush_run(out)
        return out

    # -------------------------------------------------------------------------------------- the engine
    def _feed(self, tp: TP, item: _Item, out: list[Output]) -> None:
        """The next record for the engine, in merge order. Plain records join the current run, which
        goes to ``Engine.process_batch`` in one call (``_flush_run``); anything that needs a path of its
        own — a platform envelope's parts and retractions or a settlement while the NHSA line join has
        windows open (``monitor.nhsa.apply``), a trace finding (``monitor.trace.city.shell_apply``), a
        quarantined position, a record of a run the previous process died in — ends the run and is
        applied alone."""
        journal = self.journal
        if journal is not None and (journal.quarantined or self._suspect is not None):
            pos = (tp[0], tp[1], item.message.offset, item.index)
            if journal.is_quarantined(pos):
                self._flush_run(out)
                self._engine_letter(tp, item, f"quarantined: the worker died {journal.strikes_of(pos)} times "
                                              "while applying this record")
                return
            if self._suspect is not None and self._single(tp, item, pos, out):
                return
        if type(item.record) in _PLAIN and not self._join_open():
            self._run.append((tp, item))
            return
        self._flush_run(out)
        self._apply_one(tp, item, out)

    def _join_open(self) -> bool:
        join = self._engine_state.get(JOIN_STATE)
        return join is not None and bool(join.heap)

    def _single(self, tp: TP, item: _Item, pos: tuple[str, int, int, int], out: list[Output]) -> bool:
        """The previous process died inside a run starting at the suspect position: its records go to the
        engine one at a time, each in the crash journal, so a second death names the record
        (``monitor.streams.quarantine``). True if ``item`` was applied here."""
        assert self._suspect is not None
        first, count = self._suspect
        if self._suspect_left == 0:
            if pos != first:
                return False
            self._suspect_left = count
        self._flush_run(out)
        self._apply_one(tp, item, out, suspect=True)
        self._suspect_left -= 1
        if self._suspect_left == 0:
            self._suspect = None
        return True

    def _apply_one(self, tp: TP, item: _Item, out: list[Output], suspect: bool = False) -> None:
        """One record into the engine, guarded (module docstring): a failure of the record becomes its
        dead letter."""
        journal = self.journal
        message = item.message
        if journal is not None:
            journal.begin(tp[0], tp[1], message.offset, item.index, suspect=suspect)
        try:
            out.extend(shell_apply(self.engine, item.record, item.arrival))
            self._rejected(tp, item)
        except Exception as exc:  # the record failed, not the monitor: dead-letter it and go on
            self._engine_letter(tp, item, f"engine failed on this record: {type(exc).__name__}: {exc}"[:500])
        finally:
            if journal is not None:
                journal.end()

    def _rejected(self, tp: TP, item: _Item) -> None:
        message = item.message
        for _, reason in take_rejected(self.engine):  # a 3507 naming no movement seen (nhsa.join.retract)
            self.letters.append(dead_letter(tp[0], message.value or b"", reason, partition=tp[1],
                                            offset=message.offset, key=message.key))

    def _flush_run(self, out: list[Output]) -> None:
        """The current run into the engine: one ``Engine.process_batch`` call (an engine without it gets
        the records one by one). A record the engine fails on is dead-lettered and the rest of the run
        goes on in a new call: the exception's ``batch_outputs`` (what the records before it caused, already
        applied in the engine) are kept as outputs, its ``batch_index`` names the record to dead-letter
        (the last one the engine read when the exception carries none). The crash journal holds the run's
        first position and length meanwhile."""
        run = self._run
        if not run:
            return
        self._run = []
        batch = getattr(self.engine, "process_batch", None)
        if batch is None:
            for tp, item in run:
                self._apply_one(tp, item, out)
            return
        journal = self.journal
        records = [item.record for _, item in run]
        arrivals = [item.arrival for _, item in run]
        start = 0
        while start < len(run):
            feed = _Fed(records, start)
            if journal is not None:
                tp, item = run[start]
                journal.begin_run(tp[0], tp[1], item.message.offset, item.index, len(run) - start)
            try:
                out.extend(batch(feed, arrivals if start == 0 else arrivals[start:]))
                break
            except Exception as exc:  # that record failed, not the monitor: dead-letter it and go on
                # the outputs of the records before it were applied: they are outputs like any other
                out.extend(getattr(exc, "batch_outputs", ()))
                index = getattr(exc, "batch_index", None)
                failed = start + (index if isinstance(index, int) and index >= 0 else max(feed.at, 0))
                tp, item = run[failed]
                self._engine_letter(tp, item, f"engine failed on this record: {type(exc).__name__}: {exc}"[:500])
                start = failed + 1
            finally:
                if journal is not None:
                    journal.end()
        tp, item = run[-1]
        self._rejected(tp, item)

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

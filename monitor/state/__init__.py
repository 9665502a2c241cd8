"""Keyed state with event-time TTL: the one store of the engine's growing state (issue #14, point 2).

Model: quix-streams' ``State.set(key, value, ttl)``, on **event time**: an entry set with
``expires_at`` is gone once the engine's watermark has passed it, whatever the wall clock.

Contract
--------
* ``StateStore.table(name, key=CODEC, value=CODEC)`` → the ``Table`` called ``name`` (created on first
  call, the same object afterwards; asking again with other codecs raises ``ValueError``). Names are
  stable ids: they are written into checkpoints. Keys are typed: the key codec turns a key into bytes
  and back (``U64``, ``STR``, ``DATE``, ``TupleKey(STR, DATE)``, …); values go through the value codec
  only when they leave memory (a checkpoint, the RocksDB backend).
* ``Table.get(key, default=None)``, ``key in table``, ``len(table)``; ``table.items()`` /
  ``table.keys()`` iterate in encoded-key order (the same order on every backend; a rule must not
  depend on it anyway). Iteration is for inspection and tests, not for hot paths.
* ``Table.set(key, value, expires_at=None)``: ``expires_at`` is an aware datetime of event time, or
  ``None`` (kept until deleted). An entry is **expired** at the first ``expire(now)`` with
  ``now >= expires_at``; until then it is readable. Setting an entry with ``expires_at`` at or before
  the table's last ``expire`` time deletes it instead (it would be expired already). TTL has a
  resolution of one second. ``Table.set_at(key, value, expires_s)`` is the same with the expiry as
  seconds since ``EPOCH`` (hot paths that keep event time as seconds).
* ``Table.delete(key)``: absent keys are ignored.
* Values are treated as **immutable**: a value changed in place is not seen by the change tracking;
  set it again.
* ``StateStore.expire(now)`` expires every table; the engine calls it when its watermark enters a new
  Asia/Shanghai day (and at ``advance``), so in effect TTL is applied at day boundaries of event time —
  the granularity every rule that used a "forget" timer had.
* Change tracking (``track_changes=True``): the store knows what changed since the last checkpoint
  (``StateStore.changes()`` → ``{table: TableDelta}``, encoded puts and deletes) and forgets it at
  ``StateStore.committed()``. Stores that are never checkpointed do not track (no memory cost).

Backends
--------
* ``MemoryStore`` (tests, replays): a dict per table; ``U64`` → ``U64`` tables are ``PackedTable``
  (flat arrays, ~20 bytes per slot: the trace-code budget of design §6 holds). Its checkpoint is a base
  (every entry) plus deltas (``monitor.state.checkpoint``).
* ``RocksStore`` (``monitor.state.rocks``; the worker and large replays): entries on disk through
  ``rocksdict``; changes wait in memory until the checkpoint writes them as one ``WriteBatch``
  together with the sealed envelope, so the database *is* the checkpoint.

The store does no I/O of its own except the RocksDB backend's, never reads the wall clock, and
imports nothing of the shells.
"""

from __future__ import annotations

import heapq
import pickle
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

from monitor.clock import CST
from monitor.state.safepickle import CheckpointError, load_state

K = TypeVar("K")
V = TypeVar("V")

#: Expiry times are kept as whole seconds since this instant (uint32: until 2136).
EPOCH = datetime(2000, 1, 1, tzinfo=CST)
_DAY = 86400
_MAX_S = (1 << 32) - 1


def to_seconds(moment: datetime) -> int:
    """Seconds since ``EPOCH`` (truncated; clamped to [1, 2³²−1]: 0 means "never expires")."""
    delta = moment - EPOCH
    return min(max(delta.days * _DAY + delta.seconds, 1), _MAX_S)


# ------------------------------------------------------------------------------------------------ codecs
class Codec(Protocol[K]):
    """Turns a typed key (or value) into bytes and back. ``name`` identifies it in checkpoints."""

    name: str

    def encode(self, item: K) -> bytes: ...

    def decode(self, raw: bytes) -> K: ...


class _U64:
    name = "u64"

    def encode(self, item: int) -> bytes:
        return item.to_bytes(8, "big")

    def decode(self, raw: bytes) -> int:
        return int.from_bytes(raw, "big")


class _Str:
    name = "str"

    def encode(self, item: str) -> bytes:
        return item.encode("utf-8")

    def decode(self, raw: bytes) -> str:
        return raw.decode("utf-8")


class _Date:
    name = "date"

    def encode(self, item: date) -> bytes:
        return item.toordinal().to_bytes(4, "big")

    def decode(self, raw: bytes) -> date:
        return date.fromordinal(int.from_bytes(raw, "big"))


class _Bytes:
    name = "bytes"

    def encode(self, item: bytes) -> bytes:
        return item

    def decode(self, raw: bytes) -> bytes:
        return bytes(raw)


class _Pickled:
    """Any state value, pickled; read back with the allow-list unpickler (``safepickle``)."""

    name = "pickle"

    def encode(self, item: Any) -> bytes:
        return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, raw: bytes) -> Any:
        return load_state(raw)


class TupleKey:
    """A tuple key of fixed arity; each part by its codec, length-prefixed (order = part by part)."""

    def __init__(self, *parts: Codec[Any]) -> None:
        self.parts = parts
        self.name = "tuple(" + ",".join(p.name for p in parts) + ")"

    def encode(self, item: tuple[Any, ...]) -> bytes:
        out = bytearray()
        for codec, part in zip(self.parts, item, strict=True):
            raw = codec.encode(part)
            out += struct.pack(">H", len(raw))
            out += raw
        return bytes(out)

    def decode(self, raw: bytes) -> tuple[Any, ...]:
        parts: list[Any] = []
        at = 0
        for codec in self.parts:
            (n,) = struct.unpack_from(">H", raw, at)
            parts.append(codec.decode(raw[at + 2:at + 2 + n]))
            at += 2 + n
        return tuple(parts)


U64: Codec[int] = _U64()
STR: Codec[str] = _Str()
DATE: Codec[date] = _Date()
PICKLE: Codec[Any] = _Pickled()
BYTES: Codec[bytes] = _Bytes()


# ------------------------------------------------------------------------------------------------ deltas
@dataclass
class TableDelta:
    """What changed in one table since the last checkpoint, encoded: ``puts`` (key, value, expires_s;
    0 = never) and ``deletes`` (keys). A full dump has ``full=True`` (the table is replaced).
    ``packed`` carries a ``PackedTable``'s live slots as raw arrays instead of ``puts``. ``clears``:
    encoded key prefixes whose every entry is deleted first (``Table.clear_prefix``), then ``deletes``,
    then ``puts``."""

    key: str
    value: str
    puts: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    full: bool = False
    packed: tuple[bytes, bytes, bytes] | None = None
    clears: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        n = len(self.puts) + len(self.deletes) + len(self.clears)
        if self.packed is not None:
            n += len(self.packed[0]) // 8
        return n


Delta = dict[str, TableDelta]


# ------------------------------------------------------------------------------------------------ tables
class Table(Generic[K, V]):
    """One keyed state. See the module docstring for the contract."""

    def __init__(self, name: str, key: Codec[K], value: Codec[V]) -> None:
        self.name = name
        self.key = key
        self.value = value
        #: event time of the last ``expire`` (seconds since EPOCH)
        self._now = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        raise NotImplementedError

    def set(self, key: K, value: V, expires_at: datetime | None = None) -> None:
        self.set_at(key, value, to_seconds(expires_at) if expires_at is not None else 0)

    def set_at(self, key: K, value: V, expires_s: int) -> None:
        raise NotImplementedError

    def delete(self, key: K) -> None:
        raise NotImplementedError

    def expires(self, key: K) -> datetime | None:
        """When ``key`` expires (None: never, or absent)."""
        raise NotImplementedError

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[K, V]]:
        raise NotImplementedError

    def keys(self) -> Iterator[K]:
        for k, _ in self.items():
            yield k

    def expire(self, now: datetime) -> int:
        """Delete the entries with ``expires_at <= now``; returns how many."""
        raise NotImplementedError

    # checkpoint side (used by StateStore and monitor.state.checkpoint) ----------------------------
    def changes(self) -> TableDelta:
        raise NotImplementedError

    def committed(self) -> None:
        raise NotImplementedError

    def dump(self) -> TableDelta:
        raise NotImplementedError

    def apply(self, delta: TableDelta) -> None:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        # inside pickled engine state a table is a reference by name: its content is the store's
        return (TableRef, (self.name, self.key.name, self.value.name))

    def _check(self, delta: TableDelta) -> None:
        if delta.key != self.key.name or delta.value != self.value.name:
            raise ValueError(f"table {self.name}: checkpoint has codecs {delta.key}/{delta.value}, "
                             f"not {self.key.name}/{self.value.name}")


class MemoryTable(Table[K, V]):
    """A dict, an expiry per key and day buckets of expiries (lazy: a re-set key leaves a stale entry in
    its old bucket, skipped when that bucket comes due)."""

    def __init__(self, name: str, key: Codec[K], value: Codec[V], track: bool = False) -> None:
        super().__init__(name, key, value)
        self._data: dict[K, V] = {}
        self._exp: dict[K, int] = {}
        self._due: dict[int, list[K]] = {}
        self._days: list[int] = []  # heap of the keys of _due
        self._changed: set[K] | None = set() if track else None

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def set_at(self, key: K, value: V, expires_s: int) -> None:
        if expires_s and expires_s <= self._now:
            self.delete(key)
            return
        self._data[key] = value
        if expires_s:
            if self._exp.get(key) != expires_s:
                self._exp[key] = expires_s
                day = expires_s // _DAY
                bucket = self._due.get(day)
                if bucket is None:
                    bucket = self._due[day] = []
                    heapq.heappush(self._days, day)
                bucket.append(key)
        elif self._exp:
            self._exp.pop(key, None)
        if self._changed is not None:
            self._changed.add(key)

    def delete(self, key: K) -> None:
        if self._data.pop(key, _ABSENT) is not _ABSENT:
            self._exp.pop(key, None)
            if self._changed is not None:
                self._changed.add(key)

    def expires(self, key: K) -> datetime | None:
        s = self._exp.get(key)
        return _from_seconds(s) if s else None

    def items(self) -> Iterator[tuple[K, V]]:
        enc = self.key.encode
        for k in sorted(self._data, key=enc):
            yield k, self._data[k]

    def expire(self, now: datetime) -> int:
        now_s = to_seconds(now)
        if now_s <= self._now:
            return 0
        self._now = now_s
        n = 0
        today = now_s // _DAY
        days = self._days
        while days and days[0] <= today:
            day = heapq.heappop(days)
            keep: list[K] = []
            for k in self._due.pop(day):
                s = self._exp.get(k)
                if s is None or s // _DAY != day:
                    continue  # deleted, or re-set to another day (that bucket has it)
                if s <= now_s:
                    self.delete(k)
                    n += 1
                else:
                    keep.append(k)
            if keep:
                self._due[day] = keep
                heapq.heappush(days, day)
                break  # the rest of today's bucket is later than now
        return n

    def changes(self) -> TableDelta:
        delta = TableDelta(self.key.name, self.value.name)
        if self._changed is None:
            raise RuntimeError(f"table {self.name} does not track changes (StateStore(track_changes=True))")
        kenc, venc = self.key.encode, self.value.encode
        for k in sorted(self._changed, key=kenc):
            if k in self._data:
                delta.puts.append((kenc(k), venc(self._data[k]), self._exp.get(k, 0)))
            else:
                delta.deletes.append(kenc(k))
        return delta

    def committed(self) -> None:
        if self._changed is not None:
            self._changed = set()

    def dump(self) -> TableDelta:
        kenc, venc = self.key.encode, self.value.encode
        puts = [(kenc(k), venc(v), self._exp.get(k, 0)) for k, v in self._data.items()]
        puts.sort()
        return TableDelta(self.key.name, self.value.name, puts=puts, full=True)

    def apply(self, delta: TableDelta) -> None:
        self._check(delta)
        track, self._changed = self._changed, None  # applying a checkpoint is not a change
        try:
            if delta.full:
                self._data.clear()
                self._exp.clear()
                self._due.clear()
                self._days.clear()
            kdec, vdec = self.key.decode, self.value.decode
            if delta.clears:
                kenc = self.key.encode
                for key in [k for k in self._data if any(kenc(k).startswith(p) for p in delta.clears)]:
                    self.delete(key)
            for raw in delta.deletes:
                self.delete(kdec(raw))
            for kraw, vraw, exp in delta.puts:
                self.set_at(kdec(kraw), vdec(vraw), exp)
        finally:
            self._changed = track


_ABSENT = object()


def _from_seconds(s: int) -> datetime:
    from datetime import timedelta

    return EPOCH + timedelta(seconds=s)


# ------------------------------------------------------------------------------------------------ stores
class StateStore:
    """Named tables plus their change tracking. See the module docstring."""

    backend = "abstract"

    def __init__(self, track_changes: bool = False) -> None:
        self.track_changes = track_changes
        self.tables: dict[str, Table[Any, Any]] = {}
        #: event time of the last ``expire`` (seconds since EPOCH)
        self.now_s = 0

    def table(self, name: str, key: Codec[K], value: Codec[V]) -> Table[K, V]:
        have = self.tables.get(name)
        if have is not None:
            if have.key.name != key.name or have.value.name != value.name:
                raise ValueError(f"table {name} is {have.key.name}/{have.value.name}, not {key.name}/{value.name}")
            return have
        table = self._new_table(name, key, value)
        table._now = self.now_s
        self.tables[name] = table
        return table

    def _new_table(self, name: str, key: Codec[K], value: Codec[V]) -> Table[K, V]:
        raise NotImplementedError

    def expire(self, now: datetime) -> int:
        """Expire every table at event time ``now``; returns how many entries went."""
        self.now_s = max(self.now_s, to_seconds(now))
        return sum(t.expire(now) for t in self.tables.values())

    def set_now(self, now_s: int) -> None:
        """The last ``expire`` time of a restored store (a checkpoint carries it): an entry set later
        with an expiry at or before it is not stored, exactly as in an uninterrupted run."""
        self.now_s = max(self.now_s, now_s)
        for t in self.tables.values():
            t._now = max(t._now, self.now_s)

    def changes(self) -> Delta:
        """Per table, what changed since the last ``committed()`` (encoded; empty tables left out)."""
        out: Delta = {}
        for name in sorted(self.tables):
            delta = self.tables[name].changes()
            if len(delta):
                out[name] = delta
        return out

    def committed(self) -> None:
        """The changes so far are durable in a checkpoint: forget them."""
        for t in self.tables.values():
            t.committed()

    def apply(self, delta: Delta) -> None:
        """Apply a checkpoint's deltas (or full dumps) to the tables, creating them with the codecs
        the table is asked for later (``table()`` checks them)."""
        for name, d in delta.items():
            table = self.tables.get(name)
            if table is None:
                table = self.table(name, _codec(d.key), _codec(d.value))
            table.apply(d)

    def close(self) -> None:
        """Release files (RocksDB); the memory store has none."""

    def sizes(self) -> dict[str, int]:
        return {name: len(t) for name, t in sorted(self.tables.items())}


class MemoryStore(StateStore):
    """Every table in memory; ``U64``/``U64`` tables packed (``monitor.state.packed.PackedTable``)."""

    backend = "memory"

    def _new_table(self, name: str, key: Codec[K], value: Codec[V]) -> Table[K, V]:
        if key.name == "u64" and value.name == "u64":
            from monitor.state.packed import PackedTable

            return PackedTable(name, track=self.track_changes)  # type: ignore[return-value]
        return MemoryTable(name, key, value, track=self.track_changes)

    def dump(self) -> Delta:
        """Every table whole (a checkpoint base)."""
        return {name: self.tables[name].dump() for name in sorted(self.tables)}


_RESTORING: ContextVar[StateStore | None] = ContextVar("monitor_state_restoring", default=None)


@contextmanager
def restoring(store: StateStore) -> Iterator[StateStore]:
    """While engine state is unpickled: the store its table references resolve to (``TableRef``)."""
    token = _RESTORING.set(store)
    try:
        yield store
    finally:
        _RESTORING.reset(token)


class TableRef:
    """A table as pickled inside engine state: unpickling it yields the table of that name in the store
    being restored (``restoring``), never a copy of its content."""

    def __new__(cls, name: str, key: str, value: str) -> Any:  # returns the Table, not a TableRef
        store = _RESTORING.get()
        if store is None:
            raise CheckpointError(f"engine state refers to table {name}: restore it with its store")
        return store.table(name, _codec(key), _codec(value))


_CODECS: dict[str, Codec[Any]] = {c.name: c for c in (U64, STR, DATE, PICKLE, BYTES)}


def _codec(name: str) -> Codec[Any]:
    codec = _CODECS.get(name)
    if codec is not None:
        return codec
    if name.startswith("tuple(") and name.endswith(")"):
        return TupleKey(*(_codec(p) for p in name[6:-1].split(",")))
    raise ValueError(f"unknown codec {name}")


__all__ = ["BYTES", "DATE", "EPOCH", "PICKLE", "STR", "U64", "Codec", "Delta", "MemoryStore", "MemoryTable",
           "StateStore", "Table", "TableDelta", "TableRef", "TupleKey", "restoring", "to_seconds"]

"""``RocksStore``: the tables of ``monitor.state`` on disk, in one RocksDB database through ``rocksdict``.

Layout (raw mode, one database, the default column family):

* entry ``b"T" + table + b"\\0" + key`` → ``expires_s (4 bytes BE) | value | tag (8 bytes)``;
* expiry index ``b"X" + table + b"\\0" + expires_s (4 bytes BE) + key`` → ``b""`` (lazy: an entry set again
  leaves its old index line, skipped when it comes due because the entry's expiry differs);
* ``b"M" + name`` → the store's metadata, among them the sealed checkpoint envelope
  (``monitor.state.checkpoint``).

**Integrity.** Every entry carries an 8-byte keyed BLAKE2b tag over (table, key, expiry, value) under a
subkey of ``MONITOR_PII_KEY``; a read verifies it before the value is decoded (values of ``PICKLE``
tables are then unpickled with the allow-list), so a changed database file is refused like a changed
checkpoint file (``CheckpointError``). The envelope inside the database is sealed as the file checkpoints
are (HMAC-SHA256).

**Writes.** Between checkpoints, changes wait in memory (per table, the latest value or a deletion: their
number is bounded by what changed, not by the state). ``commit(meta)`` writes them and the metadata as
**one** ``WriteBatch`` with ``sync``: after a kill -9 the database holds exactly the last committed
checkpoint, never half of one, and its input positions are in the same write. Nothing else writes.
"""

from __future__ import annotations

import hmac
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from monitor.state import BYTES, Codec, K, StateStore, Table, TableDelta, V, _from_seconds, to_seconds
from monitor.state.safepickle import CheckpointError

_TAG = 8
_NEVER = 0


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # small memtables: the worker's memory is the engine's, RocksDB keeps the bulk on disk
    opts.set_write_buffer_size(8 << 20)
    opts.set_max_write_buffer_number(2)
    return opts


class RocksTable(Table[K, V]):
    """One table of a ``RocksStore`` (module docstring)."""

    def __init__(self, store: RocksStore, name: str, key: Codec[K], value: Codec[V]) -> None:
        super().__init__(name, key, value)
        self._store = store
        self._db: Any = store.db  # rocksdict's stubs type raw-mode keys as any scalar
        self._prefix = b"T" + name.encode() + b"\0"
        self._mac = blake2b(self._prefix, key=store.mac_key, digest_size=_TAG)
        self._xprefix = b"X" + name.encode() + b"\0"
        #: changes since the last commit: key → (value, expires_s), or None = deleted
        self._pending: dict[K, tuple[V, int] | None] = {}
        #: encoded key prefixes cleared since the last commit (``clear_prefix``), before ``_pending``
        self._clears: list[bytes] = []
        self._count: int | None = None

    def _tag(self, kraw: bytes, body: bytes) -> bytes:
        """BLAKE2b(prefix | key | body) under the store's key: the keyed state with the prefix absorbed
        is copied (no key block per entry)."""
        mac = self._mac.copy()
        mac.update(kraw)
        mac.update(body)
        return mac.digest()

    def _read(self, key: K) -> tuple[V, int] | None:
        if key in self._pending:
            return self._pending[key]
        kraw = self.key.encode(key)
        if self._clears and any(kraw.startswith(p) for p in self._clears):
            return None
        raw = self._db.get(self._prefix + kraw)
        if raw is None:
            return None
        return self._decode(kraw, raw)

    def _decode(self, kraw: bytes, raw: bytes) -> tuple[V, int]:
        body, tag = raw[:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(kraw, body)):
            raise CheckpointError(f"state table {self.name}: an entry does not match its tag "
                                  "(the database was changed outside the monitor)")
        return self.value.decode(body[4:]), int.from_bytes(body[:4], "big")

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self._read(key)
        return entry[0] if entry is not None else default

    def __contains__(self, key: object) -> bool:
        return self._read(key) is not None  # type: ignore[arg-type]

    def expires(self, key: K) -> datetime | None:
        entry = self._read(key)
        return _from_seconds(entry[1]) if entry is not None and entry[1] else None

    def set_at(self, key: K, value: V, expires_s: int) -> None:
        if expires_s and expires_s <= self._now:
            self.delete(key)
            return
        self._pending[key] = (value, expires_s)
        self._count = None

    def delete(self, key: K) -> None:
        self._pending[key] = None
        self._count = None

    def clear_prefix(self, kprefix: bytes) -> None:
        """Delete every entry whose encoded key starts with ``kprefix`` (one range deletion at the commit;
        the expiry index lines of such entries are skipped when they come due)."""
        for key in [k for k in self._pending if self.key.encode(k).startswith(kprefix)]:
            del self._pending[key]
        self._clears.append(kprefix)
        self._count = None

    def _stored(self) -> Iterator[tuple[bytes, bytes]]:
        clears = self._clears
        for kfull, raw in self._db.items(from_key=self._prefix):
            if not kfull.startswith(self._prefix):
                break
            kraw = kfull[len(self._prefix):]
            if clears and any(kraw.startswith(p) for p in clears):
                continue
            yield kraw, raw

    def items(self) -> Iterator[tuple[K, V]]:
        pend = {self.key.encode(k): v for k, v in self._pending.items()}
        merged: dict[bytes, V] = {}
        for kraw, raw in self._stored():
            if kraw in pend:
                continue
            merged[kraw] = self._decode(kraw, raw)[0]
        for kraw, entry in pend.items():
            if entry is not None:
                merged[kraw] = entry[0]
        for kraw in sorted(merged):
            yield self.key.decode(kraw), merged[kraw]

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.items())
        return self._count

    def expire(self, now: datetime) -> int:
        now_s = to_seconds(now)
        if now_s <= self._now:
            return 0
        self._now = now_s
        n = 0
        # changes not yet committed
        for key, entry in list(self._pending.items()):
            if entry is not None and entry[1] and entry[1] <= now_s:
                self._pending[key] = None
                n += 1
        # committed entries, through the expiry index
        limit = self._xprefix + (now_s + 1).to_bytes(4, "big")
        gone: list[bytes] = []
        for xkey, _ in self._db.items(from_key=self._xprefix):
            if not xkey.startswith(self._xprefix) or xkey >= limit:
                break
            gone.append(xkey)
            s = int.from_bytes(xkey[len(self._xprefix):len(self._xprefix) + 4], "big")
            kraw = xkey[len(self._xprefix) + 4:]
            key = self.key.decode(kraw)
            if key in self._pending:
                continue  # set or deleted since the commit: its pending state decides
            raw = self._db.get(self._prefix + kraw)
            if raw is None or int.from_bytes(raw[:4], "big") != s:
                continue  # deleted, or set again with another expiry (a later index line has it)
            self._pending[key] = None
            n += 1
        self._store._index_gone.extend(gone)
        if n:
            self._count = None
        return n

    def changes(self) -> TableDelta:
        delta = TableDelta(self.key.name, self.value.name)
        kenc, venc = self.key.encode, self.value.encode
        for kraw, entry in sorted((kenc(k), e) for k, e in self._pending.items()):
            if entry is None:
                delta.deletes.append(kraw)
            else:
                delta.puts.append((kraw, venc(entry[0]), entry[1]))
        return delta

    def write_to(self, batch: WriteBatch) -> None:
        """Add the pending changes to ``batch`` (``RocksStore.commit``)."""
        kenc, venc = self.key.encode, self.value.encode
        for kprefix in self._clears:
            begin = self._prefix + kprefix
            batch.delete_range(begin, _successor(begin))
        for key, entry in self._pending.items():
            kraw = kenc(key)
            if entry is None:
                batch.delete(self._prefix + kraw)
                continue
            value, exp = entry
            body = exp.to_bytes(4, "big") + venc(value)
            batch.put(self._prefix + kraw, body + self._tag(kraw, body))
            if exp:
                batch.put(self._xprefix + exp.to_bytes(4, "big") + kraw, b"")

    def committed(self) -> None:
        self._pending = {}
        self._clears = []

    def dump(self) -> TableDelta:
        delta = TableDelta(self.key.name, self.value.name, full=True)
        for kraw, raw in self._stored():
            body = raw[:-_TAG]
            delta.puts.append((kraw, body[4:], int.from_bytes(body[:4], "big")))
        return delta

    def apply(self, delta: TableDelta) -> None:
        self._check(delta)
        if delta.full:
            for kraw, _ in list(self._stored()):
                self._pending[self.key.decode(kraw)] = None
        for kprefix in delta.clears:
            self.clear_prefix(kprefix)
        pending = self._pending
        if self.key is BYTES and self.value is BYTES:  # the engine's keyed entries: bytes as they are
            raw: dict[Any, Any] = pending
            raw.update(dict.fromkeys(delta.deletes))
            raw.update((kraw, (vraw, exp)) for kraw, vraw, exp in delta.puts)
        else:
            kdec, vdec = self.key.decode, self.value.decode
            for kraw in delta.deletes:
                pending[kdec(kraw)] = None
            for kraw, vraw, exp in delta.puts:
                pending[kdec(kraw)] = (vdec(vraw), exp)
        self._count = None


def _successor(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return prefix + b"\xff" * 8
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class RocksStore(StateStore):
    """Tables in one RocksDB database at ``path`` (a folder, 0700). ``mac_key``: the entries' tag key
    (``Pseudonymizer.derive("state-entries")``). See the module docstring."""

    backend = "rocksdb"

    def __init__(self, path: Path, mac_key: bytes) -> None:
        super().__init__(track_changes=True)
        self.path = path
        self.mac_key = mac_key
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        self.db: Any = Rdict(str(path), options=_options())
        self._index_gone: list[bytes] = []
        #: wall seconds of the last commit: building the WriteBatch (``tables``), the synced write (``write``)
        self.last_commit: dict[str, float] = {}

    def _new_table(self, name: str, key: Codec[K], value: Codec[V]) -> Table[K, V]:
        if b"\0" in name.encode():
            raise ValueError("a table name cannot hold NUL")
        return RocksTable(self, name, key, value)

    def meta(self, name: str) -> bytes | None:
        """A metadata value of the last commit (e.g. the sealed checkpoint envelope)."""
        raw = self.db.get(b"M" + name.encode())
        return bytes(raw) if raw is not None else None

    def commit(self, meta: dict[str, bytes]) -> int:
        """Write every pending change and ``meta`` as one synced ``WriteBatch``; returns its size in bytes."""
        started = time.perf_counter()
        batch = WriteBatch(raw_mode=True)
        # index lines that came due go first, so that no later write of the batch is undone by them
        for xkey in self._index_gone:
            batch.delete(xkey)
        for name in sorted(self.tables):
            table = self.tables[name]
            assert isinstance(table, RocksTable)
            table.write_to(batch)
        for name, value in sorted(meta.items()):
            batch.put(b"M" + name.encode(), value)
        size = int(batch.size_in_bytes())
        built = time.perf_counter()
        opts = WriteOptions()
        opts.sync = True
        self.db.write(batch, opts)
        self.last_commit = {"tables": built - started, "write": time.perf_counter() - built}
        self._index_gone = []
        self.committed()
        return size

    def rollback(self) -> None:
        """Forget the pending changes (a restore reads the last commit)."""
        self._index_gone = []
        for t in self.tables.values():
            t.committed()

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)


def pending_count(store: StateStore) -> dict[str, int]:
    """Changes waiting for the next commit, per table (progress logs, tests)."""
    out: dict[str, int] = {}
    for name, table in store.tables.items():
        pend: Any = getattr(table, "_pending", None)
        if pend is not None:
            out[name] = len(pend)
    return out

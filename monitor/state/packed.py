"""``PackedTable``: a ``U64`` → ``U64`` table with event-time TTL over three flat arrays.

Open addressing with linear probing over ``array('Q')`` keys and values and an ``array('I')`` of
expiries (seconds since ``monitor.state.EPOCH``; 0 = never) — 20 bytes per slot, kept between 37.5 %
and 75 % full once grown, so ≈ 27–53 bytes per entry (the trace-code budget of design §6 is 64).
Keys 0 and 1 mark empty and deleted slots: keys must be in [2, 2⁶⁴). Growth, expiry and dumps are
vectorised with numpy views of the same buffers; single operations are plain Python on the arrays.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from monitor.state import EPOCH, U64, Table, TableDelta, _from_seconds, to_seconds

EMPTY = 0
DELETED = 1
MAX_LOAD = 0.75


def _capacity_for(n: int) -> int:
    cap = 16
    while n > cap // 2:  # rebuild to ≤ 50 % full: a doubling at 75 % lands at 37.5 %
        cap <<= 1
    return cap


class PackedTable(Table[int, int]):
    """See the module docstring; the ``Table`` contract of ``monitor.state``."""

    def __init__(self, name: str, capacity: int = 1024, track: bool = False) -> None:
        super().__init__(name, U64, U64)
        cap = 1 << max(4, (capacity - 1).bit_length())
        self.slot_keys = array("Q", bytes(8 * cap))
        self.slot_vals = array("Q", bytes(8 * cap))
        self.slot_exps = array("I", bytes(4 * cap))
        self.mask = cap - 1
        self.live = 0
        self.deleted = 0
        self._changed: set[int] | None = set() if track else None

    def __len__(self) -> int:
        return self.live

    @property
    def capacity(self) -> int:
        return self.mask + 1

    @property
    def nbytes(self) -> int:
        return (len(self.slot_keys) + len(self.slot_vals)) * 8 + len(self.slot_exps) * 4

    def get(self, key: int, default: int | None = None) -> int | None:
        keys, mask = self.slot_keys, self.mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                return self.slot_vals[i]
            if k == 0:
                return default
            i = (i + 1) & mask

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key) is not None

    def expires(self, key: int) -> datetime | None:
        keys, mask = self.slot_keys, self.mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                s = self.slot_exps[i]
                return _from_seconds(s) if s else None
            if k == 0:
                return None
            i = (i + 1) & mask

    def set_at(self, key: int, value: int, expires_s: int) -> None:
        if key < 2:
            raise ValueError("PackedTable keys must be ≥ 2 (0 and 1 mark empty and deleted slots)")
        if expires_s and expires_s <= self._now:
            self.delete(key)
            return
        keys, mask = self.slot_keys, self.mask
        i = key & mask
        free = -1
        while True:
            k = keys[i]
            if k == key:
                self.slot_vals[i] = value
                self.slot_exps[i] = expires_s
                if self._changed is not None:
                    self._changed.add(key)
                return
            if k == 0:
                break
            if k == 1 and free < 0:
                free = i
            i = (i + 1) & mask
        if free >= 0:
            i = free
            self.deleted -= 1
        keys[i] = key
        self.slot_vals[i] = value
        self.slot_exps[i] = expires_s
        self.live += 1
        if self._changed is not None:
            self._changed.add(key)
        if self.live + self.deleted > MAX_LOAD * (mask + 1):
            self._rebuild(_capacity_for(self.live + 1))

    def delete(self, key: int) -> None:
        keys, mask = self.slot_keys, self.mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                keys[i] = DELETED
                self.live -= 1
                self.deleted += 1
                if self._changed is not None:
                    self._changed.add(key)
                return
            if k == 0:
                return
            i = (i + 1) & mask

    def items(self) -> Iterator[tuple[int, int]]:
        k = np.frombuffer(self.slot_keys, dtype=np.uint64)
        live = np.nonzero(k > 1)[0]
        order = live[np.argsort(k[live])]
        for i in order.tolist():
            yield self.slot_keys[i], self.slot_vals[i]

    def _rebuild(self, capacity: int) -> None:
        old_k = np.frombuffer(self.slot_keys, dtype=np.uint64)
        keep = old_k > 1
        ks = old_k[keep].copy()
        vs = np.frombuffer(self.slot_vals, dtype=np.uint64)[keep].copy()
        es = np.frombuffer(self.slot_exps, dtype=np.uint32)[keep].copy()
        del old_k, keep
        self._place(ks, vs, es, capacity)

    def _place(self, ks: np.ndarray, vs: np.ndarray, es: np.ndarray, capacity: int) -> None:
        new_keys = array("Q", bytes(8 * capacity))
        new_vals = array("Q", bytes(8 * capacity))
        new_exps = array("I", bytes(4 * capacity))
        nk = np.frombuffer(new_keys, dtype=np.uint64)
        nv = np.frombuffer(new_vals, dtype=np.uint64)
        ne = np.frombuffer(new_exps, dtype=np.uint32)
        mask = np.uint64(capacity - 1)
        pos = ks & mask
        todo = np.arange(len(ks))
        # Vectorised linear probing: each round, every pending key whose slot is empty and that is the
        # first to claim it takes it; the others move one slot on. A key only ever passes occupied
        # slots, so every lookup path stays unbroken.
        while todo.size:
            slots = pos[todo]
            empty = nk[slots] == 0
            cand, cslots = todo[empty], slots[empty]
            uniq, first = np.unique(cslots, return_index=True)
            winners = cand[first]
            nk[uniq] = ks[winners]
            nv[uniq] = vs[winners]
            ne[uniq] = es[winners]
            placed = np.zeros(len(ks), dtype=bool)
            placed[winners] = True
            todo = todo[~placed[todo]]
            pos[todo] = (pos[todo] + np.uint64(1)) & mask
        del nk, nv, ne
        self.slot_keys, self.slot_vals, self.slot_exps = new_keys, new_vals, new_exps
        self.mask = capacity - 1
        self.live = len(ks)
        self.deleted = 0

    def expire(self, now: datetime) -> int:
        now_s = to_seconds(now)
        if now_s <= self._now:
            return 0
        self._now = now_s
        k = np.frombuffer(self.slot_keys, dtype=np.uint64)
        e = np.frombuffer(self.slot_exps, dtype=np.uint32)
        expired = (k > 1) & (e > 0) & (e <= np.uint32(now_s))
        n = int(expired.sum())
        if n:
            if self._changed is not None:
                self._changed.update(k[expired].tolist())
            k[expired] = DELETED
        del k, e, expired
        self.live -= n
        self.deleted += n
        if self.deleted > self.live or (self.deleted and self.live < self.capacity // 4):
            self._rebuild(_capacity_for(self.live))
        return n

    # checkpoint side ----------------------------------------------------------------------------------
    def changes(self) -> TableDelta:
        if self._changed is None:
            raise RuntimeError(f"table {self.name} does not track changes (StateStore(track_changes=True))")
        delta = TableDelta("u64", "u64")
        for key in sorted(self._changed):
            keys, mask = self.slot_keys, self.mask
            i = key & mask
            while True:
                k = keys[i]
                if k == key:
                    delta.puts.append((key.to_bytes(8, "big"), self.slot_vals[i].to_bytes(8, "big"), self.slot_exps[i]))
                    break
                if k == 0:
                    delta.deletes.append(key.to_bytes(8, "big"))
                    break
                i = (i + 1) & mask
        return delta

    def committed(self) -> None:
        if self._changed is not None:
            self._changed = set()

    def dump(self) -> TableDelta:
        k = np.frombuffer(self.slot_keys, dtype=np.uint64)
        live = k > 1
        packed = (k[live].astype("<u8").tobytes(),
                  np.frombuffer(self.slot_vals, dtype=np.uint64)[live].astype("<u8").tobytes(),
                  np.frombuffer(self.slot_exps, dtype=np.uint32)[live].astype("<u4").tobytes())
        return TableDelta("u64", "u64", full=True, packed=packed)

    def apply(self, delta: TableDelta) -> None:
        self._check(delta)
        if delta.clears:
            raise ValueError(f"table {self.name}: a packed table has no key prefixes to clear")
        track, self._changed = self._changed, None  # applying a checkpoint is not a change
        try:
            if delta.full:
                if delta.packed is not None:
                    ks = np.frombuffer(delta.packed[0], dtype="<u8").astype(np.uint64)
                    vs = np.frombuffer(delta.packed[1], dtype="<u8").astype(np.uint64)
                    es = np.frombuffer(delta.packed[2], dtype="<u4").astype(np.uint32)
                    self._place(ks, vs, es, _capacity_for(len(ks)))
                else:
                    self._place(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint32), 16)
            for raw in delta.deletes:
                self.delete(int.from_bytes(raw, "big"))
            for kraw, vraw, exp in delta.puts:
                self.set_at(int.from_bytes(kraw, "big"), int.from_bytes(vraw, "big"), exp)
        finally:
            self._changed = track


__all__ = ["EPOCH", "PackedTable"]

"""The record a worker died on, remembered across the crash, so a restart does not die on it forever.

A record whose processing raises is dead-lettered on the spot (``ShellCore.release``). A record that
kills the process outright — a crash inside a C extension, the OOM killer, a stack overflow below
Python — leaves no exception to catch; the restarted worker would read it again from the last
checkpoint and die again, for ever. So the position of the record being applied is written, before the
engine sees it, into a small memory-mapped file (``DATA_DIR/checkpoints/APP_ID.inflight``) and cleared
when the engine returns: a store into a shared mapping is a memory write (no system call on the hot
path), and the kernel keeps it in the file after the process dies (a kill -9, a segfault; not a power
cut, which loses the page cache).

Contract
--------
* ``open_journal(folder, app_id)`` reads what the previous process left: a position still in flight
  means it died while applying that record. Each such death is a *strike* against the position, kept in
  ``APP_ID.strikes`` (JSON, the last ``KEEP`` positions).
* A position with ``STRIKES`` strikes (2: the worker died on it twice in a row of restarts) is
  *quarantined*: ``ShellCore`` dead-letters that record instead of applying it, with the reason, and
  goes on. One strike is not enough, because an operator's kill -9 also lands in the middle of some
  record, which must then be applied again, not lost.
* ``begin(topic, partition, offset, index)`` / ``end()`` bracket one record; ``close()`` releases the
  mapping.
* ``begin_run(topic, partition, offset, index, count)`` brackets a *run*: ``count`` records handed to the
  engine in one ``Engine.process_batch`` call, the first at that position. A death inside a run names no
  record, so it is no strike: the next process takes the run's position and length as ``suspect`` and
  applies those records one at a time (``begin(…, suspect=True)``). A death on one of them is that
  record's second death (it also killed the run): two strikes at once, so a record that kills the worker
  is still quarantined on the third start, as without runs. (Two operator kills, one inside a run and
  one inside the single-record replay of that same run, would quarantine an innocent record: the replay
  of a run lasts well under a second.)
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

#: Deaths on one record before it is quarantined (see the module docstring).
STRIKES = 2
#: Positions with strikes kept (the oldest are dropped: their checkpoint is long past).
KEEP = 100
#: what is in flight (0 nothing, then one of the kinds below), topic (UTF-8, NUL-padded), partition, offset,
#: index, records in the run (a journal written before runs existed reads as one record, count 0)
_SLOT = struct.Struct("<B249siqii")
_RECORD, _RUN, _SUSPECT = 1, 2, 3

Position = tuple[str, int, int, int]  # topic, partition, offset, index of the record in its value


def _key(pos: Position) -> str:
    return "/".join(map(str, pos))


class CrashJournal:
    """See the module docstring."""

    def __init__(self, inflight: Path, strikes_path: Path) -> None:
        self.path = inflight
        self.strikes_path = strikes_path
        self.strikes: dict[str, int] = {}
        if strikes_path.exists():
            try:
                self.strikes = {str(k): int(v) for k, v in json.loads(strikes_path.read_text()).items()}
            except (ValueError, AttributeError):
                self.strikes = {}
        inflight.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(inflight, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SLOT.size:
                os.ftruncate(fd, _SLOT.size)
            self._map = mmap.mmap(fd, _SLOT.size)
        finally:
            os.close(fd)
        #: The record the previous process died on, if it died while applying one (the first of the
        #: run, if it died inside a run: then also ``suspect``).
        self.died_on: Position | None = None
        #: (first position, records) of the run the previous process died in, if it did.
        self.suspect: tuple[Position, int] | None = None
        self._topics: dict[str, bytes] = {}
        flag, topic, partition, offset, index, count = _SLOT.unpack_from(self._map, 0)
        if flag:
            self.died_on = (topic.rstrip(b"\0").decode("utf-8", "replace"), partition, offset, index)
        if flag == _RUN:
            self.suspect = (self.died_on, count)  # type: ignore[assignment]  # set above
        elif flag:
            key = _key(self.died_on)  # type: ignore[arg-type]  # set above
            self.strikes[key] = self.strikes.get(key, 0) + (2 if flag == _SUSPECT else 1)
            self.strikes = dict(list(self.strikes.items())[-KEEP:])
            tmp = strikes_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.strikes))
            tmp.replace(strikes_path)
        self.end()
        self.quarantined: frozenset[str] = frozenset(k for k, n in self.strikes.items() if n >= STRIKES)

    def is_quarantined(self, pos: Position) -> bool:
        return bool(self.quarantined) and _key(pos) in self.quarantined

    def strikes_of(self, pos: Position) -> int:
        return self.strikes.get(_key(pos), 0)

    def begin(self, topic: str, partition: int, offset: int, index: int, suspect: bool = False) -> None:
        _SLOT.pack_into(self._map, 0, _SUSPECT if suspect else _RECORD, self._topic(topic), partition, offset,
                        index, 1)

    def begin_run(self, topic: str, partition: int, offset: int, index: int, count: int) -> None:
        _SLOT.pack_into(self._map, 0, _RUN, self._topic(topic), partition, offset, index, count)

    def _topic(self, topic: str) -> bytes:
        raw = self._topics.get(topic)
        if raw is None:
            raw = self._topics[topic] = topic.encode()
        return raw

    def end(self) -> None:
        self._map[0] = 0

    def close(self) -> None:
        self._map.close()


def open_journal(folder: Path, app_id: str) -> CrashJournal:
    """The crash journal of ``app_id`` in ``folder`` (the checkpoints folder of ``MONITOR_DATA_DIR``)."""
    return CrashJournal(folder / f"{app_id}.inflight", folder / f"{app_id}.strikes")

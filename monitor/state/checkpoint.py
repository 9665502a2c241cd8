"""Incremental checkpoints: one versioned envelope for both shells (``monitor replay --state PATH`` and
the worker's ``DATA_DIR/checkpoints/APP_ID.state``).

The envelope (``Envelope``, version ``ENVELOPE_VERSION``) holds:

* ``shell`` — what the shell needs to resume: the **input positions** the checkpoint reflects (replay:
  the sizes of its output files and its event clock; worker: per-partition positions, the event clock
  and the records it holds, ``monitor.streams.core.Checkpoint`` without the engine);
* ``engine`` — the engine's *residue* (``monitor.state.keyed``): the engine without its store (tables
  pickle as references by name) and without its keyed containers (the rules' state, the registry, the
  ledger's books, the timer heap), which pickle as persistent ids: settings, counters and scalars, a
  size that does not grow with history;
* ``keyed`` — those containers per key, what changed since the previous checkpoint (memory backend; a
  base: every entry) — in the RocksDB backend they are entries of the database's ``engine`` table;
* ``delta`` — per store table, what changed since the previous checkpoint (puts with their expiry,
  deletes), or every entry in a **base**; ``now_s``, the store's last expiry time.

A checkpoint folder is ``PATH/`` (0700). Two backends, one envelope:

* **memory** (replays, small workers): ``PATH/ckpt-<generation>.base`` holds every table, each later
  ``PATH/ckpt-<generation>.delta`` only the change. Restore = the newest base, then every later delta in
  order; the newest envelope's ``engine`` and ``shell`` win. When the table deltas written since the base
  have grown as large as the base's tables, the next checkpoint writes a new base and removes the older
  files (a delta costs the change; a base, rarely, the state: ≤ 2× the change amortised; the residue
  is in every file).
* **rocksdb** (the worker, large replays): the tables live in ``PATH/db`` (``monitor.state.rocks``).
  The checkpoint is the store's own durable write: the pending changes, the changed keyed
  entries (table ``engine``) *and* the sealed envelope (``delta=None``, ``keyed=None``) go into **one
  synced WriteBatch**, so after a kill -9 the database holds exactly the last checkpoint and the input
  positions it reflects. Nothing else writes to it.

Today's guarantees are kept: every file and the envelope inside the database are sealed
(``monitor.engine.seal``: magic | key fingerprint | HMAC-SHA256 under a subkey of ``MONITOR_PII_KEY``) and
verified **before** anything is unpickled; unpickling uses the allow-list (``monitor.state.safepickle``);
database entries carry a keyed tag verified before decoding; no secret is stored (the key's fingerprint
only); files are 0600, written atomically (tmp, fsync, rename, fsync of the folder). A checkpoint made
under another key raises ``KeyMismatch``; one of the other shell (``kind``) or backend ``CheckpointError``.
"""

from __future__ import annotations

import os
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.state import BYTES, Delta, MemoryStore, StateStore, TableDelta
from monitor.state.keyed import TABLE as KEYED_TABLE
from monitor.state.keyed import KeyedState
from monitor.state.safepickle import CheckpointError, load_state

if TYPE_CHECKING:
    from monitor.engine import Engine
    from monitor.policy.pack import Pack
    from monitor.privacy import Pseudonymizer

ENVELOPE_VERSION = 2
BACKENDS = ("memory", "rocksdb")
_FILE = re.compile(r"^ckpt-(\d{10})\.(base|delta)$")


@dataclass
class Envelope:
    """One checkpoint (module docstring)."""

    version: int
    kind: str
    policy: str
    backend: str
    generation: int
    base: bool
    engine: bytes
    shell: Any
    now_s: int
    delta: Delta | None
    keyed: TableDelta | None


@dataclass(frozen=True)
class Written:
    """What one checkpoint cost: bytes written (file, or WriteBatch + envelope), seconds (wall), whether it
    was a base, the entries it carried, its CPU seconds (``time.process_time``: comparable on a loaded
    machine) and wall seconds per phase: ``engine`` (the keyed diff and the residue), ``tables`` (the
    store's changes encoded: the WriteBatch built, or the deltas), ``write`` (the synced write)."""

    generation: int
    bytes: int
    seconds: float
    base: bool
    entries: int
    cpu: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


def _write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)  # a file left by an older run keeps its mode through O_TRUNC
    tmp.replace(path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointDir:
    """The checkpoints of one shell in folder ``path`` (module docstring).

    ``kind`` names the shell (``"replay"``, ``"worker"``): a checkpoint of the other is refused.
    ``backend``: ``"memory"`` or ``"rocksdb"``; ``None`` = the one the folder already holds, else memory.
    Use: ``store()`` for a new engine's store; ``load(pack)`` → ``(engine, shell)`` or ``None``;
    ``save(engine, shell)`` after every batch of outputs is durable; ``close()``.
    """

    def __init__(self, path: Path, pseudo: Pseudonymizer, kind: str, backend: str | None = None) -> None:
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"{path} is a single-file state of an older version: give a new folder "
                                  "(the state is now a folder of incremental checkpoints) and replay again")
        self.path = path
        self.pseudo = pseudo
        self.kind = kind
        there = self._backend_there()
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"state backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend is not None and there is not None and backend != there:
            raise CheckpointError(f"{path} holds a {there} state, not {backend}")
        self.backend = backend or there or "memory"
        self._store: StateStore | None = None
        self._generation = 0
        self._base_bytes = 0
        self._delta_bytes = 0
        #: digests of the engine's keyed entries as last written (``monitor.state.keyed``)
        #: (memory: with the bytes last written, so a base re-pickles only what changed)
        self.keyed = KeyedState(keep_bytes=self.backend == "memory")

    def _backend_there(self) -> str | None:
        if (self.path / "db").exists():
            return "rocksdb"
        if self.path.exists() and any(_FILE.match(p.name) for p in self.path.iterdir()):
            return "memory"
        return None

    def exists(self) -> bool:
        return self._backend_there() is not None

    def store(self) -> StateStore:
        """The store this folder checkpoints (created on first call)."""
        if self._store is None:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path, 0o700)
            if self.backend == "rocksdb":
                from monitor.state.rocks import RocksStore

                self._store = RocksStore(self.path / "db", self.pseudo.derive("state-entries"))
            else:
                self._store = MemoryStore(track_changes=True)
        return self._store

    # ------------------------------------------------------------------------------------------- read
    def _read(self, blob: bytes) -> Envelope:
        from monitor.engine import unseal

        env = load_state(unseal(blob, self.pseudo))  # verified before anything is unpickled
        if not isinstance(env, Envelope) or env.version not in (1, ENVELOPE_VERSION):
            raise CheckpointError(f"{self.path}: not a checkpoint envelope of version {ENVELOPE_VERSION}")
        if env.version == 1:  # before the keyed entries: ``engine`` is the whole small state
            env.keyed = None
        if env.kind != self.kind:
            raise CheckpointError(f"{self.path} is a {env.kind} checkpoint, not a {self.kind} one")
        if env.backend != self.backend:
            raise CheckpointError(f"{self.path} holds a {env.backend} state, not {self.backend}")
        return env

    def read_envelope(self, blob: bytes) -> Envelope:
        """A sealed envelope, verified, then unpickled (its deltas are not applied)."""
        return self._read(blob)

    def newest_envelope(self) -> bytes | None:
        """The sealed envelope of the newest checkpoint without loading the store's content (memory: the
        newest file; rocksdb: read from a read-only view of the database, so a running worker keeps it)."""
        if self.backend == "rocksdb":
            if not (self.path / "db").exists():
                return None
            from rocksdict import AccessType, Options, Rdict

            db = Rdict(str(self.path / "db"), options=Options(raw_mode=True), access_type=AccessType.read_only())
            try:
                raw = db.get(b"Menvelope")
            finally:
                db.close()
            return bytes(raw) if raw is not None else None
        for _ in range(5):  # a new base may remove the files we listed: list again
            files = self._files() if self.path.exists() else []
            if not files:
                return None
            try:
                return files[-1][2].read_bytes()
            except FileNotFoundError:
                continue
        return None

    def _files(self) -> list[tuple[int, str, Path]]:
        out = []
        for p in self.path.iterdir():
            m = _FILE.match(p.name)
            if m:
                out.append((int(m.group(1)), m.group(2), p))
        return sorted(out)

    def load(self, pack: Pack | None = None) -> tuple[Engine, Any] | None:
        """The engine and shell part of the last checkpoint, or ``None`` when there is none. ``pack``:
        refuse a checkpoint of another policy."""
        from monitor.engine import Engine

        if not self.exists():
            return None
        store = self.store()
        last: Envelope | None = None
        if self.backend == "rocksdb":
            from monitor.state.rocks import RocksStore

            assert isinstance(store, RocksStore)
            blob = store.meta("envelope")
            if blob is None:
                return None
            last = self._read(blob)
            entries: Any = store.table(KEYED_TABLE, BYTES, BYTES).items()
        else:
            keyed: dict[bytes, bytes] = {}
            files = self._files()
            bases = [i for i, (_, kind, _) in enumerate(files) if kind == "base"]
            if not bases:
                raise CheckpointError(f"{self.path}: deltas without a base (files removed by hand?)")
            for gen, _, path in files[bases[-1]:]:
                blob = path.read_bytes()
                env = self._read(blob)
                if env.generation != gen or env.delta is None:
                    raise CheckpointError(f"{path}: its envelope is generation {env.generation}")
                store.apply(env.delta)
                if env.keyed is not None:
                    if env.keyed.full:
                        keyed = {}
                    if env.keyed.clears:
                        cleared = tuple(env.keyed.clears)
                        keyed = {k: v for k, v in keyed.items() if not k.startswith(cleared)}
                    for kraw in env.keyed.deletes:
                        keyed.pop(kraw, None)
                    for kraw, vraw, _ in env.keyed.puts:
                        keyed[kraw] = vraw
                tables = max(len(blob) - len(env.engine), 1)
                if env.base:
                    self._base_bytes, self._delta_bytes = tables, 0
                else:
                    self._delta_bytes += tables
                last = env
            entries = keyed.items()
        assert last is not None
        if pack is not None and last.policy != pack.label:
            raise CheckpointError(f"checkpoint {self.path} was made with policy {last.policy}, not {pack.label}")
        store.set_now(last.now_s)
        self._generation = last.generation
        if last.version == 1:
            # a folder of the version before the keyed entries: the engine whole; the next checkpoint
            # writes every keyed entry (memory: as a new base, so no delta builds on a version-1 base)
            engine = Engine.restore(last.engine, self.pseudo, store)
            self._base_bytes = 0
        else:
            engine = self.keyed.restore(last.engine, entries, self.pseudo, store)
        for rule in engine.detectors:  # timers written by an older version: a rule converts its own keys
            convert = getattr(rule, "legacy_timer", None)
            if convert is not None:
                engine.timers.rekey(rule.name, convert)
        return engine, last.shell

    # ------------------------------------------------------------------------------------------ write
    def save(self, engine: Engine, shell: Any) -> Written:
        """Write one checkpoint of ``engine`` (whose store must be ``store()``) and ``shell``."""
        from monitor.engine import seal

        started, cpu = time.perf_counter(), time.process_time()
        store = self.store()
        if engine.state is not store:
            raise ValueError("the engine does not use this checkpoint folder's store")
        self._generation += 1
        gen = self._generation
        if self.backend == "rocksdb":
            from monitor.state.rocks import RocksStore, pending_count

            assert isinstance(store, RocksStore)
            small, keyed = self.keyed.checkpoint(engine)  # the first one after a start writes every entry
            store.table(KEYED_TABLE, BYTES, BYTES).apply(keyed)
            entries = sum(pending_count(store).values())
            env = Envelope(ENVELOPE_VERSION, self.kind, engine.pack.label, self.backend, gen, False, small,
                           shell, store.now_s, None, None)
            sealed = seal(pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL), self.pseudo)
            diffed = time.perf_counter()
            size = store.commit({"envelope": sealed})
            self.keyed.committed()
            phases = {"engine": diffed - started, **store.last_commit}
            return Written(gen, size, time.perf_counter() - started, False, entries, time.process_time() - cpu,
                           phases)
        assert isinstance(store, MemoryStore)
        base = self._base_bytes == 0 or self._delta_bytes >= self._base_bytes
        small, keyed = self.keyed.checkpoint(engine, full=base)
        diffed = time.perf_counter()
        delta = store.dump() if base else store.changes()
        env = Envelope(ENVELOPE_VERSION, self.kind, engine.pack.label, self.backend, gen, base, small, shell,
                       store.now_s, delta, keyed)
        blob = seal(pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL), self.pseudo)
        encoded = time.perf_counter()
        _write_atomic(self.path / f"ckpt-{gen:010d}.{'base' if base else 'delta'}", blob)
        store.committed()
        self.keyed.committed()
        tables = max(len(blob) - len(small), 1)  # the small state is rewritten anyway: only deltas pile up
        if base:
            self._base_bytes, self._delta_bytes = tables, 0
            for old_gen, _, path in self._files():
                if old_gen < gen:
                    path.unlink()
        else:
            self._delta_bytes += tables
        done = time.perf_counter()
        return Written(gen, len(blob), done - started, base, sum(len(d) for d in delta.values()) + len(keyed),
                       time.process_time() - cpu,
                       {"engine": diffed - started, "tables": encoded - diffed, "write": done - encoded})

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


__all__ = ["BACKENDS", "ENVELOPE_VERSION", "CheckpointDir", "Envelope", "Written"]

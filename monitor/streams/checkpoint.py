"""Durable checkpoints of the Kafka shell: one folder per application id, ``DATA_DIR/checkpoints/APP_ID.state``.

Incremental (issue #14): every checkpoint is the envelope of ``monitor.state.checkpoint`` — the input
positions it reflects (``monitor.streams.core.Checkpoint`` without the engine: per-partition positions,
the event clock and the records it holds), the engine's small state, and what changed in the engine's
store since the previous checkpoint — so its cost follows the change, not the state. Backend
``MONITOR_STATE_BACKEND``: ``memory`` (default: tables in memory, base + delta files) or ``rocksdb``
(tables on disk in ``APP_ID.state/db``; the checkpoint is one synced WriteBatch with the envelope).

Either way a checkpoint is atomic: after a kill -9 the folder holds the previous or the new one, never
a torn one. The worker acknowledges input messages only after the checkpoint that covers them is
durable, so the consumer group's committed offsets never run ahead of the state on disk.

No secret is stored (the engine keeps only its key's fingerprint); files 0600 in 0700 folders; every
envelope sealed (``monitor.engine.seal``: HMAC-SHA256 under a subkey of ``MONITOR_PII_KEY``) and verified
before anything is unpickled, with the state allow-list; database entries tagged. A checkpoint made
under another key raises ``KeyMismatch``, a changed one or one of another shell ``CheckpointError``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from monitor.engine import Engine, load_state, unseal
from monitor.privacy import Pseudonymizer
from monitor.state import StateStore
from monitor.state.checkpoint import CheckpointDir, Written
from monitor.state.safepickle import CheckpointError
from monitor.streams.core import CHECKPOINT_VERSION, Checkpoint


class CheckpointStore:
    """The worker's checkpoint folder. ``state()``: the store a new engine must use; ``restore()``:
    ``(engine, positions)`` of the last checkpoint or ``None``; ``load()``: its positions only;
    ``save(ckpt, engine)``: one incremental checkpoint."""

    def __init__(self, data_dir: Path, app_id: str, pseudo: Pseudonymizer | None = None,
                 backend: str | None = None) -> None:
        self.folder = data_dir / "checkpoints"
        self.path = self.folder / f"{app_id}.state"
        #: Signs and verifies the envelopes; the dev key when none is given (tests).
        self.pseudo = pseudo or Pseudonymizer()
        old = self.folder / f"{app_id}.ckpt"
        if old.exists():
            raise CheckpointError(f"{old} is a whole-engine checkpoint of an older version: move it away and "
                                  "let the worker start from the committed offsets into a new state folder")
        self.dir = CheckpointDir(self.path, self.pseudo, "worker", backend)
        #: what the last ``save`` wrote (bytes, seconds, entries)
        self.last: Written | None = None

    def state(self) -> StateStore:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.dir.store()

    def restore(self) -> tuple[Engine, Checkpoint] | None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        loaded = self.dir.load()
        if loaded is None:
            return None
        engine, shell = loaded
        return engine, _positions(shell)

    def load(self) -> Checkpoint | None:
        """The positions of the newest checkpoint (read-only; for inspection while a worker runs)."""
        blob = self.dir.newest_envelope()
        return _positions(self.dir.read_envelope(blob).shell) if blob is not None else None

    def save(self, ckpt: Checkpoint, engine: Engine) -> Written:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.last = self.dir.save(engine, dataclasses.replace(ckpt, engine=b""))
        return self.last

    def close(self) -> None:
        self.dir.close()


def _positions(shell: object) -> Checkpoint:
    if not isinstance(shell, Checkpoint) or shell.version != CHECKPOINT_VERSION:
        raise CheckpointError("not a monitor worker checkpoint of this version")
    return shell


def read_checkpoint(blob: bytes, pseudo: Pseudonymizer) -> Checkpoint:
    """Verify a sealed self-contained checkpoint (``ShellCore.checkpoint()``), then unpickle it with the
    state allow-list."""
    ckpt = load_state(unseal(blob, pseudo))
    if not isinstance(ckpt, Checkpoint) or ckpt.version != CHECKPOINT_VERSION:
        raise TypeError("not a monitor checkpoint of this version")
    return ckpt

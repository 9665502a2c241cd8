"""Durable checkpoints of the Kafka shell: one file per application id in ``MONITOR_DATA_DIR``.

A checkpoint is written atomically (temporary file, fsync, rename, fsync of the folder), so after a
kill -9 the file holds either the previous or the new checkpoint, never a torn one. The worker
acknowledges input messages only after the checkpoint that covers them is durable, so the consumer
group's committed offsets never run ahead of the state on disk.

The file holds no secret (the engine keeps only its key's fingerprint), is written 0600 in a 0700
folder, is signed (``monitor.engine.seal``: HMAC-SHA256 under a subkey of ``MONITOR_PII_KEY``) and is
verified before anything is unpickled, with the state allow-list (``monitor.engine.load_state``). A
checkpoint made under another key raises ``KeyMismatch`` (rotated key), a changed one ``CheckpointError``.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitor.engine import load_state, seal, unseal
from monitor.privacy import Pseudonymizer
from monitor.streams.core import CHECKPOINT_VERSION, Checkpoint


class CheckpointStore:
    def __init__(self, data_dir: Path, app_id: str, pseudo: Pseudonymizer | None = None) -> None:
        self.folder = data_dir / "checkpoints"
        self.path = self.folder / f"{app_id}.ckpt"
        #: Signs and verifies the file; the dev key when none is given (tests).
        self.pseudo = pseudo or Pseudonymizer()

    def load(self) -> Checkpoint | None:
        if not self.path.exists():
            return None
        return read_checkpoint(self.path.read_bytes(), self.pseudo)

    def save(self, ckpt: Checkpoint) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(seal(ckpt.dumps(), self.pseudo))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # a file left by an older version keeps its mode through O_TRUNC
        tmp.replace(self.path)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_checkpoint(blob: bytes, pseudo: Pseudonymizer) -> Checkpoint:
    """Verify a sealed checkpoint, then unpickle it with the state allow-list."""
    ckpt = load_state(unseal(blob, pseudo))
    if not isinstance(ckpt, Checkpoint) or ckpt.version != CHECKPOINT_VERSION:
        raise TypeError("not a monitor checkpoint of this version")
    return ckpt

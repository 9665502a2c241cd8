"""Durable checkpoints of the Kafka shell: one file per application id in ``MONITOR_DATA_DIR``.

A checkpoint is written atomically (temporary file, fsync, rename, fsync of the folder), so after a
kill -9 the file holds either the previous or the new checkpoint, never a torn one. The worker
acknowledges input messages only after the checkpoint that covers them is durable, so the consumer
group's committed offsets never run ahead of the state on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitor.streams.core import Checkpoint


class CheckpointStore:
    def __init__(self, data_dir: Path, app_id: str) -> None:
        self.folder = data_dir / "checkpoints"
        self.path = self.folder / f"{app_id}.ckpt"

    def load(self) -> Checkpoint | None:
        if not self.path.exists():
            return None
        return Checkpoint.loads(self.path.read_bytes())

    def save(self, ckpt: Checkpoint) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(ckpt.dumps())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""JSON-lines files: ``alerts.jsonl``, ``tickets.jsonl``, ``dlq.jsonl`` and ``institution_daily.jsonl``
(design §4; every emitted version of an institution-day, the newest per ``day_id`` is the row), one
object a line, in emission order. Appends when resuming from a checkpoint, so part 1 + part 2 equal one whole run; a
resume first cuts each file back to the size the checkpoint covers (``truncate_to``), so what a killed
run wrote after its last checkpoint is not there twice.

``Quarantine``: the operator's folder for the raw bytes of dead-lettered values (``MONITOR_QUARANTINE_DIR``),
one ``<sha256>.bin`` per distinct value, folder 0700 and files 0600. Dead letters themselves carry only a
bounded, masked prefix; the quarantine keeps personal data in clear, so it belongs on encrypted,
access-controlled storage."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from monitor.outputs import Alert, DeadLetter, InstitutionDay, Ticket

OUTPUT_NAMES = ("alerts", "tickets", "dlq", "institution_daily")


class FileSink:
    def __init__(self, out_dir: Path, append: bool = False, truncate_to: dict[str, int] | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self.paths = {name: out_dir / f"{name}.jsonl" for name in OUTPUT_NAMES}
        if append and truncate_to is not None:
            for name, path in self.paths.items():
                size = truncate_to.get(name, 0)
                have = path.stat().st_size if path.exists() else 0
                if have < size:
                    raise ValueError(f"{path} is shorter ({have} bytes) than the checkpoint covers ({size}): "
                                     "the outputs were changed since; replay into a new folder and state")
                if have > size:
                    os.truncate(path, size)  # written after the checkpoint by a run that did not finish
        self._files: dict[str, IO[str]] = {
            name: path.open(mode, encoding="utf-8") for name, path in self.paths.items()
        }

    def write(self, outputs: Sequence[Alert | Ticket | InstitutionDay], dead: Sequence[DeadLetter]) -> None:
        files = self._files
        alerts, tickets, dlq, daily = files["alerts"], files["tickets"], files["dlq"], files["institution_daily"]
        for item in outputs:
            fh = alerts if isinstance(item, Alert) else tickets if isinstance(item, Ticket) else daily
            fh.write(item.model_dump_json() + "\n")
        for letter in dead:
            dlq.write(letter.model_dump_json() + "\n")

    def flush(self) -> None:
        for fh in self._files.values():
            if not fh.closed:
                fh.flush()
                os.fsync(fh.fileno())

    def close(self) -> None:
        self.flush()
        for fh in self._files.values():
            fh.close()

    def sizes(self) -> dict[str, int]:
        """Bytes of each output file (after ``close``/``flush``): what a checkpoint covers."""
        return {name: path.stat().st_size for name, path in self.paths.items()}


class Quarantine:
    """Raw bytes of dead-lettered values, by SHA-256 (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)

    def keep(self, sha256: str, raw: bytes) -> bool:
        path = self.folder / f"{sha256}.bin"
        if path.exists():
            return True
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        return True

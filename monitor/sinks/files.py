"""JSON-lines files: ``alerts.jsonl``, ``tickets.jsonl``, ``dlq.jsonl`` (design §4), one object a line,
in emission order. Appends when resuming from a checkpoint, so part 1 + part 2 equal one whole run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from monitor.outputs import Alert, DeadLetter, Ticket


class FileSink:
    def __init__(self, out_dir: Path, append: bool = False) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self.paths = {name: out_dir / f"{name}.jsonl" for name in ("alerts", "tickets", "dlq")}
        self._files: dict[str, IO[str]] = {
            name: path.open(mode, encoding="utf-8") for name, path in self.paths.items()
        }

    def write(self, outputs: Sequence[Alert | Ticket], dead: Sequence[DeadLetter]) -> None:
        alerts, tickets, dlq = self._files["alerts"], self._files["tickets"], self._files["dlq"]
        for item in outputs:
            (alerts if isinstance(item, Alert) else tickets).write(item.model_dump_json() + "\n")
        for letter in dead:
            dlq.write(letter.model_dump_json() + "\n")

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        self.flush()
        for fh in self._files.values():
            fh.close()

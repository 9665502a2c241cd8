"""A durable local queue (SQLite, stdlib): the buffer behind the ClickHouse sink and the case-system
outbox.

Contract
--------
* ``put(items)`` stores ``(key, payload)`` pairs in one transaction; when it returns, they are on disk
  (WAL + ``synchronous=FULL``) and survive a crash or restart. An existing key is replaced when
  ``replace=True`` (a newer version of the same row) and kept otherwise (exactly one entry per id:
  the same ticket enqueued twice is delivered once).
* ``due(now, limit)`` lists entries in insertion order whose next attempt is due; ``remove(keys)``
  deletes them — only after the downstream system accepted them; ``retry_later(key, at)`` records a
  failed attempt.
* Payloads are opaque bytes; the file lives under ``MONITOR_DATA_DIR`` and holds no personal data
  beyond what the outputs hold (none in clear).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    payload: bytes
    attempts: int
    next_at: float


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,"
            " payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0)"
        )

    def put(self, items: Iterable[tuple[str, bytes]], replace: bool = False) -> int:
        """Store items durably; returns how many were new or replaced."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._tx() as cur:
            before = self._db.total_changes
            cur.executemany(f"{verb} INTO outbox (key, payload) VALUES (?, ?)", list(items))
            return self._db.total_changes - before

    def due(self, now: float = float("inf"), limit: int = 10_000) -> list[Entry]:
        rows = self._db.execute(
            "SELECT key, payload, attempts, next_at FROM outbox WHERE next_at <= ? ORDER BY seq LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Entry(k, bytes(p), a, n) for k, p, a, n in rows]

    def remove(self, keys: Sequence[str]) -> None:
        with self._tx() as cur:
            cur.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in keys])

    def retry_later(self, key: str, at: float) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE key = ?", (at, key))

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Cursor:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db.cursor()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")

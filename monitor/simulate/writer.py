"""Arrival-ordered JSONL writers for the synthetic city.

The replay shell merges the seven files assuming each is in arrival (``inf_time``) order. The generator
produces records in *business*-time order, and uploads lag behind (minutes, sometimes hours, planted
late uploads more than a day). ``ArrivalWriter`` therefore holds each stream's lines in a heap keyed by
(arrival second, sequence) and writes out every line whose arrival is before a *frontier*: the
generator promises that nothing it produces later arrives before the frontier (every record's business
time is ≥ the start of the slice being generated, and arrival ≥ business time). Memory is bounded by
the records "in flight" (uploaded after the frontier), not by the size of the run.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import IO, Any

from monitor.records import STREAMS


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line; Chinese text kept readable (UTF-8), key order as built (deterministic)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class ArrivalWriter:
    """One ``STREAM.jsonl`` per stream of design §3, each written in nondecreasing arrival order."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self._files: dict[str, IO[str]] = {
            s: (out_dir / f"{s}.jsonl").open("w", encoding="utf-8", newline="\n") for s in STREAMS
        }
        self._heaps: dict[str, list[tuple[int, int, str]]] = {s: [] for s in STREAMS}
        self._seq = 0
        self._frontier = -(1 << 62)
        self.counts: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.peak_in_flight = 0
        self._in_flight = 0

    def write_now(self, stream: str, record: dict[str, Any]) -> None:
        """Write a record that arrives before anything else (catalogue and registry records)."""
        self._files[stream].write(dumps(record) + "\n")
        self.counts[stream] += 1

    def push(self, stream: str, arrival: int, record: dict[str, Any]) -> None:
        """Queue a record that arrives at ``arrival`` (seconds on the simulation's clock)."""
        if arrival < self._frontier:
            raise AssertionError(f"{stream}: arrival {arrival} before the written frontier {self._frontier}")
        self._seq += 1
        heapq.heappush(self._heaps[stream], (arrival, self._seq, dumps(record)))
        self._in_flight += 1
        if self._in_flight > self.peak_in_flight:
            self.peak_in_flight = self._in_flight

    def advance(self, frontier: int) -> None:
        """Write every queued line arriving before ``frontier``; nothing later may arrive before it."""
        self._frontier = max(self._frontier, frontier)
        for stream, heap in self._heaps.items():
            fh = self._files[stream]
            n = 0
            while heap and heap[0][0] < frontier:
                fh.write(heapq.heappop(heap)[2] + "\n")
                n += 1
            self.counts[stream] += n
            self._in_flight -= n

    def close(self) -> None:
        self.advance(1 << 62)
        for fh in self._files.values():
            fh.close()

"""Trace-code dedup state: bytes per remembered code at 10⁶ and 10⁷ codes (design §6: ≤ 64 B/code).

``python -m bench.trace_state [N ...]`` prints one Markdown row per N (default 10⁶ and 10⁷): the
table's own bytes per code (its flat key, value and expiry arrays / codes), the process RSS growth per code while the
codes were inserted (allocator overhead included; freed growth transients are handed back with
glibc's ``malloc_trim`` first), the peak transient of a rebuild, the insert cost and the cost of one expiry sweep.

``bytes_per_code(n)`` is what ``python -m bench`` calls (case ``trace``): the larger of the two
per-code figures, so the reported number never flatters the state.

Codes go through the same path as the detector's duplicate check (``code_key`` → ``pack_value`` →
``PackedTable.set_at`` of the engine's store table ``trace_codes``, expiring 3 years after the scan):
20-digit codes, spread over 300 institutions and a year of scan times.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from monitor.clock import CST
from monitor.detectors.tracecodes import CODES_TABLE, SOLD, code_key, pack_value
from monitor.state import to_seconds
from monitor.state.packed import PackedTable

START = datetime(2026, 1, 1, tzinfo=CST)


def _trim() -> None:
    """Return freed heap pages to the OS (glibc), so RSS shows live memory, not the allocator's cache
    of the arrays a growth step freed (a long-running worker reuses that cache anyway)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int | None:
    gc.collect()
    _trim()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Measurement:
    codes: int
    capacity: int
    table_bytes_per_code: float
    rss_bytes_per_code: float | None
    rebuild_peak_bytes_per_code: float
    insert_us_per_code: float
    sweep_seconds: float

    @property
    def reported(self) -> float:
        return max(self.table_bytes_per_code, self.rss_bytes_per_code or 0.0)


def measure(n: int) -> Measurement:
    gc.collect()
    before = _rss_bytes()
    table = PackedTable(CODES_TABLE)
    step = 365 * 86400 // max(n, 1)
    horizon_s = 1096 * 86400
    t0 = time.perf_counter()
    for i in range(n):
        when = START + timedelta(seconds=i * step)
        table.set_at(code_key(f"8{i:019d}"), pack_value(i % 300, when, SOLD), to_seconds(when) + horizon_s)
    insert_s = time.perf_counter() - t0
    gc.collect()
    after = _rss_bytes()
    assert len(table) == n
    t1 = time.perf_counter()
    removed = table.expire(START + timedelta(days=365))  # nothing has expired: a full scan, no delete
    sweep_s = time.perf_counter() - t1
    assert removed == 0
    # a rebuild holds the old arrays, the compacted live entries and the new arrays at once
    rebuild_peak = table.nbytes + 20 * n + 2 * 20 * table.capacity
    m = Measurement(
        codes=n,
        capacity=table.capacity,
        table_bytes_per_code=table.nbytes / n,
        rss_bytes_per_code=(after - before) / n if before is not None and after is not None else None,
        rebuild_peak_bytes_per_code=rebuild_peak / n,
        insert_us_per_code=insert_s / n * 1e6,
        sweep_seconds=sweep_s,
    )
    del table
    gc.collect()
    return m


def bytes_per_code(n: int) -> float:
    """Bytes per remembered code at ``n`` codes (the larger of table bytes and RSS growth)."""
    return measure(n).reported


def main(argv: list[str]) -> int:
    sizes = [int(float(a)) for a in argv] or [1_000_000, 10_000_000]
    print("| codes | slots | table B/code | RSS B/code | rebuild peak B/code | insert µs/code | sweep s | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    worst = 0.0
    for n in sizes:
        m = measure(n)
        worst = max(worst, m.reported)
        rss = f"{m.rss_bytes_per_code:.1f}" if m.rss_bytes_per_code is not None else "n/a"
        print(f"| {n:.0e} | {m.capacity:,} | {m.table_bytes_per_code:.1f} | {rss} | "
              f"{m.rebuild_peak_bytes_per_code:.1f} | {m.insert_us_per_code:.2f} | {m.sweep_seconds:.3f} | ≤ 64 |",
              flush=True)
    return 0 if worst <= 64 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Results of a benchmark run: one row per measured quantity, rendered as a Markdown table and JSON.

A row holds every run's value (several runs per case; the machine is shared, so the *median* is the
figure to quote, min/max show the noise), the baseline it is compared with (same run, same input) and
the design §6 target it is judged against.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One measured quantity. ``higher_is_better`` decides how the target is read (≥ or ≤)."""

    case: str
    name: str
    unit: str
    values: list[float]
    baseline: str | None = None
    baseline_median: float | None = None
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def ratio(self) -> float | None:
        if self.baseline_median in (None, 0) or not self.values:
            return None
        assert self.baseline_median is not None
        return self.median / self.baseline_median

    @property
    def meets(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        return self.median >= self.target if self.higher_is_better else self.median <= self.target

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=self.median, min=min(self.values) if self.values else None,
                 max=max(self.values) if self.values else None, ratio=self.ratio, meets=self.meets)
        return d


def _fmt(v: float | None, unit: str) -> str:
    if v is None or v != v:  # None or NaN (a measurement that could not be taken)
        return "—"
    if unit in ("records/s", "B", "B/code", "records"):
        return f"{v:,.0f}"
    if unit == "MiB":
        return f"{v:,.1f}"
    if unit in ("s", "ms"):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"
    if unit == "%":
        return f"{v:.1f}"
    return f"{v:,.3g}"


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    """The Markdown table the README carries."""
    lines = [
        f"Measured {meta['date']} on {meta['machine']} (`python -m bench{meta['args']}`; "
        f"n = runs of each case (up to {meta['runs']}), median quoted; commit {meta['commit']}).",
        "",
        "| case | measure | unit | n | median | min | max | baseline (median) | ratio | target (§6) | ok |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|:-:|",
    ]
    for r in rows:
        base = f"{r.baseline} ({_fmt(r.baseline_median, r.unit)})" if r.baseline else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        target = "—" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _fmt(r.target, r.unit)
        ok = {True: "✓", False: "✗", None: ""}[r.meets]
        name = f"{r.name} ({r.note})" if r.note else r.name
        lo = min(r.values) if r.values else None
        hi = max(r.values) if r.values else None
        mid = _fmt(r.median if r.values else None, r.unit)
        lines.append(f"| {r.case} | {name} | {r.unit} | {len(r.values)} | {mid} | {_fmt(lo, r.unit)} | "
                     f"{_fmt(hi, r.unit)} | {base} | {ratio} | {target} | {ok} |")
    return "\n".join(lines)


def machine() -> str:
    """'2 cores (shared), <cpu model>, Python 3.x, Linux' — what the README table must say."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores (shared){', ' + model if model else ''}, "
            f"Python {platform.python_version()}, {platform.system()}")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def meta(args: str, runs: int) -> dict[str, Any]:
    return {"date": datetime.now().strftime("%Y-%m-%d"), "machine": machine(), "args": args, "runs": runs,
            "commit": commit()}


def write_json(path: Path, rows: list[Row], info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": info, "rows": [r.as_dict() for r in rows]}, ensure_ascii=False, indent=1)
                    + "\n", encoding="utf-8")

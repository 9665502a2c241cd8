"""The benchmark harness runs end to end at tiny size (issue 8). No timed assertions: it checks that
every case produces its rows, that the replay saw every generated record, and that the table and the
JSON agree — the figures themselves are for the README, not for the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.__main__ import main
from bench.gen import CITY_MONTH, PROVINCE_DAY, generate
from bench.report import Row, render

ROOT = Path(__file__).resolve().parent.parent


def test_generator_writes_the_design_files_and_counts_them(tmp_path: Path) -> None:
    info = generate(tmp_path / "city", CITY_MONTH, 3000, seed=1)
    files = sorted(p.name for p in info.folder.glob("*.jsonl"))
    assert files == ["drugs.jsonl", "institutions.jsonl", "inventory.jsonl", "prescriptions.jsonl",
                     "settlements.jsonl", "tracecodes.jsonl"]
    for stream, n in info.by_stream.items():
        assert sum(1 for _ in (info.folder / f"{stream}.jsonl").open()) == n
    assert info.by_stream["institutions"] == CITY_MONTH.institutions
    again = generate(tmp_path / "again", CITY_MONTH, 3000, seed=1)
    assert (again.folder / "tracecodes.jsonl").read_bytes() == (info.folder / "tracecodes.jsonl").read_bytes()


def test_ratio_and_target_are_read_the_right_way() -> None:
    faster = Row("replay", "x", "records/s", [3.0, 1.0, 2.0], baseline="b", baseline_median=4.0, target=2.0)
    assert faster.median == 2.0 and faster.ratio == 0.5 and faster.meets is True
    smaller = Row("memory", "y", "B/code", [70.0], target=64.0, higher_is_better=False)
    assert smaller.meets is False and smaller.ratio is None
    table = render([faster, smaller], {"date": "2026-11-28", "machine": "m", "args": "", "runs": 3, "commit": "c"})
    assert "| replay | x | records/s | 3 | 2 | 1 | 3 | b (4) | 0.50× | ≥ 2 | ✓ |" in table
    assert "| memory | y | B/code | 1 | 70 | 70 | 70 | — | — | ≤ 64 | ✗ |" in table


def test_bench_runs_every_offline_case_at_tiny_size(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "r.json"
    assert main(["--records", "600", "--runs", "1", "--cases", "replay,scaling,memory",
                 "--json", str(out), "--data", str(tmp_path / "data")]) == 0
    rows = json.loads(out.read_text())["rows"]
    names = {(r["case"], r["name"]) for r in rows}
    for shape in (CITY_MONTH, PROVINCE_DAY):
        assert ("replay", f"{shape.name} slice") in names
        assert ("replay", f"{shape.name} bare parse") in names
        for stage in ("parse", "intake", "detect", "ledger", "output"):
            assert ("replay", f"{shape.name} stage {stage}") in names
        assert ("replay", f"{shape.name} slice, models' parse (before #16)") in names
        assert ("replay", f"{shape.name} CPython floor: bare parse + 10 minimal rules") in names
    assert {n for c, n in names if c == "scaling"} == {"city-month 1×", "city-month 4×", "city-month 16×"}
    assert ("memory", "city-month replay peak RSS") in names
    city = next(r for r in rows if r["name"] == "city-month slice")
    manifest = json.loads(next((tmp_path / "data").glob("city-month-600-*/manifest.json")).read_text())
    assert city["extra"]["records"] == manifest["records"]  # every generated record went through the replay
    assert "upload" in city["extra"]["detectors"]
    assert all(r["values"] and all(v >= 0 for v in r["values"]) for r in rows)
    peak = next(r for r in rows if r["case"] == "memory")
    assert peak["median"] >= peak["baseline_median"] > 0


def test_bench_jobs_and_worker_core_cases_at_tiny_size(tmp_path: Path) -> None:
    """Issue 16's rows: --jobs 2 against --jobs 1 on two cities, the shell's bookkeeping per record."""
    out = tmp_path / "r.json"
    assert main(["--records", "600", "--runs", "1", "--cases", "jobs,worker_core", "--json", str(out),
                 "--data", str(tmp_path / "data")]) == 0
    rows = {(r["case"], r["name"]): r for r in json.loads(out.read_text())["rows"]}
    jobs = rows[("jobs", "two cities, --jobs 2 (wall clock)")]
    assert jobs["baseline"] == "--jobs 1" and jobs["baseline_median"] > 0 and jobs["values"][0] > 0
    for label in ("one record per message", "arrays of 100"):
        row = rows[("worker_core", f"ShellCore bookkeeping, {label}")]
        assert row["target"] == 15.0 and not row["higher_is_better"] and len(row["values"]) == 1


def test_unknown_case_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--cases", "replay,nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown case(s): nope" in proc.stderr


def test_bench_inspector_case_at_tiny_size(tmp_path: Path) -> None:
    """The inspector row (issue 17): list and case-file p50/p99 from a real ``monitor serve`` over chDB."""
    out = tmp_path / "r.json"
    assert main(["--records", "600", "--runs", "1", "--cases", "inspector", "--json", str(out),
                 "--data", str(tmp_path / "data")]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"] if r["case"] == "inspector"}
    for name in ("list latency p50", "list latency p99", "case file latency p50", "case file latency p99"):
        assert rows[name]["values"] and all(v > 0 for v in rows[name]["values"]), name
    assert rows["list latency p99"]["target"] == 1.0 and not rows["list latency p99"]["higher_is_better"]
    assert "600 alerts, 50 clients" in rows["case file latency p99"]["note"]

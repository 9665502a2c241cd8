"""``monitor replay ROOT --jobs N`` (issue #16): the cities of a multi-city input in N processes, after the
national trace tier (which reads every city); every output byte-identical to ``--jobs 1``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.replay import fan_out

sys.path.insert(0, str(Path(__file__).parent / "trace"))
from cases import AS_OF, W1, build


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_jobs_2_gives_the_bytes_of_jobs_1_and_the_tier_still_sees_both_cities(tmp_path: Path) -> None:
    root = tmp_path / "in"
    build(root)
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        assert main(["replay", str(root), "--out", str(out), "--as-of", f"{AS_OF:%Y-%m-%d %H:%M:%S}",
                     "--store", "none", "--jobs", str(jobs)]) == 0
        outs[jobs] = _files(out)
    assert outs[2] == outs[1]
    assert {"ezhou/alerts.jsonl", "wuhan/alerts.jsonl", "trace_findings.jsonl"} <= set(outs[2])
    wuhan = [json.loads(x) for x in outs[2]["wuhan/alerts.jsonl"].decode().splitlines()]
    # a resale across the two cities: only a tier that read both cities' scans can see it
    assert [a["fixmedins_code"] for a in wuhan if a["rule_id"] == "trace.resold"] == [W1]


def test_fan_out_returns_in_task_order_from_separate_processes() -> None:
    tasks = [lambda i=i: (i, os.getpid()) for i in range(5)]
    results = fan_out(tasks, 2, weights=[1, 5, 2, 4, 3])
    assert [r[0] for r in results] == [0, 1, 2, 3, 4]
    pids = {r[1] for r in results}
    assert len(pids) == 2 and os.getpid() not in pids


def test_fan_out_reports_a_failed_task() -> None:
    def boom() -> int:
        raise ValueError("city folder unreadable")

    with pytest.raises(RuntimeError, match="city folder unreadable"):
        fan_out([lambda: 1, boom], 2)

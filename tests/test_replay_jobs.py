"""``monitor replay ROOT --jobs N`` (issue #16): the cities of a multi-city input in N processes, after the
national trace tier (which reads every city); every output byte-identical to ``--jobs 1``."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.replay import fan_out
from monitor.trace.forward import Pending
from monitor.trace.multicity import tier_part
from monitor.trace.rules import RETURN, SALE, STOCK_IN, InProcessTier, Scan, TraceParams, time_of

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


def _stream(seed: int) -> list[Pending]:
    """Scans of 60 codes of 6 product identifiers at 5 institutions over ~12 days, arrivals out of scan
    order: resales, returns, re-entries, never-stocked windows, votes, and sweeps of forgotten codes."""
    rnd = random.Random(seed)
    out, t = [], 10 * 86400
    for _ in range(1500):
        t += rnd.randrange(0, 900)
        code = f"{rnd.randrange(6)}{rnd.randrange(6)}{rnd.randrange(10):04d}"
        scan = Scan(kind=rnd.choice((SALE, SALE, RETURN, STOCK_IN, STOCK_IN)), inst=f"H{rnd.randrange(5)}",
                    secs=t - rnd.randrange(0, 7200), arrival=t, split=rnd.random() < 0.1,
                    med=f"M{rnd.randrange(3)}")
        out.append(Pending(None, code, scan))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_trace_tier_split_over_parts_finds_what_the_whole_tier_finds(seed: int) -> None:
    params = TraceParams(settle=3600, retention=2 * 86400, sweep_every=86400, max_scans=4, window=3 * 86400,
                         prefix_digits=2, min_votes=2, min_institutions=2)
    released = _stream(seed)
    whole = InProcessTier(params)
    expected: dict[str, dict[str, Any]] = {}
    for p in released:
        for f in whole.on_scan(p.code, p.scan):
            expected.setdefault(f["finding_id"], f)
    for f in whole.advance_to(released[-1].scan.arrival + 4 * 86400):
        expected.setdefault(f["finding_id"], f)
    assert whole.counts["trace.codes_expired"] > 0 and len({f["rule_id"] for f in expected.values()}) == 4
    as_of = time_of(released[-1].scan.arrival + 4 * 86400)
    for parts in (1, 2, 3):
        got: dict[str, dict[str, Any]] = {}
        for part in range(parts):
            for f in tier_part(released, params, as_of, part, parts):
                got.setdefault(f["finding_id"], f)
        assert got == expected, parts

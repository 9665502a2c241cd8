"""``monitor demo``: the README's main job on embedded defaults — no Kafka, no ClickHouse server.

Simulates a city month (``OUT/input``), replays it through the monitor with ``--as-of`` the end of the
period (``OUT/output``: alerts, tickets, dead letters, summary), scores the result against the planted
ground truth, and prints a short summary for a human: flagged institutions, tickets by action, top
rules, and where the files are.

Extra sinks: ``DEMO_SINK_FACTORIES`` is the hook for stores the demo should also fill (the embedded
ClickHouse store, …): each factory gets the demo's output folder and returns a ``Sink`` (or ``None`` to
skip); the sinks are passed to ``replay_dir(extra_sinks=…)`` and closed by it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from monitor.sinks import Sink

#: Factories of extra sinks for the demo (see the module docstring). Append to extend the demo.
DEMO_SINK_FACTORIES: list[Callable[[Path], Sink | None]] = []


def run_demo(out: Path, days: int = 30, institutions: int = 100, seed: int = 7, scale: float = 0.2,
             policy: str = "ezhou", extra_sinks: Sequence[Sink] = (), stream: TextIO | None = None) -> int:
    """Simulate → replay → score → summary. Returns the process exit code (0)."""
    from monitor.clock import parse_time
    from monitor.policy.pack import load_pack
    from monitor.replay import replay_dir
    from monitor.simulate import SimConfig, simulate
    from monitor.simulate.score import pack_triggers, score

    say = stream or sys.stdout
    in_dir, out_dir = out / "input", out / "output"
    for folder in (in_dir, out_dir):
        if folder.exists():
            shutil.rmtree(folder)
    began = time.perf_counter()
    sim = simulate(SimConfig(out=in_dir, days=days, seed=seed, institutions=institutions, scale=scale))
    sim_s = time.perf_counter() - began
    meta = json.loads((in_dir / "labels.jsonl").read_text(encoding="utf-8").splitlines()[0])
    as_of: datetime = parse_time(meta["as_of"])
    pack = load_pack(policy)
    sinks = list(extra_sinks) + [s for f in DEMO_SINK_FACTORIES if (s := f(out_dir)) is not None]
    began = time.perf_counter()
    result = replay_dir(in_dir, out_dir, pack, as_of=as_of, extra_sinks=sinks)
    replay_s = time.perf_counter() - began
    report = score(out_dir, in_dir / "labels.jsonl", ladder_triggers=pack_triggers(pack))
    (out_dir / "score.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n",
                                        encoding="utf-8")

    summary = result.summary()
    flagged: Counter[str] = Counter()
    critical: set[str] = set()
    why: dict[str, set[str]] = {}
    with (out_dir / "alerts.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            alert = json.loads(line)
            flagged[alert["fixmedins_code"]] += 1
            why.setdefault(alert["fixmedins_code"], set()).add(alert["rule_id"])
            if alert["severity"] == "critical":
                critical.add(alert["fixmedins_code"])
    tickets = summary["tickets_by_action"]
    rules = Counter(summary["alerts_by_rule"])
    scored = [r for r in report.rules.values() if r.implemented and r.planted]
    caught = sum(r.detected for r in scored)
    planted = sum(r.planted for r in scored)

    say.write(f"Synthetic city ({meta['profile']}): {meta['institutions']} institutions, {days} days from "
              f"{meta['start']}, seed {seed}\n")
    say.write(f"  generated {sim.records:,} records in {sim_s:.1f} s; replayed in {replay_s:.1f} s "
              f"({sim.records / max(replay_s, 1e-9):,.0f} records/s), policy {pack.label}, as of {meta['as_of']}\n")
    say.write(f"Flagged institutions: {len(flagged)} of {meta['institutions']} "
              f"({len(critical)} with critical alerts)\n")
    for code, n in sorted(flagged.items(), key=lambda kv: (-len(why[kv[0]]), -kv[1], kv[0]))[:5]:
        say.write(f"  {code}: {n} alerts — {', '.join(sorted(why[code]))}\n")
    say.write("Tickets by action: " + (", ".join(f"{a} {n}" for a, n in sorted(tickets.items())) or "none") + "\n")
    say.write("Top rules: " + ", ".join(f"{r} {n}" for r, n in rules.most_common(6)) + "\n")
    say.write(f"Planted violations caught: {caught}/{planted} (implemented rules; per rule: monitor score)\n")
    if summary["unimplemented_rules"]:
        say.write("Not implemented yet: " + ", ".join(summary["unimplemented_rules"]) + "\n")
    say.write(f"Files: input {in_dir}/ (7 JSONL streams + labels.jsonl); output {out_dir}/ "
              "(alerts.jsonl, tickets.jsonl, dlq.jsonl, summary.json, score.json)\n")
    say.write(f"Next: monitor score {out_dir} --labels {in_dir / 'labels.jsonl'}\n")
    return 0

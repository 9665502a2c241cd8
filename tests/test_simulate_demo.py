"""``monitor demo``: simulate → replay → score → summary, and the hook for extra sinks."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from monitor.outputs import Alert, DeadLetter, Ticket
from monitor.simulate import demo


class CountingSink:
    def __init__(self) -> None:
        self.alerts = 0
        self.tickets = 0
        self.closed = False

    def write(self, outputs: Sequence[Alert | Ticket], dead: Sequence[DeadLetter]) -> None:
        self.alerts += sum(1 for o in outputs if isinstance(o, Alert))
        self.tickets += sum(1 for o in outputs if isinstance(o, Ticket))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_demo_writes_outputs_and_summary_and_feeds_extra_sinks(tmp_path: Path) -> None:
    direct, hooked = CountingSink(), CountingSink()
    demo.DEMO_SINK_FACTORIES.append(lambda out_dir: hooked)
    try:
        text = io.StringIO()
        code = demo.run_demo(tmp_path / "demo-out", days=8, institutions=30, scale=0.05,
                             extra_sinks=[direct], stream=text)
    finally:
        demo.DEMO_SINK_FACTORIES.pop()
    assert code == 0
    out = tmp_path / "demo-out" / "output"
    for name in ("alerts.jsonl", "tickets.jsonl", "dlq.jsonl", "summary.json", "score.json"):
        assert (out / name).exists(), name
    alerts = (out / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    tickets = (out / "tickets.jsonl").read_text(encoding="utf-8").splitlines()
    assert alerts, "the planted late uploads of day 4 must be flagged"
    assert (direct.alerts, direct.tickets) == (len(alerts), len(tickets)) == (hooked.alerts, hooked.tickets)
    assert direct.closed and hooked.closed
    summary = text.getvalue()
    flagged = {json.loads(a)["fixmedins_code"] for a in alerts}
    assert f"Flagged institutions: {len(flagged)} of 30" in summary
    assert "Tickets by action:" in summary and "Top rules:" in summary
    assert str(out) in summary

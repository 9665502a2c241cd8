"""The trace tier's clock-skew clamp (monitor.watermark.EventClock, as the city engine): a scan claiming a
future ``inf_time`` must not move the trace watermark — else it closes every open judgment at once
(never-stocked windows of 90 days, resales whose returns are still to come)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

from monitor.policy.pack import load_pack
from monitor.trace.multicity import trace_findings
from monitor.trace.rules import TraceParams

sys.path.insert(0, str(Path(__file__).parent))
from cases import BASE, E1, E2, E3, W1, _scan

PARAMS = TraceParams.from_pack(load_pack("ezhou"))


def _write(root: Path, recs: list[dict[str, object]]) -> list[Path]:
    d = root / "ezhou"
    d.mkdir(parents=True)
    recs.sort(key=lambda r: str(r["inf_time"]))
    (d / "tracecodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return [d]


def _background(days: int) -> list[dict[str, object]]:
    """Clean boxes of three pharmacies, one a day for ``days`` days (event time moves on, truly)."""
    out = []
    for i in range(days):
        inst = (E1, E2, E3)[i % 3]
        when = BASE + timedelta(days=i)
        out.append(_scan(f"6{i:019d}", inst, "stock_in", when))
        out.append(_scan(f"6{i:019d}", inst, "sale", when + timedelta(hours=1), n=i))
    return out


def test_one_future_inf_time_does_not_close_the_never_stocked_windows(tmp_path: Path) -> None:
    recs = _background(10)
    recs.append(_scan("70000000000000000006", W1, "sale", BASE + timedelta(hours=6), n=8))  # window: 90 days
    # one pharmacy's clock is 200 days ahead: its upload claims a time nobody else has reached
    recs.append(_scan("70000000000000000099", E3, "stock_in", BASE + timedelta(days=9),
                      lag=timedelta(days=200)))
    findings = trace_findings(_write(tmp_path, recs), PARAMS)
    assert [f["rule_id"] for f in findings] == []  # event time is ~10 days on: no window has closed


def test_the_clamped_scan_still_counts_at_the_event_time_it_was_clamped_to(tmp_path: Path) -> None:
    """The future stock-in after a sale elsewhere is 回流 all the same, judged at the clamped arrival."""
    recs = _background(10)
    recs.append(_scan("70000000000000000005", E2, "stock_in", BASE))
    recs.append(_scan("70000000000000000005", E2, "sale", BASE + timedelta(hours=4), n=7))
    recs.append(_scan("70000000000000000005", E1, "stock_in", BASE + timedelta(days=3),
                      lag=timedelta(days=200)))
    as_of = BASE + timedelta(days=12)
    findings = trace_findings(_write(tmp_path, recs), PARAMS, as_of=as_of)
    assert [(f["rule_id"], f["fixmedins_code"]) for f in findings] == [("trace.reentered", E1)]
    detected = datetime.fromisoformat(findings[0]["detected_at"])
    assert detected < as_of + timedelta(days=2)  # judged at event time, not 200 days ahead


def test_the_worker_intake_clock_holds_a_future_claim_and_reports_only_event_time() -> None:
    """``ScanClock`` (one per source partition of the trace-worker): the claim a source reports to the
    stages is the intake's event time — a held future scan is not forwarded and does not raise it; it
    is forwarded with its own arrival once 3 institutions agree."""
    from monitor.trace.forward import ScanClock
    from monitor.trace.rules import SALE, Scan, secs_of

    clock = ScanClock(PARAMS.skew, quorum=3)
    t = secs_of(BASE)
    for i, inst in enumerate((E1, E2, E3) * 3):
        assert [p.scan.arrival for p in clock.offer(i, f"C{i}", Scan(SALE, inst, t + i, t + i))] == [t + i]
    future = t + 200 * 86400
    assert clock.offer("x", "X", Scan(SALE, E3, t + 10, future)) == []  # held
    assert clock.value() == t + 8  # what the source reports: not the future claim
    assert clock.offer("y", "Y", Scan(SALE, E1, t + 11, future)) == []
    ready = clock.offer("z", "Z", Scan(SALE, E2, t + 12, future))  # the third institution agrees
    assert [(p.code, p.scan.arrival, p.held) for p in ready] == [("X", future, True), ("Y", future, True),
                                                                  ("Z", future, False)]
    assert clock.value() == future


def test_an_uncorroborated_future_claim_is_clamped_after_the_window() -> None:
    from monitor.trace.forward import ScanClock
    from monitor.trace.rules import SALE, Scan, secs_of

    clock = ScanClock(PARAMS.skew, quorum=3)
    t = secs_of(BASE)
    clock.offer(0, "A", Scan(SALE, E1, t, t))
    assert clock.offer(1, "X", Scan(SALE, E3, t, t + 200 * 86400)) == []
    released = []
    for i in range(clock.clock.window + 1):
        released += clock.offer(i, f"B{i}", Scan(SALE, (E1, E2)[i % 2], t + i, t + i))
    x = next(p for p in released if p.code == "X")
    assert x.held and x.scan.arrival <= t + clock.clock.window  # clamped to event time
    assert clock.skewed == 1

"""``monitor.intake`` (issue #14 point 4): one clock-skew rule and one setting for both shells.

A claim more than the pack's ``max_clock_skew_minutes`` (ezhou: 60) ahead of what its transport shows —
the next lines of its file in replay, its own Kafka timestamp in the worker — is clamped and counted;
a claim less far ahead is not, in either shell. (The worker used to clamp at its own 300 s,
``MONITOR_CLOCK_SKEW_SECONDS``.)"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import CST, Watermark
from monitor.intake import ahead_of_transport, arrival_key, new_clock
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.streams.core import Inbound, ShellCore
from tests.builders import institution, settlement, write_jsonl

BASE = datetime(2026, 1, 10, 10, 0, tzinfo=CST)


class _Engine:
    def __init__(self) -> None:
        self.seen: list[tuple[str, datetime | None]] = []
        self.stats = type("Stats", (), {"quality": Counter()})()
        self.watermark = Watermark()
        self.pack = load_pack("ezhou")

    def process(self, rec: Any, arrival: datetime | None = None) -> list[Any]:
        self.seen.append((rec.setl_id, arrival))
        when = arrival or rec.arrival_time
        if when is not None:
            self.watermark.observe(when)
        return []

    def advance(self, now: datetime) -> list[Any]:
        return []

    def snapshot(self) -> bytes:
        return pickle.dumps(self.seen)


def _value(setl_id: str, inf_time: datetime) -> bytes:
    rec = settlement(setl_id, f"{inf_time - timedelta(minutes=1):%Y-%m-%d %H:%M:%S}", f"{inf_time:%Y-%m-%d %H:%M:%S}")
    return json.dumps(rec).encode()


@pytest.mark.parametrize(("ahead_minutes", "clamped"), [(30, False), (59, False), (61, True)])
def test_the_worker_clamps_a_claim_ahead_of_its_kafka_timestamp_by_the_packs_tolerance(
        ahead_minutes: int, clamped: bool) -> None:
    engine = _Engine()
    core = ShellCore(engine)  # type: ignore[arg-type]
    core.receive(Inbound("medins.settlements", 0, 0, b"K", _value("A1", BASE + timedelta(minutes=ahead_minutes)),
                         BASE, handle="h0"))
    core.release([("medins.settlements", 0)], lambda tp: False)
    assert engine.seen == [("A1", BASE if clamped else None)]
    assert engine.stats.quality["settlements.clock_skew"] == (1 if clamped else 0)


@pytest.mark.parametrize(("ahead_minutes", "clamped"), [(30, False), (61, True)])
def test_replay_clamps_a_line_ahead_of_the_next_lines_by_the_same_tolerance(
        tmp_path: Path, ahead_minutes: int, clamped: bool) -> None:
    recs = [settlement(f"S{i}", f"{BASE + timedelta(minutes=2 * i):%Y-%m-%d %H:%M:%S}",
                       f"{BASE + timedelta(minutes=2 * i, seconds=30):%Y-%m-%d %H:%M:%S}") for i in range(12)]
    recs[2] = dict(recs[2], inf_time=f"{BASE + timedelta(minutes=6 + ahead_minutes):%Y-%m-%d %H:%M:%S}")
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", [institution()])
    write_jsonl(inp, "settlements", recs)
    result = replay_dir(inp, tmp_path / "out", load_pack("ezhou"))
    assert result.engine.stats.quality.get("settlements.clock_skew", 0) == (1 if clamped else 0)


def test_one_setting_the_packs_max_clock_skew_minutes() -> None:
    pack = load_pack("ezhou")
    tolerance = new_clock(pack).tolerance
    assert tolerance == timedelta(minutes=float(pack.setting("max_clock_skew_minutes", 60))) == timedelta(hours=1)
    core = ShellCore(_Engine())  # type: ignore[arg-type]
    assert core.clock_skew == core.event_clock.tolerance == tolerance
    assert ahead_of_transport(BASE + timedelta(minutes=61), BASE, tolerance)
    assert not ahead_of_transport(BASE + timedelta(minutes=60), BASE, tolerance)
    assert arrival_key(BASE, 2, 7) < arrival_key(BASE, 3, 0) < arrival_key(BASE + timedelta(seconds=1), 0, 0)

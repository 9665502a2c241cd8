"""Acceptance of issue #13 in the replay shell: the simulated city written as platform messages
(``monitor simulate --format nhsa``) gives the same alerts and tickets as its flat form."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from monitor.clock import parse_time
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate
from monitor.simulate.nhsa_writer import write_nhsa

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("nhsa-city")
    simulate(SimConfig(out=root / "flat", days=12, seed=11, institutions=20, scale=0.15))
    counts = write_nhsa(root / "flat", root / "nhsa", 11)
    assert counts["tracecodes"] == 0 and counts["trace_codes_embedded"] > 1000
    meta = json.loads((root / "flat" / "labels.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return root / "flat", root / "nhsa", meta["as_of"]


def test_the_nhsa_city_has_the_field_variance(cities: tuple[Path, Path, str]) -> None:
    _, nhsa, _ = cities
    text = {name: (nhsa / f"{name}.jsonl").read_text(encoding="utf-8")
            for name in ("settlements", "inventory", "prescriptions")}
    infnos: Counter[str] = Counter()
    for body in text.values():
        for line in body.splitlines():
            env = json.loads(line)
            infnos[str(env.get("infno", env.get("infon")))] += 1
            assert "input" in env
    for infno in ("2102", "2204", "2207", "2103", "3501", "3503", "3505", "3505A", "3506", "7101", "A0002"):
        assert infnos[infno] > 0, infno
    inv = text["inventory"]
    for variant in ('"drugtracinfo":[', '"drugtracinfo":{', '"drugtracinfo":"[', '"MDTRT_SETL_TYPE"', ':""',
                    '"selinfoDetail"', '"invinfo"', '"purcinfo"'):
        assert variant in inv, variant
    setl = text["settlements"]
    for variant in ('"med_fee_sumamt"', '"psnCash_pay"', '"medins_code"', '"infon"', '"input":"{'):
        assert variant in setl, variant
    assert any(c.isdigit() for c in setl.split('"inf_time":')[1][:2])  # mixed time formats
    assert '"inf_time":17' in setl and '"setl_time":"2026' in setl


def test_replaying_the_nhsa_city_gives_the_same_alerts_and_tickets(cities: tuple[Path, Path, str],
                                                                   tmp_path: Path) -> None:
    flat, nhsa, as_of = cities
    pack = load_pack("ezhou")
    a = replay_dir(flat, tmp_path / "flat", pack, as_of=parse_time(as_of))
    b = replay_dir(nhsa, tmp_path / "nhsa", pack, as_of=parse_time(as_of))
    alerts = (tmp_path / "flat" / "alerts.jsonl").read_bytes()
    assert alerts.count(b"\n") >= 10, "the planted city must raise alerts"
    assert (tmp_path / "nhsa" / "alerts.jsonl").read_bytes() == alerts
    assert (tmp_path / "nhsa" / "tickets.jsonl").read_bytes() == (tmp_path / "flat" / "tickets.jsonl").read_bytes()
    assert (tmp_path / "nhsa" / "dlq.jsonl").read_bytes() == b""
    assert b.engine.stats.records == a.engine.stats.records
    assert b.engine.stats.quality["settlements.lines_missing"] == 0


def test_monitor_simulate_format_nhsa(tmp_path: Path) -> None:
    out = tmp_path / "city"
    subprocess.run([sys.executable, "-m", "monitor.cli", "simulate", "--out", str(out), "--days", "2",
                    "--institutions", "4", "--scale", "0.05", "--no-plants", "--format", "nhsa"],
                   check=True, capture_output=True)
    first = json.loads((out / "settlements.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert {"msgid", "inf_time", "input"} <= set(first)

"""#12 acceptance, jurisdiction: a simulated city judged under each regional pack — every ticket's and
every alert's clauses are that region's own documents (the three regional packs borrow nothing), and
under ezhou a clause of another region appears only on a borrowed ladder whose ticket says so."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from builders import read_jsonl

from monitor.clock import CST
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate

pytestmark = pytest.mark.slow

OWN = {"ezhou": {"EZ-DM", "EZ-CONV"}, "xianyang": {"XY-TIER"}, "liaoning": {"LN-TIER"},
       "autonomous-region": {"AR-AGR"}}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jurisdiction") / "in"
    simulate(SimConfig(out=folder, days=24, institutions=12, scale=0.05, seed=7))
    return folder


@pytest.mark.parametrize("name", ["xianyang", "liaoning", "autonomous-region"])
def test_jurisdiction_every_ticket_of_a_regional_pack_cites_its_own_region(city: Path, tmp_path: Path,
                                                                          name: str) -> None:
    replay_dir(city, tmp_path / "out", load_pack(name), as_of=datetime(2026, 1, 26, tzinfo=CST))
    tickets = read_jsonl(tmp_path / "out" / "tickets.jsonl")
    alerts = read_jsonl(tmp_path / "out" / "alerts.jsonl")
    assert alerts  # the planted city is judged under every region
    for t in tickets:
        assert {c.split()[0] for c in t["basis"]} <= OWN[name], t
        assert "EZ-DM" not in t["summary"]["zh"] and "EZ-CONV" not in t["summary"]["zh"]
    for a in alerts:
        assert {c.split()[0] for c in re.split(r"[;；]\s*", a["basis"]) if c} <= OWN[name], a["rule_id"]


def test_jurisdiction_ezhou_cites_another_region_only_on_borrowed_ladders(city: Path, tmp_path: Path) -> None:
    pack = load_pack("ezhou")
    replay_dir(city, tmp_path / "out", pack, as_of=datetime(2026, 1, 26, tzinfo=CST))
    tickets = read_jsonl(tmp_path / "out" / "tickets.jsonl")
    foreign = [t for t in tickets if not {c.split()[0] for c in t["basis"]} <= OWN["ezhou"]]
    assert foreign  # the planted city has dual-pricing and tier cases
    for t in foreign:
        assert pack.ladders[t["ladder"]].borrow, t["ladder"]
        assert "借用" in t["summary"]["zh"] and "borrowed from" in t["summary"]["en"]

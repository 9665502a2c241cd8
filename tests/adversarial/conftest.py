"""A small simulated city (several institutions, alerts and tickets of most rules), built once; each attack
test copies it, adds its poison, and compares with the clean run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adversarial_helpers import replay_outputs

from monitor.simulate import SimConfig, simulate


@pytest.fixture(scope="session")
def city_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adversarial-city")
    simulate(SimConfig(out=out, days=8, seed=5, institutions=10, scale=0.03))
    return out


@pytest.fixture(scope="session")
def as_of(city_dir: Path) -> str:
    meta = json.loads((city_dir / "labels.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return str(meta["as_of"])


@pytest.fixture(scope="session")
def clean(city_dir: Path, as_of: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], ...]:
    outputs = replay_outputs(city_dir, tmp_path_factory.mktemp("clean-out"), as_of)
    assert outputs[0] and outputs[1], "the clean city must raise alerts and tickets for the comparison to mean anything"
    return outputs


@pytest.fixture
def poisoned(city_dir: Path, tmp_path: Path) -> Callable[[str, list[bytes], str], Path]:
    """A copy of the city with ``lines`` inserted into ``stream``'s file (``where``: "end", "start", "middle")."""
    def make(stream: str, lines: list[bytes], where: str = "end") -> Path:
        inp = tmp_path / "in"
        if not inp.exists():
            shutil.copytree(city_dir, inp)
        path = inp / f"{stream}.jsonl"
        have = path.read_bytes().splitlines() if path.exists() else []
        at = {"end": len(have), "start": 0, "middle": len(have) // 2}[where]
        path.write_bytes(b"\n".join([*have[:at], *lines, *have[at:]]) + b"\n")
        return inp
    return make

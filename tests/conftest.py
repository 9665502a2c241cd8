import sys
from pathlib import Path

# tests/builders.py is shared by all test modules
sys.path.insert(0, str(Path(__file__).parent))


import pytest


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every process it starts) keeps its state in a temporary MONITOR_DATA_DIR, never in
    the repository's ``var/`` (issue #17: ``make test`` wrote fixtures into ``var/clickhouse``, which
    ``monitor serve`` then showed after ``make demo``). A test that sets its own keeps it."""
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path_factory.mktemp("monitor-data")))

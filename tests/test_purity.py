"""The core is pure (style.md practice 1): detectors, the ledger, the engine, the clock and the records
import nothing of Faust, Kafka, ClickHouse, sockets or HTTP, and never read the wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "monitor"
CORE = sorted(
    [*ROOT.joinpath("detectors").glob("*.py"), *ROOT.joinpath("policy").glob("*.py"),
     ROOT / "engine.py", ROOT / "clock.py", ROOT / "records.py", ROOT / "outputs.py", ROOT / "privacy.py"]
)
FORBIDDEN_MODULES = {"faust", "mode", "kafka", "aiokafka", "clickhouse_connect", "chdb", "socket", "http",
                     "urllib", "requests", "aiohttp", "time", "random", "subprocess", "threading", "asyncio"}
WALL_CLOCK = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
#: Only the pack loader reads files (its own TOML).
FILE_IO_ALLOWED = {ROOT / "policy" / "pack.py"}


def test_core_files_found() -> None:
    assert len(CORE) >= 8


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in WALL_CLOCK, f"{path.name}:{node.lineno} reads the wall clock"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            assert path in FILE_IO_ALLOWED, f"{path.name}:{node.lineno} opens a file"

"""The core is pure (style.md practice 1): detectors, the ledger, the engine, the clock and the records
import nothing of Faust, Kafka, ClickHouse, sockets or HTTP, and never read the wall clock.

And the layers point one way (issue #14 point 6): the core imports no shell (replay, worker, commands)
and no sink or inspector page; the input models (``records.py``) import nothing of the core; a rule
written to the contract (``monitor.contract.Rule``) imports nothing of the engine — it sees only the
contract's views."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "monitor"
CORE = sorted(
    [*ROOT.joinpath("detectors").glob("*.py"), *ROOT.joinpath("policy").glob("*.py"),
     ROOT / "engine.py", ROOT / "contract.py", ROOT / "clock.py", ROOT / "records.py", ROOT / "outputs.py",
     ROOT / "privacy.py", ROOT / "watermark.py"]
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


#: What the core must never import: the shells, the sinks, the inspector pages, the generator.
SHELLS_AND_SINKS = ("monitor.replay", "monitor.streams", "monitor.commands", "monitor.cli", "monitor.sinks",
                    "monitor.inspect", "monitor.simulate", "monitor.metrics", "monitor.log", "monitor.nhsa",
                    "monitor.trace")
#: The core, as far as records and rules may import it.
CORE_MODULES = ("monitor.engine", "monitor.contract", "monitor.detectors", "monitor.policy", "monitor.state")


def monitor_imports(path: Path) -> list[str]:
    """Every ``monitor.*`` module ``path`` imports, at run time or for type checking."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "monitor" or n.startswith("monitor.")]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_shell_or_sink(path: Path) -> None:
    bad = [n for n in monitor_imports(path) if _within(n, SHELLS_AND_SINKS)]
    assert not bad, f"{path.name} imports {bad}"


def test_records_import_nothing_of_the_core() -> None:
    bad = [n for n in monitor_imports(ROOT / "records.py") if _within(n, CORE_MODULES + SHELLS_AND_SINKS)]
    assert not bad, f"records.py imports {bad}"


@pytest.mark.parametrize("path", sorted(ROOT.joinpath("detectors").glob("*.py")), ids=lambda p: p.name)
def test_rules_see_only_the_contract(path: Path) -> None:
    engine = [n for n in monitor_imports(path) if _within(n, ("monitor.engine",))]
    assert not engine, f"{path.name} imports the engine ({engine}): a rule reads the contract's views only"


def test_every_rule_is_written_to_the_contract() -> None:
    """Issue #14 point 1: the legacy ``Detector`` (``ctx.alert``/``ctx.trigger`` inside ``on_record``) is
    gone; every class the engine builds is a ``monitor.contract.Rule``."""
    from monitor.contract import Rule
    from monitor.detectors import DETECTORS

    assert not ROOT.joinpath("detectors", "base.py").exists()
    assert [d.__name__ for d in DETECTORS if not issubclass(d, Rule)] == []


#: Where outputs are consumed: the sinks and the metrics sink.
SINK_FILES = sorted([*ROOT.joinpath("sinks").glob("*.py"), ROOT / "metrics.py"])


@pytest.mark.parametrize("path", SINK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sinks_only_consume_outputs(path: Path) -> None:
    """Issue #14 point 3: no sink attaches anything to the engine (the old ``DailyCollector`` did, and was
    pickled into checkpoints); ``institution_daily`` rows are the engine's ``InstitutionDay`` outputs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in {"attach", "observe_facts"}]
    assert calls == [], f"{path.name} attaches to the engine at lines {calls}"
    bases = [base for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for base in node.bases
             if isinstance(base, ast.Name) and base.id in {"Detector", "Rule"}]
    assert bases == [], f"{path.name} defines a detector or rule"

"""Case 3 (memory): peak RSS of a replay, measured in a fresh process.

``peak_rss(info)`` starts ``python -m bench.memory_case FOLDER AS_OF`` which records its RSS after the
imports (the interpreter + pydantic + the models: the floor), replays the input through
``monitor.replay.replay_dir`` and reports its peak RSS (``VmHWM`` from ``/proc/self/status``, else
``ru_maxrss``). A fresh process per measurement, so one run's garbage never inflates the next.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.gen import InputInfo


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss(info: InputInfo, timeout: float = 900) -> dict[str, Any]:
    """Peak and floor RSS (MiB) of one replay of ``info`` in a child process."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory_case", str(info.folder), info.as_of.isoformat()],
        capture_output=True, text=True, timeout=timeout, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _probe(folder: Path, as_of: datetime) -> dict[str, Any]:
    from monitor.policy.pack import load_pack
    from monitor.replay import replay_dir

    pack = load_pack("ezhou")
    floor = _status_kib("VmRSS") or _peak_kib()
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as out:
        result = replay_dir(folder, Path(out), pack, as_of=as_of)
    st = result.engine.stats
    return {"peak_mib": _peak_kib() / 1024, "floor_mib": floor / 1024, "records": sum(st.records.values()),
            "dedup_keys": len(result.engine.dedup)}


if __name__ == "__main__":
    print(json.dumps(_probe(Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2]))))

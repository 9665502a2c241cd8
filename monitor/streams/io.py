"""``monitor produce`` and ``monitor consume`` with kafka-python (demos, tests, benchmarks).

``produce_dir`` sends the JSONL files of design §3 to the input topics in the replay shell's arrival
order (the same merge of files by ``inf_time``, file order, line), with the keys of design §3, the
original bytes of every line (invalid ones too: they are the worker's dead letters to find), a ``seq``
header carrying the total order, and the record's arrival time as the Kafka timestamp (the upload time
an upstream gateway would stamp; on a real cluster, historical loads need ``retention.ms=-1`` on the
input topics or ``--timestamp now``). ``--arrays N`` sends up to N records bound for the same partition
of a topic as one JSON-array value (NHSA batch uploads), keeping every partition in arrival order.

``consume_topic`` prints a topic's values from the beginning as JSON lines; with ``until_idle`` it
returns once nothing new arrived for that long.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from monitor.clock import CST
from monitor.nhsa.codec import Codec
from monitor.records import STREAMS, InvalidRecord
from monitor.replay import input_files
from monitor.settings import Settings
from monitor.streams.topics import INPUTS, STREAM_ORDER, UPLOADS, ensure_topics, kafka_python_security

_CODEC = Codec()
_ENVELOPE_KEYS = ("fixmedins_code", "medins_code", "FIXMEDINS_CODE", "fixmedinsCode", "medinsCode")


def _envelope_key(value: Any) -> tuple[bool, str | None]:
    """(is a platform envelope, its institution) — envelopes are keyed by ``fixmedins_code``."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, dict) or not any(k.lower() in ("input", "output") for k in value):
        return False, None
    for name in _ENVELOPE_KEYS:
        if value.get(name) not in (None, ""):
            return True, str(value[name])
    return True, None

_EARLIEST = datetime(1970, 1, 1, tzinfo=CST)


@dataclass(order=True)
class _Line:
    arrival: datetime
    order: int
    line: int
    stream: str = field(compare=False)
    key: str | None = field(compare=False)
    raw: bytes = field(compare=False)
    records: int = field(compare=False)
    timestamped: bool = field(compare=False)
    is_array: bool = field(compare=False)


def _key_of(stream: str, raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    envelope, key = _envelope_key(value)
    if envelope or stream == "uploads":
        return key
    field_name = INPUTS[stream].key
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict) and field_name is not None:
        key = value.get(field_name)
        return str(key) if key is not None else None
    return None


def _lines(path: Path, nhsa: bool = False) -> Iterator[_Line]:
    stream = path.stem
    order = STREAM_ORDER.get(stream, len(STREAMS))
    last = _EARLIEST
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            parsed = _CODEC.decode(None if stream == "uploads" else stream, raw, {})
            times = [p.arrival_time for p in parsed if not isinstance(p, InvalidRecord)]
            known = [t for t in times if t is not None]
            arrival = min(known) if known else last
            for t in known:
                last = max(last, t)
            # a line without an arrival of its own (invalid, or a catalogue entry) arrives at the latest
            # arrival before it, as in the replay shell; before any, it carries no timestamp
            target = stream
            if nhsa and stream != "uploads":
                try:
                    if _envelope_key(json.loads(raw))[0]:
                        target = "uploads"  # design §3: a gateway forwards every platform message here
                except ValueError:
                    pass
            yield _Line(arrival, order, line_no, target, _key_of(stream, raw), raw, max(len(parsed), 1),
                        arrival > _EARLIEST, raw.lstrip()[:1] == b"[")


def arrival_ordered_lines(input_dir: Path, nhsa: bool = False) -> Iterator[_Line]:
    """The non-blank lines of ``input_dir``'s JSONL files in the replay shell's arrival order, each with
    its stream, design §3 key, original bytes and arrival (what ``produce_dir`` sends, for other clients)."""
    return heapq.merge(*(_lines(p, nhsa) for p in input_files(input_dir)))


@dataclass
class ProduceStats:
    messages: int = 0
    records: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] = field(default_factory=dict)


def produce_dir(input_dir: Path, settings: Settings, rate: float | None = None, arrays: int = 1,
                timestamp: str = "arrival", linger_ms: int = 20, nhsa: bool = False) -> ProduceStats:
    """Load ``input_dir`` into the input topics (module docstring); returns counts.

    With ``arrays > 1`` the records bound for one partition of one topic are collected, in arrival
    order, into JSON-array values of up to ``arrays`` records (keyed by their first record); the ``seq``
    header then lists every element's sequence number. Each partition still receives its records in
    arrival order, which is what the worker's merge relies on.

    ``nhsa``: every platform envelope (``monitor simulate --format nhsa``) goes to ``medins.uploads``
    keyed by its ``fixmedins_code`` (design §3), the flat lines to their own topics; ``uploads.jsonl``
    always goes to ``medins.uploads``.
    """
    from kafka import KafkaProducer
    from kafka.partitioner.default import murmur2

    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers(), acks="all", linger_ms=linger_ms,
                             batch_size=256 * 1024, max_request_size=8 * 1024 * 1024,
                             **kafka_python_security(settings))
    stats = ProduceStats()
    start = time.monotonic()
    groups: dict[tuple[str, int], list[tuple[int, _Line]]] = {}
    partitions: dict[str, int] = {}

    def topic_of(stream: str) -> str:
        return UPLOADS.name if stream == "uploads" else INPUTS[stream].name

    def partition_of(stream: str, key: str | None) -> int | None:
        topic = topic_of(stream)
        if topic not in partitions:
            partitions[topic] = len(producer.partitions_for(topic))
        if key is None:
            return None
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions[topic]

    def send(stream: str, value: bytes, key: str | None, ts: datetime | None, n: int, seqs: list[int],
             partition: int | None = None) -> None:
        topic = topic_of(stream)
        ts_ms = int(ts.timestamp() * 1000) if ts is not None and timestamp == "arrival" else None
        producer.send(topic, value=value, key=key.encode() if key is not None else None, timestamp_ms=ts_ms,
                      partition=partition, headers=[("seq", ",".join(map(str, seqs)).encode())])
        stats.messages += 1
        stats.records += n
        stats.by_topic[topic] = stats.by_topic.get(topic, 0) + n
        if rate:
            ahead = stats.records / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

    def flush_group(where: tuple[str, int]) -> None:
        group = groups.pop(where, None)
        if not group:
            return
        stream, partition = where
        lines = [g for _, g in group]
        value = b"[" + b",".join(g.raw for g in lines) + b"]" if len(lines) > 1 else lines[0].raw
        ts = max((g.arrival for g in lines if g.timestamped), default=None)
        send(stream, value, lines[0].key, ts, len(lines), [n for n, _ in group], partition)

    merged = arrival_ordered_lines(input_dir, nhsa)
    try:
        for seq, line in enumerate(merged):
            part = partition_of(line.stream, line.key) if arrays > 1 and not line.is_array else None
            if part is None:
                send(line.stream, line.raw, line.key, line.arrival if line.timestamped else None, line.records,
                     [seq])
                continue
            where = (line.stream, part)
            groups.setdefault(where, []).append((seq, line))
            if len(groups[where]) >= arrays:
                flush_group(where)
        for where in list(groups):
            flush_group(where)
        producer.flush()
    finally:
        producer.close()
    stats.seconds = time.monotonic() - start
    return stats


def consume_topic(topic: str, settings: Settings, until_idle: float | None = None,
                  out: IO[str] | None = None, metadata_timeout: float = 30.0) -> int:
    """Print ``topic``'s values from the beginning, one JSON value a line; returns the count."""
    from kafka import KafkaConsumer, TopicPartition

    out = out or sys.stdout
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             **kafka_python_security(settings))
    count = 0
    try:
        deadline = time.monotonic() + metadata_timeout
        parts: set[int] | None = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                if time.monotonic() > deadline:
                    raise LookupError(f"topic {topic} not found")
                time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while True:
            batch: dict[Any, list[Any]] = consumer.poll(timeout_ms=200)
            n = 0
            for records in batch.values():
                for rec in records:
                    value = rec.value
                    out.write((value.decode("utf-8", "replace") if value is not None else "null") + "\n")
                    n += 1
            if n:
                count += n
                last_new = time.monotonic()
                out.flush()
            elif until_idle is not None and time.monotonic() - last_new >= until_idle:
                return count
    finally:
        consumer.close()

"""Issue 17 against the real worker on tansu: producers nobody here wrote (aiokafka's, as kcat would
send), every compression codec Kafka producers use, wall-clock message timestamps, a message over
1 MB, a record the engine fails on, and registry topics a producer created first. Expected outputs
come from the replay shell over the same files (the reference semantics, design §2), never from the
worker itself.

kcat is not the producer here: kcat 1.7 (librdkafka 2.0.2, Debian) cannot talk to tansu 0.6 at all —
tansu's ApiVersions v3 response fails librdkafka's parser ("Read underflow at 274/279") and
``api.version.request=false`` does not avoid it. aiokafka's producer sends the same record batches
(v2, the codecs' standard framing) and, like kcat, stamps messages with the wall clock when asked to.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from builders import institution, read_jsonl, settlement, write_jsonl
from city import build_city
from kafka_helpers import Broker, Worker, kafka_env, read_topics, wait_for
from test_worker_kafka import ids, replay, run_to_end

from monitor.clock import CST
from monitor.settings import Settings
from monitor.streams.io import arrival_ordered_lines, produce_dir
from monitor.streams.topics import INPUTS, ensure_topics

pytestmark = pytest.mark.kafka

#: Codec per input topic of the compressed load (every codec of the Kafka protocol, one topic each at least).
CODEC_OF_STREAM = {"settlements": "lz4", "inventory": "snappy", "tracecodes": "zstd", "prescriptions": "gzip",
                   "institutions": "gzip", "drugs": "zstd", "findings": "snappy"}


def aiokafka_produce(input_dir: Path, settings: Settings, *, codecs: dict[str, str | None],
                     stamp_arrival: bool) -> Counter[str]:
    """Send ``input_dir``'s lines in arrival order with aiokafka's producer (default murmur2 partitioner,
    design §3 keys), one producer per codec; ``stamp_arrival=False`` leaves the timestamp to the producer
    (its wall clock, as kcat). Returns the messages sent per topic."""
    from aiokafka import AIOKafkaProducer

    ensure_topics(settings)
    sent: Counter[str] = Counter()

    async def run() -> None:
        producers: dict[str | None, Any] = {}
        for codec in set(codecs.values()):
            producers[codec] = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers(),
                                                compression_type=codec, linger_ms=20, acks="all")
            await producers[codec].start()
        try:
            for seq, line in enumerate(arrival_ordered_lines(input_dir)):
                topic = INPUTS[line.stream].name
                ts = int(line.arrival.timestamp() * 1000) if stamp_arrival and line.timestamped else None
                await producers[codecs[line.stream]].send(
                    topic, line.raw, key=line.key.encode() if line.key is not None else None, timestamp_ms=ts,
                    headers=[("seq", str(seq).encode())])
                sent[topic] += 1
            for producer in producers.values():
                await producer.flush()
        finally:
            for producer in producers.values():
                await producer.stop()

    asyncio.run(run())
    return sent


def applied_per_topic(worker: Worker) -> Counter[str]:
    ckpt = worker.checkpoint()
    out: Counter[str] = Counter()
    for (topic, _), (offset, _) in (ckpt.positions.items() if ckpt else ()):
        out[topic] += offset
    return out


# --------------------------------------------------------------------------------------- compression codecs
@pytest.fixture(scope="module")
def compressed_run(tansu_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One city loaded with lz4, snappy, zstd and gzip batches (a codec per topic), one worker run."""
    tmp = tmp_path_factory.mktemp("codecs")
    broker = Broker(tansu_bin, tmp)
    worker = Worker(kafka_env(broker, tmp / "data"), tmp)
    try:
        city = tmp / "city"
        build_city(city, days=20)
        expected = replay(city, tmp / "replay")
        sent = aiokafka_produce(city, worker.settings, codecs=dict(CODEC_OF_STREAM), stamp_arrival=True)
        worker.start()
        run_to_end(worker, sum(sent.values()))
        yield {"worker": worker, "sent": sent, "expected": expected}
    finally:
        worker.stop()
        broker.stop()


@pytest.mark.parametrize("codec", ["lz4", "snappy", "zstd", "gzip"])
def test_attack_compressed_batches_are_accepted(compressed_run: dict[str, Any], codec: str) -> None:
    """lz4 / snappy / zstd (aiokafka needs cramjam for them) and gzip batches: the worker stays up and
    applies every message of the topics sent with that codec."""
    worker, sent = compressed_run["worker"], compressed_run["sent"]
    assert worker.alive(), worker.tail()
    topics = [INPUTS[s].name for s, c in CODEC_OF_STREAM.items() if c == codec and sent[INPUTS[s].name]]
    assert topics, f"the city has records for a {codec} topic"
    applied = applied_per_topic(worker)
    for topic in topics:
        assert applied[topic] == sent[topic], (topic, applied[topic], sent[topic])


def test_compressed_load_gives_replays_alerts_and_tickets(compressed_run: dict[str, Any]) -> None:
    worker, expected = compressed_run["worker"], compressed_run["expected"]
    assert expected["tickets"]
    out = read_topics(worker.settings, "monitor.alerts", "monitor.tickets")
    assert ids(out["monitor.alerts"], "alert_id") == ids(expected["alerts"], "alert_id")
    assert ids(out["monitor.tickets"], "ticket_id") == ids(expected["tickets"], "ticket_id")


# ------------------------------------------------------------------------------------ wall-clock timestamps
def test_attack_wall_clock_stamped_load_does_not_move_event_time_to_today(
        broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    """A producer that stamps every message with its wall clock (kcat does) loads January's uploads
    today: event time must stay on the data's own clock, so the tickets are replay's — not every
    pending deadline fired at today's date (premature REINSTATE/TERMINATE, judgments before evidence)."""
    city = tmp_path / "city"
    build_city(city, days=40)
    expected = replay(city, tmp_path / "replay")
    last_upload = max(datetime.strptime(r["inf_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST)
                      for r in read_jsonl(city / "settlements.jsonl") if "inf_time" in r)
    worker = make_worker(kafka_env(broker, tmp_path / "data"))
    sent = aiokafka_produce(city, worker.settings, codecs=dict.fromkeys(CODEC_OF_STREAM, None), stamp_arrival=False)
    worker.start()
    run_to_end(worker, sum(sent.values()))
    ckpt = worker.checkpoint()
    assert ckpt is not None and ckpt.watermark is not None
    # let a few ticks pass with nothing queued: they must not move event time either
    wait_for(lambda: worker.checkpoint() is not None, "a checkpoint")
    assert worker.stop() == 0, worker.tail()
    final = worker.checkpoint()
    assert final is not None and final.watermark is not None and final.watermark <= last_upload
    out = read_topics(worker.settings, "monitor.tickets", "monitor.alerts")
    assert ids(out["monitor.tickets"], "ticket_id") == ids(expected["tickets"], "ticket_id")
    assert ids(out["monitor.alerts"], "alert_id") == ids(expected["alerts"], "alert_id")


# -------------------------------------------------------------------------------- poison pills, big messages
def test_attack_message_over_1mb_and_a_record_the_engine_fails_on_are_dead_lettered(
        broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    """A 1.5 MB invalid value (its dead letter used to exceed the producer's 1 MB request size: the worker
    died on every restart), a 1.6 MB valid JSON array (an NHSA batch upload) and a settlement whose
    amount the models accept but the benefit rule cannot compute (``hifp_pay "1e30"``): the bad ones are
    dead-lettered, bounded, and every valid record — the big batch too — is applied as replay does."""
    good = [settlement(f"S{i}", f"2026-01-06 10:{i:02d}:00", f"2026-01-06 10:{i:02d}:30") for i in range(20)]
    good.append(settlement("LATER", "2026-01-09 10:00:00", "2026-01-09 10:00:30"))  # days get judged
    batch = b"[" + b",".join(json.dumps(settlement(f"B{i}", "2026-01-06 11:00:00", "2026-01-06 11:00:30",
                                                   hifp_pay="9.00")).encode() for i in range(2600)) + b"]"
    assert len(batch) > 1_500_000
    huge = json.dumps({"setl_id": "HUGE", "fixmedins_code": "P42070200001", "memo": "x" * 1_500_000}).encode()
    boom = settlement("BOOM", "2026-01-06 10:06:10", "2026-01-06 10:06:40", hifp_pay="1e30")
    for folder in (tmp_path / "valid", tmp_path / "in"):
        write_jsonl(folder, "institutions", [institution()])  # a pharmacy: the benefit rule applies
    write_jsonl(tmp_path / "valid", "settlements", [*good[:5], batch, *good[5:]])
    expected = replay(tmp_path / "valid", tmp_path / "replay")
    inp = tmp_path / "in"
    write_jsonl(inp, "settlements", [*good[:5], huge, batch, boom, *good[5:]])
    worker = make_worker(kafka_env(broker, tmp_path / "data"))
    stats = produce_dir(inp, worker.settings)
    worker.start()
    run_to_end(worker, stats.messages)
    assert worker.alive(), worker.tail()
    out = read_topics(worker.settings, "monitor.dlq", "monitor.alerts")
    dlq = out["monitor.dlq"]
    sizes = [len(json.dumps(d)) for d in dlq]
    assert len(dlq) == 2 and max(sizes) <= 256 * 1024, sizes
    huge_letter = next(d for d in dlq if "HUGE" in (d["value"] or ""))  # the big value's prefix is kept
    assert len(huge_letter["value"]) < 64 * 1024
    assert any("BOOM" in (d["value"] or "") for d in dlq), [d["error"] for d in dlq]
    engine = worker.checkpoint_engine()
    assert engine is not None
    got_alerts = ids(out["monitor.alerts"], "alert_id")
    assert got_alerts == ids(expected["alerts"], "alert_id")
    assert got_alerts  # the batch's 2 600 门诊统筹 settlements without prescriptions are judged


# ------------------------------------------------------------------------------------- registry topics
def test_attack_registry_topics_a_producer_created_first_are_made_compacted(broker: Broker, tmp_path: Path) -> None:
    """A producer auto-created the registry topics before the monitor ran (broker default
    ``cleanup.policy=delete``: the institution and drug registry would expire with the retention time).
    ``ensure_topics`` — run by ``monitor worker`` and ``monitor produce`` — makes them compacted."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    from monitor.streams.topics import cleanup_policy

    settings = Settings(broker=f"kafka://127.0.0.1:{broker.port}", data_dir=tmp_path)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers())
    for topic in ("medins.institutions", "medins.drugs"):
        producer.send(topic, b"{}", key=b"k").get(timeout=30)
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers())
    try:
        assert cleanup_policy(admin, "medins.institutions") != "compact"  # what the producer left
        ensure_topics(settings)
        assert cleanup_policy(admin, "medins.institutions") == "compact"
        assert cleanup_policy(admin, "medins.drugs") == "compact"
        assert cleanup_policy(admin, "medins.settlements") != "compact"  # business topics keep retention
    finally:
        admin.close()

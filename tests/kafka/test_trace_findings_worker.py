"""``monitor worker`` with the national trace tier (issue #15 acceptance point 3) on tansu: a finding
produced to ``monitor.trace_findings`` becomes one alert and one REVIEW ticket of the city's ladder
(EZ-DM 二(二)); produced a second time (a trace-worker resending it) and across a worker restart, it
gives nothing new."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from builders import institution
from kafka_helpers import Broker, Worker, kafka_env, wait_for
from test_trace_city_worker import HOME, finding
from test_worker_kafka import consume

from monitor.settings import Settings
from monitor.streams.topics import ALL_TOPICS, INPUTS, TRACE_FINDINGS, ensure_topics, kafka_python_security

pytestmark = pytest.mark.kafka


def produce(settings: Settings, topic: str, key: str, values: list[dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers(), acks="all",
                             **kafka_python_security(settings))
    try:
        for value in values:
            producer.send(topic, json.dumps(value, ensure_ascii=False).encode(), key=key.encode())
        producer.flush()
    finally:
        producer.close()


def applied_findings(worker: Worker) -> int:
    ckpt = worker.checkpoint()
    return sum(off for (topic, _), (off, _) in ckpt.positions.items() if topic == TRACE_FINDINGS.name) if ckpt else 0


def test_city_worker_raises_a_trace_finding_once_also_produced_twice_and_after_a_restart(
        broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    worker = make_worker(kafka_env(broker, tmp_path / "data", MONITOR_TRACE_TIER="true"))
    settings = worker.settings
    ensure_topics(settings, (*ALL_TOPICS, TRACE_FINDINGS))
    produce(settings, INPUTS["institutions"].name, HOME, [institution(HOME)])
    produce(settings, TRACE_FINDINGS.name, HOME, [finding("TF-1"), finding("TF-1")])
    worker.start()
    wait_for(lambda: applied_findings(worker) == 2 or not worker.alive(), "the worker to apply both messages")
    assert worker.alive(), worker.tail()
    assert worker.stop() == 0
    # the trace-worker sends it once more (and a new one) while the city worker is down
    produce(settings, TRACE_FINDINGS.name, HOME, [finding("TF-1"), finding("TF-2")])
    worker.start()
    wait_for(lambda: applied_findings(worker) == 4 or not worker.alive(), "the restarted worker to apply them")
    assert worker.alive(), worker.tail()
    alerts = consume(settings, "monitor.alerts")
    tickets = consume(settings, "monitor.tickets")
    assert Counter(a["evidence"]["finding_id"] for a in alerts) == {"TF-1": 1, "TF-2": 1}
    assert {a["rule_id"] for a in alerts} == {"trace.resold"}
    assert [t["action"] for t in tickets] == ["REVIEW", "REVIEW"]
    assert Counter(t["alert_ids"][0] for t in tickets) == Counter(a["alert_id"] for a in alerts)
    assert consume(settings, "monitor.dlq") == []

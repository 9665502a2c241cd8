"""Acceptance of issue #13 in the Kafka shell: the simulated city as platform messages, forwarded
unchanged to the one topic ``medins.uploads`` (``monitor produce --format nhsa``, design §3), gives the
worker the alerts and tickets the replay shell finds in the flat form of the same seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import read_jsonl
from kafka_helpers import Broker, kafka_env, read_topics, wait_for

from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.simulate import SimConfig, simulate
from monitor.simulate.nhsa_writer import write_nhsa
from monitor.streams.io import produce_dir

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SEED = 7


def test_worker_on_medins_uploads_matches_replay_of_the_flat_city(broker: Broker, make_worker: Any,
                                                                  tmp_path: Path) -> None:
    flat, nhsa = tmp_path / "flat", tmp_path / "nhsa"
    simulate(SimConfig(out=flat, days=14, seed=SEED, institutions=16, scale=0.1))
    write_nhsa(flat, nhsa, SEED)
    replay_dir(flat, tmp_path / "replay", load_pack("ezhou"))
    alerts = read_jsonl(tmp_path / "replay" / "alerts.jsonl")
    tickets = read_jsonl(tmp_path / "replay" / "tickets.jsonl")
    assert len(alerts) >= 5, "the planted city must raise alerts"
    worker = make_worker(kafka_env(broker, tmp_path / "data"))
    stats = produce_dir(nhsa, worker.settings, nhsa=True)
    assert stats.by_topic["medins.uploads"] > 0
    assert set(stats.by_topic) == {"medins.uploads", "medins.institutions", "medins.drugs", "medins.findings"}
    worker.start()
    wait_for(lambda: worker.applied_messages() >= stats.messages or not worker.alive(),
             f"the worker to apply {stats.messages} messages")
    assert worker.alive(), worker.tail()
    out = read_topics(worker.settings, "monitor.alerts", "monitor.tickets", "monitor.dlq")
    got_alerts, got_tickets = out["monitor.alerts"], out["monitor.tickets"]
    assert {a["alert_id"] for a in got_alerts} == {a["alert_id"] for a in alerts}
    assert {t["ticket_id"] for t in got_tickets} == {t["ticket_id"] for t in tickets}
    assert out["monitor.dlq"] == []

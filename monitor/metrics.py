"""Prometheus metrics of the monitor (design §4), declared once.

Every metric is created on the registry passed to ``Metrics(registry)`` (tests use a fresh
``CollectorRegistry``; the shells use one registry for our metrics *and* Faust's Prometheus sensor, so
both appear on one ``/metrics``). Labels are bounded: ``region`` (the institution's ``admdvs``, a few
hundred values per province at most), ``stream``, ``rule``, ``action`` and ``sink`` — never an
institution, a person or a record id. ``METRIC_SPECS`` is the contract; ``tests/test_sink_metrics.py``
pins it, so a rename is deliberate (dashboards and alert rules in ``deploy/`` use these names).

The Kafka shell enables Faust's own sensor for stream internals (consumer offsets, commit latency,
rebalances) with ``faust.sensors.prometheus.setup_prometheus_sensors(app, registry=registry,
name_prefix=FAUST_PREFIX)``; ``deploy/`` reads its ``faust_topic_partition_end_offset`` /
``faust_topic_partition_offset_commited`` series for consumer lag.

``MetricsSink`` is the ``Sink`` that feeds these metrics from a shell::

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    sink = MetricsSink(metrics)          # then sink.bind(engine) once the engine exists
    serve_metrics(registry, port=9464)   # replay; the worker serves it on Faust's web server
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from monitor.clock import business_date
from monitor.outputs import Alert, DeadLetter, InstitutionDay, Ticket

if TYPE_CHECKING:
    from monitor.detectors.daily import DailyTally
    from monitor.engine import Engine

#: Faust sensor name prefix the Kafka shell is asked to use (see the module docstring).
FAUST_PREFIX = "faust"

#: Upload-lag buckets (seconds): 1 min … 7 days; 86 400 s is EZ-DM 二(一)'s default 24 h limit.
LAG_BUCKETS: tuple[float, ...] = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
#: Engine wall time per batch handed to the sinks (seconds).
BATCH_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: name (as exposed, without the ``_total``/``_bucket`` suffixes) → (type, labels). The contract.
METRIC_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "monitor_records": ("counter", ("stream", "region")),
    "monitor_records_duplicate": ("counter", ("stream",)),
    "monitor_dead_letters": ("counter", ("stream",)),
    "monitor_outputs": ("counter", ("stream",)),
    "monitor_upload_lag_seconds": ("histogram", ("stream", "region")),
    "monitor_alerts": ("counter", ("rule", "region")),
    "monitor_tickets": ("counter", ("action", "region")),
    "monitor_institutions_sanctioned": ("gauge", ("action", "region")),
    "monitor_engine_batch_seconds": ("histogram", ()),
    "monitor_watermark_seconds": ("gauge", ()),
    "monitor_sink_rows": ("counter", ("sink",)),
    "monitor_sink_failures": ("counter", ("sink",)),
    "monitor_sink_pending": ("gauge", ("sink",)),
}

#: Sinks reporting health (bounded label values of ``sink``).
SINKS: tuple[str, ...] = ("clickhouse", "casesystem")
#: ``stream`` label values of ``monitor_outputs``.
OUTPUT_STREAMS: tuple[str, ...] = ("alerts", "tickets", "dlq")
#: ``stream`` label values of ``monitor_dead_letters``: the input streams and ``other`` (``stream_of``).
DEAD_LETTER_STREAMS: tuple[str, ...] = ("institutions", "drugs", "settlements", "inventory", "tracecodes",
                                        "prescriptions", "findings", "other")


def stream_of(source: str) -> str:
    """Bounded ``stream`` label of a dead letter's source: ``medins.settlements`` or
    ``settlements.jsonl`` → ``settlements``; anything else → ``other``."""
    from monitor.records import STREAMS

    name = source.rsplit("/", 1)[-1]
    name = name.removeprefix("medins.").removesuffix(".jsonl")
    return name if name in STREAMS else "other"


class Metrics:
    """The metric objects, created on ``registry`` (never the global default unless passed)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = Counter("monitor_records", "Records processed by the engine (parsed and "
                               "de-duplicated)", ["stream", "region"],
                               registry=registry)
        self.duplicates = Counter("monitor_records_duplicate", "Records dropped as duplicates "
                                  "(at-least-once upstream, design §3)", ["stream"], registry=registry)
        self.dead_letters = Counter("monitor_dead_letters", "Input values sent to the dead-letter output",
                                    ["stream"], registry=registry)
        self.outputs = Counter("monitor_outputs", "Outputs written (stream: alerts, tickets, dlq)",
                               ["stream"], registry=registry)
        self.upload_lag = Histogram("monitor_upload_lag_seconds", "Upload lag: arrival (inf_time) minus "
                                    "business time, EZ-DM 二(一)", ["stream", "region"],
                                    buckets=LAG_BUCKETS, registry=registry)
        self.alerts = Counter("monitor_alerts", "Alerts by rule", ["rule", "region"], registry=registry)
        self.tickets = Counter("monitor_tickets", "Tickets by action", ["action", "region"], registry=registry)
        self.sanctioned = Gauge("monitor_institutions_sanctioned", "Institutions with a sanction in force "
                                "at the watermark, by action", ["action", "region"], registry=registry)
        self.batch_seconds = Histogram("monitor_engine_batch_seconds", "Wall time the engine spent on one "
                                       "batch of input before its outputs reached the sinks",
                                       buckets=BATCH_BUCKETS, registry=registry)
        self.watermark = Gauge("monitor_watermark_seconds", "Event-time watermark (Unix seconds)",
                               registry=registry)
        self.sink_rows = Counter("monitor_sink_rows", "Rows/items a sink stored downstream", ["sink"],
                                 registry=registry)
        self.sink_failures = Counter("monitor_sink_failures", "Failed downstream writes (retried from the "
                                     "durable buffer)", ["sink"], registry=registry)
        self.sink_pending = Gauge("monitor_sink_pending", "Items held in a sink's durable buffer",
                                  ["sink"], registry=registry)
        for sink in SINKS:  # known label values start at 0, so increase() sees the first failure
            self.sink_rows.labels(sink)
            self.sink_failures.labels(sink)
            self.sink_pending.labels(sink)
        # Every bounded label value of the counters the alert rules take rates of and divide by starts
        # at 0 (MonitorDeadLetterRate: dead letters / (records + dead letters)): a series born with the
        # first burst has no earlier sample, so rate() would miss that burst.
        for stream in DEAD_LETTER_STREAMS:
            self.dead_letters.labels(stream)
        for stream in OUTPUT_STREAMS:
            self.outputs.labels(stream)
        from monitor.records import STREAMS

        for stream in STREAMS:
            self.duplicates.labels(stream)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Expose ``registry`` on ``http://addr:port/metrics`` from a daemon thread; returns the server
    (``.shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


class MetricsSink:
    """A ``Sink`` that counts outputs and dead letters and, once bound to an engine, records per
    stream/region and upload lags (the tap of the engine's institution-day tally,
    ``monitor.detectors.daily``), duplicates, sanctions in force and the watermark. ``clock`` is
    injectable (wall time of engine batches)."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self._clock = clock
        self._engine: Engine | None = None
        self._collector: DailyTally | None = None
        self._dups: Tally[str] = Tally()
        self._since = clock()
        self._sanction_labels: set[tuple[str, str]] = set()
        self._lag_children: dict[tuple[str, str], Any] = {}

    def bind(self, engine: Engine) -> None:
        self._engine = engine
        engine.daily.open_tap()  # transient: opened again after a restore (bind_all)
        self._collector = engine.daily
        self._dups = Tally(engine.stats.duplicates)
        self._since = self._clock()

    def write(self, outputs: Sequence[Alert | Ticket | InstitutionDay], dead: Sequence[DeadLetter]) -> None:
        m = self.metrics
        now = self._clock()
        m.batch_seconds.observe(max(0.0, now - self._since))
        self._since = now
        for item in outputs:
            region = item.admdvs or "unknown"
            if isinstance(item, Alert):
                m.alerts.labels(item.rule_id, region).inc()
                m.outputs.labels("alerts").inc()
            elif isinstance(item, Ticket):
                m.tickets.labels(item.action, region).inc()
                m.outputs.labels("tickets").inc()
        for letter in dead:
            m.dead_letters.labels(stream_of(letter.source)).inc()
            m.outputs.labels("dlq").inc()
        self._pull()

    def _pull(self) -> None:
        m = self.metrics
        if self._collector is not None:
            counts: Tally[tuple[str, str]] = Tally()
            lag_of = self._lag_children  # pre-bound children: ``labels()`` is a locked lookup per call
            for stream, region, lag in self._collector.take_tap():
                counts[(stream, region)] += 1
                if lag is not None:
                    child = lag_of.get((stream, region))
                    if child is None:
                        child = lag_of[(stream, region)] = m.upload_lag.labels(stream, region)
                    child.observe(lag)
            for (stream, region), n in counts.items():
                m.records.labels(stream, region).inc(n)
        engine = self._engine
        if engine is None:
            return
        for stream, n in engine.stats.duplicates.items():
            delta = n - self._dups[stream]
            if delta > 0:
                m.duplicates.labels(stream).inc(delta)
                self._dups[stream] = n
        wm = engine.watermark.value
        if wm is not None:
            m.watermark.set(wm.timestamp())
            self._sanctions(engine, wm)

    def _sanctions(self, engine: Engine, wm: datetime) -> None:
        day = business_date(wm)
        counts: Tally[tuple[str, str]] = Tally()
        for code in engine.ledger.books:
            for sanction in engine.ledger.in_force(code, day):
                counts[(sanction.action, engine.registry.admdvs(code) or "unknown")] += 1
        # Gauges: labels seen before but no longer in force drop to 0.
        for labels in list(self._sanction_labels):
            if labels not in counts:
                self.metrics.sanctioned.labels(*labels).set(0)
        for labels, n in counts.items():
            self.metrics.sanctioned.labels(*labels).set(n)
        self._sanction_labels |= set(counts)

    def flush(self) -> None:
        self._pull()

    def close(self) -> None:
        self.flush()

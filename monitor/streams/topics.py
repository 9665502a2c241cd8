"""Every Kafka topic of design §3/§4, declared once, with explicit names, keys and partition counts.

Names are contracts (upstream gateways, the case system and dashboards are written against them): a
test pins this list, so a rename is deliberate. Partition counts come from settings (``MONITOR_PARTITIONS``)
except for the compacted registry topics and the dead-letter topic, which are small. The monitor creates
missing topics itself (``ensure_topics``) before producing or consuming, because Faust and tansu would
otherwise auto-create them with broker defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.records import STREAMS

if TYPE_CHECKING:
    from monitor.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, the record field its messages are keyed by, and how it is kept."""

    name: str
    key: str | None
    #: ``None`` = ``MONITOR_PARTITIONS``; a number = fixed.
    partitions: int | None = None
    compacted: bool = False

    def partition_count(self, settings: Settings) -> int:
        return self.partitions if self.partitions is not None else settings.partitions


#: Input topics by stream (design §3). Keys: the institution, except prescriptions (``hi_rxno``) and the
#: drug catalogue (``med_list_codg``).
INPUTS: dict[str, TopicSpec] = {
    "institutions": TopicSpec("medins.institutions", "fixmedins_code", compacted=True),
    "drugs": TopicSpec("medins.drugs", "med_list_codg", compacted=True),
    "settlements": TopicSpec("medins.settlements", "fixmedins_code"),
    "inventory": TopicSpec("medins.inventory", "fixmedins_code"),
    "tracecodes": TopicSpec("medins.tracecodes", "fixmedins_code"),
    "prescriptions": TopicSpec("medins.prescriptions", "hi_rxno"),
    "findings": TopicSpec("medins.findings", "fixmedins_code"),
}
assert tuple(INPUTS) == STREAMS, "one input topic per stream, in STREAMS order"
#: Every platform message as a gateway forwards it, routed by ``infno`` (design §3, monitor.nhsa).
UPLOADS = TopicSpec("medins.uploads", "fixmedins_code")

#: Output topics (design §4); alerts and tickets keyed by ``fixmedins_code``.
ALERTS = TopicSpec("monitor.alerts", "fixmedins_code")
TICKETS = TopicSpec("monitor.tickets", "fixmedins_code")
DLQ = TopicSpec("monitor.dlq", None, partitions=1)
OUTPUTS: tuple[TopicSpec, ...] = (ALERTS, TICKETS, DLQ)

#: The national trace tier (``monitor trace-worker``, design §2 "Two tiers"): its findings, keyed by the
#: charged institution, which the city workers read; and its two repartition topics (by trace code, by
#: product identifier), internal to the trace-worker group.
TRACE_FINDINGS = TopicSpec("monitor.trace_findings", "fixmedins_code")
TRACE_BY_CODE = TopicSpec("monitor-trace-by-code", "drug_trac_codg")
TRACE_BY_PRODUCT = TopicSpec("monitor-trace-by-product", "product_id")
TRACE_TOPICS: tuple[TopicSpec, ...] = (TRACE_FINDINGS, TRACE_BY_CODE, TRACE_BY_PRODUCT)

#: Stream of an input topic name.
STREAM_OF_TOPIC: dict[str, str] = {spec.name: stream for stream, spec in INPUTS.items()}
STREAM_OF_TOPIC[UPLOADS.name] = "uploads"
#: Position of each input topic in the arrival-order tie-break (the replay shell's file order).
STREAM_ORDER: dict[str, int] = {stream: i for i, stream in enumerate(STREAMS)}

ALL_TOPICS: tuple[TopicSpec, ...] = (*INPUTS.values(), UPLOADS, *OUTPUTS)


def topic_names() -> list[str]:
    """All topic names the monitor declares (pinned by a test)."""
    return [spec.name for spec in ALL_TOPICS]


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """kafka-python client keyword arguments for TLS/SASL (secrets read here, never logged)."""
    out: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        out["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            out["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol.endswith("SSL"):
        if settings.kafka_ssl_cafile:
            out["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            out["ssl_certfile"] = str(settings.kafka_ssl_certfile)
        if settings.kafka_ssl_keyfile:
            out["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
        if settings.kafka_ssl_password is not None:
            out["ssl_password"] = settings.kafka_ssl_password.get_secret_value()
    return out


def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[str]:
    """Create the topics that do not exist yet (explicit partition counts); returns the created names.

    An existing topic is left as it is (its partition count is not changed: re-partitioning a keyed
    topic would move institutions between partitions).
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers(), client_id="monitor-admin",
                             **kafka_python_security(settings))
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(spec.name, spec.partition_count(settings), settings.replication,
                     topic_configs={"cleanup.policy": "compact"} if spec.compacted else {})
            for spec in specs if spec.name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        return [t.name for t in new]
    finally:
        admin.close()

"""Every Kafka topic of design §3/§4, declared once, with explicit names, keys and partition counts.

Names are contracts (upstream gateways, the case system and dashboards are written against them): a
test pins this list, so a rename is deliberate. Partition counts come from settings (``MONITOR_PARTITIONS``)
except for the compacted registry topics and the dead-letter topic, which are small. The monitor creates
missing topics itself (``ensure_topics``) before producing or consuming, because Faust and tansu would
otherwise auto-create them with broker defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.records import STREAMS

if TYPE_CHECKING:
    from monitor.settings import Settings

log = logging.getLogger("monitor.topics")


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
#: The city worker reads the trace tier's findings as one more input (``MONITOR_TRACE_TIER``, monitor.trace.city).
STREAM_OF_TOPIC[TRACE_FINDINGS.name] = "trace_findings"
#: Position of each input topic in the arrival-order tie-break (the replay shell's file order); trace
#: findings after every upload of the same instant.
STREAM_ORDER: dict[str, int] = {stream: i for i, stream in enumerate((*STREAMS, "trace_findings"))}

ALL_TOPICS: tuple[TopicSpec, ...] = (*INPUTS.values(), UPLOADS, *OUTPUTS)


def input_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Topics the city worker reads beyond ``INPUTS`` and ``UPLOADS``: the trace tier's findings when it runs."""
    return (TRACE_FINDINGS,) if settings.trace_tier else ()


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

    An existing topic keeps its partition count (re-partitioning a keyed topic would move institutions
    between partitions), but a registry topic (``compacted``) that someone else created first — a
    producer's auto-create uses the broker default ``cleanup.policy=delete``, which would expire the
    institution and drug registry after the retention time — is switched to ``compact``; when the
    broker does not allow that, the monitor logs an error naming the topic (``compaction_problems``).
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
        for problem in compaction_problems(admin, [s.name for s in specs if s.compacted and s.name in existing]):
            log.error("%s", problem)
        return [t.name for t in new]
    finally:
        admin.close()


def cleanup_policy(admin: Any, topic: str) -> str | None:
    """The topic's ``cleanup.policy`` as the broker reports it (``None`` if it reports none)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=None)
    try:
        described = admin.describe_configs([resource], config_filter="all")
    except TypeError:  # kafka-python 2.x: no filter, a list of responses
        described = admin.describe_configs([resource])
    if isinstance(described, dict):
        entry = described.get("topic", {}).get(topic, {}).get("cleanup.policy")
        return str(entry["value"]) if entry else None
    for response in described:
        for res in getattr(response, "resources", ()):
            for config in res[4]:
                if config[0] == "cleanup.policy":
                    return str(config[1])
    return None


def compaction_problems(admin: Any, topics: list[str]) -> list[str]:
    """Make each of ``topics`` compacted; return one message per topic that is not and could not be."""
    from kafka.admin import ConfigResource, ConfigResourceType

    problems: list[str] = []
    for topic in topics:
        try:
            policy = cleanup_policy(admin, topic)
            if policy is not None and "compact" in policy:
                continue
            log.warning("registry topic %s has cleanup.policy=%s (created before the monitor?): "
                        "setting it to compact", topic, policy)
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": "compact"})
            try:
                admin.alter_configs([resource], raise_on_unknown=False)
            except TypeError:  # kafka-python 2.x
                admin.alter_configs([resource])
            policy = cleanup_policy(admin, topic)
            if policy is None or "compact" not in policy:
                problems.append(f"registry topic {topic} is not compacted (cleanup.policy={policy}) and the "
                                "broker did not change it: set cleanup.policy=compact on it, or the "
                                "institution and drug registry expire with the topic's retention")
        except Exception as exc:  # a broker without the config APIs: say so, do not stop
            problems.append(f"registry topic {topic}: cannot check or set cleanup.policy=compact "
                            f"({type(exc).__name__}: {exc}); make sure it is compacted")
    return problems

"""Deployment settings from the environment (prefix ``MONITOR_``) or a ``.env``-style file named by
``MONITOR_SETTINGS_FILE``. Secrets are ``SecretStr``: never printed, never logged."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.privacy import Pseudonymizer
from monitor.watermark import DEFAULT_QUORUM

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    #: Key of the keyed hash that replaces personal identifiers in every output. No default: when unset,
    #: a random key is generated once and stored in ``DATA_DIR/pii.key`` (0600), with a warning.
    pii_key: SecretStr | None = None
    #: Distinct institutions whose upload clocks must agree before event time jumps ahead by more than
    #: the clock-skew tolerance (``monitor.watermark.EventClock``); replay and worker.
    clock_quorum: int = Field(default=DEFAULT_QUORUM, ge=1)
    #: Folder for the raw bytes of dead-lettered values (``<sha256>.bin``, 0600). Unset: dead letters carry
    #: only a bounded, masked prefix and the digest. Put it on encrypted, access-controlled storage.
    quarantine_dir: Path | None = None
    #: Policy pack name or file.
    policy: str = "ezhou"
    #: Local state (checkpoints, embedded ClickHouse store, outbox).
    data_dir: Path = Path("var")
    #: Logs as JSON lines.
    log_json: bool = False

    # ---------------------------------------------------------------- Kafka shell (monitor worker/produce)
    #: Kafka bootstrap server(s), Faust URL form; comma-separate several (``kafka://h1:9092,h2:9092``).
    broker: str = "kafka://127.0.0.1:9092"
    #: Faust application id = consumer group id; one worker group per city (the engine needs a global
    #: view of its inputs, see README "Kafka shell").
    app_id: str = "medins-monitor"
    #: Partitions of each input and output topic when the monitor creates them (design §3/§4).
    partitions: int = Field(default=4, ge=1)
    #: Replication factor of the topics the monitor creates (1 on a single local broker).
    replication: int = Field(default=1, ge=1)
    #: Seconds between checkpoints (engine snapshot + input offsets); inputs are acknowledged only
    #: after the checkpoint that covers them is durable.
    checkpoint_interval: float = Field(default=1.0, gt=0)
    #: Largest share of the time spent writing checkpoints (each pickles the whole engine): after one
    #: that took t seconds, the next waits at least ``t · (1/share − 1)`` (and ``checkpoint_interval``).
    checkpoint_max_share: float = Field(default=0.1, gt=0, le=1)
    #: Where the engine's keyed state lives (``monitor.state``): ``memory`` (checkpoints = base + delta
    #: files) or ``rocksdb`` (on disk under the checkpoint folder; one WriteBatch per checkpoint).
    state_backend: Literal["memory", "rocksdb"] = "memory"
    #: Wall-clock seconds between ticks (flow control only: release merged records, advance event time
    #: to the latest broker timestamp seen). Never used as business time.
    tick_interval: float = Field(default=0.5, gt=0)
    #: Flow control: if the arrival-order merge has released nothing for this many seconds while
    #: records wait, release them anyway (a partition that never reports its end).
    merge_stall_seconds: float = Field(default=10.0, gt=0)
    #: Stop the worker when more than this share of the last ``dlq_window`` input records were dead
    #: letters (a bad deploy, not bad data).
    dlq_max_ratio: float = Field(default=0.5, gt=0, le=1)
    dlq_window: int = Field(default=1000, ge=1)
    #: The national trace tier runs (``monitor trace-worker``): the city worker also consumes
    #: ``monitor.trace_findings`` (its region's findings as alerts and triggers of its ladder) and its
    #: ``trace.duplicate`` leaves repeats across institutions to ``trace.resold`` (monitor.trace.city).
    trace_tier: bool = False
    #: ``monitor trace-worker`` flow control: a source partition of ``medins.tracecodes`` read to its end
    #: for this many wall-clock seconds while its intake clock holds future scans releases them as at
    #: the end of replay's input — clamped to its event time (``trace.clock_skew``) — instead of waiting
    #: for 256 more scans that a quiet partition may never bring. Never used as business time.
    trace_quiet_seconds: float = Field(default=10.0, gt=0)
    #: Seconds between the worker's progress log lines ("applied N records (R/s), queued …").
    report_seconds: float = Field(default=10.0, gt=0)
    #: Faust consumer session timeout (seconds); small values make the group join fast on tansu.
    broker_session_timeout: float = Field(default=30.0, gt=0)
    #: Faust consumer group rebalance timeout (seconds).
    broker_rebalance_timeout: float = Field(default=30.0, gt=0)
    #: Kafka security: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: SASL mechanism when the protocol is ``SASL_*``.
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    #: CA bundle, client certificate and key for TLS (files).
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_password: SecretStr | None = None

    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list for kafka-python / aiokafka, from ``broker`` (``kafka://`` prefix optional)."""
        out = []
        for part in self.broker.split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                out.append(part.rstrip("/"))
        return out

    def pseudonymizer(self) -> Pseudonymizer:
        """The deployment's key: ``MONITOR_PII_KEY``, else ``DATA_DIR/pii.key`` (generated once, 0600, with a
        warning). Never the public dev key (that one is for ``monitor demo`` and tests)."""
        if self.pii_key is not None and self.pii_key.get_secret_value().strip():
            return Pseudonymizer(self.pii_key.get_secret_value())  # (docker-compose passes "" when unset)
        path = self.data_dir / "pii.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".pii.key.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic and never overwrites: a second process uses the first one's key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            log.warning("MONITOR_PII_KEY is not set: generated a random key in %s (keep it secret, back it "
                        "up: person tokens and checkpoints depend on it)", path)
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"{path} is empty: set MONITOR_PII_KEY or remove the file")
        return Pseudonymizer(key)

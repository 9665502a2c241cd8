"""Settings and assembly of the operational sinks (ClickHouse, case system, Prometheus) for both shells.

Environment (prefix ``MONITOR_``, same as ``monitor.settings.Settings``):

=============================  =================================================================
``MONITOR_STORE``              ClickHouse DSN: ``chdb://PATH`` (embedded, default
                               ``chdb://$MONITOR_DATA_DIR/clickhouse``), ``http://user@host:8123/db``
                               or ``https://…:8443``; ``none`` disables the store
``MONITOR_STORE_PASSWORD``     ClickHouse password (secret; overrides one in the DSN)
``MONITOR_CASE_WEBHOOK_URL``   case-system endpoint; tickets are POSTed only when set
``MONITOR_CASE_WEBHOOK_TOKEN`` bearer token for it (secret)
``MONITOR_METRICS_PORT``       ``monitor replay``: serve ``/metrics`` on this port (worker: Faust's web port)
``MONITOR_DATA_DIR``           local state: the ClickHouse buffer and the case-system outbox live here
=============================  =================================================================

``build_sinks(settings, registry)`` returns the sinks in the order the shells call them; each one that
needs to read the engine has ``bind(engine)`` — call ``bind_all(sinks, engine)`` once the engine exists
(after a restore too: the engine is a new object). Sinks attach nothing to the engine and are never
part of a checkpoint; ``institution_daily`` rows reach them as outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from monitor.engine import Engine
    from monitor.sinks import Sink


class SinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    data_dir: Path = Path("var")
    store: str | None = None
    store_password: SecretStr | None = None
    case_webhook_url: str | None = None
    case_webhook_token: SecretStr | None = None
    metrics_port: int | None = None

    def store_dsn(self) -> str | None:
        """The effective DSN (``None`` when disabled with ``none``)."""
        from monitor.sinks.clickhouse import default_dsn

        if self.store is None or self.store == "":
            return default_dsn(self.data_dir)
        return None if self.store.lower() == "none" else self.store


def build_sinks(settings: SinkSettings, registry: CollectorRegistry | None = None) -> list[Sink]:
    """ClickHouse (unless disabled), the case system (when its URL is set) and, with a registry, the
    Prometheus metrics sink — all sharing the same ``Metrics`` on ``registry``."""
    from monitor.metrics import Metrics, MetricsSink
    from monitor.sinks.casesystem import CaseSystemSink
    from monitor.sinks.clickhouse import ClickHouseSink

    metrics = Metrics(registry) if registry is not None else None
    sinks: list[Any] = []
    if metrics is not None:
        sinks.append(MetricsSink(metrics))
    dsn = settings.store_dsn()
    if dsn is not None:
        password = settings.store_password.get_secret_value() if settings.store_password else None
        sinks.append(ClickHouseSink(dsn, settings.data_dir, password=password, metrics=metrics))
    if settings.case_webhook_url:
        sinks.append(CaseSystemSink(settings.case_webhook_url, settings.data_dir,
                                    token=settings.case_webhook_token, metrics=metrics))
    return sinks


def bind_all(sinks: Sequence[object], engine: Engine) -> None:
    for sink in sinks:
        bind = getattr(sink, "bind", None)
        if bind is not None:
            bind(engine)

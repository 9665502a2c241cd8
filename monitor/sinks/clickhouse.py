"""ClickHouse sink: ``alerts``, ``tickets`` and ``institution_daily`` (design §4), through clickhouse-connect
only — embedded chDB (``chdb://PATH``, the default, under ``MONITOR_DATA_DIR``) or a server
(``http://[user[:password]@]host:8123[/database]``, ``https://…:8443``) on the same code path.

Construction (both shells)::

    sink = ClickHouseSink(dsn, buffer_dir, password=None, metrics=None)
    sink.bind(engine)          # the registry the engine saw (the institutions table)
    ... sink.write(outputs, dead); sink.flush(); sink.close()

Settings: ``MONITOR_STORE`` (the DSN; default ``chdb://$MONITOR_DATA_DIR/clickhouse``) and
``MONITOR_STORE_PASSWORD`` (a secret; overrides a password in the DSN). The DSN is only ever logged
redacted (``redact``).

Contract
--------
* **Schema** is created at start-up and migrated idempotently (``CREATE … IF NOT EXISTS``, then
  ``ADD COLUMN IF NOT EXISTS`` for columns a newer version added). Tables are ReplacingMergeTree
  ordered by their id (``alert_id``; ``ticket_id``; ``fixmedins_code, day`` with a ``version``), so
  re-inserting the same ids leaves one row per id after merges or ``FINAL``.
* **Batches**: ``write`` buffers rows in memory and moves them to the durable buffer and on to
  ClickHouse every ``batch_rows`` rows or ``max_delay_s`` seconds; ``flush`` does it now.
* **Durability**: ``flush`` returns once every row written so far is on local disk (an SQLite outbox
  under ``buffer_dir``) — the Kafka shell acknowledges input only after it. Rows leave that buffer only
  after ClickHouse accepted their insert; while ClickHouse is down, inserts fail, are counted
  (``monitor_sink_failures_total{sink="clickhouse"}``) and retried on the next batch, flush or restart:
  an outage loses nothing, and a retried insert only re-inserts ids that de-duplicate.
* ``institution_daily`` rows are the engine's ``InstitutionDay`` outputs (``monitor.detectors.daily``),
  written like alerts; each (``fixmedins_code``, ``day``) keeps its highest ``version``.
* **No personal data**: rows carry institution, rule, ticket and record ids; evidence is what the
  detectors put in alerts (pseudonymised by them).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse, urlunparse

from monitor.outputs import Alert, DeadLetter, InstitutionDay, Ticket
from monitor.records import Institution
from monitor.sinks.daily import DAILY_COLUMNS, daily_row
from monitor.sinks.outbox import Outbox

if TYPE_CHECKING:
    from datetime import datetime

    from monitor.engine import Engine, Registry
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)

DATABASE = "monitor"
SINK = "clickhouse"

_TS = "DateTime64(3, 'Asia/Shanghai')"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    engine: str
    order_by: str
    partition_by: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def create_sql(self, database: str) -> str:
        cols = ",\n  ".join(f"{c} {t}" for c, t in self.columns)
        part = f"\nPARTITION BY {self.partition_by}" if self.partition_by else ""
        return (f"CREATE TABLE IF NOT EXISTS {database}.{self.name} (\n  {cols}\n) ENGINE = {self.engine}"
                f"{part}\nORDER BY ({self.order_by})")


ALERTS = Table(
    "alerts",
    (
        ("alert_id", "String"), ("rule_id", "LowCardinality(String)"), ("fixmedins_code", "String"),
        ("admdvs", "LowCardinality(String)"), ("severity", "LowCardinality(String)"),
        ("window_start", _TS), ("window_end", _TS), ("detected_at", _TS), ("day", "Date"),
        ("basis", "String"), ("policy", "LowCardinality(String)"), ("rule_name", "String"),
        ("vola_cont", "String"), ("vola_amt", "Decimal(18, 2)"), ("sev_deg", "LowCardinality(String)"),
        ("vola_evid", "String"), ("vola_bhvr_type", "LowCardinality(String)"), ("evidence", "String"),
    ),
    engine="ReplacingMergeTree",
    order_by="fixmedins_code, alert_id",
    partition_by="toYYYYMM(day)",
)

TICKETS = Table(
    "tickets",
    (
        ("ticket_id", "String"), ("fixmedins_code", "String"), ("admdvs", "LowCardinality(String)"),
        ("action", "LowCardinality(String)"), ("issued_at", _TS), ("effective_from", "Date"),
        ("effective_until", "Nullable(Date)"), ("rectify_by", "Nullable(Date)"),
        ("reapply_after", "Nullable(Date)"), ("requires_verification", "Bool"),
        ("ladder", "LowCardinality(String)"), ("rule_ids", "Array(String)"), ("alert_ids", "Array(String)"),
        ("basis", "Array(String)"), ("policy", "LowCardinality(String)"), ("summary_zh", "String"),
        ("summary_en", "String"), ("ref_ticket_id", "Nullable(String)"), ("reason", "Nullable(String)"),
    ),
    engine="ReplacingMergeTree",
    order_by="fixmedins_code, ticket_id",
)

_DAILY_TYPES: dict[str, str] = {
    "fixmedins_code": "String", "day": "Date", "admdvs": "LowCardinality(String)",
    "lag_p50_s": "Float64", "lag_p90_s": "Float64", "lag_p99_s": "Float64", "lag_max_s": "Float64",
    "completeness": "Nullable(Float64)", "trace_packs": "Decimal(18, 3)",
    "trace_coverage": "Nullable(Float64)", "rx_coverage": "Nullable(Float64)",
    "dual_price_overcharge": "Decimal(18, 2)", "version": "UInt64",
}

INSTITUTION_DAILY = Table(
    "institution_daily",
    tuple((c, _DAILY_TYPES.get(c, "UInt32")) for c in DAILY_COLUMNS),
    engine="ReplacingMergeTree(version)",
    order_by="fixmedins_code, day",
    partition_by="toYYYYMM(day)",
)

#: The registry (design §3 ``medins.institutions``) as the engine last saw it, for inspectors' case files
#: (``monitor.inspect``: name, type, region, tier, agreement term); the latest ``valid_from`` wins.
INSTITUTIONS = Table(
    "institutions",
    (
        ("fixmedins_code", "String"), ("fixmedins_name", "String"), ("fixmedins_type", "LowCardinality(String)"),
        ("admdvs", "LowCardinality(String)"), ("outpatient_pooling", "Bool"), ("agreement_start", "Date"),
        ("agreement_end", "Date"), ("designated_since", "Date"), ("tier", "Nullable(String)"),
        ("tier_scheme", "Nullable(String)"), ("valid_from", _TS), ("version", "UInt64"),
    ),
    engine="ReplacingMergeTree(version)",
    order_by="fixmedins_code",
)

TABLES: tuple[Table, ...] = (ALERTS, TICKETS, INSTITUTION_DAILY, INSTITUTIONS)
_BY_NAME = {t.name: t for t in TABLES}


def schema_sql(database: str = DATABASE) -> list[str]:
    """The DDL the sink runs at start-up (also written to ``deploy/clickhouse/schema.sql``)."""
    return [f"CREATE DATABASE IF NOT EXISTS {database}", *(t.create_sql(database) for t in TABLES)]


def default_dsn(data_dir: Path) -> str:
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for logs and messages)."""
    parts = urlparse(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunparse(parts._replace(netloc=netloc))


def connect(dsn: str, password: str | None = None) -> tuple[Any, str]:
    """A clickhouse-connect client and the database name for ``dsn``.

    ``chdb://PATH`` (absolute or relative; ``chdb:///abs`` too) opens embedded chDB on disk; the database
    is ``monitor``. ``http(s)://…`` connects to a server; the database is the DSN path or ``monitor``.
    """
    import clickhouse_connect

    parts = urlparse(dsn)
    if parts.scheme == "chdb":
        location = dsn[len("chdb://"):]
        if location in ("memory", ":memory:"):
            return clickhouse_connect.get_client(dsn="chdb://memory"), DATABASE
        return clickhouse_connect.get_client(dsn=f"chdb://{Path(location).resolve()}"), DATABASE
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"store DSN must be chdb://PATH or http(s)://host:port, not {redact(dsn)!r}")
    database = parts.path.strip("/") or DATABASE
    client = clickhouse_connect.get_client(
        host=parts.hostname or "localhost",
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=unquote(parts.username) if parts.username else "default",
        password=password if password is not None else unquote(parts.password or ""),
        secure=parts.scheme == "https",
        connect_timeout=5,
        send_receive_timeout=30,
    )
    return client, database


def ensure_schema(client: Any, database: str) -> None:
    """Create missing database/tables and add missing columns (idempotent)."""
    for stmt in schema_sql(database):
        client.command(stmt)
    for table in TABLES:
        have = {r[0] for r in client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": database, "t": table.name}).result_rows}
        for col, ctype in table.columns:
            if col not in have:
                client.command(f"ALTER TABLE {database}.{table.name} ADD COLUMN IF NOT EXISTS {col} {ctype}")


def _none(value: str | None) -> str:
    return value or ""


def alert_row(a: Alert) -> tuple[Any, ...]:
    evidence = json.dumps(a.evidence, ensure_ascii=False, sort_keys=True, default=str)
    return (a.alert_id, a.rule_id, a.fixmedins_code, _none(a.admdvs), a.severity, a.window_start,
            a.window_end, a.detected_at, a.window_start.date(), a.basis, a.policy, a.rule_name,
            a.vola_cont, a.vola_amt, a.sev_deg, a.vola_evid, a.vola_bhvr_type, evidence)


def institution_row(inst: Institution) -> tuple[Any, ...]:
    return (inst.fixmedins_code, inst.fixmedins_name, inst.fixmedins_type, inst.admdvs, inst.outpatient_pooling,
            inst.agreement_start, inst.agreement_end, inst.designated_since, inst.tier, inst.tier_scheme,
            inst.valid_from, int(inst.valid_from.timestamp() * 1000))


def ticket_row(t: Ticket) -> tuple[Any, ...]:
    return (t.ticket_id, t.fixmedins_code, _none(t.admdvs), t.action, t.issued_at, t.effective_from,
            t.effective_until, t.rectify_by, t.reapply_after, t.requires_verification, t.ladder,
            list(t.rule_ids), list(t.alert_ids), list(t.basis), t.policy, t.summary.zh, t.summary.en,
            t.ref_ticket_id, t.reason)


class ClickHouseSink:
    """See the module docstring. ``client_factory`` replaces ``connect(dsn, password)`` in tests."""

    def __init__(
        self,
        dsn: str,
        buffer_dir: Path,
        *,
        password: str | None = None,
        batch_rows: int = 5000,
        max_delay_s: float = 5.0,
        metrics: Metrics | None = None,
        client_factory: Callable[[], tuple[Any, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dsn = dsn
        self._factory = client_factory or (lambda: connect(dsn, password))
        self.buffer = Outbox(buffer_dir / "clickhouse-buffer.sqlite")
        self.batch_rows = batch_rows
        self.max_delay_s = max_delay_s
        self.metrics = metrics
        self._clock = clock
        self._last = clock()
        self._client: Any = None
        self._database = DATABASE
        self._pending: list[tuple[str, bool, bytes]] = []  # (key, replace, payload)
        self._registry: Registry | None = None
        self._registry_sent: dict[str, datetime] = {}  # code -> valid_from already buffered
        self.failures = 0
        self.last_error: str | None = None
        self._streak = 0
        self._retry_at = 0.0  # after a failure, batches only go to the local buffer until then
        self._report_pending()

    # ------------------------------------------------------------------------------------ Sink
    def bind(self, engine: Engine) -> None:
        """Read the engine's registry (the ``institutions`` table); nothing is attached to the engine."""
        self._registry = engine.registry

    def write(self, outputs: Sequence[Alert | Ticket | InstitutionDay], dead: Sequence[DeadLetter]) -> None:
        for item in outputs:
            if isinstance(item, Alert):
                self._pending.append((f"alerts:{item.alert_id}", False,
                                      pickle.dumps(("alerts", alert_row(item)))))
            elif isinstance(item, Ticket):
                self._pending.append((f"tickets:{item.ticket_id}", False,
                                      pickle.dumps(("tickets", ticket_row(item)))))
            else:  # the newest version of a day replaces an older one still buffered
                self._pending.append((f"daily:{item.fixmedins_code}:{item.day.isoformat()}", True,
                                      pickle.dumps(("institution_daily", daily_row(item)))))
        if len(self._pending) >= self.batch_rows or self._clock() - self._last >= self.max_delay_s:
            self._store()

    def flush(self) -> None:
        """Return once every row written so far is durable (locally at least); try ClickHouse."""
        self._store()

    def close(self) -> None:
        """Flush and make one last delivery attempt; what fails stays buffered for the next start."""
        try:
            self.flush()
            if len(self.buffer) and self._clock() < self._retry_at:
                self.deliver()
        finally:
            self.buffer.close()
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------------------------ internals
    def _store(self) -> None:
        if self._registry is not None:  # registry entries new or changed since the last store
            for code, inst in self._registry.institutions.items():
                if self._registry_sent.get(code) != inst.valid_from:
                    self._registry_sent[code] = inst.valid_from
                    self._pending.append((f"institutions:{code}", True,
                                          pickle.dumps(("institutions", institution_row(inst)))))
        if self._pending:
            keep = [(k, p) for k, r, p in self._pending if not r]
            newer = [(k, p) for k, r, p in self._pending if r]
            self.buffer.put(keep)
            self.buffer.put(newer, replace=True)
            self._pending = []
        self._last = self._clock()
        if self._last >= self._retry_at:
            self.deliver()

    def deliver(self) -> bool:
        """Insert everything buffered; ``True`` when the buffer is empty afterwards. After a failure
        the next automatic attempt waits ``min(60, 2**failures)`` seconds (exponential backoff), so an
        outage does not cost a connect timeout per batch; ``deliver()`` itself always tries."""
        while True:
            entries = self.buffer.due(limit=max(self.batch_rows, 1))
            if not entries:
                self._report_pending()
                return True
            by_table: dict[str, list[tuple[Any, ...]]] = {}
            for e in entries:
                table, row = pickle.loads(e.payload)
                by_table.setdefault(table, []).append(row)
            try:
                client = self._connected()
                for table, rows in by_table.items():
                    spec = _BY_NAME[table]
                    client.insert(f"{self._database}.{table}", rows, column_names=spec.column_names)
            except Exception as exc:  # any failure of the store: keep the rows, retry later
                self._failed(exc)
                return False
            self.buffer.remove([e.key for e in entries])
            self._streak = 0
            if self.metrics is not None:
                self.metrics.sink_rows.labels(SINK).inc(len(entries))

    def _connected(self) -> Any:
        if self._client is None:
            client, database = self._factory()
            ensure_schema(client, database)
            self._client, self._database = client, database
        return self._client

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._streak += 1
        self._retry_at = self._clock() + min(60.0, 2.0 ** self._streak)
        # the message names the store redacted; exception texts of clickhouse-connect carry no password
        self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning("clickhouse write failed (%s); %d rows kept in the local buffer for retry: %s",
                    redact(self.dsn), len(self.buffer), self.last_error)
        if self.metrics is not None:
            self.metrics.sink_failures.labels(SINK).inc()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection may fail too; the rows are safe
                log.debug("closing the failed clickhouse client raised", exc_info=True)
        self._report_pending()

    def _report_pending(self) -> None:
        if self.metrics is not None:
            self.metrics.sink_pending.labels(SINK).set(len(self.buffer))


def query_flagged(client: Any, database: str, since: date | None, region: str | None) -> list[dict[str, Any]]:
    """Institutions with alerts or tickets since ``since`` (optionally in one ``admdvs``), most critical
    first — the inspectors' worklist behind ``monitor query flagged``."""
    params: dict[str, Any] = {"since": since or date(1970, 1, 1), "region": region or ""}
    region_sql = "AND admdvs = {region:String}" if region else ""
    alerts = client.query(
        f"SELECT fixmedins_code, any(admdvs), count(), countIf(severity = 'critical'),"
        f" arraySort(groupUniqArray(rule_id)), max(detected_at)"
        f" FROM {database}.alerts FINAL WHERE day >= {{since:Date}} {region_sql}"
        f" GROUP BY fixmedins_code", parameters=params).result_rows
    tickets = client.query(
        f"SELECT fixmedins_code, any(admdvs), count(), arraySort(groupUniqArray(action))"
        f" FROM {database}.tickets FINAL WHERE effective_from >= {{since:Date}} {region_sql}"
        f" GROUP BY fixmedins_code", parameters=params).result_rows
    out: dict[str, dict[str, Any]] = {}
    for code, adm, n, crit, rules, last in alerts:
        out[code] = {"fixmedins_code": code, "admdvs": adm, "alerts": n, "critical": crit,
                     "rules": list(rules), "last_detected": last.isoformat(), "tickets": 0, "actions": []}
    for code, adm, n, actions in tickets:
        row = out.setdefault(code, {"fixmedins_code": code, "admdvs": adm, "alerts": 0, "critical": 0,
                                    "rules": [], "last_detected": None})
        row["tickets"], row["actions"] = n, list(actions)
    return sorted(out.values(), key=lambda r: (-r["critical"], -r["tickets"], -r["alerts"], r["fixmedins_code"]))

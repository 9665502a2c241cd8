"""Case-file stores: where ``monitor inspect`` and ``monitor serve`` read what the monitor wrote.

``open_store(dsn)`` picks the implementation from the DSN:

* ``chdb://PATH`` (the embedded default, the store ``monitor replay``/``monitor demo`` write) or
  ``http(s)://[user[:password]@]host:port[/database]`` — ``ClickHouseStore`` over the tables of
  ``monitor.sinks.clickhouse`` (``alerts``, ``tickets``, ``institution_daily``) plus the registry table
  ``institutions`` (written by the ClickHouse sink from the engine's registry);
* a folder (``PATH`` or ``file://PATH``) — ``FileStore`` over a replay's ``alerts.jsonl``,
  ``tickets.jsonl`` and ``institution_daily.jsonl`` (newest version per day); the registry is that
  folder's ``institutions.jsonl`` or the ``registry`` file given (a replay's input ``institutions.jsonl``).

Every store is read-only: it issues ``SELECT`` only (the web pages change nothing; verification flows
back as findings through ``medins.findings``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from monitor.clock import CST
from monitor.inspect.model import MemoryStore, RuleTally
from monitor.outputs import Alert, InstitutionDay, Summary, Ticket
from monitor.records import Institution, parse_value

# ------------------------------------------------------------------------------------------ files


def read_registry(path: Path) -> list[Institution]:
    """Institutions of an ``institutions.jsonl`` file (invalid lines are skipped: the replay
    dead-letters them; a case file shows what the monitor accepted)."""
    out: list[Institution] = []
    if not path.exists():
        return out
    with path.open("rb") as fh:
        for raw in fh:
            raw = raw.strip()
            if raw:
                out.extend(r for r in parse_value("institutions", raw) if isinstance(r, Institution))
    return out


def _read_models(path: Path, model: type[Alert] | type[Ticket] | type[InstitutionDay]) -> list[Any]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [model.model_validate_json(line) for line in fh if line.strip()]


def read_daily(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``institution_daily.jsonl`` as the ClickHouse table reads with ``FINAL``: the newest ``version`` of
    each institution-day, by institution, oldest day first (columns without ``version``)."""
    newest: dict[str, InstitutionDay] = {}
    for item in _read_models(path, InstitutionDay):
        have = newest.get(item.day_id)
        if have is None or item.version >= have.version:
            newest[item.day_id] = item
    out: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(newest.values(), key=lambda i: (i.fixmedins_code, i.day)):
        out.setdefault(item.fixmedins_code, []).append(item.model_dump(exclude={"day_id", "version"}))
    return out


class FileStore(MemoryStore):
    """A replay output folder (``alerts.jsonl``, ``tickets.jsonl``, ``institution_daily.jsonl``) read once
    at open."""

    def __init__(self, out_dir: Path, registry: Path | None = None) -> None:
        reg = registry if registry is not None else out_dir / "institutions.jsonl"
        super().__init__(_read_models(out_dir / "alerts.jsonl", Alert),
                         _read_models(out_dir / "tickets.jsonl", Ticket), read_registry(reg),
                         read_daily(out_dir / "institution_daily.jsonl"))


# ------------------------------------------------------------------------------------------ ClickHouse
HORIZON_MEMO_S = 1.0


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=CST)
    return value


class ClickHouseStore:
    """A ``CaseStore`` over the ClickHouse tables (embedded chDB or a server), read with ``FINAL`` so
    rows not yet merged are de-duplicated on their ids. Queries are parameterized (never formatted
    from user input)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._tables = self._existing_tables()
        self._horizon_memo: tuple[float, datetime | None] | None = None
        self._registry_memo: tuple[float, Mapping[str, Institution]] | None = None

    @classmethod
    def open(cls, dsn: str, password: str | None = None) -> ClickHouseStore:
        from monitor.sinks.clickhouse import connect

        client, database = connect(dsn, password)
        return cls(client, database)

    def close(self) -> None:
        self.client.close()

    def _existing_tables(self) -> set[str]:
        rows = self.client.query("SELECT name FROM system.tables WHERE database = {db:String}",
                                 parameters={"db": self.database}).result_rows
        return {r[0] for r in rows}

    def _has(self, table: str) -> bool:
        if table not in self._tables:
            self._tables = self._existing_tables()  # a store that was empty at open may have filled
        return table in self._tables

    def _select(self, table: str, columns: Sequence[str], code: str | None,
                page: tuple[int, int] | None = None, order: str = "") -> list[dict[str, Any]]:
        """Rows of ``table`` (of ``code``); ``page`` = (offset, limit) in ``order`` (bounded reads)."""
        if not self._has(table):
            return []
        where = " WHERE fixmedins_code = {code:String}" if code is not None else ""
        tail = ""
        if page is not None:
            tail = f" ORDER BY {order} LIMIT {page[1]:d} OFFSET {page[0]:d}"
        res = self.client.query(f"SELECT {', '.join(columns)} FROM {self.database}.{table} FINAL{where}{tail}",
                                parameters={"code": code} if code is not None else None)
        return [dict(zip(columns, (_aware(v) for v in row), strict=True)) for row in res.result_rows]

    def alert_tallies(self, code: str | None = None, since: datetime | None = None,
                      until: datetime | None = None) -> Sequence[RuleTally]:
        """One GROUP BY over ``alerts`` (the list never reads alert rows)."""
        if not self._has("alerts"):
            return []
        conds: list[str] = []
        params: dict[str, Any] = {}
        if code is not None:
            conds.append("fixmedins_code = {code:String}")
            params["code"] = code
        if since is not None:
            conds.append("detected_at >= fromUnixTimestamp64Milli({since:Int64})")
            params["since"] = int(since.timestamp() * 1000)
        if until is not None:
            conds.append("detected_at < fromUnixTimestamp64Milli({until:Int64})")
            params["until"] = int(until.timestamp() * 1000)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        res = self.client.query(
            "SELECT fixmedins_code, rule_id, any(admdvs), count(), "
            "max(multiIf(severity = 'critical', 2, severity = 'warning', 1, 0)), sum(vola_amt), "
            f"min(detected_at), max(detected_at) FROM {self.database}.alerts FINAL{where} "
            "GROUP BY fixmedins_code, rule_id ORDER BY fixmedins_code, rule_id", parameters=params or None)
        sev = ("info", "warning", "critical")
        return [RuleTally(c, r, adm or None, int(n), sev[int(rank)], Decimal(amt), _aware(first), _aware(last))
                for c, r, adm, n, rank, amt, first, last in res.result_rows]

    def alert_days(self, code: str) -> Sequence[tuple[str, date, int]]:
        if not self._has("alerts"):
            return []
        res = self.client.query(
            f"SELECT rule_id, day, count() FROM {self.database}.alerts FINAL WHERE fixmedins_code = {{code:String}} "
            "GROUP BY rule_id, day ORDER BY rule_id, day", parameters={"code": code})
        return [(r, d, int(n)) for r, d, n in res.result_rows]

    def horizon(self) -> datetime | None:
        """Latest ``detected_at``/``issued_at``; remembered for ``HORIZON_MEMO_S`` (a page asks more than once)."""
        now = time.monotonic()
        memo = self._horizon_memo
        if memo is not None and now - memo[0] < HORIZON_MEMO_S:
            return memo[1]
        value = self._read_horizon()
        self._horizon_memo = (now, value)
        return value

    def _read_horizon(self) -> datetime | None:
        times = []
        for table, column in (("alerts", "detected_at"), ("tickets", "issued_at")):
            if self._has(table):
                res = self.client.query(f"SELECT count(), max({column}) FROM {self.database}.{table}")
                n, latest = res.result_rows[0]
                if n:
                    times.append(_aware(latest))
        return max(times) if times else None

    def institutions(self) -> Mapping[str, Institution]:
        """The registry (latest ``valid_from`` per code); remembered for ``HORIZON_MEMO_S`` like the horizon."""
        now = time.monotonic()
        memo = self._registry_memo
        if memo is not None and now - memo[0] < HORIZON_MEMO_S:
            return memo[1]
        value = self._read_institutions()
        self._registry_memo = (now, value)
        return value

    def _read_institutions(self) -> Mapping[str, Institution]:
        from monitor.sinks.clickhouse import INSTITUTIONS

        cols = [c for c in INSTITUTIONS.column_names if c != "version"]
        out: dict[str, Institution] = {}
        for row in self._select("institutions", cols, None):
            inst = Institution.model_validate(row)
            old = out.get(inst.fixmedins_code)
            if old is None or inst.valid_from >= old.valid_from:
                out[inst.fixmedins_code] = inst
        return out

    def alerts(self, code: str | None = None, offset: int = 0, limit: int | None = None) -> Sequence[Alert]:
        from monitor.sinks.clickhouse import ALERTS

        cols = [c for c in ALERTS.column_names if c != "day"]
        out = []
        page = None if limit is None else (max(0, int(offset)), max(0, int(limit)))
        for row in self._select("alerts", cols, code, page=page, order="detected_at, alert_id"):
            row["evidence"] = json.loads(row["evidence"] or "{}")
            row["jr_id"] = row["alert_id"]
            row["admdvs"] = row["admdvs"] or None
            out.append(Alert.model_validate(row))
        return out

    def tickets(self, code: str | None = None) -> Sequence[Ticket]:
        """Every ticket (of ``code``): state and deadlines need them all; tickets are few per institution."""
        from monitor.sinks.clickhouse import TICKETS

        out = []
        for row in self._select("tickets", TICKETS.column_names, code):
            row["summary"] = Summary(zh=row.pop("summary_zh"), en=row.pop("summary_en"))
            row["admdvs"] = row["admdvs"] or None
            out.append(Ticket.model_validate(row))
        return out

    def daily(self, code: str) -> Sequence[Mapping[str, Any]]:
        from monitor.sinks.clickhouse import INSTITUTION_DAILY

        cols = [c for c in INSTITUTION_DAILY.column_names if c != "version"]
        rows = self._select("institution_daily", cols, code)
        return sorted(rows, key=lambda r: r["day"])


def open_store(dsn: str, registry: Path | None = None, password: str | None = None) -> Any:
    """A ``CaseStore`` for ``dsn`` (see the module docstring)."""
    if dsn.startswith(("chdb://", "http://", "https://")):
        return ClickHouseStore.open(dsn, password)
    path = Path(dsn[len("file://"):] if dsn.startswith("file://") else dsn)
    if not path.is_dir():
        raise ValueError(f"store {dsn!r} is neither chdb://PATH, http(s)://host:port nor a replay output folder")
    return FileStore(path, registry)

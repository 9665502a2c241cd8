"""ClickHouse sink against embedded chDB (design §4): rows land, ids de-duplicate after FINAL, an outage
loses nothing, the schema is created and migrated idempotently, and ``monitor query flagged`` reads it."""

from __future__ import annotations

import json
import socket
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.clock import CST
from monitor.metrics import Metrics
from monitor.outputs import Alert, Summary, Ticket
from monitor.sinks.clickhouse import (
    ALERTS,
    ClickHouseSink,
    connect,
    ensure_schema,
    redact,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CST)


def alert(n: int, code: str = "P42070200001", severity: str = "warning", rule: str = "upload.late",
          admdvs: str = "420702", amt: str = "0") -> Alert:
    return Alert(
        alert_id=f"AL-{n:04d}", rule_id=rule, fixmedins_code=code, admdvs=admdvs, severity=severity,  # type: ignore[arg-type]
        window_start=at("2026-01-05 00:00:00"), window_end=at("2026-01-06 00:00:00"),
        detected_at=at("2026-01-07 00:00:00"), evidence={"late": n, "sample_records": ["setl_id=S1"]},
        basis="EZ-DM 二(一)", policy="ezhou@1", jr_id=f"AL-{n:04d}", rule_name="迟传", vola_cont="迟传",
        vola_amt=Decimal(amt), sev_deg="2", vola_evid="EZ-DM 二(一)", vola_bhvr_type="data",
    )


def ticket(n: int, code: str = "P42070200001", action: str = "SUSPEND_OUTPATIENT_POOLING") -> Ticket:
    return Ticket(
        ticket_id=f"TK-{n:04d}", fixmedins_code=code, admdvs="420702", action=action,  # type: ignore[arg-type]
        issued_at=at("2026-01-07 00:00:00"), effective_from=date(2026, 1, 8), effective_until=date(2026, 2, 8),
        ladder="realtime", rule_ids=["upload.not_realtime"], alert_ids=["AL-0001"], basis=["EZ-DM 二(一)"],
        policy="ezhou@1", summary=Summary(zh="中止门诊统筹 1 个月", en="suspend outpatient pooling 1 month"),
    )


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    client, db = connect(dsn)
    try:
        return list(client.query(sql.format(db=db)).result_rows)
    finally:
        client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Outage:
    """A client factory whose store is down for the first ``down`` connection attempts."""

    def __init__(self, dsn: str, down: int) -> None:
        self.dsn, self.down, self.calls = dsn, down, 0

    def __call__(self) -> tuple[Any, str]:
        self.calls += 1
        if self.calls <= self.down:
            raise ConnectionRefusedError("store down (simulated)")
        return connect(self.dsn)


def test_rows_land_and_same_ids_leave_one_row_after_final(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    sink = ClickHouseSink(dsn, tmp_path)
    sink.write([alert(1), alert(2, amt="12.34"), ticket(1)], [])
    sink.flush()
    sink.write([alert(1), ticket(1)], [])  # a redelivered input re-produces the same ids
    sink.close()
    again = ClickHouseSink(dsn, tmp_path)  # a replay from scratch
    again.write([alert(1), alert(2, amt="12.34"), ticket(1)], [])
    again.close()

    got = rows(dsn, "SELECT alert_id, fixmedins_code, admdvs, day, vola_amt, evidence FROM {db}.alerts FINAL "
                    "ORDER BY alert_id")
    assert got == [
        ("AL-0001", "P42070200001", "420702", date(2026, 1, 5), Decimal("0.00"),
         '{"late": 1, "sample_records": ["setl_id=S1"]}'),
        ("AL-0002", "P42070200001", "420702", date(2026, 1, 5), Decimal("12.34"),
         '{"late": 2, "sample_records": ["setl_id=S1"]}'),
    ]
    assert rows(dsn, "SELECT ticket_id, action, effective_from, effective_until, rule_ids, summary_en "
                     "FROM {db}.tickets FINAL") == [
        ("TK-0001", "SUSPEND_OUTPATIENT_POOLING", date(2026, 1, 8), date(2026, 2, 8), ["upload.not_realtime"],
         "suspend outpatient pooling 1 month")]
    assert rows(dsn, "SELECT count() FROM {db}.alerts FINAL") == [(2,)]


def test_simulated_outage_loses_nothing_and_survives_a_restart(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    reg = CollectorRegistry()
    outage = Outage(dsn, down=2)
    sink = ClickHouseSink(dsn, tmp_path, client_factory=outage, metrics=Metrics(reg), batch_rows=2)
    sink.write([alert(1), alert(2), alert(3)], [])  # 3 ≥ batch_rows: attempt 1 fails
    sink.flush()  # within the backoff: kept locally, durable
    assert len(sink.buffer) == 3 and outage.calls == 1
    assert reg.get_sample_value("monitor_sink_failures_total", {"sink": "clickhouse"}) == 1.0
    assert reg.get_sample_value("monitor_sink_pending", {"sink": "clickhouse"}) == 3.0
    assert sink.deliver() is False  # attempt 2: still down
    sink.buffer.close()  # the process dies with the rows buffered

    restarted = ClickHouseSink(dsn, tmp_path, client_factory=outage, metrics=Metrics(CollectorRegistry()))
    assert len(restarted.buffer) == 3
    restarted.write([alert(4), ticket(1)], [])
    restarted.close()  # attempt 3: the store is back
    assert rows(dsn, "SELECT alert_id FROM {db}.alerts FINAL ORDER BY alert_id") == [
        ("AL-0001",), ("AL-0002",), ("AL-0003",), ("AL-0004",)]
    assert rows(dsn, "SELECT ticket_id FROM {db}.tickets FINAL") == [("TK-0001",)]


def test_unreachable_server_keeps_rows_buffered_and_hides_the_password(tmp_path: Path) -> None:
    dsn = f"http://monitor:s3cret@127.0.0.1:{closed_port()}"
    sink = ClickHouseSink(dsn, tmp_path)
    sink.write([alert(1), ticket(1)], [])
    sink.flush()
    assert len(sink.buffer) == 2 and sink.failures == 1
    assert "s3cret" not in (sink.last_error or "")
    assert redact(dsn) == dsn.replace("s3cret", "***")
    sink.buffer.close()


def test_schema_is_created_and_migrated_idempotently(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    client, db = connect(dsn)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        # an older version of the table, without the later columns
        client.command(f"CREATE TABLE {db}.alerts (alert_id String, rule_id String, fixmedins_code String, "
                       f"day Date) ENGINE = ReplacingMergeTree ORDER BY (fixmedins_code, alert_id)")
        ensure_schema(client, db)
        ensure_schema(client, db)
        cols = [r[0] for r in client.query(
            f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'alerts'").result_rows]
        engines = dict(client.query(f"SELECT name, engine FROM system.tables WHERE database = '{db}'").result_rows)
    finally:
        client.close()
    assert sorted(cols) == sorted(ALERTS.column_names)
    assert engines == {"alerts": "ReplacingMergeTree", "tickets": "ReplacingMergeTree",
                       "institution_daily": "ReplacingMergeTree", "institutions": "ReplacingMergeTree"}


def test_query_flagged_lists_institutions_most_critical_first(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    sink = ClickHouseSink(dsn, tmp_path)
    sink.write([alert(1, code="P1"), alert(2, code="P2", severity="critical", rule="trace.duplicate"),
                alert(3, code="P2"), alert(4, code="P3", admdvs="420703"), ticket(1, code="P1")], [])
    sink.close()
    assert main(["query", "flagged", "--store", dsn, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["fixmedins_code"], r["alerts"], r["critical"], r["tickets"]) for r in lines] == [
        ("P2", 2, 1, 0), ("P1", 1, 0, 1), ("P3", 1, 0, 0)]
    assert lines[0]["rules"] == ["trace.duplicate", "upload.late"]
    assert lines[1]["actions"] == ["SUSPEND_OUTPATIENT_POOLING"]
    assert main(["query", "flagged", "--store", dsn, "--json", "--region", "420703"]) == 0
    assert [json.loads(x)["fixmedins_code"] for x in capsys.readouterr().out.splitlines()] == ["P3"]
    assert main(["query", "flagged", "--store", dsn, "--json", "--since", "2026-02-01"]) == 0
    assert capsys.readouterr().out == ""

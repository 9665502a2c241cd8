"""Prometheus metrics (design §4) on a fresh CollectorRegistry, and the institution-day facts that the
ClickHouse ``institution_daily`` table receives, from one hand-made replay whose figures are derived by
hand below."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from builders import PHARMACY, alert, institution, sale, settlement, write_jsonl
from prometheus_client import CollectorRegistry

from monitor.clock import CST
from monitor.detectors.daily import nearest_rank
from monitor.metrics import LAG_BUCKETS, METRIC_SPECS, Metrics, MetricsSink, stream_of
from monitor.outputs import DeadLetter
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.sinks.clickhouse import ClickHouseSink, connect
from monitor.sinks.daily import DAILY_COLUMNS

#: The contract: renaming a metric or a label breaks dashboards and alert rules — do it deliberately.
PINNED = {
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
ALLOWED_LABELS = {"region", "stream", "rule", "action", "sink"}


def test_metric_names_and_label_sets_are_pinned() -> None:
    assert METRIC_SPECS == PINNED
    reg = CollectorRegistry()
    metrics = Metrics(reg)
    exposed = {fam.name: fam.type for fam in reg.collect()}
    assert exposed == {name: kind for name, (kind, _) in PINNED.items()}
    labels = {m._name: tuple(m._labelnames) for m in vars(metrics).values() if hasattr(m, "_labelnames")}
    assert labels == {name: lbl for name, (_, lbl) in PINNED.items()}
    assert set().union(*(set(lbl) for _, lbl in PINNED.values())) <= ALLOWED_LABELS
    assert LAG_BUCKETS[6] == 86400  # the EZ-DM 二(一) 24 h limit is a bucket edge


def test_dead_letter_sources_map_to_bounded_streams() -> None:
    assert [stream_of(s) for s in ("medins.settlements", "settlements.jsonl", "x/inventory.jsonl", "evil")] == [
        "settlements", "settlements", "inventory", "other"]


def test_outputs_and_dead_letters_are_counted_by_bounded_labels() -> None:
    reg = CollectorRegistry()
    sink = MetricsSink(Metrics(reg), clock=iter([0.0, 0.5, 0.75]).__next__)
    sink.write([alert("price.dual", "2026-01-05", "3.00"), alert("price.dual", "2026-01-06", "1.00")],
               [DeadLetter(source="medins.inventory", error="bad")])
    sink.write([], [DeadLetter(source="medins.inventory", error="bad")])
    g = reg.get_sample_value
    assert g("monitor_alerts_total", {"rule": "price.dual", "region": "420702"}) == 2.0
    assert g("monitor_outputs_total", {"stream": "alerts"}) == 2.0
    assert g("monitor_outputs_total", {"stream": "dlq"}) == 2.0
    assert g("monitor_dead_letters_total", {"stream": "inventory"}) == 2.0
    assert g("monitor_engine_batch_seconds_count", {}) == 2.0
    assert g("monitor_engine_batch_seconds_sum", {}) == 0.75
    assert g("monitor_sink_failures_total", {"sink": "clickhouse"}) == 0.0  # pre-initialised


def _hand_made_day(folder: Path) -> None:
    """Pharmacy P42070200001 (admdvs 420702), business day 2026-01-05."""
    write_jsonl(folder, "institutions", [institution()])
    line = {"feedetl_sn": "1", "med_list_codg": "A", "cnt": "2", "pric": "10.00", "rx_flag": "1", "trdn_flag": "0"}
    split = {"feedetl_sn": "2", "med_list_codg": "B", "cnt": "1", "pric": "5.00", "rx_flag": "0", "trdn_flag": "1"}
    write_jsonl(folder, "settlements", [
        # S1: lag 3600 s; lines A (2 whole packs, rx) and B (split pack); prescription RX1
        settlement("S1", "2026-01-05 09:00:00", "2026-01-05 10:00:00", drugdetail=[line, split], hi_rxno="RX1"),
        # duplicate resend of S1: counted as a duplicate, never twice
        settlement("S1", "2026-01-05 09:00:00", "2026-01-05 10:05:00", drugdetail=[line, split], hi_rxno="RX1"),
        # S3: no inf_time (arrives at its business time, lag 0); line C needs RX2, never uploaded
        settlement("S3", "2026-01-05 11:00:00", None, hi_rxno="RX2", drugdetail=[
            {"feedetl_sn": "1", "med_list_codg": "C", "cnt": "1", "pric": "8.00", "rx_flag": "1", "trdn_flag": "0"}]),
        # S2: 30 h late (108 000 s > 24 h); line A, 1 whole pack, no rx
        settlement("S2", "2026-01-05 10:00:00", "2026-01-06 16:00:00", drugdetail=[
            {"feedetl_sn": "1", "med_list_codg": "A", "cnt": "1", "pric": "10.00", "rx_flag": "0", "trdn_flag": "0"}]),
        b'{"setl_id": ',  # a dead letter
    ])
    write_jsonl(folder, "inventory", [
        sale("b1", "2026-01-05 09:00:00", "2026-01-05 09:30:00", med_list_codg="A", setl_id="S1",
             mdtrt_setl_type="1", cnt="2"),  # lag 1800
        sale("b1", "2026-01-05 10:00:00", None, med_list_codg="A", setl_id="S2", mdtrt_setl_type="1"),  # lag 0
    ])
    write_jsonl(folder, "tracecodes", [
        {"drug_trac_codg": f"8123456789012345678{i}", "fixmedins_code": PHARMACY, "med_list_codg": "A",
         "scan_kind": "sale", "trdn_flag": "0", "scan_time": "2026-01-05 09:00:00",
         "inf_time": "2026-01-05 09:10:00", "setl_id": "S1", "rtal_docno": "R1"} for i in (1, 2)  # lag 600
    ])
    write_jsonl(folder, "prescriptions", [
        {"hi_rxno": "RX1", "hosp_rxno": "H1", "fixmedins_code": "H42070200002", "psn_no": "42000011112222",
         "prsc_time": "2026-01-05 08:00:00", "valid_end_time": "2026-01-08 08:00:00", "rx_status": "uploaded",
         "inf_time": "2026-01-05 08:00:00",
         "rxdrugdetail": [{"med_list_codg": "A", "drug_cnt": "2", "medc_days": 7}]},
    ])


def test_replay_feeds_metrics_and_institution_daily(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    _hand_made_day(inp)
    reg = CollectorRegistry()
    store = ClickHouseSink(f"chdb://{tmp_path / 'ch'}", tmp_path)
    replay_dir(inp, tmp_path / "out", load_pack("ezhou"), as_of=datetime(2026, 1, 8, tzinfo=CST),
               extra_sinks=[MetricsSink(Metrics(reg)), store])

    g = reg.get_sample_value
    assert g("monitor_records_total", {"stream": "settlements", "region": "420702"}) == 3.0
    assert g("monitor_records_total", {"stream": "inventory", "region": "420702"}) == 2.0
    assert g("monitor_records_total", {"stream": "tracecodes", "region": "420702"}) == 2.0
    assert g("monitor_records_total", {"stream": "institutions", "region": "420702"}) == 1.0
    assert g("monitor_records_total", {"stream": "prescriptions", "region": "unknown"}) == 1.0  # issuer unknown
    assert g("monitor_records_duplicate_total", {"stream": "settlements"}) == 1.0
    assert g("monitor_dead_letters_total", {"stream": "settlements"}) == 1.0
    lag = {"stream": "settlements", "region": "420702"}
    assert g("monitor_upload_lag_seconds_count", lag) == 3.0
    assert g("monitor_upload_lag_seconds_sum", lag) == 3600 + 108000 + 0
    assert [g("monitor_upload_lag_seconds_bucket", {**lag, "le": le}) for le in ("60.0", "3600.0", "86400.0",
                                                                                  "172800.0")] == [1, 2, 2, 3]
    assert g("monitor_watermark_seconds", {}) == datetime(2026, 1, 8, tzinfo=CST).timestamp()

    client, db = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        got = client.query(f"SELECT {', '.join(DAILY_COLUMNS)} FROM {db}.institution_daily FINAL "
                           f"WHERE fixmedins_code = '{PHARMACY}'").result_rows
    finally:
        client.close()
    assert len(got) == 1
    row = dict(zip(DAILY_COLUMNS, got[0], strict=True))
    # lags of the day: settlements 3600, 108000, 0; sales 1800, 0; trace scans 600, 600
    # sorted [0, 0, 600, 600, 1800, 3600, 108000] → p50 = 4th = 600, p90 = p99 = 7th = 108000
    expected = {
        "fixmedins_code": PHARMACY, "day": date(2026, 1, 5), "admdvs": "420702",
        "records_settlements": 3, "records_inventory": 2, "records_tracecodes": 2, "records_prescriptions": 0,
        "late": 1, "lag_p50_s": 600.0, "lag_p90_s": 108000.0, "lag_p99_s": 108000.0, "lag_max_s": 108000.0,
        # lines (S1,A) (S1,B) (S2,A) (S3,C); completeness is the data.incomplete rule's number, judged at
        # day end + 72 h (2026-01-09 00:00), after this run's as_of: none yet (tests/test_detectors_daily.py)
        "settlement_lines": 4, "completeness": None,
        # whole packs: S1 A 2 + S2 A 1 + S3 C 1 = 4 (B is split); 2 sale codes for S1 → 0.5
        "trace_packs": Decimal("4.000"), "trace_codes": 2, "trace_coverage": 0.5,
        # S1 needs RX1 (uploaded), S3 needs RX2 (missing) → 1/2
        "rx_required": 2, "rx_coverage": 0.5, "dual_price_overcharge": Decimal("0.00"),
    }
    assert {k: row[k] for k in expected} == expected
    assert row["alerts"] >= 1  # at least upload.late for the day (other detectors may add theirs)


def test_nearest_rank_quantiles() -> None:
    assert [nearest_rank([1.0, 2.0, 3.0, 4.0], q) for q in (0.25, 0.5, 0.9, 1.0)] == [1.0, 2.0, 4.0, 4.0]
    assert nearest_rank([], 0.5) == 0.0


def test_every_dead_letter_stream_and_output_counter_starts_at_zero() -> None:
    from monitor.metrics import DEAD_LETTER_STREAMS
    from monitor.records import STREAMS

    assert DEAD_LETTER_STREAMS == (*STREAMS, "other")
    registry = CollectorRegistry()
    Metrics(registry)
    for stream in DEAD_LETTER_STREAMS:
        assert registry.get_sample_value("monitor_dead_letters_total", {"stream": stream}) == 0
    for stream in ("alerts", "tickets", "dlq"):
        assert registry.get_sample_value("monitor_outputs_total", {"stream": stream}) == 0


def _exposition_series(text: str) -> dict[str, float]:
    """``series → value`` of a Prometheus text exposition (counters' ``_total`` samples only)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "_total" not in line.split(" ", 1)[0].split("{", 1)[0]:
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def test_attack_first_burst_of_dead_letters_fires_MonitorDeadLetterRate(tmp_path: Path) -> None:
    """A producer starts sending the wrong format: from the first minute every input value is a dead
    letter and no valid record was ever counted. The series a real MetricsSink exposes minute by minute
    (scraped as text, absent samples as promtool's ``_``) go through the real alert rule with
    ``promtool test rules``: MonitorDeadLetterRate fires after its 10 minutes instead of evaluating to
    nothing (no dead-letter sample before the burst, no records series to divide by)."""
    import shutil
    import subprocess

    import yaml
    from prometheus_client import generate_latest

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is installed by deploy/ensure-tools.sh"
    registry = CollectorRegistry()
    sink = MetricsSink(Metrics(registry))
    scrapes = [_exposition_series(generate_latest(registry).decode())]  # the worker is up, nothing yet
    for minute in range(1, 31):
        letters = [DeadLetter(source="medins.settlements", partition=0, offset=minute * 100 + i, value="{oops",
                              error="not JSON") for i in range(40)]
        sink.write([], letters)
        scrapes.append(_exposition_series(generate_latest(registry).decode()))
    names = sorted({s for scrape in scrapes for s in scrape})
    series = [{"series": name, "values": " ".join(
        str(int(scrape[name])) if name in scrape else "_" for scrape in scrapes)} for name in names]
    rules = Path(__file__).resolve().parent.parent / "deploy/prometheus/rules/monitor.rules.yml"
    test_file = tmp_path / "burst.test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{
                "eval_time": "20m", "alertname": "MonitorDeadLetterRate",
                "exp_alerts": [{"exp_labels": {"severity": "warning", "team": "ops"},
                                "exp_annotations": {"summary": "100% of input is dead-lettered"}}],
            }],
        }],
    }))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr

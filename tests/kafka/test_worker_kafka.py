"""The Kafka shell on a real broker (tansu): parity with replay, kill -9 twice, poison partitions,
the dead-letter ratio limit. Acceptance of issue 6; expected outputs come from the replay shell (the
reference semantics, design §2) and from hand-planted bad records, never from the worker itself."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from builders import read_jsonl, settlement, write_jsonl
from city import build_city
from kafka_helpers import Broker, Worker, kafka_env, read_topics, wait_for

from monitor.clock import CST
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir
from monitor.settings import Settings
from monitor.streams.app import EXIT_DLQ_LIMIT
from monitor.streams.io import produce_dir

pytestmark = pytest.mark.kafka


def replay(input_dir: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    replay_dir(input_dir, out, load_pack("ezhou"))
    return {name: read_jsonl(out / f"{name}.jsonl") for name in ("alerts", "tickets", "dlq")}


def consume(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """``topic`` read to its end (``kafka_helpers.read_topics``)."""
    return read_topics(settings, topic)[topic]


def run_to_end(worker: Worker, messages: int) -> None:
    wait_for(lambda: worker.applied_messages() >= messages or not worker.alive(),
             f"the worker to apply {messages} messages")
    assert worker.alive(), worker.tail()
    assert worker.applied_messages() == messages


def ids(rows: list[dict[str, Any]], key: str) -> set[str]:
    return {r[key] for r in rows}


@pytest.fixture(scope="module")
def default_city(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """``build_city()``'s default city and replay's outputs for it, made once for the module's tests that
    load it (they only read the folder)."""
    tmp = tmp_path_factory.mktemp("default-city")
    build_city(tmp / "city")
    expected = replay(tmp / "city", tmp / "replay")
    assert expected["tickets"] and expected["alerts"]  # the city exercises the ladders
    return tmp / "city", expected


@pytest.fixture(scope="module")
def array_run(tansu_bin: str, default_city: tuple[Path, dict[str, list[dict[str, Any]]]],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The default city produced as 25-record array values to its own broker, applied to the end by one
    worker with every sink of the worker on (embedded store, /metrics, inspector API behind a token, the
    case system): the run of ``test_parity_with_replay[array-values]`` and
    ``test_worker_feeds_store_metrics_case_system_and_pages``, which check different outputs of it."""
    city, expected = default_city
    tmp = tmp_path_factory.mktemp("array-run")
    broker = Broker(tansu_bin, tmp)
    worker: Worker | None = None
    try:
        with case_system() as (url, posted):
            env = kafka_env(broker, tmp / "data", MONITOR_UI_TOKEN="inspector-token", MONITOR_CASE_WEBHOOK_URL=url)
            worker = Worker(env, tmp)
            stats = produce_dir(city, worker.settings, arrays=25)
            worker.start()
            run_to_end(worker, stats.messages)
            yield {"worker": worker, "stats": stats, "expected": expected, "city": city, "posted": posted,
                   "env": env, "dsn": f"chdb://{tmp / 'data' / 'clickhouse'}"}
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


@pytest.mark.parametrize("arrays", [1, 25], ids=["one-record-values", "array-values"])
def test_parity_with_replay(request: pytest.FixtureRequest, default_city: tuple[Path, dict[str, list[dict[str, Any]]]],
                            tmp_path: Path, arrays: int) -> None:
    """produce → worker (3 partitions per topic) → consume gives replay's alert and ticket ids. The
    array-values run is shared with the sinks test (``array_run``); one-record values get their own."""
    city, expected = default_city
    if arrays == 1:
        broker: Broker = request.getfixturevalue("broker")
        worker: Worker = request.getfixturevalue("make_worker")(kafka_env(broker, tmp_path / "data"))
        stats = produce_dir(city, worker.settings, arrays=arrays)
        worker.start()
        run_to_end(worker, stats.messages)
    else:
        run = request.getfixturevalue("array_run")
        worker, stats = run["worker"], run["stats"]
    assert stats.records == sum(1 for _ in city.glob("*.jsonl") for _ in _.open("rb"))
    assert stats.messages < stats.records if arrays > 1 else stats.messages == stats.records
    out = read_topics(worker.settings, "monitor.alerts", "monitor.tickets", "monitor.dlq")
    assert ids(out["monitor.alerts"], "alert_id") == ids(expected["alerts"], "alert_id")
    assert ids(out["monitor.tickets"], "ticket_id") == ids(expected["tickets"], "ticket_id")
    assert out["monitor.dlq"] == []


#: The crash test's late pharmacies upload 20 % of every day's records 30 h late from day 3 to day 49
#: (2026-01-08 … 2026-02-23): each day's upload.not_realtime evidence accumulates from its first record
#: until its judgment at day end + 24 h (EZ-DM 二(一)), so a kill anywhere in that stretch cuts the
#: evidence of a violation in two. The worker is killed once event time passes each of these instants.
KILL_AFTER = [datetime(2026, 1, 15, 0, 0, tzinfo=CST), datetime(2026, 2, 4, 0, 0, tzinfo=CST)]
LATE_UNTIL = datetime(2026, 2, 23, 0, 0, tzinfo=CST)
#: The input is loaded in parts split at these arrival times (while the worker is down, so the merge
#: sees each part whole, as replay does): a kill after KILL_AFTER[i] then always lands before the
#: part's end, i.e. mid-stream and inside the late stretch, however fast the worker is.
PART_ENDS = [datetime(2026, 1, 23, 0, 0, tzinfo=CST), datetime(2026, 2, 12, 0, 0, tzinfo=CST)]


def split_by_arrival(city: Path, out: Path, ends: list[datetime]) -> list[Path]:
    """``city``'s files cut into ``len(ends) + 1`` folders by arrival (``inf_time``; registry records
    without one go first), each file keeping its order."""
    from monitor.records import parse_value

    parts = [out / f"part{i}" for i in range(len(ends) + 1)]
    for path in sorted(city.glob("*.jsonl")):
        lines: list[list[bytes]] = [[] for _ in parts]
        for raw in path.read_bytes().splitlines():
            rec = parse_value(path.stem, raw)[0]
            when = getattr(rec, "arrival_time", None)
            lines[sum(1 for end in ends if when is not None and when >= end)].append(raw)
        for folder, chunk in zip(parts, lines, strict=True):
            write_jsonl(folder, path.stem, chunk)
    return parts


def test_kill_9_twice_mid_stream(broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    city = tmp_path / "city"
    build_city(city, institutions=6, days=55, per_day=20, late_days=tuple(range(3, 50)))
    expected = replay(city, tmp_path / "replay")
    env = kafka_env(broker, tmp_path / "data")
    worker = make_worker(env)
    parts = split_by_arrival(city, tmp_path / "parts", PART_ENDS)
    messages = produce_dir(parts[0], worker.settings).messages
    worker.start()
    kills = []
    for instant, part in zip(KILL_AFTER, parts[1:], strict=True):
        def passed(instant: datetime = instant) -> bool:
            ckpt = worker.checkpoint()
            return not worker.alive() or (ckpt is not None and ckpt.watermark is not None
                                          and ckpt.watermark >= instant)
        wait_for(passed, f"event time to pass {instant}", every=0.02)
        assert worker.alive(), worker.tail()
        worker.kill9()
        ckpt = worker.checkpoint()
        assert ckpt is not None and ckpt.watermark is not None
        kills.append(ckpt.watermark)
        assert instant <= ckpt.watermark < LATE_UNTIL, "the kill fell outside the late stretch"
        messages += produce_dir(part, worker.settings).messages  # the stream goes on while it is down
        worker.start()
    run_to_end(worker, messages)
    out = read_topics(worker.settings, "monitor.alerts", "monitor.tickets")
    alerts, tickets = out["monitor.alerts"], out["monitor.tickets"]
    # none lost; a re-produced output has the same id (downstream de-duplicates on it)
    assert ids(tickets, "ticket_id") == ids(expected["tickets"], "ticket_id")
    assert ids(alerts, "alert_id") == ids(expected["alerts"], "alert_id")
    # a violation whose evidence spans each crash is still detected, and under one id
    for killed_at in kills:
        spanning = [a for a in alerts if a["rule_id"] == "upload.not_realtime"
                    and datetime.fromisoformat(a["window_start"]) <= killed_at
                    < datetime.fromisoformat(a["detected_at"])]
        assert spanning, f"no upload.not_realtime decided after a kill at {killed_at}"
        for a in spanning:
            same = {x["alert_id"] for x in alerts if x["rule_id"] == a["rule_id"]
                    and x["fixmedins_code"] == a["fixmedins_code"] and x["window_start"] == a["window_start"]}
            assert same == {a["alert_id"]}
    # the store saw the re-produced outputs too: still one row per id after FINAL, none lost
    assert worker.stop() == 0, worker.tail()
    dsn = f"chdb://{tmp_path / 'data' / 'clickhouse'}"
    assert store_ids(dsn, "tickets", "ticket_id") == (ids(expected["tickets"], "ticket_id"), len(expected["tickets"]))
    assert store_ids(dsn, "alerts", "alert_id") == (ids(expected["alerts"], "alert_id"), len(expected["alerts"]))


def poison_city(folder: Path) -> int:
    """A small city whose settlements partitions also carry invalid records; returns how many."""
    build_city(folder, institutions=3, days=10, per_day=10)
    lines = (folder / "settlements.jsonl").read_bytes().splitlines()
    bad = [
        b'{"setl_id": "X1", "fixmedins_code": "P42070200000", ',  # malformed JSON
        b'\xff\xfe{"setl_id": "X2"}',  # not UTF-8
        json.dumps(settlement("X3", "2026-01-06 10:00:00", "2026-01-06 10:01:00", code="P42070200001",
                              setl_status="paid")).encode(),  # bad enum value
        json.dumps({"fixmedins_code": "P42070200002", "setl_time": "2026-01-07 10:00:00"}).encode(),
        b"[" + json.dumps(settlement("X5", "2026-01-07 11:00:00", "2026-01-07 11:01:00",
                                     code="P42070200000")).encode()
        + b',{"setl_id": "X6", "fixmedins_code": "P42070200000"}]',  # one good, one bad element
        b"[]",  # empty array
    ]
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 40 == 20 and bad:
            out.append(bad.pop(0))
    (folder / "settlements.jsonl").write_bytes(b"\n".join(out) + b"\n")
    return 6


def test_poison_records_flow_to_dlq(broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    city = tmp_path / "city"
    poison_city(city)
    expected = replay(city, tmp_path / "replay")
    assert len(expected["dlq"]) == 6  # one per bad line; the mixed array only its bad element
    env = kafka_env(broker, tmp_path / "data")
    worker = make_worker(env)
    stats = produce_dir(city, worker.settings)
    worker.start()
    run_to_end(worker, stats.messages)
    out = read_topics(worker.settings, "monitor.dlq", "monitor.alerts")
    dlq = out["monitor.dlq"]

    def letters(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps([d["value"], d["value_b64"], d["index"], d["error"]]) for d in rows)

    assert letters(dlq) == letters(expected["dlq"])
    for d in dlq:
        assert d["source"] == "medins.settlements"
        assert d["partition"] is not None and d["offset"] is not None
    # the partitions holding bad records kept flowing: every later finding is there
    assert ids(out["monitor.alerts"], "alert_id") == ids(expected["alerts"], "alert_id")


def test_dead_letter_ratio_limit_stops_the_worker(broker: Broker, make_worker: Any, tmp_path: Path) -> None:
    """A bad deploy (every record invalid) stops the worker loudly instead of dead-lettering everything."""
    inp = tmp_path / "in"
    write_jsonl(inp, "settlements", [{"fixmedins_code": f"P{i:03d}", "setl_time": "2026-01-06 10:00:00"}
                                     for i in range(40)])
    env = kafka_env(broker, tmp_path / "data", MONITOR_DLQ_WINDOW="20", MONITOR_DLQ_MAX_RATIO="0.5")
    worker = make_worker(env)
    produce_dir(inp, worker.settings)
    worker.start()
    wait_for(lambda: not worker.alive(), "the worker to stop on the dead-letter limit")
    assert worker.proc is not None and worker.proc.returncode == EXIT_DLQ_LIMIT, worker.tail()
    assert "dead letters" in worker.tail()
    assert worker.applied_messages() == 0  # nothing acknowledged past the last checkpoint


# ------------------------------------------------------------------------------- sinks, /metrics, pages
def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def store_ids(dsn: str, table: str, key: str) -> tuple[set[str], int]:
    """(distinct ids after FINAL, rows after FINAL) of an embedded store the worker has closed."""
    from monitor.sinks.clickhouse import connect

    client, db = connect(dsn)
    try:
        rows = client.query(f"SELECT {key} FROM {db}.{table} FINAL").result_rows
    finally:
        client.close()
    return {r[0] for r in rows}, len(rows)


@contextmanager
def case_system() -> Iterator[tuple[str, list[str]]]:
    """A local case-system endpoint that records the Idempotency-Key of every accepted POST."""
    keys: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            keys.append(self.headers["Idempotency-Key"])
            self.send_response(201)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tickets", keys
    finally:
        server.shutdown()
        server.server_close()


def test_worker_feeds_store_metrics_case_system_and_pages(array_run: dict[str, Any]) -> None:
    """Issue 7/9 in worker mode: alerts and tickets land in the embedded chDB store (one row per id after
    FINAL), tickets reach the case system once per id, /metrics carries our metrics and Faust's sensor,
    and the inspector API is served by the Faust web server behind the bearer token."""
    worker, expected, posted, env = array_run["worker"], array_run["expected"], array_run["posted"], array_run["env"]
    alert_ids, ticket_ids = ids(expected["alerts"], "alert_id"), ids(expected["tickets"], "ticket_id")
    flagged = {r["fixmedins_code"] for r in expected["alerts"] + expected["tickets"]}
    assert worker.alive(), worker.tail()
    web = f"http://127.0.0.1:{env['MONITOR_METRICS_PORT']}"

    def scraped() -> str | None:
        status, body = http_get(web + "/metrics")
        text = body.decode()
        # Faust commits acknowledged offsets on its own interval: wait for the committed gauge
        return text if status == 200 and "faust_topic_partition_offset_commited{" in text else None

    metrics = wait_for(scraped, "faust_topic_partition_offset_commited on /metrics")
    assert "faust_topic_partition_end_offset{" in metrics
    assert "faust_messages_received_total" in metrics  # Faust's sensor, prefix "faust"
    alerts_total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("monitor_alerts_total{"))
    assert alerts_total >= len(alert_ids)  # re-produced after a restart would count again
    assert 'monitor_records_total{region="420702",stream="settlements"}' in metrics

    assert http_get(web + "/api/institutions")[0] == 401

    def listed() -> set[str] | None:
        status, body = http_get(web + "/api/institutions", "inspector-token")
        codes = {r["code"] for r in json.loads(body)["institutions"]} if status == 200 else set()
        return codes if codes == flagged else None

    wait_for(listed, "the inspector API to list the flagged institutions")
    status, page = http_get(web + "/", "inspector-token")
    assert status == 200 and b"<html" in page.lower()
    wait_for(lambda: set(posted) >= ticket_ids, "every ticket at the case system")
    assert worker.stop() == 0, worker.tail()
    assert sorted(posted) == sorted(ticket_ids)  # once per id
    got, rows = store_ids(array_run["dsn"], "alerts", "alert_id")
    assert got == alert_ids and rows == len(alert_ids)
    got, rows = store_ids(array_run["dsn"], "tickets", "ticket_id")
    assert got == ticket_ids and rows == len(ticket_ids)

"""Case-system webhook (design §4): a real HTTP server on loopback that fails the first attempts; every
ticket arrives exactly once per id (Idempotency-Key = ticket_id), with the bearer token, after
exponential backoff, and the outbox survives a restart (a ticket leaves it only after a 2xx)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from monitor.clock import CST
from monitor.outputs import Summary, Ticket
from monitor.sinks.casesystem import CaseSystemSink


def ticket(n: int) -> Ticket:
    return Ticket(
        ticket_id=f"TK-{n:04d}", fixmedins_code="P42070200001", admdvs="420702",
        action="SUSPEND_OUTPATIENT_POOLING", issued_at=datetime(2026, 1, 7, tzinfo=CST),
        effective_from=date(2026, 1, 8), effective_until=date(2026, 2, 8), ladder="realtime",
        rule_ids=["upload.not_realtime"], alert_ids=["AL-1"], basis=["EZ-DM 二(一)"], policy="ezhou@1",
        summary=Summary(zh="中止门诊统筹 1 个月", en="suspend outpatient pooling 1 month"),
    )


class CaseSystem:
    """A case system that answers 503 to the first ``fail_first`` requests of each ticket, then 201;
    it records accepted tickets per Idempotency-Key (a real one would de-duplicate on it)."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, object]] = {}
        self.auth: set[str | None] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                key = self.headers.get("Idempotency-Key") or ""
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth.add(self.headers.get("Authorization"))
                outer.attempts[key] += 1
                if outer.attempts[key] <= outer.fail_first:
                    self.send_response(503)
                else:
                    outer.accepted[key] += 1
                    outer.bodies[key] = body
                    self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tickets"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CaseSystem:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeTime:
    """Injected clock + sleep: backoff is observed, never waited for."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> Iterator[FakeTime]:
    yield FakeTime()


def test_every_ticket_arrives_exactly_once_after_failures_with_backoff(tmp_path: Path, fake_time: FakeTime) -> None:
    with CaseSystem(fail_first=2) as cs:
        sink = CaseSystemSink(cs.url, tmp_path, token=SecretStr("tok-123"), base_delay_s=1.0,
                              clock=fake_time.clock, sleep=fake_time.sleep)
        sink.write([ticket(1), ticket(2)], [])
        sink.write([ticket(1)], [])  # the same ticket again (a redelivered input): queued once
        sink.flush()  # attempt 1 of each: 503
        assert len(sink.outbox) == 2
        assert sink.drain(timeout_s=60) is True
        sink.close()
    assert cs.accepted == {"TK-0001": 1, "TK-0002": 1}
    assert cs.attempts == {"TK-0001": 3, "TK-0002": 3}
    assert cs.auth == {"Bearer tok-123"}
    assert cs.bodies["TK-0001"]["action"] == "SUSPEND_OUTPATIENT_POOLING"
    assert cs.bodies["TK-0001"]["ticket_id"] == "TK-0001"
    # after attempt 1 fails the retry waits 1 s, after attempt 2 fails 2 s (base · 2^attempts)
    assert fake_time.sleeps == [1.0, 2.0]
    assert "tok-123" not in repr(sink)


def test_outbox_survives_a_restart_and_delivers_once(tmp_path: Path, fake_time: FakeTime) -> None:
    with CaseSystem(fail_first=1) as cs:
        dead_url = cs.url
    # the case system is down: the ticket stays in the outbox across the restart
    first = CaseSystemSink(dead_url, tmp_path, clock=fake_time.clock, sleep=fake_time.sleep)
    first.write([ticket(1), ticket(2), ticket(3)], [])
    first.flush()
    assert first.failures == 3 and len(first.outbox) == 3
    first.close()

    with CaseSystem(fail_first=1) as cs:
        second = CaseSystemSink(cs.url, tmp_path, clock=fake_time.clock, sleep=fake_time.sleep,
                                close_drain_s=120)
        assert len(second.outbox) == 3
        second.close()  # drains: 503 once per ticket, then 201
        reopened = CaseSystemSink(cs.url, tmp_path, clock=fake_time.clock, sleep=fake_time.sleep)
        assert len(reopened.outbox) == 0
        reopened.close()
    assert cs.accepted == {"TK-0001": 1, "TK-0002": 1, "TK-0003": 1}
    assert cs.auth == {None}  # no token configured, no Authorization header


def test_drain_gives_up_at_its_timeout_and_keeps_the_ticket(tmp_path: Path, fake_time: FakeTime) -> None:
    with CaseSystem(fail_first=100) as cs:
        sink = CaseSystemSink(cs.url, tmp_path, base_delay_s=10, clock=fake_time.clock, sleep=fake_time.sleep)
        sink.write([ticket(1)], [])
        assert sink.drain(timeout_s=100) is False
        sink.close()
    # attempts at t=0, 10, 30, 70 (waits 10, 20, 40); the next one (t=150) is past the timeout, and
    # close() does not attempt what is not yet due
    assert cs.attempts == {"TK-0001": 4}
    assert cs.accepted == {}

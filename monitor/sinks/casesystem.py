"""Case-system webhook: every ticket is POSTed once per ``ticket_id`` (design §4 ``monitor.tickets``).

Construction (both shells)::

    sink = CaseSystemSink(url, outbox_dir, token=SecretStr(...) | None, metrics=None)
    ... sink.write(outputs, dead); sink.flush(); sink.close()
    sink.start()   # optional: a daemon thread that keeps delivering (the Kafka worker)

Settings: ``MONITOR_CASE_WEBHOOK_URL`` (the sink exists only when it is set) and
``MONITOR_CASE_WEBHOOK_TOKEN`` (a secret, sent as ``Authorization: Bearer …``, never logged).

Contract
--------
* ``write`` puts tickets into a durable outbox (SQLite under ``outbox_dir``) keyed by ``ticket_id``:
  the same ticket written twice (a redelivered input, a replay) is queued once. Alerts and dead
  letters are not the case system's business and are ignored.
* ``flush`` returns when the outbox is on disk (so the Kafka shell may acknowledge input), then
  delivers what is due without sleeping.
* Delivery: ``POST url`` with the ticket as JSON, ``Content-Type: application/json``,
  ``Idempotency-Key: <ticket_id>`` and the bearer token. A ticket leaves the outbox **only after a
  2xx**; anything else (an error status, a refused connection, a timeout) schedules the next attempt
  after ``base_delay_s · 2^(attempts)`` seconds, capped at ``max_delay_s`` (exponential backoff). The
  outbox survives restarts, so a ticket is delivered at least once, and the Idempotency-Key lets the
  case system accept it exactly once per id.
* ``drain(timeout_s)`` keeps delivering (sleeping between attempts) until the outbox is empty or the
  timeout passes; ``close`` does so for ``close_drain_s`` (the replay shell sets it; the worker keeps
  its delivery thread instead). What is left is delivered on the next start.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from monitor.outputs import Alert, DeadLetter, InstitutionDay, Ticket
from monitor.sinks.outbox import Entry, Outbox

if TYPE_CHECKING:
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)
SINK = "casesystem"


class CaseSystemSink:
    def __init__(
        self,
        url: str,
        outbox_dir: Path,
        *,
        token: SecretStr | None = None,
        timeout_s: float = 10.0,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        close_drain_s: float = 0.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("MONITOR_CASE_WEBHOOK_URL must be an http:// or https:// URL")
        self.url = url
        self._token = token
        self.timeout_s = timeout_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.close_drain_s = close_drain_s
        self.metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self.outbox = Outbox(outbox_dir / "casesystem-outbox.sqlite")
        self.delivered = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report()

    def __repr__(self) -> str:  # never show the token
        return f"CaseSystemSink({self.url!r})"

    # ------------------------------------------------------------------------------------ Sink
    def write(self, outputs: Sequence[Alert | Ticket | InstitutionDay], dead: Sequence[DeadLetter]) -> None:
        tickets = [t for t in outputs if isinstance(t, Ticket)]
        if tickets:
            with self._lock:
                self.outbox.put((t.ticket_id, t.model_dump_json().encode()) for t in tickets)
            self._report()

    def flush(self) -> None:
        self.deliver_due()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.close_drain_s > 0:
            self.drain(self.close_drain_s)
        else:
            self.deliver_due()
        self.outbox.close()

    # ------------------------------------------------------------------------------------ delivery
    def deliver_due(self) -> int:
        """One attempt for every ticket whose next attempt is due; returns how many were accepted."""
        with self._lock:
            entries = self.outbox.due(self._clock())
        ok = 0
        for entry in entries:
            if self._post(entry):
                with self._lock:
                    self.outbox.remove([entry.key])
                ok += 1
            else:
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** entry.attempts)
                with self._lock:
                    self.outbox.retry_later(entry.key, self._clock() + delay)
        self._report()
        return ok

    def drain(self, timeout_s: float) -> bool:
        """Deliver until the outbox is empty (``True``) or ``timeout_s`` has passed (``False``)."""
        deadline = self._clock() + timeout_s
        while True:
            self.deliver_due()
            with self._lock:
                next_at = self.outbox.next_due()
            if next_at is None:
                return True
            now = self._clock()
            if next_at > deadline or now >= deadline:
                return False
            self._sleep(max(0.0, next_at - now))

    def start(self, poll_s: float = 1.0) -> None:
        """Deliver from a daemon thread until ``close`` (the Kafka worker)."""
        def loop() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.deliver_due()
                except Exception:  # keep the thread alive; the outbox keeps the tickets
                    log.exception("case-system delivery loop failed; retrying")

        self._thread = threading.Thread(target=loop, name="casesystem-outbox", daemon=True)
        self._thread.start()

    def _post(self, entry: Entry) -> bool:
        headers = {"Content-Type": "application/json", "Idempotency-Key": entry.key}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        req = urllib.request.Request(self.url, data=entry.payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:  # refused, reset, timeout, DNS
            self._fail(entry, type(exc).__name__)
            return False
        if 200 <= status < 300:
            self.delivered += 1
            if self.metrics is not None:
                self.metrics.sink_rows.labels(SINK).inc()
            return True
        self._fail(entry, f"HTTP {status}")
        return False

    def _fail(self, entry: Entry, why: str) -> None:
        self.failures += 1
        if self.metrics is not None:
            self.metrics.sink_failures.labels(SINK).inc()
        log.warning("case-system delivery of ticket %s failed (%s), attempt %d; kept in the outbox",
                    entry.key, why, entry.attempts + 1)

    def _report(self) -> None:
        if self.metrics is not None:
            self.metrics.sink_pending.labels(SINK).set(len(self.outbox))

"""Issue 17, "Inspector server": each test names the attack it repels.

* ``POST /login`` with ``Content-Length: -1`` (or a huge one) must be answered at once without reading
  the socket to EOF (the old server read until the client closed: 300 MB buffered without a token);
* the session cookie expires (inside its MAC, not only ``Max-Age``) and can be ``Secure``;
* failed sign-ins are rate-limited per client and overall (429 + ``Retry-After``);
* a 20 000-alert store: the list answers from an aggregate and pages, a case file pages its timeline —
  bounded responses (the old case page of such an institution was 24 MB).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from monitor.clock import CST
from monitor.inspect.model import MemoryStore
from monitor.inspect.web import COOKIE, InspectorApp, LoginLimiter, ResponseCache, make_server
from monitor.outputs import Alert
from monitor.policy.pack import load_pack

TOKEN = "attack-test-token"


@pytest.fixture()
def server() -> Iterator[tuple[str, int]]:
    app = InspectorApp(MemoryStore(), load_pack("ezhou"), token=SecretStr(TOKEN))
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def raw_request(addr: tuple[str, int], head: bytes, body: bytes = b"", wait_s: float = 5.0) -> bytes:
    """Send ``head`` + ``body`` and keep the socket open (no EOF): the answer must come anyway."""
    with socket.create_connection(addr, timeout=wait_s) as sock:
        sock.sendall(head + body)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""  # the server is still reading: the attack worked


def test_login_with_content_length_minus_one_is_refused_without_reading_to_eof(server: tuple[str, int]) -> None:
    got = raw_request(server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
                              b"Content-Type: application/x-www-form-urlencoded\r\n\r\n", b"token=" + b"A" * 1000)
    assert got.startswith(b"HTTP/1.0 400"), got[:80]


def test_login_with_an_oversized_body_is_413_without_reading_it(server: tuple[str, int]) -> None:
    got = raw_request(server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n", b"token=x")
    assert got.startswith(b"HTTP/1.0 413"), got[:80]


@pytest.mark.parametrize("length", [b"+5", b"1e3", b"5, 5", b"0x10"])
def test_login_with_a_malformed_content_length_is_400(server: tuple[str, int], length: bytes) -> None:
    got = raw_request(server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n",
                      b"token=x")
    assert got.startswith(b"HTTP/1.0 400"), got[:80]


def test_login_with_a_chunked_body_is_refused(server: tuple[str, int]) -> None:
    got = raw_request(server, b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                      b"ffffffff\r\n")
    assert got.startswith(b"HTTP/1.0 411"), got[:80]


def test_a_good_login_over_http_still_works(server: tuple[str, int]) -> None:
    body = f"token={TOKEN}".encode()
    got = raw_request(server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body), body)
    assert got.startswith(b"HTTP/1.0 303") and f"{COOKIE}=".encode() in got


# ------------------------------------------------------------------------------------------ the cookie
class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed_in(app: InspectorApp) -> str:
    resp = app("POST", "/login", {}, {}, f"token={TOKEN}".encode(), "10.0.0.1")
    assert resp.status == 303
    return dict(resp.headers)["Set-Cookie"]


def test_a_stolen_session_cookie_stops_working_when_it_expires() -> None:
    clock = Clock()
    app = InspectorApp(MemoryStore(), load_pack("ezhou"), token=SecretStr(TOKEN), session_hours=8, clock=clock)
    set_cookie = signed_in(app)
    assert "Max-Age=28800" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = set_cookie.split(";")[0]
    assert app("GET", "/api/institutions", {}, {"Cookie": cookie}).status == 200
    clock.now += 8 * 3600 + 1  # replayed after its lifetime: refused by the server, whatever the browser does
    assert app("GET", "/api/institutions", {}, {"Cookie": cookie}).status == 401
    # editing the expiry breaks the MAC
    value = cookie.split("=", 1)[1]
    forged = f"{COOKIE}={int(clock.now) + 3600}.{value.split('.', 1)[1]}"
    assert app("GET", "/api/institutions", {}, {"Cookie": forged}).status == 401


def test_session_cookie_is_secure_when_configured() -> None:
    app = InspectorApp(MemoryStore(), load_pack("ezhou"), token=SecretStr(TOKEN), cookie_secure=True)
    assert "; Secure" in signed_in(app)
    plain = InspectorApp(MemoryStore(), load_pack("ezhou"), token=SecretStr(TOKEN))
    assert "Secure" not in signed_in(plain)


# ------------------------------------------------------------------------------------------ rate limit
def test_guessing_the_token_is_rate_limited_per_client_and_overall() -> None:
    mono = Clock(0.0)
    limiter = LoginLimiter(per_peer=5, overall=8, window_s=60, clock=mono)
    app = InspectorApp(MemoryStore(), load_pack("ezhou"), token=SecretStr(TOKEN), limiter=limiter)

    def attempt(token: str, peer: str) -> tuple[int, dict[str, str]]:
        resp = app("POST", "/login", {}, {}, f"token={token}".encode(), peer)
        return resp.status, dict(resp.headers)

    for i in range(5):
        assert attempt(f"guess{i}", "10.0.0.9")[0] == 401
    status, headers = attempt(TOKEN, "10.0.0.9")  # even the right token gets no answer while blocked
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 61
    assert attempt(TOKEN, "10.0.0.2")[0] == 303  # another client is not blocked by one guesser
    for i in range(3):
        assert attempt(f"g{i}", f"10.0.1.{i}")[0] == 401
    assert attempt(TOKEN, "10.0.2.1")[0] == 429  # 8 failures from all clients within the window
    mono.now += 61
    assert attempt(TOKEN, "10.0.0.9")[0] == 303


# ------------------------------------------------------------------------------------------ 20 000 alerts
def many_alerts(n: int, code: str = "P42070400001") -> list[Alert]:
    start = datetime(2026, 3, 1, tzinfo=CST)
    out = []
    for i in range(n):
        at = start + timedelta(minutes=i)
        out.append(Alert(
            alert_id=f"A-{i:06d}", rule_id="price.dual" if i % 2 else "upload.late",
            fixmedins_code=code if i % 4 else f"C{i % 97:011d}", admdvs="420704",
            severity="warning" if i % 2 else "info", window_start=at, window_end=at + timedelta(days=1),
            detected_at=at, evidence={"business_date": at.date().isoformat(), "sample_records": [f"setl_id=S{i}"]},
            basis="EZ-DM 二(一)", policy="ezhou@test", jr_id=f"A-{i:06d}", rule_name="x", vola_cont="y",
            vola_amt=Decimal("1.50"), sev_deg="1", vola_evid="", vola_bhvr_type="T"))
    return out


def test_a_20000_alert_store_gives_paged_bounded_list_and_case_file() -> None:
    app = InspectorApp(MemoryStore(many_alerts(20_000)), load_pack("ezhou"), token=None)
    listing = app("GET", "/api/institutions", {"per_page": ["20"]}, {})
    data = json.loads(listing.body)
    assert data["total"] == 98 and len(data["institutions"]) == 20 and data["pages"] == 5
    assert len(listing.body) < 200_000
    case = app("GET", "/api/institutions/P42070400001", {}, {})
    cf = json.loads(case.body)
    assert cf["alerts"] == 15_000 and cf["pages"] == 300 and len(cf["timeline"]) == 50
    assert len(case.body) < 2_000_000
    page = app("GET", "/institutions/P42070400001", {"page": ["300"]}, {})
    assert page.status == 200 and len(page.body) < 2_000_000
    assert "第 300 / 300 页" in page.body.decode()
    # the amount at stake comes from the aggregate over all 15 000 alerts, not from the page
    assert Decimal(cf["amount"]) == Decimal("1.50") * 15_000


def test_fifty_concurrent_requests_for_one_page_read_the_store_once() -> None:
    """A crowd opening the same case file costs one store read (the cache's per-key lock), and the page
    is read again once it is older than the cache's lifetime."""
    mono = Clock(0.0)
    calls: list[int] = []
    store = MemoryStore(many_alerts(400))
    original = store.alert_tallies

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    store.alert_tallies = counted  # type: ignore[method-assign]
    app = InspectorApp(store, load_pack("ezhou"), cache=ResponseCache(ttl_s=5, clock=mono))
    barrier = threading.Barrier(50)
    sizes: list[int] = []

    def one() -> None:
        barrier.wait()
        sizes.append(len(app("GET", "/institutions/P42070400001", {}, {}).body))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sizes) == 50 and len(set(sizes)) == 1 and len(calls) == 1
    mono.now += 6
    app("GET", "/institutions/P42070400001", {}, {})
    assert len(calls) == 2

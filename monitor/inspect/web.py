"""Read-only web pages and JSON API over case files (issue 9 §2–4).

The application is one framework-free callable, ``InspectorApp(method, path, query, headers, body)`` →
``Response(status, content_type, body, headers)``, so the same handlers serve ``monitor serve``
(standard-library ``http.server``, ``serve`` below) and can be mounted on the Faust/aiohttp web server
(``aiohttp_handler``). Routes:

=============================  =====================================================================
``GET /``                      list of flagged institutions: filters ``region`` (admdvs prefix),
                               ``rule``, ``action``, ``state``; ``sort`` = ``severity`` | ``recency``
``GET /institutions/{code}``   the case file page
``GET /api/institutions``      the list as JSON (same query parameters)
``GET /api/institutions/{code}``  the case file as JSON (``CaseFile``)
``GET /static/style.css``      the stylesheet (no data; no token needed)
``GET|POST /login``            a form that exchanges the token for a session cookie (for browsers)
``GET /healthz``               ``ok`` (no data; no token needed)
=============================  =====================================================================

Access (design §6): when a token is configured (``MONITOR_UI_TOKEN``), every data route needs
``Authorization: Bearer TOKEN`` or the session cookie set by ``/login`` (its expiry and an HMAC of the
token over it, never the token itself; ``Max-Age`` = ``MONITOR_UI_SESSION_HOURS``, ``Secure`` with
``MONITOR_UI_COOKIE_SECURE``); otherwise 401. Failed sign-ins are rate-limited (``LoginLimiter``: 429
with ``Retry-After``). A request body is read only up to ``MAX_BODY`` bytes and only with a valid
``Content-Length`` (issue 17: ``Content-Length: -1`` once read the socket to EOF).

Nothing here changes monitor state (any method but GET/HEAD → 405, except
the login form). Responses never carry personal data in clear: case files are built masked, and every
body passes a last certificate-number mask on the way out. Pages carry no script (CSP forbids it).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import html
import io
import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from pydantic import SecretStr

from monitor.clock import format_time
from monitor.inspect.charts import Series, svg_chart
from monitor.inspect.model import (
    PAGE_SIZE,
    SEVERITY_TEXT,
    STATE_TEXT,
    CaseFile,
    CaseStore,
    CaseSummary,
    ClauseView,
    Deadline,
    Event,
    ListQuery,
    build_case_file,
    list_cases,
    mask_text,
    page_of,
    region_name,
    store_as_of,
)
from monitor.inspect.names import action_name, rule_name
from monitor.outputs import ACTIONS
from monitor.policy.pack import Pack

log = logging.getLogger(__name__)

COOKIE = "medins_ui_session"
#: events of a case file in the PDF and the print view (one page of the timeline, the largest allowed)
PDF_EVENTS = 500
CSV_COLUMNS = ("fixmedins_code", "name", "admdvs", "region", "state", "state_zh", "max_severity", "alerts",
               "tickets", "amount", "rules", "rule_names_zh", "actions", "action_names_zh", "next_due",
               "next_then", "first_activity", "last_activity")


def csv_row(r: CaseSummary) -> list[str]:
    """One CSV row of the list (``CSV_COLUMNS``); lists are joined with ``|``."""
    return [r.code, r.name or "", r.admdvs or "", r.region or "", r.state, r.state_zh, r.max_severity or "",
            str(r.alerts), str(r.tickets), f"{r.amount:.2f}", "|".join(r.rules),
            "|".join(n["zh"] for n in r.rule_names), "|".join(r.actions), "|".join(n["zh"] for n in r.action_names),
            r.next_due.isoformat() if r.next_due else "", r.next_then or "",
            format_time(r.first_activity) if r.first_activity else "",
            format_time(r.last_activity) if r.last_activity else ""]


def _one(query: Mapping[str, Sequence[str]], name: str) -> str:
    vals = query.get(name) or [""]
    return vals[0].strip()


def _int(query: Mapping[str, Sequence[str]], name: str, default: int) -> int:
    text = _one(query, name)
    return int(text) if text.isdigit() and len(text) < 9 else default


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

STYLE = """
:root { --fg:#1d2430; --muted:#5c6675; --line:#d9dee6; --bg:#f6f7f9; --card:#fff; --crit:#b3261e;
        --warn:#a15c00; --info:#2f5d8a; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 "Noto Sans CJK SC","Source Han Sans SC","PingFang SC","Microsoft YaHei",
       system-ui,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#123a5e; color:#fff; padding:12px 24px; }
header h1 { margin:0; font-size:18px; } header p { margin:2px 0 0; color:#c9d7e6; font-size:12px; }
header a { color:#fff; }
main { padding:16px 24px; max-width:1280px; }
section { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:12px 16px;
          margin-bottom:16px; }
h2 { font-size:16px; margin:0 0 8px; } h2 small, th small, dt small { color:var(--muted); font-weight:normal; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-size:13px; }
dl.facts { display:grid; grid-template-columns: 220px 1fr; margin:0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0 0 4px; }
.badge { display:inline-block; padding:0 8px; border-radius:10px; font-size:12px; color:#fff; }
.critical, .terminated { background:var(--crit); } .warning, .suspended { background:var(--warn); }
.info { background:var(--info); } .normal { background:var(--ok); }
form.filters { display:flex; flex-wrap:wrap; gap:8px 16px; align-items:end; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
.event { border-left:4px solid var(--line); padding:4px 12px; margin:8px 0; }
.event.alert { border-color:var(--info); } .event.ticket { border-color:#6a1b9a; }
.event .when { color:var(--muted); font-size:12px; }
blockquote { margin:4px 0; padding:4px 10px; background:#f3f0e6; border-left:3px solid #c2a25a; }
.evidence { font-family: ui-monospace, monospace; font-size:12px; color:#333; word-break:break-all; }
.deadline { font-size:15px; }
.muted { color:var(--muted); }
svg.chart { background:#fafbfc; border:1px solid var(--line); max-width:100%; height:auto; }
.nowrap { white-space:nowrap; } td.num { text-align:right; white-space:nowrap; }
.then { display:inline-block; max-width:16em; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
small.id, .id { font-family: ui-monospace, monospace; font-size:11px; color:var(--muted); }
.unnamed { color:var(--crit); }
table.evidence-table, table.evidence-facts { font-size:12px; margin:6px 0; }
table.evidence-table td, table.evidence-facts td { font-family: ui-monospace, monospace; }
table.evidence-table tfoot td { font-weight:bold; background:#f7f4ea; }
table.evidence-facts th { width:240px; background:#f6f7f9; }
.legend .key { display:inline-block; width:18px; height:10px; vertical-align:middle; }
.legend .line { border-top:2px solid #2f5d8a; } .legend .threshold { border-top:2px dashed #b3261e; }
.legend .tripped { background:#b3261e; width:8px; } .legend .sanction { background:#f4c7a1; }
.pager a { margin:0 8px; }
@media print {
  body { background:#fff; font-size:11pt; } header { background:#fff; color:#000; border-bottom:2px solid #000; }
  header a, header p { color:#000; } .no-print, form.filters, .pager { display:none !important; }
  section { border:none; page-break-inside:auto; } .event { page-break-inside:avoid; }
  a { color:#000; text-decoration:none; } .badge { color:#000; border:1px solid #000; background:none; }
}
body.print { background:#fff; } body.print .no-print, body.print .pager { display:none; }
""".strip()


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _d(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    return format_time(value) if isinstance(value, datetime) else value.isoformat()


def session_value(token: str, expires: int) -> str:
    """The cookie a browser holds after ``/login``: ``EXPIRES.HMAC-SHA256(token, purpose|EXPIRES)`` —
    the token itself is never stored client-side, and the expiry (Unix seconds) is bound into the MAC,
    so a cookie cannot be extended by editing it."""
    mac = hmac.new(token.encode(), f"medins-monitor ui session|{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def session_valid(token: str, value: str, now: float) -> bool:
    """``value`` is a cookie ``session_value(token, e)`` made by this server and ``now < e``."""
    expires, _, _mac = value.partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
        return False
    return hmac.compare_digest(value.encode(), session_value(token, int(expires)).encode())


class LoginLimiter:
    """Failed ``/login`` attempts, bounded: at most ``per_peer`` failures per client address and
    ``overall`` failures from all addresses in any ``window_s`` seconds; past that, ``/login`` answers
    429 with ``Retry-After`` without checking the token (a guesser gets no answer to learn from). The
    table of addresses is bounded (``max_peers``; the oldest is dropped)."""

    def __init__(self, per_peer: int = 5, overall: int = 50, window_s: float = 60.0,
                 max_peers: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_peer, self.overall, self.window_s, self.max_peers = per_peer, overall, window_s, max_peers
        self.clock = clock
        self._lock = threading.Lock()
        self._by_peer: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()

    def retry_after(self, peer: str) -> int:
        """Seconds until ``peer`` may try again (0 = now)."""
        now = self.clock()
        with self._lock:
            self._trim(self._all, now)
            q = self._by_peer.get(peer)
            if q is not None:
                self._trim(q, now)
            waits = []
            if q is not None and len(q) >= self.per_peer:
                waits.append(q[0] + self.window_s - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window_s - now)
            return max(1, int(max(waits)) + 1) if waits else 0

    def failed(self, peer: str) -> None:
        now = self.clock()
        with self._lock:
            q = self._by_peer.pop(peer, None) or deque()
            q.append(now)
            self._by_peer[peer] = q
            while len(self._by_peer) > self.max_peers:
                self._by_peer.popitem(last=False)
            self._all.append(now)


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


class ResponseCache:
    """Successful data responses kept ``ttl_s`` seconds (LRU, at most ``max_entries``), computed once per
    key however many requests ask at the same time (a per-key lock: 50 inspectors opening the same list
    cost one store read, not 50). Keys are the route and its query; access is checked before the cache
    is consulted. ``ttl_s = 0`` disables it. A page is then at most ``ttl_s`` seconds behind the store."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Response]] = OrderedDict()
        self._key_locks: dict[str, threading.Lock] = {}

    def get(self, key: str, compute: Callable[[], Response]) -> Response:
        if self.ttl_s <= 0:
            return compute()
        with self._lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._fresh(key)
            if hit is not None:
                return hit
            resp = compute()
            with self._lock:
                if resp.status == 200:
                    self._entries[key] = (self.clock() + self.ttl_s, resp)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        old, _ = self._entries.popitem(last=False)
                        self._key_locks.pop(old, None)
            return resp

    def _fresh(self, key: str) -> Response | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]


class InspectorApp:
    """The pages and the API (see the module docstring). ``as_of`` fixes event time; ``None`` uses the
    store's horizon at each request. ``cache`` keeps rendered data responses a few seconds
    (``ResponseCache``; ``MONITOR_UI_CACHE_SECONDS``)."""

    def __init__(self, store: CaseStore, pack: Pack, token: SecretStr | None = None,
                 as_of: datetime | None = None, session_hours: float = 8.0, cookie_secure: bool = False,
                 limiter: LoginLimiter | None = None, clock: Callable[[], float] = time.time,
                 cache: ResponseCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else ResponseCache(ttl_s=0)
        self.pack = pack
        self.token = token.get_secret_value() if token is not None and token.get_secret_value() else None
        self.as_of = as_of
        self.session_s = int(session_hours * 3600)
        self.cookie_secure = cookie_secure
        self.limiter = limiter or LoginLimiter()
        self.clock = clock

    # ------------------------------------------------------------------------------------ dispatch
    def __call__(self, method: str, path: str, query: Mapping[str, Sequence[str]],
                 headers: Mapping[str, str], body: bytes = b"", peer: str = "") -> Response:
        """One request; ``peer`` is the client address (for the login rate limit), given by the server."""
        method = method.upper()
        path = "/" + path.strip("/") if path != "/" else "/"
        h = {k.lower(): v for k, v in headers.items()}
        if path == "/healthz":
            return self._text(200, "ok\n")
        if path == "/static/style.css":
            return Response(200, "text/css; charset=utf-8", STYLE.encode(), (("Cache-Control", "max-age=300"),))
        if path == "/login":
            return self._login(method, body, peer)
        if method not in ("GET", "HEAD"):
            return Response(405, "text/plain; charset=utf-8", b"read-only: GET only\n",
                            (("Allow", "GET, HEAD"),))
        api = path.startswith("/api/")
        if not self._authorized(h):
            if api:
                return self._json(401, {"error": "unauthorized", "detail": "Authorization: Bearer <token> required"},
                                  (("WWW-Authenticate", 'Bearer realm="medins-monitor"'),))
            return self._page(401, "需要登录 Sign-in required", self._login_form(failed=False),
                              (("WWW-Authenticate", 'Bearer realm="medins-monitor"'),))
        try:
            key = f"{path}?{urlencode(sorted((k, v) for k, vs in query.items() for v in vs))}"
            return self.cache.get(key, lambda: self._route(path, query, api))
        except Exception:  # a store failure: say so without leaking internals; log for ops
            log.exception("inspector request failed: %s", path)
            if api:
                return self._json(503, {"error": "store unavailable"})
            return self._page(503, "暂不可用 Unavailable", "<p>案卷存储暂不可用 The case store is unavailable.</p>")

    def _route(self, path: str, query: Mapping[str, Sequence[str]], api: bool) -> Response:
        parts = [p for p in path.split("/") if p]
        if api:
            parts = parts[1:]
        if parts == [] and not api:
            return self._list_page(ListQuery.from_query(query))
        if parts == ["institutions.csv"]:
            return self._csv(ListQuery.from_query(query))
        if parts == ["institutions"]:
            q = ListQuery.from_query(query)
            if api:
                rows = list_cases(self.store, self.pack, q, self.as_of)
                shown, pages = page_of(rows, q)
                when = self.as_of or store_as_of(self.store)
                return self._json(200, {"as_of": when.isoformat() if when else None, "policy": self.pack.label,
                                        "query": q.model_dump(mode="json"), "total": len(rows),
                                        "count": len(shown), "page": min(q.page, pages), "pages": pages,
                                        "institutions": [r.model_dump(mode="json") for r in shown]})
            return self._list_page(q)
        if len(parts) == 2 and parts[0] == "institutions" and parts[1].endswith(".pdf") and not api:
            code = parts[1][:-4]
            if _CODE_RE.match(code):
                cf = build_case_file(self.store, code, self.pack, self.as_of, page_size=PDF_EVENTS)
                if cf is None:
                    return self._page(404, "未找到 Not found", f"<p>没有机构 {_esc(code)} 的记录</p>")
                from monitor.inspect.pdf import render_pdf

                return Response(200, "application/pdf", render_pdf(cf),
                                self._secure((("Content-Disposition", f"inline; filename=\"case-{code}.pdf\""),)))
        if len(parts) == 2 and parts[0] == "institutions" and _CODE_RE.match(parts[1]):
            page = _int(query, "page", 1)
            printing = _one(query, "print") == "1"
            size = PDF_EVENTS if printing else _int(query, "page_size", PAGE_SIZE)
            cf = build_case_file(self.store, parts[1], self.pack, self.as_of, page=page, page_size=size)
            if cf is None:
                if api:
                    return self._json(404, {"error": "not found", "fixmedins_code": parts[1]})
                return self._page(404, "未找到 Not found", f"<p>没有机构 {_esc(parts[1])} 的记录 "
                                  f"No records for this institution.</p><p><a href='/'>返回列表 Back</a></p>")
            if api:
                return self._json(200, cf.model_dump(mode="json"))
            return self._case_page(cf, printing)
        if api:
            return self._json(404, {"error": "not found"})
        return self._page(404, "未找到 Not found", "<p><a href='/'>返回列表 Back to the list</a></p>")

    # ------------------------------------------------------------------------------------ access
    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE, "")
        return bool(cookie) and session_valid(self.token, cookie, self.clock())

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value of a new session: expiring (``Max-Age`` and inside the MAC),
        ``HttpOnly``, ``SameSite=Strict``, and ``Secure`` when configured."""
        assert self.token is not None
        expires = int(self.clock()) + self.session_s
        secure = "; Secure" if self.cookie_secure else ""
        return (f"{COOKIE}={session_value(self.token, expires)}; Path=/; Max-Age={self.session_s}; HttpOnly; "
                f"SameSite=Strict{secure}")

    def _login(self, method: str, body: bytes, peer: str) -> Response:
        if method == "POST":
            wait = self.limiter.retry_after(peer) if self.token is not None else 0
            if wait:
                return self._page(429, "稍后再试 Too many attempts",
                                  f"<p>登录失败次数过多，请 {wait} 秒后再试。Too many failed sign-ins; "
                                  f"try again in {wait} s.</p>", (("Retry-After", str(wait)),))
            form = parse_qs(body.decode("utf-8", "replace"))
            given = (form.get("token") or [""])[0]
            if self.token is None or hmac.compare_digest(given.encode(), self.token.encode()):
                headers: tuple[tuple[str, str], ...] = (("Location", "/"),)
                if self.token is not None:
                    headers += (("Set-Cookie", self.session_cookie()),)
                return Response(303, "text/plain; charset=utf-8", b"", headers)
            self.limiter.failed(peer)
            log.warning("inspector sign-in failed from %s", peer or "?")
            return self._page(401, "需要登录 Sign-in required", self._login_form(failed=True))
        if method in ("GET", "HEAD"):
            return self._page(200, "登录 Sign in", self._login_form(failed=False))
        return Response(405, "text/plain; charset=utf-8", b"", (("Allow", "GET, HEAD, POST"),))

    def _login_form(self, failed: bool) -> str:
        msg = "<p class='badge critical'>令牌错误 Wrong token</p>" if failed else ""
        return (f"<section><h2>访问令牌 Access token</h2>{msg}"
                "<p class='muted'>案卷仅限授权检查人员查看。The case files need the inspectors' access token.</p>"
                "<form method='post' action='/login'><label>令牌 Token "
                "<input type='password' name='token' id='token' autocomplete='off'></label> "
                "<button type='submit' id='signin'>登录 Sign in</button></form></section>")

    # ------------------------------------------------------------------------------------ responses
    @staticmethod
    def _secure(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer"),
                ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                            "form-action 'self'; base-uri 'none'"), *headers)

    def _json(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        text = mask_text(json.dumps(payload, ensure_ascii=False, sort_keys=False))
        return Response(status, "application/json; charset=utf-8", text.encode(), self._secure(headers))

    def _text(self, status: int, text: str) -> Response:
        return Response(status, "text/plain; charset=utf-8", text.encode(), self._secure(()))

    def _page(self, status: int, title: str, content: str, headers: tuple[tuple[str, str], ...] = (),
              printing: bool = False) -> Response:
        when = self.as_of or (store_as_of(self.store) if status < 400 else None)
        sub = f"政策 Policy {_esc(self.pack.label)}"
        if when:
            sub = f"截至 As of {_d(when)} · {sub}"
        body_class = " class='print'" if printing else ""
        doc = (
            "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(title)} · 医保定点医药机构监测</title>"
            "<link rel='stylesheet' href='/static/style.css'></head>"
            f"<body{body_class}><header><h1><a href='/'>医保定点医药机构监测 · 检查案卷</a> "
            "<small>Inspector case files</small></h1>"
            f"<p>{sub} · 只读 read-only</p></header><main>{content}</main></body></html>"
        )
        return Response(status, "text/html; charset=utf-8", mask_text(doc).encode(), self._secure(headers))

    # ------------------------------------------------------------------------------------ list page
    def _options(self, name: str, current: str, values: Sequence[tuple[str, str]], everything: bool = True) -> str:
        opts = [f"<option value=''{' selected' if not current else ''}>全部 all</option>"] if everything else []
        for value, label in values:
            sel = " selected" if value == current else ""
            opts.append(f"<option value='{_esc(value)}'{sel}>{_esc(label)}</option>")
        return f"<select name='{name}' id='f-{name}'>{''.join(opts)}</select>"

    def _list_page(self, q: ListQuery) -> Response:
        rows = list_cases(self.store, self.pack, q, self.as_of)
        shown, pages = page_of(rows, q)
        page = min(q.page, pages)
        regions = sorted({r.admdvs for r in rows if r.admdvs} | ({q.region} if q.region else set()))
        rule_ids = sorted(set(self.pack.rules) | {x for r in rows for x in r.rules})
        rule_labels = [(r, f"{rule_name(self.pack, r).zh}（{r}）") for r in rule_ids]
        actions = [(a, f"{action_name(a).zh}（{a}）") for a in ACTIONS]
        states = [(s, f"{zh} {en}") for s, (zh, en) in STATE_TEXT.items()]
        sevs = [(s, f"≥ {zh} {en}") for s, (zh, en) in SEVERITY_TEXT.items()]
        sorts = [("severity", "严重度 severity"), ("amount", "涉及金额 amount"), ("recency", "最近 recency"),
                 ("alerts", "告警数 alerts"), ("region", "区域 region"), ("code", "编码 code")]
        order = {None: "", True: "desc", False: "asc"}[q.descending]
        form = (
            "<form class='filters' method='get' action='/'>"
            f"<label>区域 Region{self._options('region', q.region, [(r, region_name(r)) for r in regions])}</label>"
            f"<label>规则 Rule{self._options('rule', q.rule, rule_labels)}</label>"
            f"<label>措施 Action{self._options('action', q.action, actions)}</label>"
            f"<label>状态 State{self._options('state', q.state, states)}</label>"
            f"<label>严重度 Severity{self._options('severity', q.severity, sevs)}</label>"
            f"<label>涉及金额 ≥ ¥ Amount<input type='number' min='0' step='0.01' name='min_amount' id='f-min_amount' "
            f"value='{_esc(q.min_amount if q.min_amount is not None else '')}'></label>"
            f"<label>自 From<input type='date' name='from' id='f-from' value='{_esc(q.date_from or '')}'></label>"
            f"<label>至 To<input type='date' name='to' id='f-to' value='{_esc(q.date_to or '')}'></label>"
            f"<label>排序 Sort{self._options('sort', q.sort, sorts, everything=False)}</label>"
            f"<label>顺序 Order{self._options('order', order, [('desc', '降序 desc'), ('asc', '升序 asc')])}</label>"
            "<button type='submit'>筛选 Filter</button></form>"
        )
        csv_link = f"/institutions.csv?{urlencode(q.as_params(page=1))}"
        body = [f"<section><h2>被标记机构 <small>Flagged institutions</small> · <span id='total'>{len(rows)}</span>"
                f"</h2>{form}<p class='no-print'><a id='csv' href='{_esc(csv_link)}'>导出 CSV Export CSV</a> · "
                f"<a href='/api/institutions?{_esc(urlencode(q.as_params()))}'>JSON</a></p>"
                "</section><section><table id='institutions'><thead><tr>"
                "<th>机构 <small>Institution</small></th><th>区域 <small>Region</small></th>"
                "<th>状态 <small>State</small></th><th>最高严重度 <small>Max severity</small></th>"
                "<th>告警 <small>Alerts</small></th><th>工单 <small>Tickets</small></th>"
                "<th>涉及金额 <small>Amount</small></th>"
                "<th>规则 <small>Rules</small></th><th>措施 <small>Actions</small></th>"
                "<th class='nowrap'>下一节点 <small>Next deadline</small></th>"
                "<th>最近活动 <small>Last activity</small></th></tr></thead><tbody>"]
        for r in shown:
            body.append(self._list_row(r))
        if not shown:
            body.append("<tr><td colspan='11' class='muted'>没有符合条件的机构 No institution matches.</td></tr>")
        body.append("</tbody></table>")
        body.append(self._pager(page, pages, lambda n: f"/?{urlencode(q.as_params(page=n))}"))
        body.append("</section>")
        return self._page(200, "被标记机构 Flagged institutions", "".join(body))

    @staticmethod
    def _pager(page: int, pages: int, link: Callable[[int], str]) -> str:
        if pages <= 1:
            return ""
        prev = f"<a id='prev' href='{_esc(link(page - 1))}'>← 上一页 prev</a>" if page > 1 else ""
        nxt = f"<a id='next-page' href='{_esc(link(page + 1))}'>下一页 next →</a>" if page < pages else ""
        return f"<p class='pager no-print'>{prev} 第 {page} / {pages} 页 page {nxt}</p>"

    @staticmethod
    def _name_list(names: Sequence[Mapping[str, Any]]) -> str:
        return "".join(f"<div class='name{'' if n['known'] else ' unnamed'}'>{_esc(n['zh'])} "
                       f"<small class='muted id'>{_esc(n['id'])}</small></div>" for n in names) or "—"

    def _list_row(self, r: CaseSummary) -> str:
        sev = SEVERITY_TEXT.get(r.max_severity or "", ("—", ""))
        sev_html = f"<span class='badge {_esc(r.max_severity)}'>{sev[0]} {sev[1]}</span>" if r.max_severity else "—"
        name = f"{_esc(r.name)}<br><small class='muted'>{_esc(r.code)}</small>" if r.name else _esc(r.code)
        nxt = (f"<span class='nowrap'>{_d(r.next_due)}</span><br><small class='muted then' "
               f"title='{_esc(r.next_then)}'>{_esc(_short(r.next_then or '', 28))}</small>") if r.next_due else "—"
        return (f"<tr data-code='{_esc(r.code)}'><td><a href='/institutions/{quote(r.code)}'>{name}</a></td>"
                f"<td>{_esc(r.region or '—')}</td>"
                f"<td><span class='badge {r.state}'>{r.state_zh} {r.state_en}</span></td><td>{sev_html}</td>"
                f"<td>{r.alerts}</td><td>{r.tickets}</td><td class='num'>¥{r.amount:,.2f}</td>"
                f"<td class='rules'>{self._name_list(r.rule_names)}</td>"
                f"<td class='actions'>{self._name_list(r.action_names)}</td><td>{nxt}</td>"
                f"<td class='nowrap'>{_d(r.last_activity)}</td></tr>")

    def _csv(self, q: ListQuery) -> Response:
        """The whole filtered list (not paged) as CSV: one row per institution, the list's columns."""
        rows = list_cases(self.store, self.pack, q, self.as_of)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow(csv_row(r))
        return Response(200, "text/csv; charset=utf-8", mask_text(buf.getvalue()).encode(),
                        self._secure((("Content-Disposition", "attachment; filename=\"flagged-institutions.csv\""),)))

    # ------------------------------------------------------------------------------------ case page
    def _clauses(self, clauses: Sequence[ClauseView]) -> str:
        out = []
        for c in clauses:
            doc = f" <small class='muted'>{_esc(c.document)}</small>" if c.document else ""
            text = "<br>".join(_esc(x) for x in c.excerpt) or "<span class='muted'>条文未收录 no excerpt on file</span>"
            out.append(f"<div class='clause'><strong>{_esc(c.clause)}</strong>{doc}"
                       f"<blockquote>{text}</blockquote></div>")
        return "".join(out)

    def _deadline(self, d: Deadline) -> str:
        kind = "复核 review" if d.kind == "review" else "期满 ends"
        judged = f"，判定于 judged at {_d(d.checked_at)}" if d.checked_at else ""
        overdue = " <span class='badge warning'>待判定 overdue</span>" if d.overdue else ""
        return (f"<div class='deadline' id='deadline-{_esc(d.ladder)}'><strong>{_d(d.due)}</strong> · {kind} · "
                f"规则链 ladder <code>{_esc(d.ladder)}</code>{judged}{overdue}"
                f"<dl class='facts'><dt>检查 <small>Checks</small></dt><dd>{_esc(d.checks_zh)}<br>"
                f"<small class='muted'>{_esc(d.checks_en)}</small></dd>"
                f"<dt>届时 <small>Then</small></dt><dd>{_esc(d.then_zh)}<br><small class='muted'>{_esc(d.then_en)}"
                f"</small></dd><dt>来源工单 <small>From ticket</small></dt><dd><code>{_esc(d.ticket_id)}</code></dd>"
                f"</dl>{self._clauses(d.clauses)}</div>")

    def _evidence(self, e: Event) -> str:
        tab = e.evidence_table
        if tab is None:
            return ""
        out = []
        if tab.rows:
            head = "".join(f"<th>{_esc(c.zh)}<br><small>{_esc(c.en)}</small></th>" for c in tab.columns)
            body = []
            for row in tab.rows:
                cells = []
                for c in tab.columns:
                    value = row.get(c.key, "")
                    if c.key == "other_institution" and value and _CODE_RE.match(value):
                        cells.append(f"<td><a href='/institutions/{quote(value)}'>{_esc(value)}</a></td>")
                    else:
                        cells.append(f"<td>{_esc(value)}</td>")
                body.append(f"<tr data-record='{_esc(row['record'])}'>{''.join(cells)}</tr>")
            covered = (f"，共涉及 {tab.records_total} 条 of {tab.records_total} records"
                       if tab.records_total is not None else "")
            amount = f" · 金额合计 total ¥{_esc(tab.amount)}" if tab.amount else ""
            out.append(f"<table class='evidence-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
                       f"<tfoot><tr><td colspan='{len(tab.columns)}'>样本记录 {len(tab.rows)} 条 sample records"
                       f"{covered}{amount}</td></tr></tfoot></table>")
        if tab.facts:
            facts = "".join(f"<tr><th>{_esc(f['zh'])} <small>{_esc(f['en'])}</small></th><td>{_esc(f['value'])}</td>"
                            "</tr>" for f in tab.facts)
            out.append(f"<table class='evidence-facts'><tbody>{facts}</tbody></table>")
        return f"<div class='evidence'>{''.join(out)}</div>"

    def _event(self, e: Event) -> str:
        when = f"<div class='when'>{_d(e.at)} · <small class='id'>{_esc(e.id)}</small></div>"
        names = "、".join(f"{_esc(r['zh'])} <small class='muted id'>{_esc(r['id'])}</small>" for r in e.rules)
        if e.kind == "alert":
            sev = SEVERITY_TEXT.get(e.severity or "", ("", ""))
            en = e.rules[0]["en"] if e.rules else ""
            head = (f"<span class='badge {_esc(e.severity)}'>{sev[0]} {sev[1]}</span> 告警 Alert "
                    f"<strong class='rule-name'>{names}</strong> <small class='muted'>{_esc(en)}</small>")
            facts = [("窗口 <small>Window</small>", f"{_d(e.window_start)} → {_d(e.window_end)}"),
                     ("内容 <small>What</small>", _esc(e.text_zh))]
            if e.amount is not None:
                facts.append(("金额 <small>Amount</small>", f"¥{_esc(e.amount)}"))
            evidence = self._evidence(e)
        else:
            head = (f"工单 Ticket <strong class='action-name'>{_esc(e.title_zh)}</strong> "
                    f"<small class='muted'>{_esc(e.title_en)}</small> <small class='muted id'>{_esc(e.action)}</small>")
            span = (f"{_d(e.effective_from)} → {_d(e.effective_until)}" if e.effective_until
                    else f"自 from {_d(e.effective_from)}")
            facts = [("生效 <small>Effective</small>", span)]
            if e.void:
                facts.append(("状态 <small>Status</small>",
                              "已驳回作废，从未执行 <small>rejected: void, never in force</small>"))
            if e.ref_ticket_id:
                facts.append(("作废工单 <small>Voids</small>", f"<span class='id'>{_esc(e.ref_ticket_id)}</span>"))
            if e.rectify_by:
                facts.append(("整改期限 <small>Rectify by</small>", _d(e.rectify_by)))
            if e.reapply_after:
                facts.append(("再申请 <small>Reapply after</small>", _d(e.reapply_after)))
            if e.requires_verification:
                facts.append(("核实 <small>Verification</small>", "须经核实后执行 requires verification"))
            facts.append(("规则 <small>Rules</small>", names or "—"))
            facts.append(("摘要 <small>Summary</small>", f"{_esc(e.text_zh)}<br><small class='muted'>{_esc(e.text_en)}"
                                                         f"</small>"))
            if e.alert_ids:
                links = " ".join(f"<a href='#{_esc(a)}'><small class='id'>{_esc(a)}</small></a>" for a in e.alert_ids)
                facts.append(("相关告警 <small>Alerts</small>", links))
            evidence = ""
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        return (f"<div class='event {e.kind}' id='{_esc(e.id)}'>{when}<div>{head}</div>"
                f"<dl class='facts'>{dl}</dl>{evidence}{self._clauses(e.clauses)}</div>")

    def _charts(self, cf: CaseFile) -> str:
        lag_h = float(self._param("upload.late", "max_lag_hours", 24))
        complete = float(self._param("data.incomplete", "min_complete_ratio", 0.98))
        coverage = float(self._param("trace.missing", "alert_below_coverage", 0.90))
        # a ratio is drawn only on days it measured something (its denominator > 0): a day with no
        # settlement lines has no completeness, not 0 % (silence is not shown as a value either way)
        basis = {"completeness": "settlement_lines", "trace_coverage": "trace_packs"}
        specs = [
            ("chart-lag", "lag_p90_s", 1 / 3600, Series("上传延迟 p90", "Upload lag p90", "小时 hours", [], lag_h,
                                                      f"{lag_h:g} h 上限 limit", True), ("upload.",)),
            ("chart-completeness", "completeness", 100.0,
             Series("数据完整率", "Completeness", "% 百分比", [], complete * 100, f"{complete:.0%} 下限 floor", False,
                    100.0), ("data.incomplete",)),
            ("chart-trace", "trace_coverage", 100.0,
             Series("追溯码覆盖率", "Trace-code coverage", "% 百分比", [], coverage * 100, f"{coverage:.0%} 下限 floor",
                    False, 100.0), ("trace.missing",)),
        ]
        out = []
        periods = [(action_name(a).zh, f, u) for a, f, u in cf.sanction_periods]
        for chart_id, column, scale, series, prefixes in specs:
            points = []
            for row in cf.daily:
                value, day = row.get(column), row.get("day")
                denominator = basis.get(column)
                if denominator is not None and not row.get(denominator):
                    continue
                if value is not None and day is not None:
                    points.append((day if isinstance(day, date) else date.fromisoformat(str(day)[:10]),
                                   float(value) * scale))
            tripped = [d for r, d, _ in cf.tripped if r.startswith(prefixes)]
            svg = svg_chart(Series(series.title_zh, series.title_en, series.unit, points, series.threshold,
                                   series.threshold_label, series.bad_above, series.y_max), chart_id, tripped, periods)
            if svg:
                out.append(f"<figure>{svg}</figure>")
        if not out:
            return ""
        legend = ("<p class='legend muted'><span class='key line'></span> 每日值 daily value · "
                  "<span class='key threshold'></span> 政策阈值 pack threshold · "
                  "<span class='key tripped'></span> 触发规则日 day that tripped a rule · "
                  "<span class='key sanction'></span> 处罚期间 sanction in force</p>")
        return (f"<section id='charts'><h2>每日数据质量 <small>Daily upload lag, completeness and trace coverage"
                f"</small></h2>{legend}{''.join(out)}</section>")

    def _param(self, rule: str, key: str, default: float) -> Any:
        spec = self.pack.rules.get(rule)
        return spec.params.get(key, default) if spec is not None else default

    def _case_page(self, cf: CaseFile, printing: bool = False) -> Response:
        inst = cf.institution
        title = f"{inst.name}（{cf.code}）" if inst else cf.code
        facts: list[tuple[str, str]] = []
        if inst is not None:
            tier = f"{inst.tier}（{inst.tier_scheme}）" if inst.tier else "未分级 not graded"
            facts += [("名称 <small>Name</small>", _esc(inst.name)), ("编码 <small>Code</small>", _esc(inst.code)),
                      ("类型 <small>Type</small>", f"{_esc(inst.type_zh)} / {_esc(inst.type_en)}"),
                      ("区域 <small>Region</small>", _esc(inst.region)), ("结算等级 <small>Tier</small>", _esc(tier)),
                      ("门诊统筹 <small>Outpatient pooling</small>", "是 yes" if inst.outpatient_pooling else "否 no"),
                      ("协议期 <small>Agreement term</small>",
                       f"{_d(inst.agreement_start)} → {_d(inst.agreement_end)}"),
                      ("定点起始 <small>Designated since</small>", _d(inst.designated_since))]
        else:
            facts.append(("登记 <small>Registry</small>", "<span class='muted'>登记信息缺失 no registry entry</span>"))
        state = f"<span class='badge {cf.state}' id='state'>{cf.state_zh} {cf.state_en}</span>"
        for s in cf.in_force:
            until = f" → {_d(s.until)}" if s.until else "（无期限 indefinite）"
            state += (f"<br>{_esc(s.action_zh)} / {_esc(s.action_en)} <small class='muted id'>{_esc(s.action)}</small> "
                      f"{_d(s.effective_from)}{until}")
        facts.append(("当前状态 <small>Current state</small>", state))
        by_rule = "；".join(f"{_esc(cf.rule_names[k]['zh'])} <small class='muted id'>{_esc(k)}</small> ×{v}"
                           for k, v in cf.alerts_by_rule.items()) or "—"
        by_action = "；".join(f"{_esc(cf.action_names[k]['zh'])} <small class='muted id'>{_esc(k)}</small> ×{v}"
                             for k, v in cf.tickets_by_action.items()) or "—"
        facts.append(("告警 <small>Alerts</small>", f"{cf.alerts}（{by_rule}）"))
        facts.append(("工单 <small>Tickets</small>", f"{cf.tickets}（{by_action}）"))
        facts.append(("涉及金额 <small>Amount at stake</small>", f"¥{cf.amount:,.2f}"))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        deadlines = "".join(self._deadline(d) for d in cf.deadlines) or "<p class='muted'>无待检查节点 none pending</p>"
        timeline = "".join(self._event(e) for e in cf.timeline)
        code = quote(cf.code)
        pager = self._pager(cf.page, cf.pages, lambda n: f"/institutions/{code}?page={n}")
        content = (f"<p class='no-print'><a href='/'>← 返回列表 Back to the list</a> · "
                   f"<a id='pdf' href='/institutions/{code}.pdf'>打印案卷 PDF</a> · "
                   f"<a id='print' href='/institutions/{code}?print=1'>打印视图 Print view</a> · "
                   f"<a href='/api/institutions/{code}'>JSON</a></p><section id='institution'><h2>{_esc(title)} "
                   f"<small>Institution</small></h2><dl class='facts'>{dl}</dl></section>"
                   f"<section id='next'><h2>下一检查节点 <small>Next deadline</small></h2>{deadlines}</section>"
                   f"{self._charts(cf)}<section id='timeline'><h2>时间线 <small>Timeline</small>"
                   f"{f' · 第 {cf.page} / {cf.pages} 页' if cf.pages > 1 else ''}</h2>{pager}{timeline}{pager}"
                   "</section>")
        return self._page(200, title, content, printing=printing)


# ------------------------------------------------------------------------------------------ servers
App = Callable[[str, str, Mapping[str, Sequence[str]], Mapping[str, str], bytes, str], Response]
#: The largest request body accepted (the login form is a few dozen bytes).
MAX_BODY = 4096
REQUEST_TIMEOUT_S = 30.0


def _handler_class(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "medins-monitor"
        sys_version = ""

        #: seconds a connection may idle mid-request before it is closed (a slow sender holds no thread)
        timeout = REQUEST_TIMEOUT_S

        def _refuse(self, status: int, text: str) -> None:
            """Answer without reading the body, and close the connection (its unread bytes are dropped)."""
            self.close_connection = True
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes | None:
            """The request body, at most ``MAX_BODY`` bytes, or ``None`` after refusing the request:
            a ``Content-Length`` that is not a plain non-negative number (``-1``, ``+5``, ``1e3``, two
            values) → 400; one above ``MAX_BODY`` → 413; a chunked body → 411. Never reads to EOF."""
            if self.headers.get("Transfer-Encoding"):
                self._refuse(411, "length required: send Content-Length, no Transfer-Encoding\n")
                return None
            values = self.headers.get_all("Content-Length") or []
            if not values:
                return b""
            if len(values) > 1 or not values[0].strip().isdigit() or len(values[0].strip()) > 12:
                self._refuse(400, "bad Content-Length\n")
                return None
            length = int(values[0].strip())
            if length > MAX_BODY:
                self._refuse(413, f"body too large (at most {MAX_BODY} bytes)\n")
                return None
            return self.rfile.read(length) if length else b""

        def _run(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self._body()
            if body is None:
                return
            resp = app(method, url.path, parse_qs(url.query), dict(self.headers.items()), body,
                       str(self.client_address[0]))
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers:
                self.send_header(name, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(resp.body)

        def do_GET(self) -> None:
            self._run("GET")

        def do_HEAD(self) -> None:
            self._run("HEAD")

        def do_POST(self) -> None:
            self._run("POST")

        def do_PUT(self) -> None:
            self._run("PUT")

        def do_DELETE(self) -> None:
            self._run("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            # path only (no query string, no headers: a token never reaches the log)
            log.info("%s %s", self.command, urlsplit(self.path).path)

    return Handler


def make_server(app: App, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A threaded standard-library HTTP server for ``app`` (``port=0`` picks a free port)."""
    server_class = type("InspectorHTTPServer", (ThreadingHTTPServer,), {
        # the listen backlog: the default 5 drops the SYNs of a crowd of browsers, each then waits 1 s
        # for the TCP retransmit (seen as p99 ≈ 1.3 s at 50 clients while p50 was 15 ms)
        "request_queue_size": 128})
    server = server_class((host, port), _handler_class(app))
    server.daemon_threads = True
    return server


def aiohttp_handler(app: App) -> Callable[[Any], Any]:
    """An aiohttp handler (``web.Request`` → ``web.Response``) for mounting the same routes on the
    Faust web server (its driver is aiohttp): ``router.add_route('*', '/{tail:.*}', aiohttp_handler(app))``.
    The store is read in a worker thread so the event loop never blocks on it."""
    import asyncio

    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text=f"body too large (at most {MAX_BODY} bytes)\n")
        body = await request.content.read(MAX_BODY + 1) if request.can_read_body else b""
        if len(body) > MAX_BODY:
            return web.Response(status=413, text=f"body too large (at most {MAX_BODY} bytes)\n")
        query = {k: request.query.getall(k) for k in request.query}
        resp = await asyncio.to_thread(app, request.method, request.path, query, dict(request.headers), body,
                                       request.remote or "")
        out = web.Response(status=resp.status, body=resp.body, headers=dict(resp.headers))
        out.headers["Content-Type"] = resp.content_type
        return out

    return handle

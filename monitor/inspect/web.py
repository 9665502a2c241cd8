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
``Authorization: Bearer TOKEN`` or the session cookie set by ``/login`` (an HMAC of the token, never the
token itself); otherwise 401. Nothing here changes monitor state (any method but GET/HEAD → 405, except
the login form). Responses never carry personal data in clear: case files are built masked, and every
body passes a last certificate-number mask on the way out. Pages carry no script (CSP forbids it).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import SecretStr

from monitor.clock import format_time
from monitor.inspect.model import (
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
    region_name,
    store_as_of,
)
from monitor.outputs import ACTIONS
from monitor.policy.ledger import ACTION_TEXT
from monitor.policy.pack import Pack

log = logging.getLogger(__name__)

COOKIE = "medins_ui_session"
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
svg.chart { background:#fafbfc; border:1px solid var(--line); }
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


def session_value(token: str) -> str:
    """The cookie a browser holds after ``/login``: HMAC-SHA256(token, purpose) — the token itself is
    never stored client-side."""
    return hmac.new(token.encode(), b"medins-monitor ui session", hashlib.sha256).hexdigest()


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


class InspectorApp:
    """The pages and the API (see the module docstring). ``as_of`` fixes event time; ``None`` uses the
    store's horizon at each request."""

    def __init__(self, store: CaseStore, pack: Pack, token: SecretStr | None = None,
                 as_of: datetime | None = None) -> None:
        self.store = store
        self.pack = pack
        self.token = token.get_secret_value() if token is not None and token.get_secret_value() else None
        self.as_of = as_of

    # ------------------------------------------------------------------------------------ dispatch
    def __call__(self, method: str, path: str, query: Mapping[str, Sequence[str]],
                 headers: Mapping[str, str], body: bytes = b"") -> Response:
        method = method.upper()
        path = "/" + path.strip("/") if path != "/" else "/"
        h = {k.lower(): v for k, v in headers.items()}
        if path == "/healthz":
            return self._text(200, "ok\n")
        if path == "/static/style.css":
            return Response(200, "text/css; charset=utf-8", STYLE.encode(), (("Cache-Control", "max-age=300"),))
        if path == "/login":
            return self._login(method, body)
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
            return self._route(path, query, api)
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
        if parts == ["institutions"]:
            q = ListQuery.from_query(query)
            if api:
                rows = list_cases(self.store, self.pack, q, self.as_of)
                when = self.as_of or store_as_of(self.store)
                return self._json(200, {"as_of": when.isoformat() if when else None, "policy": self.pack.label,
                                        "query": q.model_dump(), "count": len(rows),
                                        "institutions": [r.model_dump(mode="json") for r in rows]})
            return self._list_page(q)
        if len(parts) == 2 and parts[0] == "institutions" and _CODE_RE.match(parts[1]):
            cf = build_case_file(self.store, parts[1], self.pack, self.as_of)
            if cf is None:
                if api:
                    return self._json(404, {"error": "not found", "fixmedins_code": parts[1]})
                return self._page(404, "未找到 Not found", f"<p>没有机构 {_esc(parts[1])} 的记录 "
                                  f"No records for this institution.</p><p><a href='/'>返回列表 Back</a></p>")
            if api:
                return self._json(200, cf.model_dump(mode="json"))
            return self._case_page(cf)
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
        return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    def _login(self, method: str, body: bytes) -> Response:
        if method == "POST":
            form = parse_qs(body.decode("utf-8", "replace"))
            given = (form.get("token") or [""])[0]
            if self.token is None or hmac.compare_digest(given.encode(), self.token.encode()):
                headers: tuple[tuple[str, str], ...] = (("Location", "/"),)
                if self.token is not None:
                    headers += (("Set-Cookie", f"{COOKIE}={session_value(self.token)}; Path=/; HttpOnly; "
                                               f"SameSite=Strict"),)
                return Response(303, "text/plain; charset=utf-8", b"", headers)
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

    def _page(self, status: int, title: str, content: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        when = self.as_of or (store_as_of(self.store) if status < 400 else None)
        sub = f"政策 Policy {_esc(self.pack.label)}"
        if when:
            sub = f"截至 As of {_d(when)} · {sub}"
        doc = (
            "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(title)} · 医保定点医药机构监测</title>"
            "<link rel='stylesheet' href='/static/style.css'></head>"
            "<body><header><h1><a href='/'>医保定点医药机构监测 · 检查案卷</a> "
            "<small>Inspector case files</small></h1>"
            f"<p>{sub} · 只读 read-only</p></header><main>{content}</main></body></html>"
        )
        return Response(status, "text/html; charset=utf-8", mask_text(doc).encode(), self._secure(headers))

    # ------------------------------------------------------------------------------------ list page
    def _options(self, name: str, current: str, values: Sequence[tuple[str, str]]) -> str:
        opts = [f"<option value=''{' selected' if not current else ''}>全部 all</option>"]
        for value, label in values:
            sel = " selected" if value == current else ""
            opts.append(f"<option value='{_esc(value)}'{sel}>{_esc(label)}</option>")
        return f"<select name='{name}' id='f-{name}'>{''.join(opts)}</select>"

    def _list_page(self, q: ListQuery) -> Response:
        everything = list_cases(self.store, self.pack, ListQuery(), self.as_of)
        rows = list_cases(self.store, self.pack, q, self.as_of)
        regions = sorted({r.admdvs for r in everything if r.admdvs})
        rules = sorted(set(self.pack.rules) | {x for r in everything for x in r.rules})
        actions = [(a, f"{a} {ACTION_TEXT.get(a, (a,))[0]}") for a in ACTIONS]
        states = [(s, f"{zh} {en}") for s, (zh, en) in STATE_TEXT.items()]
        rule_labels = [(r, f"{r} {self.pack.rules[r].name_zh}" if r in self.pack.rules else r) for r in rules]
        form = (
            "<form class='filters' method='get' action='/'>"
            f"<label>区域 Region{self._options('region', q.region, [(r, region_name(r)) for r in regions])}</label>"
            f"<label>规则 Rule{self._options('rule', q.rule, rule_labels)}</label>"
            f"<label>措施 Action{self._options('action', q.action, actions)}</label>"
            f"<label>状态 State{self._options('state', q.state, states)}</label>"
            "<label>排序 Sort<select name='sort' id='f-sort'>"
            f"<option value='severity'{' selected' if q.sort == 'severity' else ''}>严重度 severity</option>"
            f"<option value='recency'{' selected' if q.sort == 'recency' else ''}>最近 recency</option>"
            "</select></label>"
            "<button type='submit'>筛选 Filter</button></form>"
        )
        body = [f"<section><h2>被标记机构 <small>Flagged institutions</small> · {len(rows)} / {len(everything)}</h2>",
                form, "</section><section><table id='institutions'><thead><tr>"
                "<th>机构 <small>Institution</small></th><th>区域 <small>Region</small></th>"
                "<th>状态 <small>State</small></th><th>最高严重度 <small>Max severity</small></th>"
                "<th>告警 <small>Alerts</small></th><th>工单 <small>Tickets</small></th>"
                "<th>规则 <small>Rules</small></th><th>措施 <small>Actions</small></th>"
                "<th>下一节点 <small>Next deadline</small></th><th>最近活动 <small>Last activity</small></th>"
                "</tr></thead><tbody>"]
        for r in rows:
            body.append(self._list_row(r))
        if not rows:
            body.append("<tr><td colspan='10' class='muted'>没有符合条件的机构 No institution matches.</td></tr>")
        body.append("</tbody></table></section>")
        return self._page(200, "被标记机构 Flagged institutions", "".join(body))

    def _list_row(self, r: CaseSummary) -> str:
        sev = SEVERITY_TEXT.get(r.max_severity or "", ("—", ""))
        sev_html = f"<span class='badge {_esc(r.max_severity)}'>{sev[0]} {sev[1]}</span>" if r.max_severity else "—"
        name = f"{_esc(r.name)}<br><small class='muted'>{_esc(r.code)}</small>" if r.name else _esc(r.code)
        nxt = f"{_d(r.next_due)}<br><small class='muted'>{_esc(r.next_then)}</small>" if r.next_due else "—"
        return (f"<tr data-code='{_esc(r.code)}'><td><a href='/institutions/{quote(r.code)}'>{name}</a></td>"
                f"<td>{_esc(r.region or '—')}</td>"
                f"<td><span class='badge {r.state}'>{r.state_zh} {r.state_en}</span></td><td>{sev_html}</td>"
                f"<td>{r.alerts}</td><td>{r.tickets}</td><td>{_esc(', '.join(r.rules))}</td>"
                f"<td>{_esc(', '.join(r.actions))}</td><td>{nxt}</td><td>{_d(r.last_activity)}</td></tr>")

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

    def _event(self, e: Event) -> str:
        when = f"<div class='when'>{_d(e.at)} · <code>{_esc(e.id)}</code></div>"
        if e.kind == "alert":
            sev = SEVERITY_TEXT.get(e.severity or "", ("", ""))
            head = (f"<span class='badge {_esc(e.severity)}'>{sev[0]} {sev[1]}</span> 告警 Alert "
                    f"<code>{_esc(e.rule_ids[0])}</code> {_esc(e.rule_names[0])}")
            facts = [("窗口 <small>Window</small>", f"{_d(e.window_start)} → {_d(e.window_end)}"),
                     ("内容 <small>What</small>", _esc(e.text_zh))]
            if e.amount is not None:
                facts.append(("金额 <small>Amount</small>", f"¥{_esc(e.amount)}"))
            if e.evidence:
                ev = "<br>".join(f"{_esc(k)} = {_esc(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))}"
                                 for k, v in e.evidence.items())
                facts.append(("证据 <small>Evidence</small>", f"<span class='evidence'>{ev}</span>"))
        else:
            head = f"工单 Ticket <code>{_esc(e.action)}</code> {_esc(e.title_zh)} / {_esc(e.title_en)}"
            span = (f"{_d(e.effective_from)} → {_d(e.effective_until)}" if e.effective_until
                    else f"自 from {_d(e.effective_from)}")
            facts = [("生效 <small>Effective</small>", span)]
            if e.rectify_by:
                facts.append(("整改期限 <small>Rectify by</small>", _d(e.rectify_by)))
            if e.reapply_after:
                facts.append(("再申请 <small>Reapply after</small>", _d(e.reapply_after)))
            if e.requires_verification:
                facts.append(("核实 <small>Verification</small>", "须经核实后执行 requires verification"))
            facts.append(("规则 <small>Rules</small>", _esc(", ".join(e.rule_names) or "—")))
            facts.append(("摘要 <small>Summary</small>", f"{_esc(e.text_zh)}<br><small class='muted'>{_esc(e.text_en)}"
                                                         f"</small>"))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        return (f"<div class='event {e.kind}' id='{_esc(e.id)}'>{when}<div>{head}</div>"
                f"<dl class='facts'>{dl}</dl>{self._clauses(e.clauses)}</div>")

    def _chart(self, cf: CaseFile, column: str, title: str, scale: float, unit: str,
               top: float | None = None) -> str:
        """An inline SVG line of one ``institution_daily`` column (no script, no external asset);
        ``top`` fixes the scale (1.0 for ratios), else the largest value."""
        points = [(r.get("day"), float(r[column])) for r in cf.daily if r.get(column) is not None]
        if len(points) < 2:
            return ""
        values = [v / scale for _, v in points]
        top = top or max(max(values), 1e-9)
        w, h, pad = 560, 120, 24
        step = (w - 2 * pad) / (len(values) - 1)
        coords = " ".join(f"{pad + i * step:.1f},{h - pad - (v / top) * (h - 2 * pad):.1f}"
                          for i, v in enumerate(values))
        first, last = points[0][0], points[-1][0]
        return (f"<figure><figcaption>{title} <small class='muted'>scale 0–{top:.2f}{unit}</small></figcaption>"
                f"<svg class='chart' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
                f"aria-label='{_esc(title)}'><polyline fill='none' stroke='#2f5d8a' stroke-width='2' "
                f"points='{coords}'/><text x='{pad}' y='{h - 6}' font-size='10' fill='#5c6675'>{_esc(first)}</text>"
                f"<text x='{w - pad}' y='{h - 6}' font-size='10' fill='#5c6675' text-anchor='end'>{_esc(last)}</text>"
                "</svg></figure>")

    def _case_page(self, cf: CaseFile) -> Response:
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
            state += f"<br>{_esc(s.action_zh)} / {_esc(s.action_en)} {_d(s.effective_from)}{until}"
        facts.append(("当前状态 <small>Current state</small>", state))
        by_rule = ", ".join(f"{_esc(k)} ×{v}" for k, v in cf.alerts_by_rule.items()) or "—"
        by_action = ", ".join(f"{_esc(k)} ×{v}" for k, v in cf.tickets_by_action.items()) or "—"
        facts.append(("告警 <small>Alerts</small>", f"{cf.alerts}（{by_rule}）"))
        facts.append(("工单 <small>Tickets</small>", f"{cf.tickets}（{by_action}）"))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        deadlines = "".join(self._deadline(d) for d in cf.deadlines) or "<p class='muted'>无待检查节点 none pending</p>"
        charts = (self._chart(cf, "lag_p90_s", "上传延迟 p90（小时）Upload lag p90 (h)", 3600.0, " h")
                  + self._chart(cf, "completeness", "数据完整率 Completeness", 1.0, "", top=1.0))
        chart_section = (f"<section><h2>每日数据质量 <small>Daily upload lag and completeness</small></h2>{charts}"
                         "</section>") if charts else ""
        timeline = "".join(self._event(e) for e in cf.timeline)
        content = (f"<p><a href='/'>← 返回列表 Back to the list</a> · <a href='/api/institutions/{quote(cf.code)}'>"
                   f"JSON</a></p><section id='institution'><h2>{_esc(title)} <small>Institution</small></h2>"
                   f"<dl class='facts'>{dl}</dl></section>"
                   f"<section id='next'><h2>下一检查节点 <small>Next deadline</small></h2>{deadlines}</section>"
                   f"{chart_section}<section id='timeline'><h2>时间线 <small>Timeline</small></h2>{timeline}</section>")
        return self._page(200, title, content)


# ------------------------------------------------------------------------------------------ servers
App = Callable[[str, str, Mapping[str, Sequence[str]], Mapping[str, str], bytes], Response]


def _handler_class(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "medins-monitor"
        sys_version = ""

        def _run(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 4096)) if length else b""
            resp = app(method, url.path, parse_qs(url.query), dict(self.headers.items()), body)
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
    server = ThreadingHTTPServer((host, port), _handler_class(app))
    server.daemon_threads = True
    return server


def aiohttp_handler(app: App) -> Callable[[Any], Any]:
    """An aiohttp handler (``web.Request`` → ``web.Response``) for mounting the same routes on the
    Faust web server (its driver is aiohttp): ``router.add_route('*', '/{tail:.*}', aiohttp_handler(app))``.
    The store is read in a worker thread so the event loop never blocks on it."""
    import asyncio

    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        query = {k: request.query.getall(k) for k in request.query}
        resp = await asyncio.to_thread(app, request.method, request.path, query, dict(request.headers), body)
        out = web.Response(status=resp.status, body=resp.body, headers=dict(resp.headers))
        out.headers["Content-Type"] = resp.content_type
        return out

    return handle

"""The printable case file (issue 18 §4): ``monitor inspect CODE --pdf FILE`` and
``/institutions/{code}.pdf``.

Made with ReportLab's Platypus (a maintained PDF library; no hand-written PDF), in Chinese with English
alongside, with a CJK TrueType font *embedded* (subset) so it prints the same anywhere: the font is
``MONITOR_PDF_FONT`` if set, else the first of ``FONT_CANDIDATES`` present (Debian ``fonts-wqy-microhei``,
which ``deploy/ensure-tools.sh`` installs). A CFF-flavoured OpenType font (``NotoSansCJK-*.ttc``) cannot
be embedded by ReportLab and is not tried.

Contents: a cover (institution, state, sanctions in force, next deadline, counts and amount at stake),
the deadlines, the timeline (each alert with its evidence table, each ticket with its action), and an
annex with the text of every clause cited. All text passes ``mask_text`` (no certificate number leaves
in clear); evidence is the case file's, already masked.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from monitor.clock import format_time
from monitor.inspect.model import CaseFile, ClauseView, Event, mask_text

FONT_NAME = "MonitorCJK"
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
)


class FontMissing(RuntimeError):
    """No CJK TrueType font to embed (install fonts-wqy-microhei or set MONITOR_PDF_FONT)."""


@lru_cache(maxsize=1)
def register_font() -> str:
    """Register the CJK font with ReportLab once; returns its file."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    env = os.environ.get("MONITOR_PDF_FONT")
    paths = [Path(env)] if env else list(FONT_CANDIDATES)
    for path in paths:
        if path.is_file():
            pdfmetrics.registerFont(TTFont(FONT_NAME, str(path), subfontIndex=0))
            return str(path)
    raise FontMissing("no CJK TrueType font for the PDF: install Debian fonts-wqy-microhei "
                      f"(deploy/ensure-tools.sh) or set MONITOR_PDF_FONT (tried {', '.join(map(str, paths))})")


def _d(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    return format_time(value) if isinstance(value, datetime) else value.isoformat()


def _x(text: object) -> str:
    """Escaped, masked text for a Paragraph."""
    return html.escape(mask_text("" if text is None else str(text)), quote=False)


def render_pdf(cf: CaseFile) -> bytes:
    """The case file as PDF bytes (A4, CJK font embedded)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        KeepTogether,
        LongTable,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    register_font()
    base = ParagraphStyle("base", fontName=FONT_NAME, fontSize=9, leading=12.5, alignment=TA_LEFT,
                          wordWrap="CJK")
    small = ParagraphStyle("small", parent=base, fontSize=7.5, leading=10, textColor=colors.HexColor("#5c6675"))
    h1 = ParagraphStyle("h1", parent=base, fontSize=16, leading=21, spaceAfter=6)
    h2 = ParagraphStyle("h2", parent=base, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4,
                        textColor=colors.HexColor("#123a5e"))
    h3 = ParagraphStyle("h3", parent=base, fontSize=9.5, leading=13, spaceBefore=6)
    quote = ParagraphStyle("quote", parent=base, leftIndent=8, backColor=colors.HexColor("#f3f0e6"),
                           borderPadding=3, spaceBefore=2, spaceAfter=4)
    grid = TableStyle([("FONT", (0, 0), (-1, -1), FONT_NAME, 7.5), ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f5")),
                       ("VALIGN", (0, 0), (-1, -1), "TOP")])
    facts_style = TableStyle([("FONT", (0, 0), (-1, -1), FONT_NAME, 9), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                              ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d9dee6"))])

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(text, style)

    def facts(rows: Iterable[tuple[str, str]]) -> Table:
        data = [[p(k), p(v)] for k, v in rows]
        return Table(data, colWidths=[42 * mm, 128 * mm], style=facts_style)

    inst = cf.institution
    title = f"{inst.name}（{cf.code}）" if inst else cf.code
    story: list[Any] = [p("医保定点医药机构检查案卷 <font size=9 color='#5c6675'>Case file</font>", h2),
                        p(_x(title), h1),
                        p(f"截至 As of {_x(_d(cf.as_of))} · 政策 Policy {_x(cf.policy)} · "
                          f"共 {cf.alerts} 条告警 alerts, {cf.tickets} 张工单 tickets", small), Spacer(1, 4 * mm)]
    cover: list[tuple[str, str]] = []
    if inst is not None:
        tier = f"{inst.tier}（{inst.tier_scheme}）" if inst.tier else "未分级 not graded"
        cover += [("机构名称 Name", _x(inst.name)), ("机构编码 Code", _x(inst.code)),
                  ("类型 Type", f"{_x(inst.type_zh)} / {_x(inst.type_en)}"), ("区域 Region", _x(inst.region)),
                  ("结算等级 Tier", _x(tier)),
                  ("门诊统筹 Outpatient pooling", "是 yes" if inst.outpatient_pooling else "否 no"),
                  ("协议期 Agreement term", f"{_d(inst.agreement_start)} → {_d(inst.agreement_end)}")]
    else:
        cover.append(("机构 Institution", f"{_x(cf.code)}（登记信息缺失 no registry entry）"))
    cover.append(("当前状态 State", f"<b>{_x(cf.state_zh)}</b> {_x(cf.state_en)}"))
    in_force = "<br/>".join(
        f"{_x(s.action_zh)} / {_x(s.action_en)} <font size=7 color='#5c6675'>{_x(s.action)}</font> "
        f"{_d(s.effective_from)}{' → ' + _d(s.until) if s.until else '（无期限 indefinite）'}" for s in cf.in_force)
    cover.append(("在执行处罚 Sanctions in force", in_force or "无 none"))
    nd = cf.next_deadline
    cover.append(("下一检查节点 Next deadline",
                  f"<b>{_d(nd.due)}</b> {_x(nd.checks_zh)}<br/>{_x(nd.then_zh)}" if nd else "无 none pending"))
    cover.append(("涉及金额 Amount at stake", f"¥{cf.amount:,.2f}"))
    cover.append(("告警（按规则）Alerts by rule", "<br/>".join(
        f"{_x(cf.rule_names.get(k, {}).get('zh', k))} <font size=7 color='#5c6675'>{_x(k)}</font> ×{v}"
        for k, v in cf.alerts_by_rule.items()) or "—"))
    cover.append(("工单（按措施）Tickets by action", "<br/>".join(
        f"{_x(cf.action_names.get(k, {}).get('zh', k))} <font size=7 color='#5c6675'>{_x(k)}</font> ×{v}"
        for k, v in cf.tickets_by_action.items()) or "—"))
    story.append(facts(cover))

    if cf.deadlines:
        story.append(p("检查节点 <font size=9>Deadlines</font>", h2))
        for d in cf.deadlines:
            story.append(KeepTogether([
                p(f"<b>{_d(d.due)}</b> {'复核 review' if d.kind == 'review' else '期满 ends'} · 规则链 {_x(d.ladder)}",
                  h3),
                p(f"检查 Checks：{_x(d.checks_zh)}"), p(f"届时 Then：{_x(d.then_zh)}"),
                p(f"{_x(d.then_en)}", small)]))

    story.append(p("时间线 <font size=9>Timeline</font>"
                   + (f" <font size=8>（第 {cf.page}/{cf.pages} 页，每页 {cf.page_size} 条告警 — 其余见网页）</font>"
                      if cf.pages > 1 else ""), h2))
    clauses: dict[str, ClauseView] = {}
    for e in cf.timeline:
        story.extend(_event_flowables(e, p, base, small, h3, grid, mm, LongTable, clauses))
    if not cf.timeline:
        story.append(p("无 none"))

    story.append(p("依据条文 <font size=9>Clauses cited (text)</font>", h2))
    for c in [*clauses.values(), *(c for d in cf.deadlines for c in d.clauses if c.clause not in clauses)]:
        clauses.setdefault(c.clause, c)
    for c in clauses.values():
        story.append(p(f"<b>{_x(c.clause)}</b> {_x(c.document or '')}", h3))
        text = "<br/>".join(_x(x) for x in c.excerpt) or "（条文未收录 no excerpt on file）"
        story.append(p(text, quote))

    buf = io.BytesIO()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT_NAME, 7.5)
        canvas.drawString(18 * mm, 10 * mm, mask_text(f"{title} · 截至 {_d(cf.as_of)} · {cf.policy}"))
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"第 {doc.page} 页 page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=18 * mm, title=mask_text(f"案卷 {title}"), author="medins-monitor",
                            subject="医保定点医药机构检查案卷 case file")
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()


def _event_flowables(e: Event, p: Any, base: Any, small: Any, h3: Any, grid: Any, mm: float, table: Any,
                     clauses: dict[str, ClauseView]) -> list[Any]:
    out: list[Any] = []
    names = "、".join(f"{_x(r['zh'])} <font size=7 color='#5c6675'>{_x(r['id'])}</font>" for r in e.rules)
    if e.kind == "alert":
        out.append(p(f"{_d(e.at)} · 告警 Alert [{_x(e.severity)}] {names}", h3))
        out.append(p(f"{_x(e.text_zh)}" + (f" · 金额 ¥{_x(e.amount)}" if e.amount is not None else ""), base))
        out.append(p(f"编号 {_x(e.id)} · 窗口 {_d(e.window_start)} → {_d(e.window_end)}", small))
        tab = e.evidence_table
        if tab is not None and tab.rows:
            cols = tab.columns[:7]
            data = [[p(f"{_x(c.zh)}<br/><font size=6>{_x(c.en)}</font>", small) for c in cols]]
            data += [[p(_x(row.get(c.key, "")), small) for c in cols] for row in tab.rows]
            foot = f"样本记录 {len(tab.rows)} 条 sample records"
            if tab.records_total is not None:
                foot += f"，共 {tab.records_total} 条"
            if tab.amount:
                foot += f" · 金额合计 total ¥{_x(tab.amount)}"
            data.append([p(foot, small)] + [""] * (len(cols) - 1))
            width = 170 * mm / len(cols)
            t = table(data, colWidths=[width] * len(cols), repeatRows=1)
            t.setStyle(grid)
            t.setStyle([("SPAN", (0, len(data) - 1), (-1, len(data) - 1))])
            out.append(t)
        if tab is not None and tab.facts:
            out.append(p("；".join(f"{_x(f['zh'])}：{_x(f['value'])}" for f in tab.facts[:12]), small))
    else:
        span = (f"{_d(e.effective_from)} → {_d(e.effective_until)}" if e.effective_until
                else f"自 {_d(e.effective_from)}")
        out.append(p(f"{_d(e.at)} · 工单 Ticket <b>{_x(e.title_zh)}</b> {_x(e.title_en)} "
                     f"<font size=7 color='#5c6675'>{_x(e.action)}</font>", h3))
        out.append(p(f"生效 Effective {span}" + (f" · 整改期限 {_d(e.rectify_by)}" if e.rectify_by else "")
                     + (f" · 再申请不早于 {_d(e.reapply_after)}" if e.reapply_after else "")
                     + (" · 须经核实 requires verification" if e.requires_verification else "")
                     + (" · 已驳回作废 rejected: void, never in force" if e.void else "")
                     + (f" · 作废工单 voids {_x(e.ref_ticket_id)}" if e.ref_ticket_id else ""), base))
        out.append(p(f"规则 Rules：{names or '—'}", base))
        out.append(p(_x(e.text_zh), base))
        out.append(p(f"编号 {_x(e.id)}", small))
    cited = []
    for c in e.clauses:
        cited.append(_x(c.clause))
        clauses.setdefault(c.clause, c)
    if cited:
        out.append(p(f"依据 Basis：{'；'.join(cited)}（条文见附录 text in the annex）", small))
    return out


def write_pdf(cf: CaseFile, path: Path) -> int:
    """Write the PDF to ``path``; returns its size in bytes."""
    data = render_pdf(cf)
    path.write_bytes(data)
    return len(data)


__all__: Sequence[str] = ("FontMissing", "register_font", "render_pdf", "write_pdf")

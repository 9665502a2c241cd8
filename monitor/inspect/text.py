"""Terminal rendering of a case file (``monitor inspect CODE``): plain text, Chinese labels with English
alongside, one section per question an inspector asks — who, in what state, what next and by when,
what happened (timeline with rule, clause text and evidence)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from monitor.clock import format_time
from monitor.inspect.model import SEVERITY_TEXT, CaseFile, CaseSummary, ClauseView, Deadline, Event


def _d(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return format_time(value)
    return value.isoformat()


def _evidence(ev: dict[str, Any]) -> str:
    parts = []
    for key, value in ev.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def _clauses(clauses: list[ClauseView], seen: set[str], indent: str) -> list[str]:
    lines = []
    for c in clauses:
        if c.clause in seen:
            lines.append(f"{indent}依据 Basis: {c.clause}（条文见上 text above）")
            continue
        seen.add(c.clause)
        lines.append(f"{indent}依据 Basis: {c.clause}" + (f" — {c.document}" if c.document else ""))
        if c.excerpt:
            lines.append(f"{indent}  「{' …… '.join(c.excerpt)}」")
        else:
            lines.append(f"{indent}  (条文未收录 no excerpt on file)")
    return lines


def _deadline(d: Deadline) -> list[str]:
    when = f"，判定于 judged at {_d(d.checked_at)}" if d.checked_at else ""
    head = "复核 review" if d.kind == "review" else "期满 ends"
    overdue = "  (已到期待判定 overdue)" if d.overdue else ""
    lines = [f"  {_d(d.due)}  [{head}] 规则链 ladder {d.ladder}{when}{overdue}"]
    lines.append(f"    检查 Checks: {d.checks_zh} / {d.checks_en}")
    lines.append(f"    届时 Then: {d.then_zh} / {d.then_en}")
    lines.append(f"    来源工单 From ticket: {d.ticket_id}; 依据 Basis: {', '.join(c.clause for c in d.clauses)}")
    return lines


def _event(e: Event, seen: set[str]) -> list[str]:
    if e.kind == "alert":
        sev = SEVERITY_TEXT.get(e.severity or "", ("", ""))
        lines = [f"  {_d(e.at)}  告警 ALERT [{sev[0]} {sev[1]}] {e.rule_names[0]} ({e.rule_ids[0]})"]
        lines.append(f"    编号 Id: {e.id}; 窗口 Window: {_d(e.window_start)} → {_d(e.window_end)}")
        lines.append(f"    内容 What: {e.text_zh}")
        if e.amount is not None:
            lines.append(f"    金额 Amount: ¥{e.amount}")
        lines.extend(_clauses(e.clauses, seen, "    "))
        tab = e.evidence_table
        if tab is not None and tab.rows:
            lines.append(f"    证据 Evidence ({len(tab.rows)} 条样本记录 sample records"
                         + (f" / 共 {tab.records_total}" if tab.records_total is not None else "") + "):")
            for row in tab.rows:
                lines.append("      · " + "; ".join(f"{c.zh}={row[c.key]}" for c in tab.columns if row.get(c.key)))
            facts = "; ".join(f"{f['zh']}={f['value']}" for f in tab.facts)
            if facts:
                lines.append(f"      {facts}")
        elif e.evidence:
            lines.append(f"    证据 Evidence: {_evidence(e.evidence)}")
        return lines
    lines = [f"  {_d(e.at)}  工单 TICKET {e.title_zh} / {e.title_en} ({e.action})"]
    span = (f"{_d(e.effective_from)} → {_d(e.effective_until)}" if e.effective_until
            else f"自 from {_d(e.effective_from)}")
    extra = []
    if e.rectify_by:
        extra.append(f"整改期限 rectify by {_d(e.rectify_by)}")
    if e.reapply_after:
        extra.append(f"再申请不早于 reapply after {_d(e.reapply_after)}")
    if e.requires_verification:
        extra.append("须经核实 requires verification")
    if e.void:
        extra.append("已驳回作废，从未执行 rejected: void, never in force")
    if e.ref_ticket_id:
        extra.append(f"作废工单 voids {e.ref_ticket_id}")
    lines.append(f"    编号 Id: {e.id}; 生效 Effective: {span}" + (f"; {'; '.join(extra)}" if extra else ""))
    rules = "、".join(f"{r['zh']} ({r['id']})" for r in e.rules) or "—"
    lines.append(f"    规则 Rules: {rules}")
    lines.append(f"    摘要 Summary: {e.text_zh}")
    if e.text_en:
        lines.append(f"             {e.text_en}")
    lines.extend(_clauses(e.clauses, seen, "    "))
    if e.alert_ids:
        lines.append(f"    相关告警 Alerts: {', '.join(e.alert_ids)}")
    return lines


def render_case_file(cf: CaseFile) -> str:
    """The whole case file as text (ends with a newline)."""
    inst = cf.institution
    title = f"{inst.name} ({cf.code})" if inst else cf.code
    out = [f"机构案卷 Case file — {title}", f"截至 As of: {_d(cf.as_of)} · 政策 Policy: {cf.policy}", ""]
    out.append("机构 Institution")
    if inst is None:
        out.append("  (登记信息缺失 no registry entry in the store)")
    else:
        tier = f"{inst.tier} ({inst.tier_scheme})" if inst.tier else "未分级 not graded"
        out += [
            f"  名称 Name: {inst.name}",
            f"  编码 Code: {inst.code}",
            f"  类型 Type: {inst.type_zh} / {inst.type_en}",
            f"  区域 Region: {inst.region}",
            f"  结算等级 Tier: {tier}",
            f"  门诊统筹 Outpatient pooling: {'是 yes' if inst.outpatient_pooling else '否 no'}",
            f"  协议期 Agreement term: {_d(inst.agreement_start)} → {_d(inst.agreement_end)}",
            f"  定点起始 Designated since: {_d(inst.designated_since)}",
        ]
    out.append(f"  当前状态 Current state: {cf.state_zh} / {cf.state_en}")
    for s in cf.in_force:
        until = f" → {_d(s.until)}" if s.until else "（无期限 indefinite）"
        out.append(f"    在执行 In force: {s.action_zh} / {s.action_en} {_d(s.effective_from)}{until} ({s.ticket_id})")
    out.append("")
    out.append("下一检查节点 Next deadline")
    if not cf.deadlines:
        out.append("  无 none pending")
    for d in cf.deadlines:
        out.extend(_deadline(d))
    out.append("")
    by_rule = ", ".join(f"{cf.rule_names.get(k, {}).get('zh', k)} ({k}) ×{v}"
                        for k, v in cf.alerts_by_rule.items()) or "—"
    by_action = ", ".join(f"{cf.action_names.get(k, {}).get('zh', k)} ({k}) ×{v}"
                          for k, v in cf.tickets_by_action.items()) or "—"
    out.append(f"概况 Summary: 告警 alerts {cf.alerts} ({by_rule}); 工单 tickets {cf.tickets} ({by_action})")
    out.append("")
    out.append("时间线 Timeline")
    seen: set[str] = set()
    for e in cf.timeline:
        out.extend(_event(e, seen))
    return "\n".join(out) + "\n"


def render_list(rows: list[CaseSummary]) -> str:
    """The list of flagged institutions as a text table."""
    out = [f"{'机构 code':<16} {'名称 name':<14} {'区域 region':<18} {'状态 state':<12} {'告警':>4} {'工单':>4} "
           f"{'最高 max':<9} {'金额 amount':>12} {'下一节点 next':<11} {'最近 last':<19} 措施 actions"]
    for r in rows:
        actions = "、".join(n["zh"] for n in r.action_names) or "—"
        out.append(f"{r.code:<16} {(r.name or '—'):<14} {(r.region or '—'):<18} {r.state_zh:<12} {r.alerts:>4} "
                   f"{r.tickets:>4} {(r.max_severity or '—'):<9} {r.amount:>12,.2f} {_d(r.next_due):<11} "
                   f"{_d(r.last_activity):<19} {actions}")
    return "\n".join(out) + "\n"

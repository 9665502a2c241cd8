"""A city engine's intake of the national trace tier's findings (``monitor.trace_findings``).

Each finding becomes an alert of the city's own pack (severity, 3101 codes and clause from the pack's
``rules."trace.*"``) and a trigger of its ladder, once per ``finding_id`` (the alert id and the ladder's
cause both derive from it, so a redelivered finding changes nothing). Where the trace tier runs, the
city engine's ``trace.duplicate`` leaves repeats across institutions to ``trace.resold``
(``without_cross_duplicates``) so one resale never gives two alerts; same-institution repeats stay
with the city engine.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from monitor.clock import parse_time
from monitor.engine import Engine, Output
from monitor.policy.pack import Pack
from monitor.trace.rules import TRACE_RULES

_TEXT = {
    "trace.resold": "追溯码 {code} 已在 {other} 销售且未退货，{inst} 再次销售（一码多售）",
    "trace.reentered": "追溯码 {code} 已在 {other} 销售且未退货，{inst} 再次扫码入库（回流）",
    "trace.never_stocked": "{inst} 销售追溯码 {code}，窗口内无本机构入库扫码",
    "trace.product_mismatch": "{inst} 以追溯码 {code} 销售的药品与该码产品标识不符（疑似串换）",
}


def without_cross_duplicates(pack: Pack) -> Pack:
    """``pack`` with ``trace.duplicate`` judging same-institution repeats only."""
    if "trace.duplicate" not in pack.rules:
        return pack
    spec = pack.rules["trace.duplicate"]
    rules = dict(pack.rules)
    rules["trace.duplicate"] = spec.model_copy(update={"params": {**spec.params, "cross_institution": False}})
    return pack.model_copy(update={"rules": rules})


def is_for(pack: Pack, finding: dict[str, Any]) -> bool:
    """Whether a finding charges an institution of the pack's region (admdvs prefix)."""
    region = finding.get("region") or ""
    return finding.get("rule_id") in TRACE_RULES and region.startswith(pack.pack.region)


def apply_finding(engine: Engine, finding: dict[str, Any]) -> list[Output]:
    """Raise one trace finding in ``engine`` (its time moves to the finding's ``detected_at``)."""
    rule_id = finding["rule_id"]
    if not engine.pack.enabled(rule_id):
        return []
    detected = parse_time(finding["detected_at"])
    out = list(engine.advance(detected))
    ctx = engine.ctx
    inst = finding["fixmedins_code"]
    other = (finding.get("other") or {}).get("fixmedins_code") or "—"
    evidence = {"finding_id": finding["finding_id"], "drug_trac_codg": finding["drug_trac_codg"],
                "charged": finding["charged"], "other": finding.get("other"), **finding.get("evidence", {})}
    alert = ctx.alert(rule_id, inst, subject=f"trace:{finding['finding_id']}",
                      window_start=_time(finding["window_start"]), window_end=_time(finding["window_end"]),
                      evidence=evidence, detected_at=detected,
                      vola_cont=_TEXT[rule_id].format(code=finding["drug_trac_codg"], other=other, inst=inst))
    if alert is not None:
        ctx.trigger(rule_id, inst, date.fromisoformat(finding["business_date"]), cause=finding["finding_id"],
                    alert_id=alert.alert_id, at=detected)
    out.extend(engine._drain())
    return out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)

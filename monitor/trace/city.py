"""A city engine's intake of the national trace tier's findings (``monitor.trace_findings``).

Each finding becomes an alert of the city's own pack (severity, 3101 codes and clause from the pack's
``rules."trace.*"``) and a trigger of its ladder, once per ``finding_id`` (the alert id and the ladder's
cause both derive from it, so a redelivered finding changes nothing). Where the trace tier runs, the
city engine's ``trace.duplicate`` leaves repeats across institutions to ``trace.resold``
(``without_cross_duplicates``) so one resale never gives two alerts; same-institution repeats stay
with the city engine.

The city worker (``monitor worker`` with ``MONITOR_TRACE_TIER=true``) reads ``monitor.trace_findings`` as one
more input of its arrival-order merge (``monitor.streams.core``): ``shell_decoder`` turns a message into
``TraceFindingItem`` items (sorted at their ``detected_at``; invalid ones become dead letters) and
``shell_apply`` raises them in merge order — a finding that charges an institution outside the pack's
region is counted and dropped there (the registry it may consult is the one of that point of the merge).
Their partitions' positions are checkpointed as every input's, so a restart applies none twice; a finding
produced twice (a trace-worker resending after a kill) gives the same alert id and ladder cause, so the
second changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from monitor.clock import parse_time
from monitor.contract import Escalation, build_alert
from monitor.engine import Engine, Output
from monitor.nhsa import advance as nhsa_advance
from monitor.nhsa import apply as nhsa_apply
from monitor.policy.pack import Pack
from monitor.records import InvalidRecord
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


def tier_mismatch(pack: Pack, trace_tier: bool) -> str | None:
    """Why an engine restored with ``pack`` cannot run with ``MONITOR_TRACE_TIER=trace_tier`` (``None``: it
    can). A checkpoint keeps its pack, so one made without the tier would still charge cross-institution
    repeats as ``trace.duplicate`` next to the tier's ``trace.resold`` (two alerts for one resale), and one
    made with it would charge them with neither once the tier is gone."""
    spec = pack.rules.get("trace.duplicate")
    if spec is None:
        return None
    cross = bool(spec.params.get("cross_institution", True))
    if cross == (not trace_tier):
        return None
    return (f"was made {'without' if trace_tier else 'with'} the national trace tier (trace.duplicate "
            f"cross_institution={str(cross).lower()}) but MONITOR_TRACE_TIER={str(trace_tier).lower()}: "
            "start this city from a new MONITOR_DATA_DIR (or set the variable back)")


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
    inst = finding["fixmedins_code"]
    other = (finding.get("other") or {}).get("fixmedins_code") or "—"
    evidence = {"finding_id": finding["finding_id"], "drug_trac_codg": finding["drug_trac_codg"],
                "charged": finding["charged"], "other": finding.get("other"), **finding.get("evidence", {})}
    alert = build_alert(engine.pack, engine.registry, engine.ctx.now, rule_id, inst,
                        f"trace:{finding['finding_id']}", _time(finding["window_start"]),
                        _time(finding["window_end"]), evidence,
                        _TEXT[rule_id].format(code=finding["drug_trac_codg"], other=other, inst=inst),
                        detected_at=detected)
    if alert is None:
        engine.ctx.count("alerts.rule_not_yet_in_force")
    else:  # findings, applied by the engine: the escalation only when the alert is new (once per finding)
        engine.apply([alert, Escalation(rule_id, inst, date.fromisoformat(finding["business_date"]),
                                        finding["finding_id"], alert=alert, at=detected, only_with_alert=True)])
    out.extend(engine._drain())
    return out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ------------------------------------------------------------------------------ the city worker's intake
#: The pseudo-stream of ``monitor.trace_findings`` in the city worker (``monitor.streams.topics``).
STREAM = "trace_findings"
#: Fields a finding must carry to be raised (``monitor.trace.rules.make_finding`` writes them all).
REQUIRED = ("finding_id", "rule_id", "fixmedins_code", "drug_trac_codg", "business_date", "window_start",
            "window_end", "detected_at", "charged")


@dataclass(frozen=True)
class TraceFindingItem:
    """One trace finding in the city worker's merge; it sorts at its ``detected_at`` (event time of the
    trace tier's judgment), never at a broker timestamp, and does not move idle event time."""

    finding: dict[str, Any]
    arrival_time: datetime
    STREAM: ClassVar[str] = STREAM
    inf_time: ClassVar[None] = None


def for_city(engine: Engine, finding: dict[str, Any]) -> bool:
    """Whether the finding charges one of this city's institutions: by the finding's ``region``
    (admdvs prefix of the pack) when it carries one, else by the city's institution registry."""
    region = finding.get("region")
    if region:
        return str(region).startswith(engine.pack.pack.region)
    return engine.registry.admdvs(str(finding["fixmedins_code"])) is not None


def parse_findings(raw: bytes) -> list[TraceFindingItem | InvalidRecord]:
    """A ``monitor.trace_findings`` value (one JSON object or an array of them) → items and dead letters."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return [InvalidRecord(f"trace finding is not JSON: {exc}"[:300])]
    many = isinstance(value, list)
    out: list[TraceFindingItem | InvalidRecord] = []
    for index, f in enumerate(value if many else [value]):
        at = index if many else None
        if not isinstance(f, dict):
            out.append(InvalidRecord("trace finding is not a JSON object", at))
            continue
        missing = [k for k in REQUIRED if not f.get(k)]
        if missing:
            out.append(InvalidRecord(f"trace finding lacks {', '.join(missing)}", at))
            continue
        if f["rule_id"] not in TRACE_RULES:
            out.append(InvalidRecord(f"rule_id: not a trace-tier rule ({str(f['rule_id'])[:40]})", at))
            continue
        try:
            detected = parse_time(str(f["detected_at"]))
            _time(str(f["window_start"]))
            _time(str(f["window_end"]))
            date.fromisoformat(str(f["business_date"]))
        except (TypeError, ValueError) as exc:
            out.append(InvalidRecord(f"trace finding time: {exc}"[:300], at))
            continue
        out.append(TraceFindingItem(f, detected))
    return out


def shell_decoder(decode: Callable[[str, bytes], list[Any]]) -> Callable[[str, bytes], list[Any]]:
    """The Kafka shell's ``(stream, raw) → items``: trace findings here, every other stream by ``decode``."""

    def decode_all(stream: str, raw: bytes) -> list[Any]:
        return parse_findings(raw) if stream == STREAM else decode(stream, raw)

    return decode_all


def shell_apply(engine: Engine, item: Any, arrival: datetime | None = None) -> list[Output]:
    """``monitor.nhsa.apply`` for the Kafka shell, raising trace findings of this city with ``apply_finding``
    (others counted as ``trace_findings.other_region``)."""
    if isinstance(item, TraceFindingItem):
        if not for_city(engine, item.finding):
            engine.stats.quality[f"{STREAM}.other_region"] += 1
            return []
        out = nhsa_advance(engine, item.arrival_time)  # the platform join's windows close first
        out.extend(apply_finding(engine, item.finding))
        return out
    return nhsa_apply(engine, item, arrival)

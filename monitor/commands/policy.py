"""``monitor policy list`` / ``monitor policy show NAME [--rule ID] [--json]`` / ``monitor policy check FILE``.

``show`` prints the *effective* pack (includes resolved, overrides applied) the way an agency reviews a
rule base: each rule with its clause, judging logic, indicators, grade, severity and thresholds, the
ladders it feeds, and each ladder's consequence in words. ``check`` validates a pack file strictly and
exits 1 with messages naming the pack and the dotted key (``xianyang: rules."tier.downgrade".params.
windw: unknown key``); rules no detector implements are reported as warnings.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.policy.pack import LadderSpec, Pack


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="list, show or check policy packs")
    psub = p.add_subparsers(dest="policy_command", required=True)
    lst = psub.add_parser("list", help="the built-in packs")
    lst.set_defaults(func=run_list)
    show = psub.add_parser("show", help="print the effective rules and ladders with their clauses")
    show.add_argument("name", nargs="?", default="ezhou", help="built-in pack name or a .toml file")
    show.add_argument("--rule", default=None, help="only this rule (and the ladders it feeds)")
    show.add_argument("--json", action="store_true", help="the effective pack as JSON")
    show.set_defaults(func=run_show)
    check = psub.add_parser("check", help="validate a pack file; exit 1 naming the bad key")
    check.add_argument("file")
    check.set_defaults(func=run_check)


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out.extend(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return [(prefix, value)]


def ladder_text(spec: LadderSpec) -> str:
    """A ladder's consequence in words (English; the actions are the ticket actions of design §4)."""
    parts = [f"{spec.action}"]
    if spec.duration_months:
        parts.append(f"for {spec.duration_months} month(s)")
    if spec.rectify_months:
        parts.append(f"rectify within {spec.rectify_months} month(s)")
    if spec.reapply_after_years:
        parts.append(f"no reapplication for {spec.reapply_after_years} year(s)")
    if spec.requires_verification:
        parts.append("requires verification")
    if spec.kind == "immediate" and spec.duration_months and spec.action.startswith("SUSPEND"):
        parts.append("then REINSTATE when it ends")
    if spec.on_approved:
        parts.append(f"approved → {spec.on_approved}")
    parts.append(f"effective {spec.effective.replace('_', ' ')}")
    if spec.kind == "immediate":
        parts.append(f"once per {spec.once_per.replace('_', ' ')}")
    elif spec.kind == "suspend_then_review":
        parts.append(f"then at the deadline: any trigger in the last {spec.review_lookback_days} days → "
                     f"{spec.on_violation}"
                     + (f" (no reapplication for {spec.on_violation_reapply_after_years} years)"
                        if spec.on_violation_reapply_after_years else "")
                     + (f", else {spec.on_clean}" if spec.on_clean else ", else no ticket")
                     + ("; a `rectified` finding ends it early" if spec.rectified_ends else ""))
    elif spec.kind == "escalation":
        parts.append(f"rectify within {spec.rectify_days} days; found again after that and within "
                     f"{spec.escalate_within_months} months → "
                     + " → ".join(s.action + (f" for {s.duration_months} month(s) then REINSTATE"
                                               if s.duration_months else "")
                                  + (f", no reapplication for {s.reapply_after_years} years"
                                     if s.reapply_after_years else "")
                                  + (", requires verification" if s.requires_verification else "")
                                  for s in spec.escalation))
    else:
        parts.append(f"again after it ends and within {spec.recurrence_within_months} months of the first → "
                     f"{spec.recurrence_action}"
                     + (f" (no reapplication for {spec.recurrence_reapply_after_years} years)"
                        if spec.recurrence_reapply_after_years else ""))
    return ", ".join(parts)


def _load(name: str) -> Pack | None:
    from monitor.policy.pack import PolicyError, load_pack

    try:
        return load_pack(name)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return None


def run_list(args: argparse.Namespace) -> int:
    from monitor.policy.pack import builtin_packs

    for name in builtin_packs():
        pack = _load(name)
        if pack is None:
            return 1
        inc = f"  (includes {', '.join(pack.pack.includes)})" if pack.pack.includes else ""
        status = "draft" if pack.pack.status == "draft" else "in force"
        print(f"{pack.label:<28} {pack.pack.title} [{status}]{inc}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from monitor.detectors import implemented_rules

    pack = _load(args.name)
    if pack is None:
        return 1
    if args.rule is not None and args.rule not in pack.rules:
        print(f"{pack.pack.name}: no rule {args.rule!r} (rules: {', '.join(pack.rules)})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(pack.model_dump(mode="json"), ensure_ascii=False, indent=2))
        return 0
    from monitor.policy.pack import STATUS_TEXT

    have = implemented_rules()
    info = pack.pack
    inc = f" (includes {', '.join(info.includes)})" if info.includes else ""
    print(f"{pack.label} — {info.title}{inc}; region {info.region or '(any)'}")
    print(f"documents: {', '.join(info.documents) or '(not restricted)'}; status {STATUS_TEXT[info.status]}; "
          f"{_dates(pack.pack.effective_from, None, info.effective_note)}")
    if args.rule is None:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in _flat("", pack.settings.model_dump())))
    for rule_id, spec in pack.rules.items():
        if args.rule is not None and rule_id != args.rule:
            continue
        if not spec.adopted:
            continue
        state = "on" if spec.enabled else "OFF"
        impl = "" if rule_id in have else "  [not implemented]"
        print(f"\n{rule_id}  [{state}, {spec.severity}, {spec.grade}, sev_deg {spec.sev_deg}, "
              f"{spec.vola_bhvr_type}]{impl}")
        print(f"  {spec.name_zh} / {spec.name_en}")
        print(f"  basis: {'; '.join(spec.basis)}" + _borrowed(spec.borrow))
        print(f"  applies: {STATUS_TEXT[pack.status_of(spec)]}, {_applies(pack.rule_applies_from(rule_id), spec)}")
        print(f"  logic: {spec.logic}")
        if spec.indicators:
            print(f"  indicators: {'、'.join(spec.indicators)}")
        for key, value in _flat("", spec.params):
            print(f"  params.{key} = {value}")
        for name, ladder in pack.ladders_for(rule_id):
            print(f"  → ladder {name} [{'; '.join(ladder.basis)}]: {ladder_text(ladder)}")
    if args.rule is None:
        idle = [r for r, s in pack.rules.items() if not s.adopted]
        if idle:
            print(f"\nnot adopted (detection base rules this region does not judge): {', '.join(idle)}")
    for name, ladder in pack.ladders.items():
        if args.rule is not None and args.rule not in ladder.triggers:
            continue
        print(f"\nladder {name} ({ladder.kind}) [{'; '.join(ladder.basis)}]" + _borrowed(ladder.borrow))
        print(f"  triggers: {', '.join(ladder.triggers)}")
        print(f"  applies: {STATUS_TEXT[pack.status_of(ladder)]}, {_applies(pack.ladder_applies_from(name), ladder)}")
        print(f"  {ladder_text(ladder)}")
    return 0


def _borrowed(lenders: list[str]) -> str:
    return f"  (borrowed from {', '.join(lenders)})" if lenders else ""


def _dates(start: date | None, transition: int | None, note: str) -> str:
    if start is None:
        text = "effective_from not dated in the text: every business date is judged"
    else:
        text = f"effective from {start.isoformat()}"
    if transition:
        text += f" + {transition}-month transition"
    return text + (f" ({note})" if note else "")


def _applies(start: date | None, spec: Any) -> str:
    if start is None:
        return "every business date (no date known)" + (
            f"; {spec.transition_months}-month transition once the date is set" if spec.transition_months else "")
    return f"from business date {start.isoformat()}" + (
        f" ({spec.transition_months}-month transition included)" if spec.transition_months else "")


def run_check(args: argparse.Namespace) -> int:
    from monitor.detectors import unimplemented_rules

    pack = _load(args.file)
    if pack is None:
        return 1
    enabled = sum(1 for s in pack.rules.values() if s.enabled)
    print(f"ok: {pack.label}, {len(pack.rules)} rules ({enabled} enabled), {len(pack.ladders)} ladders")
    for rule_id in unimplemented_rules(pack):
        print(f"warning: {pack.pack.name}: rules.\"{rule_id}\": no detector implements this rule", file=sys.stderr)
    return 0

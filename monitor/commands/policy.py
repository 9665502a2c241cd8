"""``monitor policy show NAME`` / ``monitor policy check FILE``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="show or check a policy pack")
    psub = p.add_subparsers(dest="policy_command", required=True)
    show = psub.add_parser("show", help="print the effective rules and ladders with their clauses")
    show.add_argument("name", nargs="?", default="ezhou")
    show.set_defaults(func=run_show)
    check = psub.add_parser("check", help="validate a pack file; exit 1 naming the bad key")
    check.add_argument("file")
    check.set_defaults(func=run_check)


def run_show(args: argparse.Namespace) -> int:
    from monitor.detectors import implemented_rules
    from monitor.policy.pack import PolicyError, load_pack

    try:
        pack = load_pack(args.name)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    have = implemented_rules()
    print(f"{pack.label} — {pack.pack.title}")
    for rule_id, spec in pack.rules.items():
        state = "on" if spec.enabled else "off"
        impl = "" if rule_id in have else "  [not implemented]"
        print(f"\n{rule_id}  [{state}, {spec.severity}, {spec.grade}]{impl}")
        print(f"  {spec.name_zh} / {spec.name_en}")
        print(f"  basis: {'; '.join(spec.basis)}")
        print(f"  logic: {spec.logic}")
        if spec.params:
            print("  params: " + ", ".join(f"{k}={v}" for k, v in spec.params.items()))
    for name, ladder in pack.ladders.items():
        print(f"\nladder {name} ({ladder.kind}): {', '.join(ladder.triggers)} → {ladder.action}"
              f"  [{'; '.join(ladder.basis)}]")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from monitor.policy.pack import PolicyError, load_pack

    try:
        pack = load_pack(args.file)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {pack.label}, {len(pack.rules)} rules, {len(pack.ladders)} ladders")
    return 0

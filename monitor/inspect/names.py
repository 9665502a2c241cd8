"""Display names of the ids an inspector meets (issue 18 §1): Chinese first, English alongside.

* rules — from the policy pack (``rules.<id>.name_zh`` / ``name_en``), read through ``Pack``;
* actions — from their definition, ``monitor.policy.sanctions.ACTIONS`` (the tickets' texts use the same);
* finding kinds (``finding:KIND`` triggers), states, severities and evidence fields — from
  ``names.toml`` beside this module (kept apart from the packs, which carry the rules' own names).

Every lookup returns a ``Name`` that keeps the id; an id with no name on file is *visibly* unnamed
(``〔未命名〕id`` / ``[unnamed] id``, ``known=False``) rather than shown as if it were a name, so a new
rule or action added by a pack shows up as missing instead of disappearing.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from monitor.policy.pack import Pack
from monitor.policy.sanctions import ACTIONS

NAMES_FILE = Path(__file__).with_name("names.toml")
SECTIONS = ("findings", "states", "severities", "fields")


@dataclass(frozen=True)
class Name:
    """An id with its display names; ``known`` is false when no name is on file."""

    id: str
    zh: str
    en: str
    known: bool = True

    @property
    def both(self) -> str:
        """``中文 / English`` (the id alone when unnamed)."""
        return f"{self.zh} / {self.en}" if self.known else self.zh

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "zh": self.zh, "en": self.en, "known": self.known}


def unnamed(ident: str) -> Name:
    return Name(ident, f"〔未命名〕{ident}", f"[unnamed] {ident}", known=False)


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, tuple[str, str]]]:
    """``names.toml`` as ``{section: {id: (zh, en)}}`` (read once), and ``actions`` from their definition."""
    with NAMES_FILE.open("rb") as fh:
        raw = tomllib.load(fh)
    if "actions" in raw:
        raise ValueError(f"{NAMES_FILE.name}: [actions] are defined in monitor.policy.sanctions, not here")
    out: dict[str, dict[str, tuple[str, str]]] = {"actions": {a: (d.zh, d.en) for a, d in ACTIONS.items()}}
    for section in SECTIONS:
        entries = raw.get(section, {})
        for key, value in entries.items():
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
                raise ValueError(f"{NAMES_FILE.name}: [{section}] {key} must be [\"中文\", \"English\"]")
        out[section] = {k: (v[0], v[1]) for k, v in entries.items()}
    return out


def _lookup(section: str, ident: str) -> Name:
    hit = table()[section].get(ident)
    return Name(ident, hit[0], hit[1]) if hit else unnamed(ident)


def action_name(action: str) -> Name:
    return _lookup("actions", action)


def finding_name(kind: str) -> Name:
    return _lookup("findings", kind)


def state_name(state: str) -> Name:
    return _lookup("states", state)


def severity_name(severity: str) -> Name:
    return _lookup("severities", severity)


def field_name(field: str) -> Name:
    """An evidence field's label; an unlabelled field shows its key (it is a column head, not a verdict)."""
    hit = table()["fields"].get(field)
    return Name(field, hit[0], hit[1]) if hit else Name(field, field, field, known=False)


def rule_name(pack: Pack, rule_id: str) -> Name:
    """A rule's names from ``pack``; ``finding:KIND`` → the finding kind's names (经查实的…)."""
    spec = pack.rules.get(rule_id)
    if spec is not None:
        return Name(rule_id, spec.name_zh, spec.name_en)
    if rule_id.startswith("finding:"):
        kind = finding_name(rule_id[len("finding:"):])
        if kind.known:
            return Name(rule_id, f"{kind.zh}（核查结果）", f"{kind.en} (finding)")
    return unnamed(rule_id)

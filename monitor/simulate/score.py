"""Score a replay's outputs against the simulator's ground truth (``labels.jsonl``).

Matching (the contract ``monitor score`` prints and tests rely on)
------------------------------------------------------------------
* A label covers the business dates ``[window_start, window_end]`` (inclusive), i.e. the instants
  ``[window_start 00:00, window_end + 1 day 00:00)`` Asia/Shanghai.
* An **alert matches a label** when ``rule_id`` and ``fixmedins_code`` are equal and the alert's window
  ``[window_start, window_end]`` overlaps the label's (an instantaneous alert window is a point).
* A label with ``aliases`` (findings-driven rules, e.g. ``finding:infostd_substandard``) is also
  detected by a **ticket** of that institution whose ``rule_ids`` contain the rule or an alias and
  whose ``effective_from`` lies in the label window extended by ``slack`` days.
* Per rule: *planted* = violation labels; *detected* = those matched by ≥ 1 alert (or ticket);
  **recall** = detected / planted; **precision** = matching alerts / all alerts of the rule, where an
  alert matching only a look-alike label, or nothing, is a false positive. Alerts matching a label
  that is not scored (its ``depends_on`` rules are not implemented) count on neither side.
* A rule is scored when it is implemented (``monitor.detectors.implemented_rules()``, or for aliased
  rules a pack ladder triggered by the alias); otherwise it is listed as *not implemented*, with its
  planted count — never dropped.
* **Tickets**: every expected ticket of a scored label is matched to an issued ticket of the same
  institution and action whose ``effective_from`` is within the label's ``slack_days`` (one issued
  ticket matches one expected ticket). Tickets (expected or issued) effective later than
  ``end − 1 − margin`` (``end`` of the meta line, ``margin`` the largest ``slack_days`` of any label)
  are beyond the horizon and not scored; issued tickets that match nothing are
  reported as unexpected.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.clock import day_start, parse_time

if TYPE_CHECKING:
    from monitor.policy.pack import Pack


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class RuleScore:
    rule_id: str
    implemented: bool
    planted: int = 0
    detected: int = 0
    pending: int = 0
    lookalikes: int = 0
    lookalikes_flagged: int = 0
    alerts: int = 0
    true_alerts: int = 0
    missed: list[str] = field(default_factory=list)
    false_alerts: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.planted if self.planted else None

    @property
    def precision(self) -> float | None:
        scored = self.alerts
        return self.true_alerts / scored if scored else None


@dataclass
class TicketScore:
    expected: Counter[str] = field(default_factory=Counter)
    issued: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Report:
    rules: dict[str, RuleScore]
    tickets: TicketScore
    unlabelled_rules: dict[str, int]
    meta: dict[str, Any]

    def failures(self, min_recall: float, min_precision: float | None = None) -> list[str]:
        out = []
        for rs in self.rules.values():
            if not rs.implemented or not rs.planted:
                continue
            if rs.recall is not None and rs.recall < min_recall:
                out.append(f"{rs.rule_id}: recall {rs.recall:.3f} < {min_recall}")
            if min_precision is not None and rs.precision is not None and rs.precision < min_precision:
                out.append(f"{rs.rule_id}: precision {rs.precision:.3f} < {min_precision}")
        return out

    def ticket_failures(self, min_ratio: float) -> list[str]:
        """Per ticket action: matched / expected (recall) and matched / issued (precision) ≥ ``min_ratio``."""
        out = []
        t = self.tickets
        for action in sorted(set(t.expected) | set(t.issued)):
            if t.expected[action] and t.matched[action] / t.expected[action] < min_ratio:
                out.append(f"ticket {action}: recall {t.matched[action]}/{t.expected[action]}")
            if t.issued[action] and t.matched[action] / t.issued[action] < min_ratio:
                out.append(f"ticket {action}: precision {t.matched[action]}/{t.issued[action]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": {
                r: {"implemented": s.implemented, "planted": s.planted, "detected": s.detected,
                    "pending": s.pending, "alerts": s.alerts, "true_alerts": s.true_alerts,
                    "precision": s.precision, "recall": s.recall, "lookalikes": s.lookalikes,
                    "lookalikes_flagged": s.lookalikes_flagged, "missed": s.missed,
                    "false_alerts": s.false_alerts[:10]}
                for r, s in sorted(self.rules.items())
            },
            "tickets": {"expected": dict(self.tickets.expected), "issued": dict(self.tickets.issued),
                        "matched": dict(self.tickets.matched), "missing": self.tickets.missing,
                        "unexpected": self.tickets.unexpected[:20]},
            "unlabelled_rules": self.unlabelled_rules,
        }


def _label_span(label: dict[str, Any]) -> tuple[datetime, datetime]:
    return (day_start(date.fromisoformat(label["window_start"])),
            day_start(date.fromisoformat(label["window_end"]) + timedelta(days=1)))


def _overlaps(ws: datetime, we: datetime, span: tuple[datetime, datetime]) -> bool:
    ls, le = span
    end = we if we > ws else ws + timedelta(seconds=1)
    return ws < le and end > ls


def _implemented(rule_id: str, aliases: list[str], have: set[str], ladder_triggers: set[str]) -> bool:
    return rule_id in have or any(a in have or a in ladder_triggers for a in aliases)


def pack_triggers(policy: str | Pack) -> set[str]:
    """Every trigger of the pack's ladders (``finding:KIND`` makes a findings-driven rule implemented)."""
    from monitor.policy.pack import load_pack

    pack = load_pack(policy) if isinstance(policy, str) else policy
    return {t for spec in pack.ladders.values() for t in spec.triggers}


def score(out_dir: Path, labels_path: Path, implemented: set[str] | None = None,
          ladder_triggers: set[str] | None = None, policy: str = "ezhou") -> Report:
    """Compare ``alerts.jsonl``/``tickets.jsonl`` in ``out_dir`` with ``labels_path`` (see module doc).
    ``implemented`` defaults to ``implemented_rules()``, ``ladder_triggers`` to those of ``policy``."""
    if implemented is None:
        from monitor.detectors import implemented_rules
        from monitor.policy.pack import load_pack

        pack = load_pack(policy)
        # a rule is judged where the region adopts it (#12: each region its own rules)
        implemented = {r for r in implemented_rules() if pack.enabled(r)}
    if ladder_triggers is None:
        ladder_triggers = pack_triggers(policy)
    rows = _read(labels_path)
    meta = next((r for r in rows if r.get("kind") == "meta"), {})
    labels = [r for r in rows if r.get("kind") in ("violation", "lookalike")]
    alerts = _read(out_dir / "alerts.jsonl")
    tickets = _read(out_dir / "tickets.jsonl")

    rules: dict[str, RuleScore] = {}
    by_key: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    scored: list[bool] = []
    for i, lb in enumerate(labels):
        impl = _implemented(lb["rule_id"], lb.get("aliases", []), implemented, ladder_triggers)
        deps_ok = all(d in implemented for d in lb.get("depends_on", []))
        rs = rules.setdefault(lb["rule_id"], RuleScore(lb["rule_id"], impl))
        scored.append(impl and deps_ok)
        if lb["kind"] == "lookalike":
            rs.lookalikes += 1
        elif impl and deps_ok:
            rs.planted += 1
        elif impl:
            rs.pending += 1
        else:
            rs.planted += 1
        by_key[(lb["rule_id"], lb["fixmedins_code"])].append((i, lb))

    detected: set[int] = set()
    flagged_lookalikes: set[int] = set()
    unlabelled: Counter[str] = Counter()
    for al in alerts:
        rid, code = al["rule_id"], al["fixmedins_code"]
        ws, we = parse_time(str(al["window_start"])), parse_time(str(al["window_end"]))
        hits = [(i, lb) for i, lb in by_key.get((rid, code), []) if _overlaps(ws, we, _label_span(lb))]
        found = rules.get(rid)
        if found is None:
            unlabelled[rid] += 1
            continue
        rs = found
        true = [i for i, lb in hits if lb["kind"] == "violation" and scored[i]]
        pending = [i for i, lb in hits if lb["kind"] == "violation" and not scored[i]]
        if true:
            rs.alerts += 1
            rs.true_alerts += 1
            detected.update(true)
        elif pending:
            continue
        else:
            rs.alerts += 1
            flagged_lookalikes.update(i for i, lb in hits if lb["kind"] == "lookalike")
            if len(rs.false_alerts) < 50:
                rs.false_alerts.append(f"{code} {al['window_start']}…{al['window_end']} {al['alert_id']}")

    # findings-driven rules: a ticket carrying the rule (or an alias) in the window counts as detection;
    # such tickets also make the rule's precision when it raises no alerts of its own
    aliased: dict[str, set[str]] = {}
    for lb in labels:
        if lb.get("aliases"):
            aliased.setdefault(lb["rule_id"], {lb["rule_id"]}).update(lb["aliases"])
    alerting = {a["rule_id"] for a in alerts}
    for rid, names in aliased.items():
        rs = rules[rid]
        for tk in tickets:
            if not names & set(tk.get("rule_ids", [])):
                continue
            hit = False
            for i, lb in by_key.get((rid, tk["fixmedins_code"]), []):
                slack = max([t.get("slack_days", 0) for t in lb.get("expected_tickets", [])] or [0])
                first = date.fromisoformat(lb["window_start"])
                last = date.fromisoformat(lb["window_end"]) + timedelta(days=slack)
                effective = date.fromisoformat(tk["effective_from"])
                if lb["kind"] == "violation" and scored[i] and first <= effective <= last:
                    detected.add(i)
                    hit = True
            if rs.implemented and rid not in alerting:
                rs.alerts += 1
                rs.true_alerts += 1 if hit else 0
    for i, lb in enumerate(labels):
        rs = rules[lb["rule_id"]]
        if lb["kind"] == "violation" and scored[i]:
            if i in detected:
                rs.detected += 1
            else:
                rs.missed.append(f"{lb['fixmedins_code']} {lb['window_start']}…{lb['window_end']}")
        if i in flagged_lookalikes:
            rs.lookalikes_flagged += 1

    return Report(rules, _score_tickets(labels, scored, tickets, meta), dict(unlabelled), meta)


def _score_tickets(labels: list[dict[str, Any]], scored: list[bool], tickets: list[dict[str, Any]],
                   meta: dict[str, Any]) -> TicketScore:
    ts = TicketScore()
    end = date.fromisoformat(meta["end"]) if "end" in meta else date.max
    margin = max([int(t.get("slack_days", 0)) for lb in labels for t in lb.get("expected_tickets", [])] or [0])
    if end != date.max:
        end -= timedelta(days=margin)
    expected: list[tuple[str, str, date, int]] = []
    seen: set[tuple[str, str, str]] = set()
    for i, lb in enumerate(labels):
        if not scored[i] or lb["kind"] != "violation":
            continue
        for tk in lb.get("expected_tickets", []):
            eff = date.fromisoformat(tk["effective_from"])
            slack = int(tk.get("slack_days", 0))
            key = (lb["fixmedins_code"], tk["action"], tk["effective_from"])
            if key in seen or eff + timedelta(days=1) > end:
                continue
            seen.add(key)
            expected.append((lb["fixmedins_code"], tk["action"], eff, slack))
    used: set[int] = set()
    for code, action, eff, slack in expected:
        ts.expected[action] += 1
        best = None
        for j, tk in enumerate(tickets):
            if j in used or tk["fixmedins_code"] != code or tk["action"] != action:
                continue
            delta = abs((date.fromisoformat(tk["effective_from"]) - eff).days)
            if delta <= slack and (best is None or delta < best[0]):
                best = (delta, j)
        if best is None:
            ts.missing.append(f"{code} {action} {eff}")
        else:
            used.add(best[1])
            ts.matched[action] += 1
    for j, tk in enumerate(tickets):
        if j not in used and date.fromisoformat(tk["effective_from"]) + timedelta(days=1) > end:
            continue
        ts.issued[tk["action"]] += 1
        if j not in used:
            ts.unexpected.append(f"{tk['fixmedins_code']} {tk['action']} {tk['effective_from']} {tk['rule_ids']}")
    return ts


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render(report: Report) -> str:
    """The table ``monitor score`` prints."""
    lines = [f"{'rule':34} {'planted':>7} {'detected':>8} {'alerts':>6} {'precision':>9} {'recall':>7}"
             f" {'look-alikes flagged':>20}"]
    implemented = [r for r in sorted(report.rules) if report.rules[r].implemented]
    pending = [r for r in sorted(report.rules) if not report.rules[r].implemented]
    for rid in implemented:
        s = report.rules[rid]
        extra = f"  (+{s.pending} pending a dependency)" if s.pending else ""
        lines.append(f"{rid:34} {s.planted:>7} {s.detected:>8} {s.alerts:>6} {_fmt(s.precision):>9}"
                     f" {_fmt(s.recall):>7} {s.lookalikes_flagged:>9}/{s.lookalikes:<10}{extra}")
    for rid in pending:
        s = report.rules[rid]
        lines.append(f"{rid:34} {s.planted:>7} {'not implemented':>33}")
    for rid, n in sorted(report.unlabelled_rules.items()):
        lines.append(f"{rid:34} {'—':>7} {'—':>8} {n:>6}  (alerts of a rule with no planted label)")
    lines.append("")
    lines.append(f"{'ticket action':34} {'expected':>8} {'issued':>7} {'matched':>8}")
    t = report.tickets
    for action in sorted(set(t.expected) | set(t.issued)):
        lines.append(f"{action:34} {t.expected[action]:>8} {t.issued[action]:>7} {t.matched[action]:>8}")
    for miss in t.missing[:10]:
        lines.append(f"  missing:    {miss}")
    for extra in t.unexpected[:10]:
        lines.append(f"  unexpected: {extra}")
    return "\n".join(lines)

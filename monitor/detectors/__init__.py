"""Detectors, one module per rule family; each module's docstring names its clauses.

``DETECTORS`` is the registry the engine builds from: a detector runs when any of its rules is enabled
in the pack. Rules a pack lists that no detector implements are reported by ``unimplemented_rules``
(and by ``monitor score`` / ``monitor policy show``), never silently dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from monitor.contract import Params, Rule
from monitor.detectors.benefit import Benefit
from monitor.detectors.completeness import Completeness
from monitor.detectors.findings import FindingCounters
from monitor.detectors.inventory import NegativeStock
from monitor.detectors.prescriptions import Prescriptions
from monitor.detectors.pricing import Pricing
from monitor.detectors.status import Status
from monitor.detectors.tier import TierRules
from monitor.detectors.tracecodes import TraceCodes
from monitor.detectors.upload import UploadTimeliness

if TYPE_CHECKING:
    from monitor.policy.pack import Pack

DETECTORS: list[type[Rule]] = [
    UploadTimeliness,
    Completeness,
    Prescriptions,
    TraceCodes,
    NegativeStock,
    Pricing,
    Benefit,
    TierRules,
    Status,
    FindingCounters,
]

#: Rules judged outside a detector (by the engine or the ledger itself, or by the national trace tier
#: ``monitor.trace``, whose findings a city engine raises as alerts of these rules).
ENGINE_RULES: frozenset[str] = frozenset(
    {"trace.resold", "trace.reentered", "trace.never_stocked", "trace.product_mismatch"})


def implemented_rules() -> set[str]:
    return {rule for det in DETECTORS for rule in det.rule_ids} | set(ENGINE_RULES)


def unimplemented_rules(pack: Pack) -> list[str]:
    have = implemented_rules()
    return sorted(r for r, spec in pack.rules.items() if spec.enabled and r not in have)


def build_detectors(pack: Pack) -> list[Rule]:
    return [det(pack) for det in DETECTORS if any(pack.enabled(r) for r in det.rule_ids)]


def validate_params(pack: Pack) -> None:
    """Validate every rule's ``params`` against its detector's model; raise PolicyError naming the key."""
    from monitor.policy.pack import PolicyError

    problems = []
    for det in DETECTORS:
        for rule_id, model in det.params.items():
            spec = pack.rules.get(rule_id)
            if spec is None or not spec.adopted:  # a rule the region does not adopt is never judged
                continue
            try:
                model.model_validate(spec.params)
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    key = ".".join(str(p) for p in err["loc"])
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    problems.append(f'{pack.pack.name}: rules."{rule_id}".params.{key}: {msg}')
    if problems:
        raise PolicyError("\n".join(problems))


__all__ = ["DETECTORS", "Params", "Rule", "build_detectors", "unimplemented_rules", "validate_params"]

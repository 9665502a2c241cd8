"""Policy packs: rules, thresholds and sanction ladders as validated data files.

A pack is a TOML file (``monitor/policy/packs/NAME.toml``, or any path). It is written the way NHSA's
national "两库" (knowledge base + rule base, framework v1.0 2023) writes a rule: a stable code, the judging
logic in words, its parameter indicators, reference thresholds (``params``), a judgment grade (a
confirmed violation vs a suspicion that needs verification) and the clause it rests on. An agency can
read, review and change a pack without reading Python; the code reads every threshold from here.

A pack may ``include`` other packs: their rules and ladders are merged first, then this pack's tables
override key by key (``params`` are merged, not replaced).

Validation is strict: an unknown key, a missing key or a bad value raises ``PolicyError`` naming the
pack and the dotted key, e.g. ``ezhou: rules."upload.late".params.max_lag_hour: unknown key``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.outputs import Action, Severity

PACK_DIR = Path(__file__).with_name("packs")


class PolicyError(ValueError):
    """A pack that cannot be used; the message names the pack and the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackInfo(_Strict):
    name: str
    version: str
    title: str
    region: str = Field(description="admdvs prefix of the region the pack governs, e.g. 4207 for Ezhou")
    includes: list[str] = []


class RuleSpec(_Strict):
    """One rule of the rule base (规则库)."""

    name_zh: str
    name_en: str
    basis: list[str] = Field(min_length=1, description="clauses, e.g. 'EZ-DM 二(一)'")
    logic: str = Field(description="判断逻辑: how the rule judges, in words")
    indicators: list[str] = Field(default=[], description="参数指标: what is measured")
    grade: Literal["confirmed", "suspected"] = Field(
        description="判定等级: a confirmed violation, or a suspicion that needs verification"
    )
    severity: Severity
    sev_deg: str = Field(description="3101 严重程度 code (provincial dictionary)")
    vola_bhvr_type: str = Field(description="3101 违规行为分类 code (provincial dictionary)")
    enabled: bool = True
    params: dict[str, Any] = {}


LadderKind = Literal["immediate", "suspend_then_review", "recurrence"]
OncePer = Literal["cause", "institution", "agreement_term", "agreement_year"]


class ReviewEvidenceSpec(_Strict):
    """What a clean end-of-suspension review must *see* before it reinstates (silence is not
    compliance): uploads of ``streams`` in the review window, late share ≤ ``max_late_share``, daily
    volume ≥ ``min_volume_share`` × the institution's mean over the ``baseline_days`` before the
    sanction. Without that evidence the review issues ``on_missing`` (requires verification)."""

    streams: list[str] = Field(min_length=1)
    min_volume_share: float = Field(default=0.5, gt=0, le=1)
    max_late_share: float = Field(default=0.10, ge=0, lt=1)
    baseline_days: int = Field(default=28, ge=1)
    #: True: every listed stream used before the sanction must show on-time uploads; False: any of them
    each_stream: bool = True
    on_missing: Action = "REVIEW"
    reading: str = Field(min_length=1, description="how the clause is read, in words")


class LadderSpec(_Strict):
    """A sanction ladder: what a trigger leads to, and what is re-checked at its deadline.

    Kinds:
    * ``immediate`` — each trigger issues ``action`` (once per ``once_per``); a suspension-type action
      already in force is not re-issued.
    * ``suspend_then_review`` — the first trigger issues ``action`` for ``duration_months`` (or with
      ``rectify_months`` to rectify); at the deadline (plus ``review_delay_hours``, so its last day is
      fully judged) any trigger dated within the last ``review_lookback_days`` → ``on_violation``,
      otherwise ``on_clean``; both effective on the deadline day. Triggers while it runs raise alerts
      only.
    * ``recurrence`` — the first trigger issues ``action`` for ``duration_months``; a trigger after it
      ends and within ``recurrence_within_months`` of the first → ``recurrence_action``.
    """

    kind: LadderKind
    triggers: list[str] = Field(min_length=1, description="rule ids, or finding:KIND")
    basis: list[str] = Field(min_length=1)
    action: Action
    effective: Literal["next_day", "same_day"] = "next_day"
    duration_months: int | None = Field(default=None, ge=1)
    rectify_months: int | None = Field(default=None, ge=1)
    reapply_after_years: int | None = Field(default=None, ge=1)
    requires_verification: bool = False
    once_per: OncePer = "cause"
    review_lookback_days: int = Field(default=7, ge=1)
    review_delay_hours: int = Field(default=24, ge=0)
    on_violation: Action | None = None
    on_violation_reapply_after_years: int | None = Field(default=None, ge=1)
    on_clean: Action | None = None
    #: suspend_then_review: positive evidence a clean review needs before ``on_clean``
    review_evidence: ReviewEvidenceSpec | None = None
    recurrence_within_months: int | None = Field(default=None, ge=1)
    recurrence_action: Action | None = None
    recurrence_reapply_after_years: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> LadderSpec:
        if self.kind == "suspend_then_review":
            if (self.duration_months is None) == (self.rectify_months is None):
                raise ValueError("suspend_then_review needs exactly one of duration_months, rectify_months")
            if self.on_violation is None or self.on_clean is None:
                raise ValueError("suspend_then_review needs on_violation and on_clean")
        if self.kind == "recurrence" and (
            self.duration_months is None or self.recurrence_within_months is None
            or self.recurrence_action is None
        ):
            raise ValueError("recurrence needs duration_months, recurrence_within_months, recurrence_action")
        return self


class Pack(_Strict):
    """An effective (includes resolved) policy pack."""

    pack: PackInfo
    settings: dict[str, Any] = {}
    rules: dict[str, RuleSpec]
    ladders: dict[str, LadderSpec] = {}

    @property
    def label(self) -> str:
        """``name@version``, the value of every output's ``policy`` field."""
        return f"{self.pack.name}@{self.pack.version}"

    def rule(self, rule_id: str) -> RuleSpec:
        return self.rules[rule_id]

    def enabled(self, rule_id: str) -> bool:
        spec = self.rules.get(rule_id)
        return spec is not None and spec.enabled

    def ladders_for(self, trigger: str) -> list[tuple[str, LadderSpec]]:
        return [(name, spec) for name, spec in self.ladders.items() if trigger in spec.triggers]

    def setting(self, key: str, default: Any) -> Any:
        return self.settings.get(key, default)

    @model_validator(mode="after")
    def _ladder_triggers_exist(self) -> Pack:
        for name, ladder in self.ladders.items():
            for trig in ladder.triggers:
                if not trig.startswith("finding:") and trig not in self.rules:
                    raise ValueError(f"ladders.{name}.triggers: {trig!r} is not a rule of this pack")
        return self


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path.name}: not valid TOML: {exc}") from exc


def _locate(name_or_path: str, relative_to: Path | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_absolute() and relative_to is not None and not candidate.exists():
            candidate = relative_to / candidate
        if candidate.exists():
            return candidate
        raise PolicyError(f"policy file not found: {name_or_path}")
    builtin = PACK_DIR / f"{name_or_path}.toml"
    if builtin.exists():
        return builtin
    known = ", ".join(sorted(p.stem for p in PACK_DIR.glob("*.toml")))
    raise PolicyError(f"unknown policy pack {name_or_path!r} (built-in: {known})")


def _resolve(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise PolicyError(f"{path.stem}: include cycle through {', '.join(p.stem for p in seen)}")
    data = _read(path)
    info = data.get("pack", {})
    includes = info.get("includes", []) if isinstance(info, Mapping) else []
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = _merge(merged, _resolve(_locate(str(inc), path.parent), (*seen, path)))
    merged = _merge(merged, data)
    if isinstance(merged.get("pack"), Mapping):
        merged["pack"] = dict(data.get("pack", {}))  # identity is never inherited
    return merged


def _format_error(name: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = []
        for part in err["loc"]:
            text = str(part)
            loc.append(f'"{text}"' if "." in text else text)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{name}: {'.'.join(loc) or '(pack)'}: {msg}")
    return "\n".join(lines)


def load_pack(name_or_path: str = "ezhou") -> Pack:
    """Load a built-in pack by name or a pack file by path, resolving includes; validate strictly."""
    path = _locate(name_or_path)
    raw = _resolve(path, ())
    try:
        pack = Pack.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(_format_error(path.stem, exc)) from None
    # Rule parameters are validated by the detector that owns the rule (its Params model).
    from monitor.detectors import validate_params

    validate_params(pack)
    return pack


def builtin_packs() -> list[str]:
    return sorted(p.stem for p in PACK_DIR.glob("*.toml"))

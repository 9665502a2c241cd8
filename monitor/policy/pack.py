"""Policy packs: a region-neutral detection base plus one pack per region that owns its sanctions.

Layout (``monitor/policy/packs/``):

* ``base.toml`` — the **detection base** (``kind = "base"``): every rule's judging logic, indicators,
  judgment grade, 3101 codes and reference thresholds (``params``), written as NHSA's national "两库"
  writes a rule. No ladders, no clause of any region. It is never run on its own.
* ``ezhou.toml``, ``xianyang.toml``, ``liaoning.toml``, ``autonomous-region.toml`` — one **regional pack**
  each. ``[pack].documents`` names the region's own documents (short ids of shared/regulations). A rule
  fires in a region only when its pack *adopts* it: ``[rules."ID"]`` with ``basis`` citing the region's own
  clauses (any other field or threshold may be overridden there, key by key). Ladders live only in
  regional packs and cite only their own documents.
* **Borrowing** is by naming only: ``borrow = ["autonomous-region"]`` under ``[rules."ID"]`` or
  ``[ladders.NAME]`` takes that region's adoption of the rule (or its ladder of the same name) with its
  clauses, dates and status; the effective spec records ``borrow`` and every ticket of a borrowed ladder
  says so. A clause of another document anywhere else is an error.
* **Dates**: ``[pack]`` has ``status`` (``in_force`` / ``draft``) and ``effective_from`` (a date, or none
  when the text leaves it blank — then every business date is judged and ``monitor policy show`` says
  so); a rule or ladder may set its own ``effective_from``, ``status`` and ``transition_months`` (the rule
  applies from ``effective_from`` + the transition). A rule does not fire on business dates before it
  applies (``Pack.applies``).
* ``includes`` (custom packs): a shipped regional pack by name, or a ``.toml`` in the including pack's own
  folder; its tables are merged first, then this pack's override key by key (``params`` merged).
* ``[settings]`` is validated (``PackSettings``): types, ranges, unknown keys.

Validation is strict: an unknown key, a missing key or a bad value raises ``PolicyError`` naming the
pack and the dotted key, e.g. ``ezhou: rules."upload.late".params.max_lag_hour: unknown key``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.clock import add_months
from monitor.outputs import LadderAction as Action
from monitor.outputs import Severity

PACK_DIR = Path(__file__).with_name("packs")
BASE_NAME = "base"
BASE_PATH = PACK_DIR / f"{BASE_NAME}.toml"

Status = Literal["in_force", "draft"]
STATUS_TEXT = {"in_force": "in force", "draft": "draft (征求意见稿)"}


class PolicyError(ValueError):
    """A pack that cannot be used; the message names the pack and the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackSettings(_Strict):
    """``[settings]``: engine-wide knobs of a pack, validated (issue #17: a string, a negative value or a
    typo'd key used to pass ``policy check`` and crash or silently bend replay)."""

    #: Records resent by an at-least-once upstream are recognised this many days after their date.
    dedup_horizon_days: int = Field(default=35, ge=1, le=400)
    #: An upload time this far ahead of the next upload of its stream is a wrong clock (design §2).
    max_clock_skew_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60, allow_inf_nan=False)
    #: NHSA platform codec (monitor.nhsa): field-name aliases, prescription-centre interface numbers.
    nhsa_aliases: dict[str, str] = {}
    nhsa_rx_centre: dict[str, Literal["upload", "revoke"]] | None = None
    #: 2102/2207 settlements wait this long for their 2204 fee lines.
    nhsa_line_grace_minutes: float = Field(default=60, gt=0, le=24 * 60, allow_inf_nan=False)
    nhsa_revocation_memory_days: int = Field(default=35, ge=1, le=400)


class PackInfo(_Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str
    title: str
    region: str = Field(description="admdvs prefix of the region the pack governs, e.g. 4207 for Ezhou")
    kind: Literal["base", "region"] = "region"
    documents: list[str] = Field(default=[], description="short ids of the region's own documents")
    status: Status = "in_force"
    effective_from: date | None = Field(default=None, description="None: the text leaves the date blank")
    effective_note: str = ""
    includes: list[str] = []


class _Dated(_Strict):
    effective_from: date | None = None
    status: Status | None = None
    transition_months: int | None = Field(default=None, ge=1, le=60)
    #: Regions whose adoption of this rule (or ladder of this name) is used, named explicitly.
    borrow: list[str] = []


class RuleSpec(_Dated):
    """One rule of the rule base (规则库), as a regional pack adopts it."""

    name_zh: str
    name_en: str
    basis: list[str] = Field(default=[], description="clauses, e.g. 'EZ-DM 二(一)'; empty = not adopted")
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

    @property
    def adopted(self) -> bool:
        return bool(self.basis)


LadderKind = Literal["immediate", "suspend_then_review", "recurrence", "escalation"]
OncePer = Literal["cause", "institution", "agreement_term", "agreement_year"]

class ReviewEvidenceSpec(_Strict):
    """What a clean end-of-suspension review must *see* before it reinstates (silence is not
    compliance): uploads of ``streams`` in the review window, late share ≤ ``max_late_share``, daily
    volume ≥ ``min_volume_share`` × the institution's mean over the ``baseline_days`` before the
    sanction. Without that evidence the review issues ``on_missing`` (requires verification)."""

    streams: list[str] = Field(min_length=1)
    min_volume_share: float = Field(default=0.5, gt=0, le=1)
    max_late_share: float = Field(default=0.10, ge=0, lt=1)
    baseline_days: int = Field(default=28, ge=1, le=366)
    #: True: every listed stream used before the sanction must show on-time uploads; False: any of them
    each_stream: bool = True
    on_missing: Action = "REVIEW"
    reading: str = Field(min_length=1, description="how the clause is read, in words")


#: Limits on durations (issue #17: ``duration_months = 100000000`` crashed the date arithmetic).
MAX_MONTHS = 120
MAX_YEARS = 10


class EscalationStep(_Strict):
    """One step of an ``escalation`` ladder after its first (``action``): what a repeat leads to."""

    action: Action
    duration_months: int | None = Field(default=None, ge=1, le=MAX_MONTHS)
    reapply_after_years: int | None = Field(default=None, ge=1, le=MAX_YEARS)
    requires_verification: bool = False


class LadderSpec(_Dated):
    """A sanction ladder: what a trigger leads to, and what is re-checked at its deadline.

    Kinds:
    * ``immediate`` — each trigger issues ``action`` (once per ``once_per``). A restricting action with
      ``duration_months`` ends with a ``REINSTATE`` ticket on ``effective_until``. A trigger while the
      ladder's own restriction runs is kept and judged when it ends (a new term from that day).
    * ``suspend_then_review`` — the first trigger issues ``action`` for ``duration_months`` (or with
      ``rectify_months`` to rectify); at the deadline (plus ``review_delay_hours``, so its last day is
      fully judged) any trigger dated within the last ``review_lookback_days`` → ``on_violation``,
      otherwise ``on_clean`` (none: no ticket); both effective on the deadline day. Triggers while it
      runs are the review's evidence. ``rectified_ends``: a ``rectified`` finding on its ticket ends it
      early (the clause allows it: rectification is what the suspension waits for).
    * ``recurrence`` — the first trigger issues ``action`` for ``duration_months``; a trigger after it
      ends and within ``recurrence_within_months`` of the first → ``recurrence_action``. One dated while
      it runs is kept and judged when it ends.
    * ``escalation`` — "视情节和整改情况" (AR-AGR 三(二)2): the first trigger issues ``action`` with
      ``rectify_days`` to rectify (the ticket's ``rectify_by``); a trigger dated on or after the current
      step's ``rectify_by`` and within ``escalate_within_months`` of that step's ``effective_from`` issues
      the next of ``escalation`` (each step its own term, ban and verification); one dated before
      ``rectify_by`` is the same case still being rectified (nothing); one after the window starts again
      from ``action``. The last step repeats nothing. A rejected step ticket is taken back (the
      ladder stands where it stood before it); ``rectified_ends`` lets a ``rectified`` finding end a
      step's suspension early.
    ``on_approved``: a ``ticket_approved`` finding on this ladder's ticket fires that trigger (e.g. an
    approved REVIEW is the verification ``finding:data_incomplete_verified``).
    """

    kind: LadderKind
    triggers: list[str] = Field(min_length=1, description="rule ids, or finding:KIND")
    basis: list[str] = Field(min_length=1)
    action: Action
    effective: Literal["next_day", "same_day"] = "next_day"
    duration_months: int | None = Field(default=None, ge=1, le=MAX_MONTHS)
    rectify_months: int | None = Field(default=None, ge=1, le=MAX_MONTHS)
    reapply_after_years: int | None = Field(default=None, ge=1, le=MAX_YEARS)
    requires_verification: bool = False
    once_per: OncePer = "cause"
    review_lookback_days: int = Field(default=7, ge=1, le=366)
    review_delay_hours: int = Field(default=24, ge=0, le=31 * 24)
    on_violation: Action | None = None
    on_violation_reapply_after_years: int | None = Field(default=None, ge=1, le=MAX_YEARS)
    on_violation_requires_verification: bool = False
    on_clean: Action | None = None
    #: suspend_then_review: positive evidence a clean review needs before ``on_clean``
    review_evidence: ReviewEvidenceSpec | None = None
    rectified_ends: bool = False
    on_approved: str | None = None
    recurrence_within_months: int | None = Field(default=None, ge=1, le=MAX_MONTHS)
    recurrence_action: Action | None = None
    recurrence_reapply_after_years: int | None = Field(default=None, ge=1, le=MAX_YEARS)
    #: escalation: the steps after ``action``, in order
    escalation: list[EscalationStep] = []
    escalate_within_months: int | None = Field(default=None, ge=1, le=MAX_MONTHS)
    rectify_days: int | None = Field(default=None, ge=1, le=366)

    @model_validator(mode="after")
    def _complete(self) -> LadderSpec:
        if self.kind == "escalation" and (
            not self.escalation or self.escalate_within_months is None or self.rectify_days is None
        ):
            raise ValueError("escalation needs escalation (the next steps), escalate_within_months, rectify_days")
        if self.kind != "escalation" and (self.escalation or self.escalate_within_months or self.rectify_days):
            raise ValueError("escalation, escalate_within_months and rectify_days belong to kind = \"escalation\"")
        if self.kind == "suspend_then_review":
            if (self.duration_months is None) == (self.rectify_months is None):
                raise ValueError("suspend_then_review needs exactly one of duration_months, rectify_months")
            if self.on_violation is None:
                raise ValueError("suspend_then_review needs on_violation")
            if self.on_clean is None and self.action in RESTRICTING:
                raise ValueError("suspend_then_review of a restriction needs on_clean")
        if self.kind == "recurrence" and (
            self.duration_months is None or self.recurrence_within_months is None
            or self.recurrence_action is None
        ):
            raise ValueError("recurrence needs duration_months, recurrence_within_months, recurrence_action")
        return self


#: Actions that restrict settlement (suspensions and terminations; design §4).
RESTRICTING = frozenset({"SUSPEND_OUTPATIENT_POOLING", "SUSPEND_AGREEMENT", "SUSPEND_SETTLEMENT",
                         "TERMINATE_OUTPATIENT_POOLING", "CANCEL_OUTPATIENT_POOLING", "TERMINATE_AGREEMENT"})


class Pack(_Strict):
    """An effective regional pack: the detection base with the region's adoptions, includes and borrowings
    resolved. ``rules`` holds every rule of the base; those the region does not adopt have no ``basis``
    and are off."""

    pack: PackInfo
    settings: PackSettings = PackSettings()
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
        return spec is not None and spec.enabled and spec.adopted

    def ladders_for(self, trigger: str) -> list[tuple[str, LadderSpec]]:
        return [(name, spec) for name, spec in self.ladders.items() if trigger in spec.triggers]

    def setting(self, key: str, default: Any) -> Any:
        value = getattr(self.settings, key, None)
        return default if value is None else value

    # ---------------------------------------------------------------------------------------- dates
    def _applies_from(self, spec: _Dated) -> date | None:
        start = spec.effective_from or self.pack.effective_from
        if start is not None and spec.transition_months:
            start = add_months(start, spec.transition_months)
        return start

    def rule_applies_from(self, rule_id: str) -> date | None:
        """First business date the rule is judged on (``None``: no date known, every date)."""
        spec = self.rules.get(rule_id)
        return None if spec is None else self._applies_from(spec)

    def ladder_applies_from(self, name: str) -> date | None:
        return self._applies_from(self.ladders[name])

    def applies(self, rule_id: str, day: date) -> bool:
        """Whether ``rule_id`` (or ``finding:KIND``, which applies whenever a ladder takes it) is in force
        on business ``day``."""
        start = self.rule_applies_from(rule_id)
        return start is None or day >= start

    def ladder_applies(self, name: str, day: date) -> bool:
        start = self.ladder_applies_from(name)
        return start is None or day >= start

    def status_of(self, spec: _Dated) -> Status:
        return spec.status or self.pack.status

    @model_validator(mode="after")
    def _ladder_triggers_exist(self) -> Pack:
        for name, ladder in self.ladders.items():
            for trig in ladder.triggers:
                if not trig.startswith("finding:") and trig not in self.rules:
                    raise ValueError(f"ladders.{name}.triggers: {trig!r} is not a rule of this pack")
                if not trig.startswith("finding:") and not self.rules[trig].adopted:
                    raise ValueError(f"ladders.{name}.triggers: {trig!r} is not adopted by this pack "
                                     "(give it a basis)")
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
    except OSError as exc:
        raise PolicyError(f"{path.name}: cannot read: {exc.strerror}") from exc


def _shipped(name: str) -> Path | None:
    """The shipped regional pack ``name`` (never the base), or None."""
    if name == BASE_NAME or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = PACK_DIR / f"{name}.toml"
    return path if path.is_file() else None


def _locate(name_or_path: str) -> Path:
    """A pack named on the command line: a shipped regional pack, or a ``.toml`` file anywhere."""
    if name_or_path.endswith(".toml"):
        candidate = Path(name_or_path)
        if candidate.is_file():
            return candidate
        raise PolicyError(f"policy file not found: {name_or_path}")
    builtin = _shipped(name_or_path)
    if builtin is not None:
        return builtin
    raise PolicyError(f"unknown policy pack {name_or_path!r} (built-in: {', '.join(builtin_packs())})")


def _locate_include(name: str, including: Path) -> Path:
    """An ``include`` of pack file ``including``: a shipped regional pack by name, or a ``.toml`` inside the
    including pack's own folder (no absolute path, no ``..``, no link leading out of it)."""
    owner = including.stem
    if not name.endswith(".toml"):
        builtin = _shipped(name)
        if builtin is None:
            raise PolicyError(f"{owner}: pack.includes: {name!r} is not a shipped pack "
                              f"(shipped: {', '.join(builtin_packs())})")
        return builtin
    rel = Path(name)
    folder = including.resolve().parent
    target = (folder / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not target.is_relative_to(folder):
        raise PolicyError(f"{owner}: pack.includes: {name!r} is outside the pack's own folder")
    if target == BASE_PATH.resolve():
        raise PolicyError(f"{owner}: pack.includes: the detection base is included by every pack already")
    if not target.is_file():
        raise PolicyError(f"{owner}: pack.includes: {name!r} not found")
    return target


def _resolve(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise PolicyError(f"{path.stem}: include cycle through {', '.join(p.stem for p in seen)}")
    data = _read(path)
    info = data.get("pack", {})
    includes = info.get("includes", []) if isinstance(info, Mapping) else []
    if not isinstance(includes, list):
        raise PolicyError(f"{path.stem}: pack.includes: Input should be a valid list")
    merged: dict[str, Any] = {}
    first_info: Mapping[str, Any] = {}
    for inc in includes:
        got = _resolve(_locate_include(str(inc), path), (*seen, path.resolve()))
        if not first_info and isinstance(got.get("pack"), Mapping):
            first_info = got["pack"]
        merged = _merge(merged, got)
    merged = _merge(merged, data)
    if isinstance(merged.get("pack"), Mapping):
        own = dict(data.get("pack", {}))  # identity is never inherited ...
        for key in ("documents", "status", "effective_from", "effective_note"):
            if key not in own and key in first_info:  # ... but the documents it may cite and the dates are
                own[key] = first_info[key]
        merged["pack"] = own
    return merged


def _doc(clause: str) -> str:
    return clause.split(" ", 1)[0]


def _check_own(name: str, where: str, basis: list[Any], documents: list[str]) -> list[str]:
    if not documents:
        return []
    foreign = sorted({str(c) for c in basis if _doc(str(c)) not in documents})
    if not foreign:
        return []
    return [f"{name}: {where}.basis: {', '.join(foreign)} is not a clause of this pack's documents "
            f"({', '.join(documents)}); borrow the rule by naming its region (borrow = [...])"]


def _lender(name: str, lender: str, where: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if lender == name:
        raise PolicyError(f"{name}: {where}.borrow: a pack cannot borrow from itself")
    if lender not in cache:
        path = _shipped(lender)
        if path is None:
            raise PolicyError(f"{name}: {where}.borrow: {lender!r} is not a shipped regional pack "
                              f"(shipped: {', '.join(builtin_packs())})")
        cache[lender] = _resolve(path, ())
    return cache[lender]


def _borrowed(name: str, table: str, key: str, entry: Mapping[str, Any],
              cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The entry ``key`` of ``table`` (rules/ladders) as borrowed from the regions ``entry['borrow']``:
    the lenders' own tables merged in order (clauses concatenated), their dates and status, then the
    borrower's own keys except ``basis`` (a borrowed entry cites only its lenders)."""
    where = f'{table}."{key}"' if table == "rules" else f"{table}.{key}"
    lenders = entry.get("borrow", [])
    if not isinstance(lenders, list) or not lenders:
        raise PolicyError(f"{name}: {where}.borrow: Input should be a non-empty list of pack names")
    if "basis" in entry:
        raise PolicyError(f"{name}: {where}: a borrowed entry cites its lenders' clauses; remove basis")
    out: dict[str, Any] = {}
    basis: list[str] = []
    statuses: list[str] = []
    for lender in lenders:
        raw = _lender(name, str(lender), where, cache)
        have = raw.get(table, {}).get(key)
        if not isinstance(have, Mapping):
            raise PolicyError(f"{name}: {where}.borrow: {lender} has no {table[:-1]} {key!r}")
        if have.get("borrow"):
            raise PolicyError(f"{name}: {where}.borrow: {lender} borrows {key!r} itself; borrow from its owner")
        info = raw.get("pack", {})
        lent = dict(have)
        for field in ("effective_from", "status"):
            if field not in lent and field in info:
                lent[field] = info[field]
        basis.extend(str(c) for c in lent.pop("basis", []) if str(c) not in basis)
        if table == "ladders" and "triggers" in out:
            lent["triggers"] = list(dict.fromkeys([*out["triggers"], *lent.get("triggers", [])]))
        statuses.append(str(lent.get("status", "in_force")))
        out = _merge(out, lent)
    out["basis"] = basis
    if "draft" in statuses:  # borrowing from a draft is borrowing a draft
        out["status"] = "draft"
    out = _merge(out, {k: v for k, v in entry.items() if k != "borrow"})
    out["borrow"] = [str(x) for x in lenders]
    return out


def _effective(name: str, raw: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Put a regional pack (includes resolved) on the detection base and resolve its borrowings."""
    info = raw.get("pack", {}) if isinstance(raw.get("pack"), Mapping) else {}
    documents = [str(d) for d in info.get("documents", [])] if isinstance(info.get("documents"), list) else []
    problems: list[str] = []
    cache: dict[str, dict[str, Any]] = {}
    base_rules: dict[str, Any] = base.get("rules", {})
    rules: dict[str, Any] = {rid: {k: v for k, v in spec.items() if k != "basis"}
                             for rid, spec in base_rules.items()}
    for rid, entry in (raw.get("rules") or {}).items():
        if not isinstance(entry, Mapping):
            problems.append(f'{name}: rules."{rid}": Input should be a table')
            continue
        if "borrow" in entry:
            entry = _borrowed(name, "rules", rid, entry, cache)
        else:
            problems += _check_own(name, f'rules."{rid}"', list(entry.get("basis", [])), documents)
        rules[rid] = _merge(rules.get(rid, {}), entry)
    ladders: dict[str, Any] = {}
    for lname, entry in (raw.get("ladders") or {}).items():
        if not isinstance(entry, Mapping):
            problems.append(f"{name}: ladders.{lname}: Input should be a table")
            continue
        if "borrow" in entry:
            entry = _borrowed(name, "ladders", lname, entry, cache)
        else:
            problems += _check_own(name, f"ladders.{lname}", list(entry.get("basis", [])), documents)
        ladders[lname] = dict(entry)
    if problems:
        raise PolicyError("\n".join(problems))
    out = {k: v for k, v in raw.items() if k not in ("rules", "ladders")}
    out["rules"] = rules
    out["ladders"] = ladders
    return out


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


def load_base() -> dict[str, Any]:
    """The detection base as read (rules without clauses, no ladders); checked to stay region-neutral."""
    base = _read(BASE_PATH)
    if base.get("ladders"):
        raise PolicyError("base: ladders: the detection base has no sanctions")
    for rid, spec in base.get("rules", {}).items():
        if isinstance(spec, Mapping) and (spec.get("basis") or spec.get("borrow")):
            raise PolicyError(f'base: rules."{rid}".basis: the detection base cites no clause of any region')
    return base


def load_pack(name_or_path: str = "ezhou") -> Pack:
    """Load a regional pack by name or a pack file by path: includes resolved, put on the detection base,
    borrowings resolved; validate strictly."""
    path = _locate(name_or_path)
    raw = _resolve(path, ())
    info = raw.get("pack")
    if isinstance(info, Mapping) and info.get("kind") == "base":
        raise PolicyError(f"{path.stem}: the detection base is not a regional pack; run a region's pack")
    raw = _effective(path.stem, raw, load_base())
    try:
        pack = Pack.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(_format_error(path.stem, exc)) from None
    # Rule parameters are validated by the detector that owns the rule (its Params model).
    from monitor.detectors import validate_params

    validate_params(pack)
    return pack


def builtin_packs() -> list[str]:
    """The shipped regional packs (the detection base is not one)."""
    return sorted(p.stem for p in PACK_DIR.glob("*.toml") if p.stem != BASE_NAME)

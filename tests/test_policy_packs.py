"""The four regional packs on the detection base: each loads; adoption, borrowing and includes merge and
override; a typo'd key or a bad value in any of them fails with a message naming the pack and the dotted
key; ``monitor policy`` prints and checks them."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.detectors import unimplemented_rules
from monitor.policy.pack import PACK_DIR, PolicyError, builtin_packs, load_pack

PACKS = ["ezhou", "xianyang", "liaoning", "autonomous-region"]


@pytest.mark.parametrize("name", PACKS)
def test_each_pack_loads_and_every_enabled_rule_is_implemented(name: str) -> None:
    pack = load_pack(name)
    assert pack.pack.name == name
    assert unimplemented_rules(pack) == []
    adopted = [r for r, spec in pack.rules.items() if spec.adopted]
    assert adopted
    assert all(pack.enabled(r) == pack.rules[r].enabled for r in adopted)
    assert not any(pack.enabled(r) for r, spec in pack.rules.items() if not spec.adopted)


def test_builtin_packs_are_the_four_regions() -> None:
    assert set(PACKS) <= set(builtin_packs())


def test_adoption_borrowing_and_overrides() -> None:
    ez, xy, ln, ar = (load_pack(n) for n in PACKS)
    # thresholds come from the detection base, shared as they are
    assert xy.rules["trace.missing"].params == ez.rules["trace.missing"].params == ln.rules["trace.missing"].params
    # Ezhou's benefit ratios (EZ-CONV 二) are Ezhou's: no other region adopts benefit.overpaid
    assert ez.enabled("benefit.overpaid") and not xy.enabled("benefit.overpaid")
    assert not ln.enabled("benefit.overpaid") and not ar.enabled("benefit.overpaid")
    # termination grounds: cancel the pooling designation in Ezhou, end the agreement elsewhere
    assert ez.ladders["agreement_terminated"].action == "CANCEL_OUTPATIENT_POOLING"
    assert xy.ladders["agreement_terminated"].action == "TERMINATE_AGREEMENT"
    assert xy.ladders["agreement_terminated"].reapply_after_years == 3
    assert xy.ladders["agreement_terminated"].triggers == ["finding:agreement_terminated"]
    assert ln.ladders["agreement_terminated"].action == "TERMINATE_AGREEMENT"
    assert "tier.downgrade" in ez.rules and not ez.enabled("tier.downgrade")
    assert xy.rules["tier.downgrade"].params["window"] == "last_12_months"
    assert ln.rules["tier.downgrade"].params["window"] == "calendar_year"
    assert ar.ladders["suspensions"].action == "TERMINATE_AGREEMENT"
    assert ar.enabled("renewal.grounds") and not ez.enabled("renewal.grounds")
    # Ezhou borrows dual pricing from the autonomous region by naming it, with the lender's clauses
    assert ez.rules["price.dual"].borrow == ["autonomous-region"]
    assert ez.rules["price.dual"].basis == ar.rules["price.dual"].basis
    assert ez.ladders["dual_price_no_renewal"].borrow == ["autonomous-region"]
    assert ez.ladders["dual_price_no_renewal"].basis == ["AR-AGR 二(二)13"]
    assert ez.status_of(ez.ladders["dual_price_escalation"]) == "draft"  # AR-AGR is a 征求意见稿
    assert ez.ladders["tier_review"].basis == ["XY-TIER 第四条", "LN-TIER 二"]
    assert set(ez.rules["tier.not_entitled"].params["schemes"]) == {"XY", "LN"}


def test_a_pack_overrides_one_threshold_of_an_included_pack(tmp_path: Path) -> None:
    path = tmp_path / "strict.toml"
    path.write_text('[pack]\nname = "strict"\nversion = "1"\ntitle = "t"\nregion = "4207"\n'
                    'includes = ["ezhou"]\n[rules."price.dual_serious".params]\nmin_overcharge = "200.00"\n',
                    encoding="utf-8")
    pack = load_pack(str(path))
    assert pack.rules["price.dual_serious"].params == {"window_days": 30, "min_overcharge": "200.00", "min_days": 3,
                                                         "min_involved_amount": "1000.00"}
    assert pack.rules["price.dual_serious"].borrow == ["autonomous-region"]  # still borrowed, still says so
    assert pack.label == "strict@1"


RENEWAL = 'basis = ["AR-AGR 二(二)"]\n'
#: (pack, text to replace, replacement, expected message)
MUTATIONS = [
    ("autonomous-region", 'basis = ["AR-AGR 三(二)2", "AR-AGR 二(二)13"]',
     'basis = ["AR-AGR 三(二)2", "AR-AGR 二(二)13"]\n[rules."price.dual".params]\nmin_exces_ratio = "0.01"',
     'autonomous-region: rules."price.dual".params.min_exces_ratio: unknown key'),
    ("ezhou", 'basis = ["EZ-CONV 三"]\n[rules."price.above_mode"]',
     'basis = ["EZ-CONV 三"]\n[rules."price.above_listed".params]\nmargin_ratio = "-1"\n[rules."price.above_mode"]',
     'ezhou: rules."price.above_listed".params.margin_ratio: Input should be greater than or equal to 0'),
    ("autonomous-region", 'once_per = "agreement_term"', 'once_pre = "agreement_term"',
     "autonomous-region: ladders.dual_price_no_renewal.once_pre: unknown key"),
    ("xianyang", 'window = "last_12_months"', 'windw = "last_12_months"',
     'xianyang: rules."tier.downgrade".params.windw: unknown key'),
    ("xianyang", 'scheme = "XY"', 'scheme = "XZ"',
     "xianyang: rules.\"tier.downgrade\".params.scheme: Input should be 'XY' or 'LN'"),
    ("liaoning", "count = 3", "count = 0",
     'liaoning: rules."tier.downgrade".params.counters.interviews.count: Input should be greater than or equal to 1'),
    ("liaoning", 'kinds = ["interview"]', 'knids = ["interview"]',
     'liaoning: rules."tier.downgrade".params.counters.interviews.knids: unknown key'),
    ("autonomous-region", RENEWAL, RENEWAL + 'params.trace_coverage_mn = "0.90"\n',
     'autonomous-region: rules."renewal.grounds".params.trace_coverage_mn: unknown key'),
    ("autonomous-region", RENEWAL, RENEWAL + 'params.trace_coverage_min = "1.5"\n',
     'autonomous-region: rules."renewal.grounds".params.trace_coverage_min: Input should be less than or equal to 1'),
    ("autonomous-region", 'action = "TERMINATE_AGREEMENT"', 'action = "TERMINATE"',
     "autonomous-region: ladders.dual_price_escalation.escalation.1.action: Input should be"),
]


@pytest.mark.parametrize(("name", "old", "new", "message"), MUTATIONS)
def test_a_typo_or_bad_value_names_the_pack_and_key(tmp_path: Path, name: str, old: str, new: str,
                                                     message: str) -> None:
    text = (PACK_DIR / f"{name}.toml").read_text(encoding="utf-8")
    assert old in text, f"{name}.toml no longer contains {old!r}"
    bad = tmp_path / f"{name}.toml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_pack(str(bad))
    assert message in str(err.value)


def test_policy_check_and_show_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(PACK_DIR / "xianyang.toml")]) == 0
    assert "ok: xianyang@2026.12" in capsys.readouterr().out
    bad = tmp_path / "liaoning.toml"
    bad.write_text((PACK_DIR / "liaoning.toml").read_text(encoding="utf-8").replace("count = 3", "count = -1"),
                   encoding="utf-8")
    assert main(["policy", "check", str(bad)]) == 1
    assert 'liaoning: rules."tier.downgrade".params.counters.interviews.count' in capsys.readouterr().err
    assert main(["policy", "show", "autonomous-region", "--rule", "suspensions.repeated"]) == 0
    out = capsys.readouterr().out
    assert "basis: AR-AGR 三(三)" in out
    assert "TERMINATE_AGREEMENT, no reapplication for 3 year(s)" in out
    assert main(["policy", "list"]) == 0
    assert "liaoning@2026.12" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# #12 point 1 — jurisdiction: a region's tickets cite that region's rules.
REGIONS = {"ezhou": ("EZ-DM", "EZ-CONV"), "xianyang": ("XY-TIER",), "liaoning": ("LN-TIER",),
           "autonomous-region": ("AR-AGR",)}


@pytest.mark.parametrize("name", ["xianyang", "liaoning", "autonomous-region"])
def test_jurisdiction_regional_packs_show_no_ezhou_clause(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: `monitor policy show liaoning` (xianyang, autonomous-region) prints no EZ-DM or EZ-CONV."""
    assert main(["policy", "show", name]) == 0
    out = capsys.readouterr().out
    assert "EZ-DM" not in out and "EZ-CONV" not in out
    assert "basis:" in out


@pytest.mark.parametrize("name", PACKS)
def test_jurisdiction_every_clause_is_the_regions_own_unless_borrowed_by_name(name: str) -> None:
    pack = load_pack(name)
    own = REGIONS[name]
    for rid, spec in pack.rules.items():
        if spec.adopted and not spec.borrow:
            assert all(c.split()[0] in own for c in spec.basis), (rid, spec.basis)
    for lname, lad in pack.ladders.items():
        if not lad.borrow:
            assert all(c.split()[0] in own for c in lad.basis), (lname, lad.basis)
        else:
            lenders = {d for lender in lad.borrow for d in REGIONS[lender]}
            assert all(c.split()[0] in lenders for c in lad.basis), (lname, lad.basis)
    if name != "ezhou":  # the three regional packs as shipped borrow nothing
        assert not any(s.borrow for s in pack.rules.values()) and not any(s.borrow for s in pack.ladders.values())


def test_jurisdiction_detection_base_holds_no_sanction_and_no_clause() -> None:
    text = (PACK_DIR / "base.toml").read_text(encoding="utf-8")
    base = tomllib.loads(text)
    assert base["pack"]["kind"] == "base" and "ladders" not in base
    assert not any("basis" in spec for spec in base["rules"].values())
    assert not any(doc in text for doc in ("EZ-DM", "EZ-CONV", "XY-TIER", "LN-TIER", "AR-AGR"))
    assert "base" not in builtin_packs()
    with pytest.raises(PolicyError, match="detection base is not a regional pack"):
        load_pack(str(PACK_DIR / "base.toml"))
    # every base rule is adopted by some shipped region (so every threshold is validated by a detector)
    adopted = {r for n in PACKS for r, s in load_pack(n).rules.items() if s.adopted}
    assert adopted == set(base["rules"])


def _pack_file(tmp_path: Path, body: str, name: str = "custom", header: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[pack]\nname = "{name}"\nversion = "1"\ntitle = "t"\nregion = "21"\n{header}{body}',
                    encoding="utf-8")
    return path


def test_jurisdiction_a_foreign_clause_without_borrow_is_refused(tmp_path: Path) -> None:
    """Before: liaoning `include`d ezhou and so cited EZ-DM on its tickets. A regional pack citing another
    region's clause without naming the lender is an error."""
    path = _pack_file(tmp_path, '[ladders.x]\nkind = "immediate"\ntriggers = ["trace.missing"]\n'
                      'basis = ["EZ-DM 二(一)"]\naction = "SUSPEND_OUTPATIENT_POOLING"\n',
                      header='includes = ["liaoning"]\n')
    with pytest.raises(PolicyError, match=r"custom: ladders.x.basis: EZ-DM 二\(一\) is not a clause of this "
                                          r"pack's documents \(LN-TIER\)"):
        load_pack(str(path))
    rule = _pack_file(tmp_path, '[rules."upload.late"]\nbasis = ["EZ-DM 二(一)"]\n', name="r",
                      header='documents = ["LN-TIER"]\n')
    with pytest.raises(PolicyError, match=r'r: rules."upload.late".basis: EZ-DM'):
        load_pack(str(rule))


def test_jurisdiction_borrowing_names_the_lender_and_the_ticket_says_so(tmp_path: Path) -> None:
    path = _pack_file(tmp_path, '[rules."rx.not_uploaded"]\nborrow = ["ezhou"]\n'
                      '[ladders.prescriptions]\nborrow = ["ezhou"]\n', header='includes = ["liaoning"]\n')
    pack = load_pack(str(path))
    assert pack.ladders["prescriptions"].basis == ["EZ-DM 二(三)"] and pack.ladders["prescriptions"].borrow == ["ezhou"]
    assert pack.rules["rx.not_uploaded"].basis == ["EZ-DM 二(三)"]
    bad = _pack_file(tmp_path, '[ladders.prescriptions]\nborrow = ["atlantis"]\n', name="b",
                     header='includes = ["liaoning"]\n')
    with pytest.raises(PolicyError, match="'atlantis' is not a shipped regional pack"):
        load_pack(str(bad))
    own = _pack_file(tmp_path, '[ladders.prescriptions]\nborrow = ["ezhou"]\nbasis = ["LN-TIER 二"]\n', name="o",
                     header='includes = ["liaoning"]\n')
    with pytest.raises(PolicyError, match="a borrowed entry cites its lenders' clauses"):
        load_pack(str(own))


def test_jurisdiction_effective_dates_and_status_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show", "xianyang", "--rule", "tier.downgrade"]) == 0
    out = capsys.readouterr().out
    assert "status draft" in out and "not dated in the text" in out and "第十九条" in out
    assert "6-month transition" in out
    assert main(["policy", "show", "ezhou", "--rule", "price.dual"]) == 0
    out = capsys.readouterr().out
    assert "(borrowed from autonomous-region)" in out and "applies: draft" in out
    assert main(["policy", "list"]) == 0
    listing = capsys.readouterr().out
    assert "autonomous-region@2026.12" in listing and "[draft]" in listing and "base@" not in listing


def test_jurisdiction_rule_applies_from_its_date_plus_transition(tmp_path: Path) -> None:
    path = _pack_file(tmp_path, '[rules."upload.late"]\neffective_from = 2026-03-01\n',
                      header='includes = ["xianyang"]\neffective_from = 2026-01-01\n')
    pack = load_pack(str(path))
    assert pack.applies("upload.late", date(2026, 3, 1)) and not pack.applies("upload.late", date(2026, 2, 28))
    assert pack.applies("upload.not_realtime", date(2026, 1, 1))
    assert not pack.applies("upload.not_realtime", date(2025, 12, 31))
    # XY 第十七条: the downgrade applies after the 6-month transition
    assert pack.rule_applies_from("tier.downgrade") == date(2026, 7, 1)
    assert pack.ladder_applies_from("tier_downgrade") == date(2026, 7, 1)
    assert load_pack("xianyang").rule_applies_from("tier.downgrade") is None  # the text leaves the date blank


# ---------------------------------------------------------------------------------------------------------
# #17 "Packs": [settings] validated; includes restricted.
@pytest.mark.parametrize(("setting", "message"), [
    ('max_clock_skew_minutes = "sixty"', "settings.max_clock_skew_minutes: Input should be a valid number"),
    ("dedup_horizon_days = -1", "settings.dedup_horizon_days: Input should be greater than or equal to 1"),
    ("dedup_horizon_days = 0", "settings.dedup_horizon_days: Input should be greater than or equal to 1"),
    ("max_clock_skew_minutes = 0", "settings.max_clock_skew_minutes: Input should be greater than 0"),
    ("max_clock_skew_minutes = inf", "settings.max_clock_skew_minutes: Input should be a finite number"),
    ("dedup_horizon_dayz = 35", "settings.dedup_horizon_dayz: unknown key"),
    ("dedup_horizon_days = 100000000", "settings.dedup_horizon_days: Input should be less than or equal to 400"),
])
def test_settings_attack_string_negative_typo_or_huge_value_is_refused(tmp_path: Path, setting: str,
                                                                          message: str) -> None:
    path = _pack_file(tmp_path, f"[settings]\n{setting}\n", header='includes = ["ezhou"]\n')
    with pytest.raises(PolicyError, match=re.escape(f"custom: {message}")):
        load_pack(str(path))
    assert main(["policy", "check", str(path)]) == 1


@pytest.mark.parametrize(("key", "value", "message"), [
    ("duration_months", "100000000", "duration_months: Input should be less than or equal to 120"),
    ("rectify_months", "100000000", "rectify_months: Input should be less than or equal to 120"),
    ("reapply_after_years", "10000", "reapply_after_years: Input should be less than or equal to 10"),
    ("review_lookback_days", "100000", "review_lookback_days: Input should be less than or equal to 366"),
])
def test_settings_attack_duration_beyond_the_calendar_is_refused(tmp_path: Path, key: str, value: str,
                                                                  message: str) -> None:
    path = _pack_file(tmp_path, f"[ladders.complaints]\n{key} = {value}\n", header='includes = ["ezhou"]\n')
    with pytest.raises(PolicyError, match=re.escape(f"custom: ladders.complaints.{message}")):
        load_pack(str(path))


def test_include_attack_absolute_path_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evil = elsewhere / "evil.toml"
    evil.write_text((PACK_DIR / "ezhou.toml").read_text(encoding="utf-8"), encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    path = _pack_file(mine, "", header=f'includes = ["{evil}"]\n')
    with pytest.raises(PolicyError, match="outside the pack's own folder"):
        load_pack(str(path))


def test_include_attack_parent_traversal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.toml").write_text((PACK_DIR / "ezhou.toml").read_text(encoding="utf-8"), encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    path = _pack_file(mine, "", header='includes = ["../evil.toml"]\n')
    with pytest.raises(PolicyError, match="outside the pack's own folder"):
        load_pack(str(path))


def test_include_attack_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.toml").write_text((PACK_DIR / "ezhou.toml").read_text(encoding="utf-8"), encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "looks-local.toml").symlink_to(tmp_path / "evil.toml")
    path = _pack_file(mine, "", header='includes = ["looks-local.toml"]\n')
    with pytest.raises(PolicyError, match="outside the pack's own folder"):
        load_pack(str(path))


def test_include_attack_unknown_name_or_the_base_is_refused(tmp_path: Path) -> None:
    for name, message in [("/etc/passwd", "is not a shipped pack"), ("base", "is not a shipped pack"),
                          ("../ezhou", "is not a shipped pack")]:
        path = _pack_file(tmp_path, "", header=f'includes = ["{name}"]\n')
        with pytest.raises(PolicyError, match=re.escape(message)):
            load_pack(str(path))


def test_include_of_a_file_in_the_packs_own_folder_works(tmp_path: Path) -> None:
    _pack_file(tmp_path, '[rules."price.dual_serious".params]\nmin_days = 5\n', name="local",
               header='includes = ["ezhou"]\n')
    path = _pack_file(tmp_path, "", header='includes = ["local.toml"]\n')
    pack = load_pack(str(path))
    assert pack.rules["price.dual_serious"].params["min_days"] == 5
    assert pack.pack.documents == ["EZ-DM", "EZ-CONV"]  # inherited with the rules it may cite

"""The four regional packs: each loads; includes merge and override; a typo'd key or a bad value in any of
them fails with a message naming the pack and the dotted key; ``monitor policy`` prints and checks them."""

from __future__ import annotations

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
    for rule_id, spec in pack.rules.items():
        assert spec.basis, rule_id


def test_builtin_packs_are_the_four_regions() -> None:
    assert set(PACKS) <= set(builtin_packs())


def test_includes_merge_and_override() -> None:
    ez, xy, ln, ar = (load_pack(n) for n in PACKS)
    # inherited as is
    assert xy.rules["price.dual"] == ez.rules["price.dual"]
    # overridden: the benefit ratios are Ezhou's; termination grounds end the agreement in XY and LN
    assert ez.enabled("benefit.overpaid") and not xy.enabled("benefit.overpaid")
    assert ez.ladders["agreement_terminated"].action == "CANCEL_OUTPATIENT_POOLING"
    assert xy.ladders["agreement_terminated"].action == "TERMINATE_AGREEMENT"
    assert xy.ladders["agreement_terminated"].reapply_after_years == 3
    assert xy.ladders["agreement_terminated"].triggers == ["finding:agreement_terminated"]
    assert ln.ladders["agreement_terminated"].action == "TERMINATE_AGREEMENT"
    # added
    assert "tier.downgrade" not in ez.rules
    assert xy.rules["tier.downgrade"].params["window"] == "last_12_months"
    assert ln.rules["tier.downgrade"].params["window"] == "calendar_year"
    assert ar.ladders["suspensions"].action == "TERMINATE_AGREEMENT"
    assert ar.enabled("renewal.grounds") and not ez.enabled("renewal.grounds")


def test_a_pack_overrides_one_threshold_of_an_included_pack(tmp_path: Path) -> None:
    path = tmp_path / "strict.toml"
    path.write_text('[pack]\nname = "strict"\nversion = "1"\ntitle = "t"\nregion = "4207"\n'
                    'includes = ["ezhou"]\n[rules."price.dual_serious".params]\nmin_overcharge = "200.00"\n',
                    encoding="utf-8")
    pack = load_pack(str(path))
    assert pack.rules["price.dual_serious"].params == {"window_days": 30, "min_overcharge": "200.00", "min_days": 3}
    assert pack.label == "strict@1"


#: (pack, text to replace, replacement, expected message)
MUTATIONS = [
    ("ezhou", 'min_excess_ratio = "0.01"', 'min_exces_ratio = "0.01"',
     'ezhou: rules."price.dual".params.min_exces_ratio: unknown key'),
    ("ezhou", "min_days = 3", "min_days = 0",
     'ezhou: rules."price.dual_serious".params.min_days: Input should be greater than or equal to 1'),
    ("ezhou", 'once_per = "institution"', 'once_pre = "institution"',
     "ezhou: ladders.dual_price_interview.once_pre: unknown key"),
    ("xianyang", 'window = "last_12_months"', 'windw = "last_12_months"',
     'xianyang: rules."tier.downgrade".params.windw: unknown key'),
    ("xianyang", 'scheme = "XY"', 'scheme = "XZ"',
     "xianyang: rules.\"tier.downgrade\".params.scheme: Input should be 'XY' or 'LN'"),
    ("liaoning", "count = 3", "count = 0",
     'liaoning: rules."tier.downgrade".params.counters.interviews.count: Input should be greater than or equal to 1'),
    ("liaoning", 'kinds = ["interview"]', 'knids = ["interview"]',
     'liaoning: rules."tier.downgrade".params.counters.interviews.knids: unknown key'),
    ("autonomous-region", 'trace_coverage_min = "0.90"', 'trace_coverage_mn = "0.90"',
     'autonomous-region: rules."renewal.grounds".params.trace_coverage_mn: unknown key'),
    ("autonomous-region", 'trace_coverage_min = "0.90"', 'trace_coverage_min = "1.5"',
     'autonomous-region: rules."renewal.grounds".params.trace_coverage_min: Input should be less than or equal to 1'),
    ("autonomous-region", 'action = "TERMINATE_AGREEMENT"', 'action = "TERMINATE"',
     "autonomous-region: ladders.suspensions.action: Input should be"),
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
    assert "ok: xianyang@2026.11" in capsys.readouterr().out
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
    assert "liaoning@2026.11" in capsys.readouterr().out

"""Display names (issue 18 §1): every rule, action and finding kind the shipped packs use has a Chinese and
an English name; an id with no name is shown visibly as unnamed (with the id), never silently."""

from __future__ import annotations

import pytest

from monitor.inspect.names import action_name, field_name, finding_name, rule_name, state_name, table
from monitor.outputs import ACTIONS
from monitor.policy.pack import builtin_packs, load_pack
from monitor.records import FindingKind


@pytest.mark.parametrize("name", builtin_packs())
def test_every_rule_action_and_finding_a_shipped_pack_uses_has_a_name(name: str) -> None:
    pack = load_pack(name)
    used_actions = set()
    for ladder in pack.ladders.values():
        steps = (ladder.action, ladder.on_violation, ladder.on_clean, ladder.recurrence_action)
        used_actions |= {a for a in steps if a}
        for trig in ladder.triggers:
            n = rule_name(pack, trig)
            assert n.known and n.zh and n.en and n.zh != trig, (name, trig)
    for rule_id in pack.rules:
        n = rule_name(pack, rule_id)
        assert n.known and n.zh == pack.rules[rule_id].name_zh and n.id == rule_id
    for action in used_actions:
        n = action_name(action)
        assert n.known and n.zh != action and any("\u4e00" <= ch <= "\u9fff" for ch in n.zh), action


def test_every_action_finding_kind_and_state_of_the_contract_has_a_name() -> None:
    assert set(table()["actions"]) == set(ACTIONS)
    assert set(table()["findings"]) == set(FindingKind.__args__)  # type: ignore[attr-defined]
    for state in ("normal", "suspended", "terminated"):
        assert state_name(state).known
    assert action_name("SUSPEND_OUTPATIENT_POOLING").zh == "中止门诊统筹服务"
    assert rule_name(load_pack("ezhou"), "price.dual_serious").zh == "阴阳价格情节严重"


def test_an_unknown_id_is_shown_as_unnamed_with_its_id() -> None:
    pack = load_pack("ezhou")
    for n in (rule_name(pack, "price.brand_new"), action_name("FINE_HEAVILY"), finding_name("new_kind"),
              rule_name(pack, "finding:new_kind")):
        assert not n.known and n.id in n.zh and n.id in n.en and "未命名" in n.zh
    assert field_name("some_field").zh == "some_field"

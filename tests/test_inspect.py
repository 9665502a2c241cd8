"""Inspector case files (issue 9): facts checked against the alerts/tickets a replay produced.

Expected values are worked out by hand from EZ-DM 二(一) and the ezhou pack defaults (24 h, 10 %, 5 late,
suspend one calendar month from the day after the determination, review at the deadline + 24 h over
the last 7 days), as in tests/test_upload_ladder.py."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import CLINIC, PHARMACY, institution, read_jsonl, settlement, write_jsonl

from monitor.cli import main
from monitor.clock import CST
from monitor.inspect.clauses import EXCERPTS, SOURCE_FILES, excerpt, normalize
from monitor.inspect.model import build_case_file, list_cases, mask_evidence
from monitor.inspect.store import FileStore
from monitor.inspect.text import render_case_file
from monitor.policy.pack import Pack, builtin_packs, load_pack
from monitor.replay import ReplayResult, replay_dir
from monitor.sinks import Sink

FMT = "%Y-%m-%d %H:%M:%S"
REPO = Path(__file__).resolve().parents[1]


def day_records(code: str, day: date, total: int, late: int) -> list[dict[str, Any]]:
    """``total`` settlements on ``day`` at 10:00+i min; the first ``late`` uploaded 30 h later."""
    out = []
    for i in range(total):
        t = datetime(day.year, day.month, day.day, 10, 0, tzinfo=CST) + timedelta(minutes=i)
        up = t + (timedelta(hours=30) if i < late else timedelta(minutes=1))
        out.append(settlement(f"{code}-{day:%m%d}-{i}", t.strftime(FMT), up.strftime(FMT), code=code,
                              certno=f"42070219800101{i:04d}", psn_name="王小明"))
    return out


INSTITUTIONS = [
    institution(PHARMACY, fixmedins_name="鄂城区惠民大药房", admdvs="420704", tier="C", tier_scheme="XY"),
    institution(CLINIC, fixmedins_name="华容区社区诊所", admdvs="420703"),
]


def upload_only(tmp_path: Path) -> Pack:
    """The ezhou pack with every rule but EZ-DM 二(一)'s upload rules disabled, so the hand-derived
    facts below do not move when other rule families (completeness, prescriptions, …) are added."""
    base = load_pack("ezhou")
    lines = ['[pack]', 'name = "ezhou-upload"', 'version = "test"', 'title = "upload rules only"',
             'region = "4207"', 'includes = ["ezhou"]']
    for rule_id in base.rules:
        # upload.silent_stream off too: these fixtures upload settlements only (no 3505 stream at all)
        if not rule_id.startswith("upload.") or rule_id == "upload.silent_stream":
            lines += [f'[rules."{rule_id}"]', "enabled = false"]
    path = tmp_path / "upload-only.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_pack(str(path))


def replay(tmp_path: Path, records: list[dict[str, Any]], as_of: str,
           pack: Pack | None = None, sinks: Sequence[Sink] = ()) -> tuple[Path, ReplayResult]:
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", INSTITUTIONS)
    write_jsonl(inp, "settlements", sorted(records, key=lambda r: r["inf_time"]))
    out = tmp_path / "out"
    result = replay_dir(inp, out, pack or upload_only(tmp_path),
                        as_of=datetime.strptime(as_of, FMT).replace(tzinfo=CST), extra_sinks=sinks)
    return out, result


def full_ladder(tmp_path: Path, pack: Pack | None = None, sinks: Sequence[Sink] = ()) -> tuple[Path, ReplayResult]:
    """Both fail 01-10 → suspended 01-13..02-13; the pharmacy fails 02-10 (in the last 7 days) →
    terminated 02-13; the clinic fails 02-01 only and uploads nothing after → at the review (02-14 00:00)
    no positive evidence of real-time uploads, so REVIEW (verification required) from 02-13 instead of
    REINSTATE (silence is not compliance: sanctions-detect's review_evidence)."""
    recs = (day_records(PHARMACY, date(2026, 1, 10), 20, 10) + day_records(CLINIC, date(2026, 1, 10), 20, 10)
            + day_records(PHARMACY, date(2026, 2, 10), 20, 10) + day_records(CLINIC, date(2026, 2, 1), 20, 10))
    return replay(tmp_path, recs, "2026-03-01 00:00:00", pack, sinks)


def test_case_file_facts_match_the_replay(tmp_path: Path) -> None:
    out, _ = full_ladder(tmp_path)
    store = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    pack = upload_only(tmp_path)
    alerts, tickets = read_jsonl(out / "alerts.jsonl"), read_jsonl(out / "tickets.jsonl")

    cf = build_case_file(store, PHARMACY, pack)
    assert cf is not None and cf.institution is not None
    assert (cf.institution.name, cf.institution.type, cf.institution.region, cf.institution.tier) == (
        "鄂城区惠民大药房", "2", "鄂城区 (420704)", "C")
    assert (cf.institution.agreement_start, cf.institution.agreement_end) == (date(2026, 1, 1), date(2026, 12, 31))
    # the store's horizon is the review at 02-14 00:00; the termination is in force from 02-13
    assert cf.as_of == datetime(2026, 2, 14, tzinfo=CST)
    assert cf.state == "terminated"
    assert [(s.action, s.effective_from, s.until) for s in cf.in_force] == [
        ("TERMINATE_OUTPATIENT_POOLING", date(2026, 2, 13), None)]
    # counts: late + not-real-time on each failing day; suspend then terminate
    assert cf.alerts_by_rule == {"upload.late": 2, "upload.not_realtime": 2}
    assert cf.tickets_by_action == {"SUSPEND_OUTPATIENT_POOLING": 1, "TERMINATE_OUTPATIENT_POOLING": 1}
    assert cf.alerts == sum(a["fixmedins_code"] == PHARMACY for a in alerts)
    assert cf.tickets == sum(t["fixmedins_code"] == PHARMACY for t in tickets)
    # timeline in event time: 01-10 judged at 01-12 00:00 (late, not-real-time, suspension), ...
    got = [(e.kind, e.rule_ids[0] if e.kind == "alert" else e.action, e.at) for e in cf.timeline]
    assert got == [
        ("alert", "upload.late", datetime(2026, 1, 12, tzinfo=CST)),
        ("alert", "upload.not_realtime", datetime(2026, 1, 12, tzinfo=CST)),
        ("ticket", "SUSPEND_OUTPATIENT_POOLING", datetime(2026, 1, 12, tzinfo=CST)),
        ("alert", "upload.late", datetime(2026, 2, 12, tzinfo=CST)),
        ("alert", "upload.not_realtime", datetime(2026, 2, 12, tzinfo=CST)),
        ("ticket", "TERMINATE_OUTPATIENT_POOLING", datetime(2026, 2, 14, tzinfo=CST)),
    ]
    suspend = cf.timeline[2]
    assert (suspend.effective_from, suspend.effective_until) == (date(2026, 1, 13), date(2026, 2, 13))
    nr = cf.timeline[1]
    assert nr.evidence["late"] == 10 and nr.evidence["records"] == 20 and nr.evidence["business_date"] == "2026-01-10"
    # every entry cites EZ-DM 二(一) with its verbatim text
    for e in cf.timeline:
        assert [c.clause for c in e.clauses] == ["EZ-DM 二(一)"]
        assert "1 个月后仍未实现实时上传的，终止其门诊统筹定点资格" in e.clauses[0].excerpt[0]
    assert cf.deadlines == [] and cf.next_deadline is None  # terminated: nothing left to check

    clinic = build_case_file(store, CLINIC, pack)
    assert clinic is not None
    assert clinic.state == "normal" and clinic.in_force == []
    assert clinic.tickets_by_action == {"REVIEW": 1, "SUSPEND_OUTPATIENT_POOLING": 1}
    assert clinic.institution is not None and clinic.institution.tier is None


def test_next_deadline_while_suspended_is_the_ledgers(tmp_path: Path) -> None:
    """Failing 01-10 only, replayed to 01-20: suspended 01-13..02-13; the ledger will review at
    02-14 00:00 (deadline 02-13 + 24 h) whether 02-06..02-12 had a not-real-time day."""
    out, result = replay(tmp_path, day_records(PHARMACY, date(2026, 1, 10), 20, 10), "2026-01-20 00:00:00")
    store = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    pack = upload_only(tmp_path)
    cf = build_case_file(store, PHARMACY, pack, as_of=datetime(2026, 1, 20, tzinfo=CST))
    assert cf is not None
    assert cf.state == "suspended"
    d = cf.next_deadline
    assert d is not None and d.kind == "review" and d.ladder == "realtime"
    assert d.due == date(2026, 2, 13)
    assert d.checked_at == datetime(2026, 2, 14, tzinfo=CST) and not d.overdue
    assert (d.if_violation, d.otherwise) == ("TERMINATE_OUTPATIENT_POOLING", "REINSTATE")
    assert "2026-02-06" in d.checks_zh and "2026-02-12" in d.checks_zh
    assert "终止门诊统筹定点资格" in d.then_zh and "恢复医保服务" in d.then_zh
    # the same deadline the ledger holds in memory
    ledger = result.engine.ledger.deadlines(PHARMACY)
    assert [(x.ladder, x.due, x.if_violation, x.otherwise) for x in ledger] == [
        (d.ladder, d.due, d.if_violation, d.otherwise)]
    # at the store's own horizon (01-12 00:00) the suspension is decided but starts the next day
    early = build_case_file(store, PHARMACY, pack)
    assert early is not None and early.state == "normal" and early.next_deadline == d.model_copy(
        update={"overdue": False})


def test_text_rendering_names_the_facts_and_masks_people(tmp_path: Path) -> None:
    out, _ = full_ladder(tmp_path)
    store = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    cf = build_case_file(store, PHARMACY, upload_only(tmp_path))
    assert cf is not None
    text = render_case_file(cf)
    for fact in ("鄂城区惠民大药房", "零售药店", "鄂城区 (420704)", "2026-01-01 → 2026-12-31",
                 "已终止/取消 / terminated", "TERMINATE_OUTPATIENT_POOLING", "2026-01-13 → 2026-02-13",
                 "EZ-DM 二(一)", "未实现医保结算数据、进销存、药品耗材追溯码数据实时上传的中止门诊统筹服务 1 个月",
                 "迟报数=10", "结算流水号=P42070200001-0110-0", "数据未实时上传", "无 none pending"):
        assert fact in text, fact
    assert "王小明" not in text and "420702198001010000" not in text


def test_case_file_counts_equal_the_replay_outputs_with_every_rule_on(tmp_path: Path) -> None:
    """With the whole ezhou pack (every rule family on), each case file holds exactly the alerts and
    tickets the replay wrote for that institution, in event-time order, each citing a clause on file."""
    out, _ = full_ladder(tmp_path, load_pack("ezhou"))
    store = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    alerts, tickets = read_jsonl(out / "alerts.jsonl"), read_jsonl(out / "tickets.jsonl")
    for code in (PHARMACY, CLINIC):
        cf = build_case_file(store, code, load_pack("ezhou"))
        assert cf is not None
        mine_a = [a for a in alerts if a["fixmedins_code"] == code]
        mine_t = [t for t in tickets if t["fixmedins_code"] == code]
        assert cf.alerts_by_rule == dict(sorted(Counter(a["rule_id"] for a in mine_a).items()))
        assert cf.tickets_by_action == dict(sorted(Counter(t["action"] for t in mine_t).items()))
        assert {e.id for e in cf.timeline} == {a["alert_id"] for a in mine_a} | {t["ticket_id"] for t in mine_t}
        assert [e.at for e in cf.timeline] == sorted(e.at for e in cf.timeline)
        assert all(c.excerpt for e in cf.timeline for c in e.clauses)
        # EZ-DM 二(一) facts hold whatever else fired
        realtime = [(t["action"], t["effective_from"]) for t in mine_t if t["ladder"] == "realtime"]
        assert realtime == [("SUSPEND_OUTPATIENT_POOLING", "2026-01-13"),
                            ("TERMINATE_OUTPATIENT_POOLING" if code == PHARMACY else "REVIEW", "2026-02-13")]
        if code == PHARMACY:
            assert cf.state == "terminated"


def test_cli_inspect_prints_the_case_file_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = full_ladder(tmp_path)
    reg = str(tmp_path / "in" / "institutions.jsonl")
    assert main(["inspect", CLINIC, "--store", str(out), "--registry", reg]) == 0
    text = capsys.readouterr().out
    assert "华容区社区诊所" in text and "REVIEW" in text and "正常 / normal" in text
    assert main(["inspect", CLINIC, "--store", str(out), "--registry", reg, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tickets_by_action"] == {"REVIEW": 1, "SUSPEND_OUTPATIENT_POOLING": 1}
    assert main(["inspect", "--list", "--store", str(out), "--registry", reg, "--json"]) == 0
    assert [r["code"] for r in json.loads(capsys.readouterr().out)] == [CLINIC, PHARMACY]
    assert main(["inspect", "H00000000000", "--store", str(out)]) == 1


def test_list_filters_and_sorting(tmp_path: Path) -> None:
    out, _ = full_ladder(tmp_path)
    store = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    pack = upload_only(tmp_path)
    from monitor.inspect.model import ListQuery

    def codes(**q: str) -> list[str]:
        return [r.code for r in list_cases(store, pack, ListQuery(**q))]  # type: ignore[arg-type]

    # both have a critical alert and 2+2 alerts; the pharmacy's last activity (02-14) is later than
    # the clinic's (02-14 review as well) → equal; ties break on the code: H… before P…
    assert codes() == [CLINIC, PHARMACY]
    assert codes(state="terminated") == [PHARMACY]
    assert codes(state="normal") == [CLINIC]
    assert codes(state="suspended") == []
    assert codes(action="REVIEW") == [CLINIC]
    assert codes(action="REINSTATE") == []
    assert codes(action="TERMINATE_OUTPATIENT_POOLING") == [PHARMACY]
    assert codes(region="420704") == [PHARMACY]
    assert codes(region="4207") == [CLINIC, PHARMACY]
    assert codes(rule="upload.not_realtime") == [CLINIC, PHARMACY]
    assert codes(rule="price.dual") == []


def test_mask_evidence() -> None:
    ev = {"certno": "420702198001011234", "psn_name": "张三丰", "psn_no": "42000011112222",
          "note": "证件 420702198001011234 重复", "samples": ["setl_id=S1", "420702198001011234"],
          "trace": "81234567890123456789"}
    got = mask_evidence(ev)
    assert got == {"certno": "4207************34", "psn_name": "张**", "psn_no": "************22",
                   "note": "证件 4207************34 重复", "samples": ["setl_id=S1", "4207************34"],
                   "trace": "81234567890123456789"}  # a 20-digit trace code is not a certificate number


# ------------------------------------------------------------------------------------------ clauses
def _regulations_dir() -> Path | None:
    for cand in (REPO.parent / "shared" / "regulations", REPO / "shared" / "regulations"):
        if cand.is_dir():
            return cand
    return None


def test_clause_excerpts_are_verbatim() -> None:
    """Each shipped fragment occurs verbatim in its regulation (checked when ../shared is present, as
    it is beside the checkout and in CI); the lookup falls back to the enclosing clause."""
    folder = _regulations_dir()
    checked = 0
    for clause, fragments in EXCERPTS.items():
        assert clause == normalize(clause) and fragments
        if folder is not None:
            source = (folder / SOURCE_FILES[clause.split(" ")[0]]).read_text(encoding="utf-8")
            for frag in fragments:
                assert frag in source, (clause, frag[:20])
                checked += 1
    if folder is not None:
        assert checked >= len(EXCERPTS)
    assert excerpt("EZ-DM 二（一）") == EXCERPTS["EZ-DM 二(一)"]
    assert excerpt("LN-TIER 四(三)9") == EXCERPTS["LN-TIER 四(三)"]
    assert excerpt("NOPE 一") == ()


@pytest.mark.parametrize("name", builtin_packs())
def test_every_clause_a_builtin_pack_cites_has_an_excerpt(name: str) -> None:
    pack = load_pack(name)
    cited = {c for r in pack.rules.values() for c in r.basis} | {c for lad in pack.ladders.values() for c in lad.basis}
    assert cited and all(excerpt(c) for c in cited), sorted(c for c in cited if not excerpt(c))

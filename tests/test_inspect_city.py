"""Case files for a simulated city (issue 9 acceptance): ``monitor simulate`` writes a small Ezhou with
planted violations, the replay judges it up to 2026-02-10, and every institution's case file must hold
exactly the alerts and tickets the replay wrote for it (counts, dates, clauses), the sanction state and
next deadlines the ledger holds at that instant, and none of the people in the input in clear."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from builders import read_jsonl

from monitor.clock import CST
from monitor.inspect.model import ListQuery, build_case_file, list_cases
from monitor.inspect.store import FileStore
from monitor.inspect.text import render_case_file
from monitor.inspect.web import InspectorApp
from monitor.policy.pack import Pack, load_pack
from monitor.replay import ReplayResult, replay_dir
from monitor.simulate import SimConfig, simulate

AS_OF = datetime(2026, 2, 10, tzinfo=CST)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ReplayResult, Pack]:
    tmp = tmp_path_factory.mktemp("city")
    simulate(SimConfig(out=tmp / "in", days=40, institutions=12, scale=0.05, seed=7))
    pack = load_pack("ezhou")
    result = replay_dir(tmp / "in", tmp / "out", pack, as_of=AS_OF)
    return tmp / "in", tmp / "out", result, pack


def test_every_case_file_matches_the_replay_and_the_ledger(city: tuple[Path, Path, ReplayResult, Pack]) -> None:
    inp, out, result, pack = city
    store = FileStore(out, registry=inp / "institutions.jsonl")
    alerts, tickets = read_jsonl(out / "alerts.jsonl"), read_jsonl(out / "tickets.jsonl")
    codes = sorted({a["fixmedins_code"] for a in alerts} | {t["fixmedins_code"] for t in tickets})
    assert len(codes) >= 5 and tickets  # the planted city flags several institutions
    ledger = result.engine.ledger
    pending = 0
    for code in codes:
        cf = build_case_file(store, code, pack, as_of=AS_OF)
        assert cf is not None and cf.institution is not None, code
        mine_a = [a for a in alerts if a["fixmedins_code"] == code]
        mine_t = [t for t in tickets if t["fixmedins_code"] == code]
        assert cf.alerts_by_rule == dict(sorted(Counter(a["rule_id"] for a in mine_a).items()))
        assert cf.tickets_by_action == dict(sorted(Counter(t["action"] for t in mine_t).items()))
        by_id = {e.id: e for e in cf.timeline}
        assert set(by_id) == {a["alert_id"] for a in mine_a} | {t["ticket_id"] for t in mine_t}
        for t in mine_t:  # dates and clauses as the ticket states them
            e = by_id[t["ticket_id"]]
            assert e.action == t["action"]
            assert (e.effective_from.isoformat(), e.effective_until and e.effective_until.isoformat(),
                    e.rectify_by and e.rectify_by.isoformat()) == (
                t["effective_from"], t["effective_until"], t["rectify_by"])
            assert [c.clause for c in e.clauses] == t["basis"] and all(c.excerpt for c in e.clauses)
        for a in mine_a:
            assert [c.clause for c in by_id[a["alert_id"]].clauses] == [
                x.strip() for x in re.split(r"[;；]", a["basis"]) if x.strip()]
        assert [e.at for e in cf.timeline] == sorted(e.at for e in cf.timeline)
        # the same state and deadlines the ledger holds at that instant
        assert cf.state == ledger.state(code, AS_OF.date()), code
        want = [(d.ladder, d.due, d.if_violation, d.otherwise) for d in ledger.deadlines(code)]
        got = [(d.ladder, d.due, d.if_violation, d.otherwise) for d in cf.deadlines if d.kind == "review"]
        assert got == want, code
        pending += len(want)
    assert pending >= 1  # a suspension awaiting its review at 2026-02-10


def test_list_state_filter_agrees_with_the_ledger(city: tuple[Path, Path, ReplayResult, Pack]) -> None:
    inp, out, result, pack = city
    store = FileStore(out, registry=inp / "institutions.jsonl")
    rows = list_cases(store, pack, as_of=AS_OF)
    for state in ("normal", "suspended", "terminated"):
        got = [r.code for r in list_cases(store, pack, ListQuery(state=state), as_of=AS_OF)]
        assert got == [r.code for r in rows if result.engine.ledger.state(r.code, AS_OF.date()) == state]
    # severity order: no row is less severe than the one after it
    rank = {"info": 0, "warning": 1, "critical": 2, None: -1}
    assert all(rank[a.max_severity] >= rank[b.max_severity] for a, b in itertools.pairwise(rows))


def test_no_person_from_the_input_appears(city: tuple[Path, Path, ReplayResult, Pack]) -> None:
    inp, out, _, pack = city
    certnos: set[str] = set()
    names: set[str] = set()
    for stream in ("settlements", "inventory"):
        for line in (inp / f"{stream}.jsonl").read_text(encoding="utf-8").splitlines():
            for rec in (lambda v: v if isinstance(v, list) else [v])(json.loads(line)):
                if rec.get("certno"):
                    certnos.add(rec["certno"])
                if rec.get("psn_name"):
                    names.add(rec["psn_name"])
    assert certnos and names
    store = FileStore(out, registry=inp / "institutions.jsonl")
    app = InspectorApp(store, pack, as_of=AS_OF)
    bodies = [app("GET", "/", {}, {}).body.decode(), app("GET", "/api/institutions", {}, {}).body.decode()]
    for row in list_cases(store, pack, as_of=AS_OF):
        cf = build_case_file(store, row.code, pack, AS_OF)
        assert cf is not None
        bodies.append(render_case_file(cf))
        bodies.append(app("GET", f"/institutions/{row.code}", {}, {}).body.decode())
        bodies.append(app("GET", f"/api/institutions/{row.code}", {}, {}).body.decode())
    text = "\n".join(bodies)
    # no standalone 18-character certificate number (record ids such as STP4207…0063 are not one)
    assert not re.search(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])", text)
    assert not [c for c in certnos if c in text]
    assert not [n for n in names if n in text]

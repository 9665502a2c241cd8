"""Case files for a simulated city (issue 9 acceptance): ``monitor simulate`` writes a small Ezhou with
planted violations, the replay judges it up to 2026-02-10, and every institution's case file must hold
exactly the alerts and tickets the replay wrote for it (counts, dates, clauses), the sanction state and
next deadlines the ledger holds at that instant, and none of the people in the input in clear."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
import subprocess
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import read_jsonl

from monitor.cli import main
from monitor.clock import CST
from monitor.inspect.clauses import excerpt
from monitor.inspect.model import ListQuery, MemoryStore, build_case_file, list_cases
from monitor.inspect.names import table
from monitor.inspect.pdf import write_pdf
from monitor.inspect.store import FileStore, read_registry
from monitor.inspect.text import render_case_file
from monitor.inspect.web import PDF_EVENTS, InspectorApp
from monitor.outputs import Alert, Ticket
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


# ------------------------------------------------------------------------------------------ PDF (issue 18 §4)
def _pdftotext(path: Path) -> str:
    exe = shutil.which("pdftotext")
    assert exe, "pdftotext missing: run `bash deploy/ensure-tools.sh` (Debian poppler-utils)"
    return subprocess.run([exe, "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def _pdfinfo(path: Path) -> dict[str, str]:
    exe = shutil.which("pdfinfo")
    assert exe
    out = subprocess.run([exe, str(path)], check=True, capture_output=True, text=True, timeout=60).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pdf_case_file_reads_back_with_pdftotext(city: tuple[Path, Path, ReplayResult, Pack], tmp_path: Path) -> None:
    """The printable case file of the simulated institution with the most tickets, from the CLI and from
    the web route: the institution's name, every ticket's action name, the text of each clause cited, no
    certificate number; the CJK font is embedded."""
    inp, out, _, pack = city
    registry = {r["fixmedins_code"]: r for r in read_jsonl(inp / "institutions.jsonl")}
    tickets = read_jsonl(out / "tickets.jsonl")
    alerts = read_jsonl(out / "alerts.jsonl")
    code = Counter(t["fixmedins_code"] for t in tickets).most_common(1)[0][0]
    pdf = tmp_path / "case.pdf"
    assert main(["inspect", code, "--store", str(out), "--registry", str(inp / "institutions.jsonl"),
                 "--as-of", "2026-02-10 00:00:00", "--pdf", str(pdf)]) == 0
    text = _pdftotext(pdf)
    flat = _squash(text)
    assert registry[code]["fixmedins_name"] in text
    mine_t = [t for t in tickets if t["fixmedins_code"] == code]
    assert len(mine_t) >= 3
    names = table()["actions"]
    for t in mine_t:
        assert _squash(names[t["action"]][0]) in flat, t["action"]
    clauses = {c for t in mine_t for c in t["basis"]} | {
        c.strip() for a in alerts if a["fixmedins_code"] == code for c in re.split(r"[;；]", a["basis"]) if c.strip()}
    for clause in clauses:
        for part in excerpt(clause):
            assert _squash(part) in flat, clause
    assert not re.search(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])", text)
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"WenQuanYi\S*\s+TrueType.*\byes\s+yes", fonts), fonts  # embedded, subset
    # the web route serves the same document
    app = InspectorApp(FileStore(out, registry=inp / "institutions.jsonl"), pack, as_of=AS_OF)
    resp = app("GET", f"/institutions/{code}.pdf", {}, {})
    assert resp.status == 200 and resp.content_type == "application/pdf" and resp.body.startswith(b"%PDF")
    web_pdf = tmp_path / "web.pdf"
    web_pdf.write_bytes(resp.body)
    assert _squash(_pdftotext(web_pdf)) == flat


def test_pdf_of_a_50_event_timeline_is_a_few_pages(city: tuple[Path, Path, ReplayResult, Pack],
                                                  tmp_path: Path) -> None:
    """50 events of the simulated city (alerts with their evidence tables and tickets) filed under one
    institution: the PDF stays a document a person prints (≤ 40 A4 pages, ≤ 2 MB) and holds all 50."""
    inp, out, _, pack = city
    alerts = [Alert.model_validate(a) for a in read_jsonl(out / "alerts.jsonl")]
    tickets = [Ticket.model_validate(t) for t in read_jsonl(out / "tickets.jsonl")]
    code = "P42070400001"
    events = sorted([(a.detected_at, "a", a) for a in alerts] + [(t.issued_at, "t", t) for t in tickets],
                    key=lambda x: (x[0], x[1]))[:50]
    assert len(events) == 50
    mine_a = [e[2].model_copy(update={"fixmedins_code": code}) for e in events if e[1] == "a"]
    mine_t = [e[2].model_copy(update={"fixmedins_code": code}) for e in events if e[1] == "t"]
    store = MemoryStore(mine_a, mine_t, read_registry(inp / "institutions.jsonl"))  # type: ignore[arg-type]
    cf = build_case_file(store, code, pack, as_of=AS_OF, page_size=PDF_EVENTS)
    assert cf is not None and len(cf.timeline) == 50
    pdf = tmp_path / "fifty.pdf"
    size = write_pdf(cf, pdf)
    info = _pdfinfo(pdf)
    assert 2 <= int(info["Pages"]) <= 40 and size <= 2_000_000, (info["Pages"], size)
    text = _pdftotext(pdf)
    assert all(e[2].alert_id in text if e[1] == "a" else e[2].ticket_id in text for e in events)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ CSV (issue 18 §5)
def test_csv_export_round_trips_with_the_list_rows(city: tuple[Path, Path, ReplayResult, Pack],
                                                   tmp_path: Path) -> None:
    inp, out, _, pack = city
    app = InspectorApp(FileStore(out, registry=inp / "institutions.jsonl"), pack, as_of=AS_OF)
    for query in ({}, {"state": ["normal"]}, {"sort": ["amount"]}, {"rule": ["tier.not_entitled"]},
                  {"severity": ["critical"], "from": ["2026-01-15"], "to": ["2026-02-09"]}):
        listed = json.loads(app("GET", "/api/institutions", {**query, "per_page": ["500"]}, {}).body)
        resp = app("GET", "/institutions.csv", query, {})
        assert resp.status == 200 and resp.content_type.startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(resp.body.decode("utf-8"), newline="")))
        assert [r["fixmedins_code"] for r in rows] == [i["code"] for i in listed["institutions"]], query
        for r, i in zip(rows, listed["institutions"], strict=True):
            assert (r["name"], r["state"], int(r["alerts"]), int(r["tickets"]), Decimal(r["amount"]),
                    r["rules"].split("|") if r["rules"] else [], r["actions"].split("|") if r["actions"] else [],
                    r["rule_names_zh"].split("|") if r["rule_names_zh"] else []) == (
                i["name"] or "", i["state"], i["alerts"], i["tickets"], Decimal(i["amount"]), i["rules"],
                i["actions"], [n["zh"] for n in i["rule_names"]])
        # the HTML list shows the same institutions in the same order
        page = app("GET", "/", {**query, "per_page": ["500"]}, {}).body.decode()
        assert re.findall(r"<tr data-code='([^']+)'>", page) == [r["fixmedins_code"] for r in rows]
    # the CLI writes the same file
    path = tmp_path / "list.csv"
    assert main(["inspect", "--list", "--store", str(out), "--registry", str(inp / "institutions.jsonl"),
                 "--as-of", "2026-02-10 00:00:00", "--csv", str(path)]) == 0
    with path.open(encoding="utf-8", newline="") as fh:
        assert list(csv.reader(fh)) == list(csv.reader(io.StringIO(
            app("GET", "/institutions.csv", {}, {}).body.decode(), newline="")))


def test_list_filters_by_severity_amount_and_date_range(city: tuple[Path, Path, ReplayResult, Pack]) -> None:
    inp, out, _, pack = city
    store = FileStore(out, registry=inp / "institutions.jsonl")
    alerts = read_jsonl(out / "alerts.jsonl")
    rank = {"info": 0, "warning": 1, "critical": 2}

    def codes(**q: Any) -> list[str]:
        return [r.code for r in list_cases(store, pack, ListQuery(**q), as_of=AS_OF)]

    worst: dict[str, int] = {}
    amount: dict[str, Decimal] = {}
    for a in alerts:
        worst[a["fixmedins_code"]] = max(worst.get(a["fixmedins_code"], -1), rank[a["severity"]])
        amount[a["fixmedins_code"]] = amount.get(a["fixmedins_code"], Decimal(0)) + Decimal(str(a["vola_amt"]))
    assert set(codes(severity="critical")) == {c for c, r in worst.items() if r == 2}
    assert set(codes(severity="warning")) == {c for c, r in worst.items() if r >= 1}
    assert set(codes(min_amount=Decimal("100"))) == {c for c, v in amount.items() if v >= 100}
    by_amount = list_cases(store, pack, ListQuery(sort="amount"), as_of=AS_OF)
    assert [r.amount for r in by_amount] == sorted((r.amount for r in by_amount), reverse=True)
    assert [r.amount for r in by_amount if r.code in amount] == sorted(
        (v for v in amount.values()), reverse=True)
    # date range: business days in Asia/Shanghai, inclusive; counts are the range's
    start, end = date(2026, 1, 20), date(2026, 1, 31)
    lo, hi = datetime(2026, 1, 20, tzinfo=CST), datetime(2026, 2, 1, tzinfo=CST)
    in_range = Counter(a["fixmedins_code"] for a in alerts
                       if lo <= datetime.fromisoformat(a["detected_at"]) < hi)
    rows = list_cases(store, pack, ListQuery(date_from=start, date_to=end), as_of=AS_OF)
    assert {r.code: r.alerts for r in rows if r.alerts} == dict(in_range)

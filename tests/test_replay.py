"""The replay shell: determinism, de-duplication, split replay, dead letters, arguments (issue 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, institution, read_jsonl, sale, settlement, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from test_upload_ladder import day_records

from monitor.clock import parse_time
from monitor.policy.pack import load_pack
from monitor.replay import replay_dir

AS_OF = "2026-03-01 00:00:00"


def city(folder: Path) -> Path:
    """Two institutions, a not-real-time day each, a clean day, inventory sales and resent duplicates."""
    write_jsonl(folder, "institutions", [institution(PHARMACY), institution("P42070200009")])
    recs = (day_records(PHARMACY, date(2026, 1, 10), 30, 6) + day_records("P42070200009", date(2026, 1, 11), 30, 2)
            + day_records(PHARMACY, date(2026, 2, 9), 30, 9))
    recs.sort(key=lambda r: r["inf_time"])
    write_jsonl(folder, "settlements", recs)
    write_jsonl(folder, "inventory", [sale(f"B{i}", f"2026-01-10 1{i}:00:00", f"2026-01-12 0{i}:00:00")
                                      for i in range(6)])
    return folder


def replay(inp: Path, out: Path, state: Path | None = None, as_of: str | None = AS_OF) -> None:
    replay_dir(inp, out, load_pack("ezhou"), as_of=parse_time(as_of) if as_of else None, state=state)


def test_same_input_twice_is_byte_identical(tmp_path: Path) -> None:
    inp = city(tmp_path / "in")
    replay(inp, tmp_path / "a")
    replay(inp, tmp_path / "b")
    for name in ("alerts.jsonl", "tickets.jsonl", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_jsonl(tmp_path / "a" / "tickets.jsonl"), "the city must produce tickets"


def test_resent_records_count_once(tmp_path: Path) -> None:
    """Five late settlements are resent (same setl_id): 5 late of 50 is 10 % → flagged only if the
    resent copies are NOT counted twice in the total (5/55 would be 9.1 %) — and they must not add late
    records either: 4 distinct late + 4 resent would wrongly reach 8."""
    recs = day_records(PHARMACY, date(2026, 1, 10), 50, 5)
    resent = [dict(r, inf_time="2026-01-13 08:00:00") for r in recs[5:10]]  # on-time ones resent late
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", [institution()])
    write_jsonl(inp, "settlements", sorted(recs, key=lambda r: r["inf_time"]) + resent)
    write_jsonl(inp, "inventory", [sale("B1", "2026-01-11 10:00:00"), sale("B1", "2026-01-11 10:00:00")])
    replay(inp, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["duplicates"] == {"inventory": 1, "settlements": 5}
    nr = [a for a in read_jsonl(tmp_path / "out" / "alerts.jsonl") if a["rule_id"] == "upload.not_realtime"]
    assert len(nr) == 1 and nr[0]["evidence"]["records"] == 50 and nr[0]["evidence"]["late"] == 5


def split_dir(src: Path, part1: Path, part2: Path, cut: str) -> None:
    """Split every file by arrival time at ``cut`` (records of a file are in arrival order)."""
    for path in src.glob("*.jsonl"):
        lines = path.read_text(encoding="utf-8").splitlines()
        first = [ln for ln in lines if (json.loads(ln).get("inf_time") or json.loads(ln).get("valid_from", "")) < cut]
        rest = lines[len(first):]
        write_jsonl(part1, path.stem, first)
        if rest:
            write_jsonl(part2, path.stem, rest)


@pytest.mark.parametrize("cut", ["2026-01-11 12:00:00", "2026-01-12 00:30:00", "2026-01-12 10:10:30",
                                 "2026-02-10 10:00:00", "2026-02-11 16:20:00"])
def test_split_replay_equals_whole(tmp_path: Path, cut: str) -> None:
    inp = city(tmp_path / "in")
    replay(inp, tmp_path / "whole")
    split_dir(inp, tmp_path / "p1", tmp_path / "p2", cut)
    state = tmp_path / "state.ckpt"
    replay(tmp_path / "p1", tmp_path / "split", state=state, as_of=None)
    replay(tmp_path / "p2", tmp_path / "split", state=state)
    for name in ("alerts.jsonl", "tickets.jsonl", "institution_daily.jsonl"):  # every version of every day too
        assert (tmp_path / "split" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert read_jsonl(tmp_path / "whole" / "institution_daily.jsonl")


def test_bad_input_is_dead_lettered_and_the_rest_processed(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", [institution()])
    good = sorted(day_records(PHARMACY, date(2026, 1, 10), 10, 5), key=lambda r: r["inf_time"])  # upload order
    bad_type = settlement("X1", "2026-01-10 10:00:00", "2026-01-10 10:01:00", hifp_pay={"yuan": 3})
    missing = {k: v for k, v in settlement("X2", "2026-01-10 10:00:00").items() if k != "setl_id"}
    write_jsonl(inp, "settlements", [
        *good[:3],
        b'{"setl_id": "X0", "mdtrt_id": ',  # truncated JSON
        bad_type, missing,
        b'{"psn_name": "\xd5\xc5\xc8\xfd"}',  # GBK, not UTF-8
        b"[" + b'"x",' * 3_000_000 + b'"x"]',  # a 12 MB line
        *good[3:],
    ])
    write_jsonl(inp, "inventory", [{**sale("B1", "2026-01-10 10:00:00"), "infno": "3599"},
                                   sale("B2", "2026-01-10 11:00:00")])
    out = tmp_path / "out"
    replay(inp, out)
    dlq = read_jsonl(out / "dlq.jsonl")
    reasons = {(d["source"], d["line"]): d["error"] for d in dlq}
    assert len(dlq) == 6
    assert "malformed JSON" in reasons[("settlements.jsonl", 4)]
    assert "hifp_pay" in reasons[("settlements.jsonl", 5)]
    assert "setl_id: Field required" in reasons[("settlements.jsonl", 6)]
    assert "not UTF-8" in reasons[("settlements.jsonl", 7)]
    assert "too large" in reasons[("settlements.jsonl", 8)]
    assert "infno" in reasons[("inventory.jsonl", 1)]
    gbk = next(d for d in dlq if d["line"] == 7 and d["source"] == "settlements.jsonl")
    assert gbk["value"] is None and gbk["value_b64"]  # original bytes kept
    assert next(d for d in dlq if d["line"] == 4)["value"] == '{"setl_id": "X0", "mdtrt_id": '
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == {"institutions": 1, "inventory": 1, "settlements": 10}
    assert summary["alerts_by_rule"]["upload.not_realtime"] == 1  # the good records were still judged


def test_outputs_carry_no_personal_data(tmp_path: Path) -> None:
    inp = city(tmp_path / "in")
    replay(inp, tmp_path / "out")
    text = "".join((tmp_path / "out" / n).read_text(encoding="utf-8") for n in ("alerts.jsonl", "tickets.jsonl"))
    assert text
    for secret in ("420702198001011234", "张三", "42000011112222"):
        assert secret not in text


def test_cli_exit_codes(tmp_path: Path) -> None:
    monitor = [sys.executable, "-m", "monitor.cli"]
    missing = subprocess.run([*monitor, "replay", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "not found" in missing.stderr
    inp = city(tmp_path / "in")
    bad_pack = subprocess.run([*monitor, "replay", str(inp), "--out", str(tmp_path / "o"), "--policy", "atlantis"],
                              capture_output=True, text=True)
    assert bad_pack.returncode == 2 and "unknown policy pack" in bad_pack.stderr
    bad_time = subprocess.run([*monitor, "replay", str(inp), "--out", str(tmp_path / "o"), "--as-of", "tomorrow"],
                              capture_output=True, text=True)
    assert bad_time.returncode == 2
    write_jsonl(inp, "settlements", [b"not json"])
    ok = subprocess.run([*monitor, "replay", str(inp), "--out", str(tmp_path / "o"), "--as-of", AS_OF],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["dead_letters"] == {"settlements.jsonl": 1}
    shutil.rmtree(tmp_path / "o")


def test_a_clock_far_ahead_is_clamped_and_counted(tmp_path: Path) -> None:
    """One settlement claims to be uploaded a week ahead (a wrong clock) in the middle of the file: it
    must not fire the judgments of every other institution's days early, nor count as on time forever."""
    recs = day_records(PHARMACY, date(2026, 1, 10), 20, 0)
    recs[3] = dict(recs[3], inf_time="2026-01-17 10:00:00")
    inp = tmp_path / "in"
    write_jsonl(inp, "institutions", [institution()])
    write_jsonl(inp, "settlements", recs)
    out = tmp_path / "out"
    replay(inp, out, as_of=None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quality"] == {"settlements.clock_skew": 1}
    assert summary["watermark"].startswith("2026-01-10T10:2")  # not 2026-01-17
    assert read_jsonl(out / "alerts.jsonl") == []


def _lookahead_reference(arrivals: list[Any], tolerance: timedelta) -> list[tuple[Any, bool]]:
    """The look-ahead clamp as ``_read_stream`` specifies it, by a scan of the next ``LOOKAHEAD`` lines
    (the replay's code before the sliding minimum): (arrival, skewed) per line."""
    from monitor.replay import _EARLIEST, LOOKAHEAD

    out: list[tuple[Any, bool]] = []
    last = _EARLIEST
    for i, arrival in enumerate(arrivals):
        skewed = False
        if arrival == _EARLIEST:
            arrival = last
        else:
            later = [a for a in arrivals[i + 1:i + 1 + LOOKAHEAD] if a != _EARLIEST]
            if later and arrival - min(later) > tolerance:
                arrival, skewed = max(min(later), last), True
        last = max(last, arrival)
        out.append((arrival, skewed))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 400)), max_size=40))
def test_the_look_ahead_clamps_a_line_ahead_of_the_next_lines_as_a_scan_of_them_does(
        minutes: list[int | None]) -> None:
    """Design §2: a line more than the tolerance ahead of the earliest of the next ``LOOKAHEAD`` lines
    with a time is clamped to it (never before the line before it); a line without time takes the
    arrival before it. The replay keeps that earliest time as a sliding minimum: the same arrivals."""
    from monitor.replay import _EARLIEST, _read_stream

    start = parse_time("2026-03-01 08:00:00")
    arrivals = [_EARLIEST if m is None else start + timedelta(minutes=m) for m in minutes]

    class Line:
        def __init__(self, arrival: Any) -> None:
            self.arrival_time = None if arrival == _EARLIEST else arrival

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "settlements.jsonl"
        path.write_text("".join(f"{i}\n" for i in range(len(arrivals))))
        got = [(it.arrival, it.skewed) for it in _read_stream(
            path, 0, timedelta(minutes=60), decode=lambda _s, raw: [Line(arrivals[int(raw)])])]
    assert got == _lookahead_reference(arrivals, timedelta(minutes=60))

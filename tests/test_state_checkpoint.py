"""Incremental checkpoints (monitor.state.checkpoint) through ``monitor replay --state PATH`` (issue #14):
two parts equal the whole, the second part writes what it changed (not the state), both backends,
and the envelope's guarantees (seal before unpickling, key, kind, 0600)."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, institution, write_jsonl

from monitor.clock import CST, parse_time
from monitor.policy.pack import load_pack
from monitor.privacy import KeyMismatch, Pseudonymizer
from monitor.replay import ReplayResult, replay_dir
from monitor.state.checkpoint import CheckpointDir
from monitor.state.safepickle import CheckpointError

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=CST)
OTHER = "P42070200009"
FMT = "%Y-%m-%d %H:%M:%S"


def _scans(first: int, n: int, start: datetime, resell_from: int | None = None) -> list[dict[str, Any]]:
    """``n`` whole-pack sale scans of distinct codes, one every 5 seconds from ``start``; codes from
    ``resell_from`` on are codes of part 1 sold again at another institution (trace.duplicate)."""
    out = []
    for i in range(n):
        when = start + timedelta(seconds=5 * i)
        number = (resell_from + i) if resell_from is not None else first + i
        out.append({"drug_trac_codg": f"8{number:019d}", "fixmedins_code": OTHER if resell_from is not None
                    else PHARMACY, "med_list_codg": "XA01AAA001", "scan_kind": "sale", "trdn_flag": "0",
                    "scan_time": when.strftime(FMT), "inf_time": (when + timedelta(minutes=1)).strftime(FMT),
                    "rtal_docno": f"R{first + i}"})
    return out


def _parts(tmp: Path, big: int, small: int) -> tuple[Path, Path, Path]:
    """Part 1: ``big`` (≤ 20 000: 28 hours) codes sold; part 2 two days later: ``small`` new codes and 3
    codes of part 1 resold."""
    p1, p2, whole = tmp / "p1", tmp / "p2", tmp / "whole-in"
    regs = [institution(PHARMACY), institution(OTHER)]
    first = _scans(0, big, T0)
    second = _scans(big, small, T0 + timedelta(days=2)) + _scans(10**9, 3, T0 + timedelta(days=2, hours=12),
                                                               resell_from=7)
    write_jsonl(p1, "institutions", regs)
    write_jsonl(p1, "tracecodes", first)
    write_jsonl(p2, "tracecodes", second)
    write_jsonl(whole, "institutions", regs)
    write_jsonl(whole, "tracecodes", first + second)
    return p1, p2, whole


def _replay(inp: Path, out: Path, state: Path | None, backend: str | None = None,
            as_of: str | None = "2026-01-20 00:00:00", key: str = "k" * 32) -> ReplayResult:
    return replay_dir(inp, out, load_pack("ezhou"), as_of=parse_time(as_of) if as_of else None, state=state,
                      pseudo=Pseudonymizer(key), state_backend=backend)


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_two_parts_equal_the_whole_and_part_two_writes_its_change(tmp_path: Path, backend: str) -> None:
    p1, p2, whole_in = _parts(tmp_path, big=6_000, small=50)
    _replay(whole_in, tmp_path / "whole", None)
    state = tmp_path / "state"
    first = _replay(p1, tmp_path / "split", state, backend, as_of=None)
    second = _replay(p2, tmp_path / "split", state)
    for name in ("alerts.jsonl", "tickets.jsonl"):
        assert (tmp_path / "split" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    dups = [json.loads(x) for x in (tmp_path / "whole" / "alerts.jsonl").read_text().splitlines()]
    assert sum(a["rule_id"] == "trace.duplicate" for a in dups) == 3  # part 2 judged on part 1's codes
    assert first.checkpoint is not None and second.checkpoint is not None
    # part 1 wrote its 20 000 codes; part 2 wrote its 53 scans' codes and its few other changes
    assert first.checkpoint.entries >= 6_000
    assert second.checkpoint.entries < 200
    assert second.checkpoint.bytes * 3 < first.checkpoint.bytes, (first.checkpoint, second.checkpoint)
    if backend == "memory":
        assert sorted(p.suffix for p in state.iterdir()) == [".base", ".delta"]
        delta = next(state.glob("*.delta"))
        assert delta.stat().st_size == second.checkpoint.bytes
        assert stat.S_IMODE(delta.stat().st_mode) == 0o600
    else:
        assert (state / "db").is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700


def test_part_two_bytes_grow_with_its_change_not_with_the_state(tmp_path: Path) -> None:
    """Same part 2 after a part 1 of 2 000 and of 20 000 codes: about the same bytes (change-bound);
    a part 2 of 10× the change writes more."""
    written = {}
    for big, small in ((600, 100), (6_000, 100), (6_000, 1_000)):
        base = tmp_path / f"{big}-{small}"
        p1, p2, _ = _parts(base, big, small)
        _replay(p1, base / "out", base / "state", as_of=None)
        result = _replay(p2, base / "out", base / "state")
        assert result.checkpoint is not None and not result.checkpoint.base
        written[(big, small)] = result.checkpoint.bytes
    assert written[(6_000, 100)] < 1.3 * written[(600, 100)], written  # 10× the state: ~same bytes
    assert written[(6_000, 1_000)] > written[(6_000, 100)] + 900 * 8, written  # 10× the change: more


def test_a_folder_is_refused_under_another_key_for_another_shell_or_backend(tmp_path: Path) -> None:
    p1, _, _ = _parts(tmp_path, big=50, small=5)
    state = tmp_path / "state"
    _replay(p1, tmp_path / "out", state, as_of=None)
    with pytest.raises(KeyMismatch):
        _replay(p1, tmp_path / "out2", state, key="another key, rotated" * 2)
    with pytest.raises(CheckpointError, match="replay checkpoint, not a worker"):
        CheckpointDir(state, Pseudonymizer("k" * 32), "worker").load()
    with pytest.raises(CheckpointError, match="holds a memory state"):
        _replay(p1, tmp_path / "out3", state, backend="rocksdb")
    old = tmp_path / "old.ckpt"
    old.write_bytes(b"MEDINS-CKPT-3\n...")
    with pytest.raises(CheckpointError, match="single-file state of an older version"):
        _replay(p1, tmp_path / "out4", old)


def test_a_changed_delta_is_refused_before_it_is_read(tmp_path: Path) -> None:
    p1, p2, _ = _parts(tmp_path, big=50, small=5)
    state = tmp_path / "state"
    _replay(p1, tmp_path / "out", state, as_of=None)
    _replay(p2, tmp_path / "out", state, as_of=None)
    delta = next(state.glob("*.delta"))
    blob = bytearray(delta.read_bytes())
    blob[-3] ^= 1
    delta.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="signature does not match"):
        _replay(p2, tmp_path / "out", state)


def test_expired_entries_stay_expired_after_a_restore(tmp_path: Path) -> None:
    """A record dated beyond the dedup horizon is not remembered (it would be expired already), so the
    same old record resent twice counts twice — after a restore too: the store's expiry time travels in
    the checkpoint (without it, part 2 would remember the first resend and drop the second)."""
    p1, p2, whole_in = tmp_path / "p1", tmp_path / "p2", tmp_path / "w"
    regs = [institution(PHARMACY)]
    early = _scans(0, 1, T0)
    late = _scans(5, 1, T0 + timedelta(days=40))  # moves event time past the 35-day dedup horizon
    again = [dict(early[0], inf_time=(T0 + timedelta(days=40, hours=h)).strftime(FMT)) for h in (1, 2)]
    for folder, rows in ((p1, early + late), (p2, again), (whole_in, early + late + again)):
        if folder is not p2:
            write_jsonl(folder, "institutions", regs)
        write_jsonl(folder, "tracecodes", rows)
    whole = _replay(whole_in, tmp_path / "whole", None)
    _replay(p1, tmp_path / "split", tmp_path / "state", as_of=None)
    split = _replay(p2, tmp_path / "split", tmp_path / "state")
    assert whole.summary()["duplicates"] == {} and whole.summary()["records"]["tracecodes"] == 4
    assert split.summary()["duplicates"] == {} and split.summary()["records"]["tracecodes"] == 4


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_worker_crash_after_a_checkpoint_resumes_exactly(tmp_path: Path, backend: str) -> None:
    """The worker's path without Kafka: records through the engine, a checkpoint every 500, a crash 300
    records after the last one (its changes never written), restore, the rest again from the checkpoint's
    position: the outputs after the restore are those of an uninterrupted run."""
    from monitor.engine import Engine
    from monitor.records import parse_value

    rows = [("institutions", r) for r in (institution(PHARMACY), institution(OTHER))]
    rows += [("tracecodes", r) for r in _scans(0, 2000, T0) + _scans(10**9, 40, T0 + timedelta(days=2),
                                                                     resell_from=3)]
    recs = [rec for stream, raw in rows for rec in parse_value(stream, json.dumps(raw).encode())]
    pseudo = Pseudonymizer("k" * 32)
    pack = load_pack("ezhou")
    end = parse_time("2026-01-20 00:00:00")

    whole = Engine(pack, pseudo)
    expected = [o for rec in recs for o in whole.process(rec)] + whole.advance(end)  # type: ignore[arg-type]

    ckpt = CheckpointDir(tmp_path / "w", pseudo, "worker", backend)
    engine = Engine(pack, pseudo, store=ckpt.store())
    got = []
    position = 0
    for i, rec in enumerate(recs[:1800], start=1):
        got.extend(engine.process(rec))  # type: ignore[arg-type]
        if i % 500 == 0:
            ckpt.save(engine, {"position": i})
            position, kept = i, len(got)
    ckpt.close()  # the crash: 300 records' changes were never written
    again = CheckpointDir(tmp_path / "w", pseudo, "worker")
    loaded = again.load(pack)
    assert loaded is not None and loaded[1] == {"position": position} and again.backend == backend
    engine = loaded[0]
    got = got[:kept] + [o for rec in recs[position:] for o in engine.process(rec)]  # type: ignore[arg-type]
    got += engine.advance(end)
    again.close()
    assert [o.model_dump_json() for o in got] == [o.model_dump_json() for o in expected]
    assert sum(getattr(o, "rule_id", "") == "trace.duplicate" for o in expected) == 40

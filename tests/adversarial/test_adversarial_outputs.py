"""Issue #17 "Unbounded or leaking outputs" and "Replay resume": dead letters bounded, shared and masked;
no silent public PII key; checkpoints without secrets, private, signed, never executed; JSON logs; tests
that keep out of the repository's var/; kill -9 during ``monitor replay --state`` then resume."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from adversarial_helpers import read, replay_outputs

from monitor.policy.pack import load_pack
from monitor.privacy import DEV_KEY, Pseudonymizer
from monitor.replay import replay_dir
from monitor.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CERTNO = "420702198001011234"


def _settlement_line(city_dir: Path) -> dict[str, Any]:
    for line in (city_dir / "settlements.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("setl_status") == "settled":
            return dict(rec)
    raise AssertionError("no settlement")


def test_a_60kb_line_of_empty_objects_gives_dead_letters_sharing_one_bounded_copy(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    line = b"[" + b",".join([b"{}"] * 20_000) + b"]"  # 60 KB → 20 000 invalid elements
    (inp / "settlements.jsonl").write_bytes(line + b"\n")
    _, _, dlq = replay_outputs(inp, tmp_path / "out", None)
    assert len(dlq) == 20_000
    digest = hashlib.sha256(line).hexdigest()
    assert {d["value_sha256"] for d in dlq} == {digest}
    assert sum(1 for d in dlq if d["value"] is not None) == 1  # one copy for the whole line
    assert len(dlq[0]["value"].encode()) <= 1024 and dlq[0]["value_truncated"] and dlq[0]["value_bytes"] == len(line)
    assert (tmp_path / "out" / "dlq.jsonl").stat().st_size < 20_000 * 1024  # was 20 000 × 60 KB = 1.2 GB


def test_dead_letters_mask_personal_fields(city_dir: Path, tmp_path: Path) -> None:
    rec = _settlement_line(city_dir)
    rec.update(certno=CERTNO, psn_name="张三丰", psn_no="42000011112222", hifp_pay="not money")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "settlements.jsonl").write_bytes(json.dumps(rec, ensure_ascii=False).encode() + b"\n"
                                            + b'{"certno": "' + CERTNO.encode() + b'", "x": [' + b"\n")
    _, _, dlq = replay_outputs(inp, tmp_path / "out", None)
    text = (tmp_path / "out" / "dlq.jsonl").read_text(encoding="utf-8")
    assert len(dlq) == 2
    for secret in (CERTNO, "张三丰", "42000011112222"):
        assert secret not in text
    assert "4207" in dlq[0]["value"] and "张**" in dlq[0]["value"]  # masked, still recognisable


def test_raw_bytes_only_in_the_operators_quarantine(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    raw = b'{"certno": "' + CERTNO.encode() + b'", "bad": true}'
    (inp / "settlements.jsonl").write_bytes(raw + b"\n")
    quarantine = tmp_path / "quarantine"
    _, _, dlq = replay_outputs(inp, tmp_path / "out", None, quarantine=quarantine)
    kept = quarantine / f"{hashlib.sha256(raw).hexdigest()}.bin"
    assert dlq[0]["quarantined"] is True and kept.read_bytes() == raw
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(quarantine.stat().st_mode) == 0o700
    assert CERTNO not in (tmp_path / "out" / "dlq.jsonl").read_text(encoding="utf-8")


def test_no_silent_public_pii_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.delenv("MONITOR_PII_KEY", raising=False)
    data = tmp_path / "data"
    with caplog.at_level("WARNING"):
        pseudo = Settings(data_dir=data).pseudonymizer()
    dev = Pseudonymizer(DEV_KEY)
    assert pseudo.token("psn", "42000011112222") != dev.token("psn", "42000011112222")
    key_file = data / "pii.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "MONITOR_PII_KEY is not set" in caplog.text
    again = Settings(data_dir=data).pseudonymizer()  # stored: the same key next time
    assert again.token("psn", "x") == pseudo.token("psn", "x")


def _replay_with_state(city_dir: Path, tmp_path: Path, pseudo: Pseudonymizer) -> Path:
    state = tmp_path / "state.ckpt"
    replay_dir(city_dir, tmp_path / "out", load_pack("ezhou"), state=state, pseudo=pseudo)
    return state


def test_checkpoint_is_private_holds_no_key_and_refuses_tampering(city_dir: Path, tmp_path: Path) -> None:
    key = "a-deployment-secret-0123456789abcdef"
    state = _replay_with_state(city_dir, tmp_path, Pseudonymizer(key))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    (base,) = state.iterdir()  # one checkpoint: a base (monitor.state.checkpoint)
    assert base.name.endswith(".base") and stat.S_IMODE(base.stat().st_mode) == 0o600
    blob = base.read_bytes()
    assert key.encode() not in blob
    # a tampered checkpoint that would run code when unpickled: refused before anything is unpickled
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    head = blob[: blob.index(b"\x80")]  # magic + fingerprint + mac
    base.write_bytes(head + pickle.dumps(Evil()))
    with pytest.raises(ValueError, match=r"signature|not a state type"):
        replay_dir(city_dir, tmp_path / "out", load_pack("ezhou"), state=state, pseudo=Pseudonymizer(key))
    assert not marker.exists()


def test_checkpoint_read_back_with_a_rotated_key_is_refused(city_dir: Path, tmp_path: Path) -> None:
    state = _replay_with_state(city_dir, tmp_path, Pseudonymizer("old-key-0123456789"))
    with pytest.raises(ValueError, match="another MONITOR_PII_KEY"):
        replay_dir(city_dir, tmp_path / "out", load_pack("ezhou"), state=state,
                   pseudo=Pseudonymizer("new-key-0123456789"))


def test_monitor_log_json_sets_up_json_logging(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "settlements.jsonl").write_text("{}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_PII_KEY"}
    env.update(MONITOR_LOG_JSON="true", MONITOR_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(inp), "--out", str(tmp_path / "out"),
                          "--store", "none"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    logged = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    assert any(d["level"] == "warning" and "MONITOR_PII_KEY" in d["msg"] for d in logged), run.stderr


def test_tests_keep_their_state_out_of_the_repository() -> None:
    data = Path(os.environ["MONITOR_DATA_DIR"]).resolve()
    assert not data.is_relative_to(REPO), data
    assert Settings().data_dir.resolve() == data


def test_kill_9_during_replay_state_then_resume_gives_the_uninterrupted_outputs(
        city_dir: Path, tmp_path: Path) -> None:
    """Part 1 replayed with --state; part 2 killed with SIGKILL once it has flushed outputs, then run again:
    the files equal one uninterrupted run of part 1 + part 2."""
    lines = {p.name: p.read_bytes().splitlines() for p in city_dir.glob("*.jsonl") if p.name != "labels.jsonl"}
    part1, part2 = tmp_path / "p1", tmp_path / "p2"
    for folder, half in ((part1, 0), (part2, 1)):
        folder.mkdir()
        for name, rows in lines.items():
            cut = len(rows) // 2
            (folder / name).write_bytes(b"\n".join(rows[:cut] if half == 0 else rows[cut:]) + b"\n")
    # many dead letters in part 2, so that it flushes outputs long before it ends
    bad = b"\n".join(b'{"setl_id": "BAD%d"}' % i for i in range(60_000))
    with (part2 / "settlements.jsonl").open("ab") as fh:
        fh.write(bad + b"\n")

    def cli(inp: Path, out: Path, state: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MONITOR_PII_KEY": "resume-test-key-0123456789"}
        return subprocess.Popen([sys.executable, "-m", "monitor.cli", "replay", str(inp), "--out", str(out),
                                 "--state", str(state), "--store", "none"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    whole_state, whole = tmp_path / "whole.ckpt", tmp_path / "whole"
    assert cli(part1, whole, whole_state).wait(300) == 0
    assert cli(part2, whole, whole_state).wait(300) == 0

    state, out = tmp_path / "s.ckpt", tmp_path / "out"
    assert cli(part1, out, state).wait(300) == 0
    size1 = (out / "dlq.jsonl").stat().st_size
    proc = cli(part2, out, state)
    deadline = time.monotonic() + 300
    while (out / "dlq.jsonl").stat().st_size < size1 + 200_000 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "part 2 ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert (out / "dlq.jsonl").stat().st_size > size1  # the killed run did write outputs
    assert cli(part2, out, state).wait(300) == 0
    for name in ("alerts.jsonl", "tickets.jsonl", "dlq.jsonl"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert read(out / "alerts.jsonl"), "the city must raise alerts"

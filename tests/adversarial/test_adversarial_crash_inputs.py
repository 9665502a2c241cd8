"""Issue #17 "Crashes and poison pills": inputs the models used to accept but the rules could not compute
(InvalidOperation / Overflow / OverflowError), and a JSON nesting bomb. Each goes through replay *and*
the worker core (ShellCore, real engine, no broker): it is dead-lettered, nothing crashes, and the valid
records' alerts and tickets are exactly those of the clean city."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adversarial_helpers import core_outputs, replay_outputs


def _first(city_dir: Path, stream: str, pred: Callable[[dict[str, Any]], bool] = lambda r: True) -> dict[str, Any]:
    for line in (city_dir / f"{stream}.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if pred(rec):
            return dict(rec)
    raise AssertionError(f"no {stream} record to build the attack from")


def _settlement(city_dir: Path, **over: Any) -> dict[str, Any]:
    rec = _first(city_dir, "settlements", lambda r: r.get("setl_status") == "settled")
    rec.update(setl_id="ATTACK-1", mdtrt_id="ATTACK-M1", **over)
    return rec


def _line(rec: dict[str, Any], **line_over: Any) -> dict[str, Any]:
    rec = dict(rec)
    lines = [dict(rec["drugdetail"][0])]
    lines[0].update(line_over)
    for key in [k for k, v in line_over.items() if v is None]:
        lines[0].pop(key)
    rec["drugdetail"] = lines
    return rec


def attacks(city_dir: Path) -> dict[str, tuple[str, bytes]]:
    """name → (stream, poison line), as reported in issue #17."""
    s = _settlement(city_dir)
    sale = _first(city_dir, "inventory", lambda r: r.get("infno") == "3505")
    rx = _first(city_dir, "prescriptions")
    fnd = {"finding_id": "ATTACK-F", "fixmedins_code": s["fixmedins_code"], "kind": "agreement_terminated",
           "occurred_at": "9999-12-31 00:00:00", "inf_time": "9999-12-31 00:00:00"}
    enc = lambda r: json.dumps(r, ensure_ascii=False).encode()  # noqa: E731
    return {
        "hifp_pay_1e30": ("settlements", enc({**s, "hifp_pay": "1e30"})),
        "hifp_pay_1E+999999999": ("settlements", enc({**s, "hifp_pay": "1E+999999999"})),
        "det_item_fee_sumamt_1e30_without_pric": ("settlements", enc(_line(s, det_item_fee_sumamt="1e30",
                                                                           pric=None))),
        "pric_1e30": ("settlements", enc(_line(s, pric="1e30"))),
        "finl_trns_pric_1e30": ("inventory", enc({**sale, "finl_trns_pric": "1e30", "rtal_docno": "ATTACK-R"})),
        "setl_time_9999-12-31": ("settlements", enc({**s, "setl_time": "9999-12-31 23:59:59"})),
        "setl_time_0001-01-01": ("settlements", enc({**s, "setl_time": "0001-01-01 00:00:00"})),
        "valid_end_time_9999": ("prescriptions", enc({**rx, "hi_rxno": "ATTACK-RX",
                                                      "valid_end_time": "9999-12-31 23:59:59"})),
        "finding_dated_9999": ("findings", enc(fnd)),
        "json_nesting_bomb_100000": ("settlements", b"[" * 100_000),
    }


ATTACKS = ["hifp_pay_1e30", "hifp_pay_1E+999999999", "det_item_fee_sumamt_1e30_without_pric", "pric_1e30",
           "finl_trns_pric_1e30", "setl_time_9999-12-31", "setl_time_0001-01-01", "valid_end_time_9999",
           "finding_dated_9999", "json_nesting_bomb_100000"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_replay_dead_letters_the_poison_and_keeps_every_valid_output(
        attack: str, city_dir: Path, as_of: str, clean: tuple[list[dict[str, Any]], ...],
        poisoned: Callable[..., Path], tmp_path: Path) -> None:
    stream, line = attacks(city_dir)[attack]
    inp = poisoned(stream, [line], "middle")
    alerts, tickets, dlq = replay_outputs(inp, tmp_path / "out", as_of)
    assert [d["source"] for d in dlq] == [f"{stream}.jsonl"], dlq
    assert alerts == clean[0]
    assert tickets == clean[1]
    if attack == "finding_dated_9999":
        assert not any(t["action"].startswith("CANCEL") and "ATTACK-F" in json.dumps(t) for t in tickets)


@pytest.fixture(scope="module")
def core_clean(city_dir: Path, as_of: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    return core_outputs(city_dir, as_of)


@pytest.mark.parametrize("attack", ATTACKS)
def test_worker_core_dead_letters_the_poison_and_keeps_every_valid_output(
        attack: str, city_dir: Path, as_of: str, core_clean: tuple[list[dict[str, Any]], list[dict[str, Any]], int],
        poisoned: Callable[..., Path]) -> None:
    stream, line = attacks(city_dir)[attack]
    inp = poisoned(stream, [line], "middle")
    alerts, tickets, letters = core_outputs(inp, as_of)
    assert letters == core_clean[2] + 1
    assert alerts == core_clean[0]
    assert tickets == core_clean[1]

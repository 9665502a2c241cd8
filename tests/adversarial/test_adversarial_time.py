"""Issue #17 "Time that moves when it must not": one institution's clock (or a registry's future
``valid_from``) must not move event time for the city — no premature tickets, no lost alerts. Each attack
adds a record that changes nothing by itself (a resent duplicate, an identical registry entry), so the
outputs must be exactly those of the clean city."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from adversarial_helpers import replay_outputs

from monitor.clock import format_time, parse_time


def _lines(city_dir: Path, stream: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (city_dir / f"{stream}.jsonl").read_text(encoding="utf-8").splitlines()]


def _future(as_of: str, days: int) -> str:
    return format_time(parse_time(as_of) + timedelta(days=days))


def _resent(city_dir: Path, as_of: str, days: int, n: int = 1) -> list[bytes]:
    """Settlements already uploaded, resent with an upload clock ``days`` after the end of the input."""
    recs = [r for r in _lines(city_dir, "settlements") if r.get("setl_status") == "settled"][:n]
    return [json.dumps({**r, "inf_time": _future(as_of, days)}, ensure_ascii=False).encode() for r in recs]


def test_future_inf_time_on_the_last_line_of_a_file_moves_no_time(
        city_dir: Path, as_of: str, clean: tuple[list[dict[str, Any]], ...],
        poisoned: Callable[..., Path], tmp_path: Path) -> None:
    inp = poisoned("settlements", _resent(city_dir, as_of, 60), "end")
    alerts, tickets, _ = replay_outputs(inp, tmp_path / "out", as_of)
    assert tickets == clean[1]
    assert alerts == clean[0]


def test_future_inf_time_on_the_last_line_without_as_of_moves_no_time(
        city_dir: Path, poisoned: Callable[..., Path], tmp_path: Path, as_of: str) -> None:
    base = replay_outputs(city_dir, tmp_path / "base", None)
    inp = poisoned("settlements", _resent(city_dir, as_of, 60), "end")
    alerts, tickets, _ = replay_outputs(inp, tmp_path / "out", None)
    assert (alerts, tickets) == (base[0], base[1])


def test_two_consecutive_future_lines_mid_file_move_no_time(
        city_dir: Path, as_of: str, clean: tuple[list[dict[str, Any]], ...],
        poisoned: Callable[..., Path], tmp_path: Path) -> None:
    inp = poisoned("settlements", _resent(city_dir, as_of, 45, n=2), "middle")
    alerts, tickets, _ = replay_outputs(inp, tmp_path / "out", as_of)
    assert tickets == clean[1]
    assert alerts == clean[0]


def test_future_registry_valid_from_moves_no_time(
        city_dir: Path, as_of: str, clean: tuple[list[dict[str, Any]], ...],
        poisoned: Callable[..., Path], tmp_path: Path) -> None:
    inst = _lines(city_dir, "institutions")[0]
    inst = {k: v for k, v in inst.items() if k != "inf_time"}
    line = json.dumps({**inst, "valid_from": _future(as_of, 90)}, ensure_ascii=False).encode()
    inp = poisoned("institutions", [line], "end")
    alerts, tickets, _ = replay_outputs(inp, tmp_path / "out", as_of)
    assert tickets == clean[1]
    assert alerts == clean[0]


def test_a_clamped_future_line_raises_no_upload_late(
        city_dir: Path, as_of: str, clean: tuple[list[dict[str, Any]], ...],
        poisoned: Callable[..., Path], tmp_path: Path) -> None:
    """A new settlement whose upload clock says 3 days after it happened, at the very end of the input, where
    no other record confirms that time: clamped (counted as clock skew), so it is not 'late'."""
    recs = [r for r in _lines(city_dir, "settlements") if r.get("setl_status") == "settled"]
    last = max(recs, key=lambda r: r["inf_time"])
    new = {**last, "setl_id": "ATTACK-LATE", "mdtrt_id": "ATTACK-LATE",
           "inf_time": format_time(parse_time(last["setl_time"]) + timedelta(days=3))}
    inp = poisoned("settlements", [json.dumps(new, ensure_ascii=False).encode()], "end")
    alerts, _, _ = replay_outputs(inp, tmp_path / "out", None)
    late = [a for a in alerts if a["rule_id"] == "upload.late" and "ATTACK-LATE" in json.dumps(a)]
    assert late == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["quality"].get("settlements.clock_skew", 0) >= 1

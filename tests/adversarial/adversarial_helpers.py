"""Shared helpers of the adversarial suite: replay a folder and read its outputs; feed the worker core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor.clock import parse_time
from monitor.engine import Engine
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.replay import input_files, replay_dir
from monitor.streams.core import Inbound, ShellCore
from monitor.streams.topics import INPUTS


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def replay_outputs(inp: Path, out: Path, as_of: str | None, **kw: Any) -> tuple[list[dict[str, Any]], ...]:
    """(alerts, tickets, dead letters) of a replay."""
    replay_dir(inp, out, load_pack("ezhou"), as_of=parse_time(as_of) if as_of else None, **kw)
    return read(out / "alerts.jsonl"), read(out / "tickets.jsonl"), read(out / "dlq.jsonl")



def core_outputs(inp: Path, as_of: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(alerts, tickets, dead letters) of the worker core (``ShellCore``, real engine, no broker): each file
    one topic-partition, each line one message, merged and applied as the worker does."""
    core = ShellCore(Engine(load_pack("ezhou")))
    letters = 0
    for path in input_files(inp):
        topic = INPUTS[path.stem].name
        for offset, line in enumerate(raw for raw in path.read_bytes().splitlines() if raw.strip()):
            letters += len(core.receive(Inbound(topic, 0, offset, None, line)))
    outputs = core.release([(INPUTS[p.stem].name, 0) for p in input_files(inp)], lambda tp: False)
    if as_of is not None:
        outputs += core.engine.advance(parse_time(as_of))
    alerts = [json.loads(o.model_dump_json()) for o in outputs if isinstance(o, Alert)]
    tickets = [json.loads(o.model_dump_json()) for o in outputs if isinstance(o, Ticket)]
    return alerts, tickets, letters

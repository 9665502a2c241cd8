"""Issue #17 "Time that moves when it must not", the worker's side: a producer that stamps messages with
its wall clock (kcat does) makes the Kafka timestamp useless as a check on a record's ``inf_time``. The
worker core must then apply replay's rule (``monitor.watermark.EventClock``, tolerance = the pack's
``max_clock_skew_minutes``): one institution's future claim waits for corroboration instead of moving the
city's event time."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.clock import format_time, parse_time
from monitor.engine import Engine, load_state
from monitor.outputs import Alert, Ticket
from monitor.policy.pack import load_pack
from monitor.replay import input_files
from monitor.streams.core import Inbound, ShellCore
from monitor.streams.topics import INPUTS


def _wall_clock_core(inp: Path, wall_clock: datetime, as_of: str) -> tuple[list[Any], list[Any], ShellCore]:
    """The worker core (real engine, no broker) over ``inp``: each file one topic-partition, each line one
    message stamped with ``wall_clock`` + one second per message (what kcat sends), then the idle tick
    and ``as_of``."""
    core = ShellCore(Engine(load_pack("ezhou")))
    n = 0
    for path in input_files(inp):
        topic = INPUTS[path.stem].name
        for offset, line in enumerate(raw for raw in path.read_bytes().splitlines() if raw.strip()):
            n += 1
            core.receive(Inbound(topic, 0, offset, None, line, timestamp=wall_clock + timedelta(seconds=n)))
    outputs = core.release([(INPUTS[p.stem].name, 0) for p in input_files(inp)], lambda tp: False)
    outputs += core.tick()
    outputs += core.engine.advance(parse_time(as_of))
    alerts = [json.loads(o.model_dump_json()) for o in outputs if isinstance(o, Alert)]
    tickets = [json.loads(o.model_dump_json()) for o in outputs if isinstance(o, Ticket)]
    return alerts, tickets, core


def test_one_future_inf_time_among_wall_clock_stamped_messages_moves_no_time_in_the_worker(
        city_dir: Path, as_of: str, poisoned: Callable[..., Path]) -> None:
    """One settlement resent with an upload clock 60 days after the input ends — months ahead of the data,
    still before the producer's wall clock (300 days later), so the old Kafka-timestamp clamp lets it
    through — must not move event time: no premature tickets, the same alerts as without it."""
    wall_clock = parse_time(as_of) + timedelta(days=300)
    clean_alerts, clean_tickets, clean_core = _wall_clock_core(city_dir, wall_clock, as_of)
    assert clean_alerts and clean_tickets, "the clean city must raise alerts and tickets"
    settled = next(json.loads(x) for x in (city_dir / "settlements.jsonl").read_text(encoding="utf-8").splitlines()
                   if json.loads(x).get("setl_status") == "settled")
    future = format_time(parse_time(as_of) + timedelta(days=60))
    inp = poisoned("settlements", [json.dumps({**settled, "inf_time": future}, ensure_ascii=False).encode()],
                   "end")
    alerts, tickets, core = _wall_clock_core(inp, wall_clock, as_of)
    assert core.engine.watermark.value == clean_core.engine.watermark.value
    assert core.engine.watermark.value is not None and core.engine.watermark.value < parse_time(future)
    assert tickets == clean_tickets
    assert alerts == clean_alerts
    assert core.event_clock.held == 1  # waiting for corroboration, kept in the checkpoint
    ckpt, _ = core.checkpoint()
    restored = load_state(ckpt.dumps())  # the checkpoint's allow-list unpickler
    assert restored.clock is not None and restored.clock.held == 1
    assert ShellCore.from_checkpoint(restored).event_clock.held == 1

"""``Engine.process_batch`` (issue #16): the one-by-one outputs in the one-by-one order, batches that span
streams, and a record that raises inside a batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from builders import PHARMACY, institution, sale, settlement

from monitor.clock import parse_time
from monitor.contract import BatchFindings, Delivery, Findings, Rule, RuleContext
from monitor.engine import Engine
from monitor.policy.pack import load_pack
from monitor.records import InvalidRecord, Record, parse_value
from monitor.replay import input_files
from monitor.simulate import SimConfig, simulate


def _parsed(stream: str, rec: dict[str, Any]) -> list[Record]:
    return [r for r in parse_value(stream, json.dumps(rec).encode()) if not isinstance(r, InvalidRecord)]


def _city(tmp_path: Path) -> tuple[list[Record], Any]:
    """A small simulated city in arrival order (registry records first, as the replay merges them) and
    its end (``as_of``)."""
    simulate(SimConfig(out=tmp_path / "city", days=10, seed=5, institutions=20, scale=0.1))
    meta = [json.loads(line) for line in (tmp_path / "city" / "labels.jsonl").read_text().splitlines()]
    as_of = parse_time(next(m["as_of"] for m in meta if m.get("kind") == "meta"))
    recs: list[tuple[Any, int, int, Record]] = []
    for order, path in enumerate(input_files(tmp_path / "city")):
        for line, raw in enumerate(path.read_bytes().splitlines()):
            for rec in parse_value(path.stem, raw):
                if not isinstance(rec, InvalidRecord):
                    recs.append((rec.arrival_time or parse_time("1990-01-01 00:00:00"), order, line, rec))
    recs.sort(key=lambda r: r[:3])
    return [r[3] for r in recs], as_of


def _dump(outputs: Sequence[Any]) -> list[str]:
    return [o.model_dump_json() for o in outputs]


def test_a_batch_gives_the_one_by_one_outputs_in_the_one_by_one_order(tmp_path: Path) -> None:
    """Every ezhou rule, the upload rule on its batch path over batches that span all its streams: the
    same outputs byte for byte and in the same order as one record at a time (the digest's promise)."""
    records, end = _city(tmp_path)
    one, many = Engine(load_pack("ezhou")), Engine(load_pack("ezhou"))
    assert one._batch_rules, "no ezhou rule has a batch path: this test would not test batches"
    singly = [o for rec in records for o in one.process(rec)] + one.advance(end)
    batched: list[Any] = []
    for at in range(0, len(records), 500):
        batched.extend(many.process_batch(records[at:at + 500]))
    batched.extend(many.advance(end))
    assert len(singly) > 10
    assert _dump(batched) == _dump(singly)
    assert many.stats == one.stats


class _Seen(Rule):
    """A batch rule over two streams: notes what it got."""

    name: ClassVar[str] = "seen"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements", "inventory")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batches: list[tuple[str, list[str]]] = []

    def on_batch(self, stream: str, batch: Sequence[Delivery], ctx: RuleContext) -> BatchFindings:
        self.batches.append((stream, [d.record.STREAM for d in batch]))
        return []


class _Fails(Rule):
    """Raises on the settlement ``BAD``."""

    name: ClassVar[str] = "fails"
    rule_ids: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ("settlements",)

    def on_record(self, rec: Record, arrival: Any, ctx: RuleContext) -> Findings:
        if getattr(rec, "setl_id", None) == "BAD":
            raise RuntimeError("boom")
        return []


def _mixed(n: int, bad: int | None = None) -> list[Record]:
    out = _parsed("institutions", institution(PHARMACY))
    for i in range(n):
        sid = "BAD" if i == bad else f"S{i}"
        out += _parsed("settlements", settlement(sid, f"2026-03-02 10:{i:02d}:00", f"2026-03-02 10:{i:02d}:30"))
        out += _parsed("inventory", sale(f"B{i}", f"2026-03-02 10:{i:02d}:10", f"2026-03-02 10:{i:02d}:40"))
    return out


def test_a_batch_spans_streams_and_each_rule_gets_the_deliveries_of_its_streams() -> None:
    engine = Engine(load_pack("ezhou"))
    seen = engine.attach(_Seen(engine.pack))
    assert isinstance(seen, _Seen)
    engine.process_batch(_mixed(3))
    # one batch (no timer due in between, no registry record after the first): both streams, arrival order
    assert seen.batches == [("*", ["settlements", "inventory"] * 3)]


def test_a_record_that_raises_leaves_its_index_and_the_records_before_it_applied() -> None:
    engine = Engine(load_pack("ezhou"))
    seen = engine.attach(_Seen(engine.pack))
    engine.attach(_Fails(engine.pack))
    assert isinstance(seen, _Seen)
    records = _mixed(4, bad=2)
    with pytest.raises(RuntimeError, match="boom") as caught:
        engine.process_batch(records)
    index = caught.value.batch_index  # type: ignore[attr-defined]
    assert getattr(records[index], "setl_id", None) == "BAD"
    assert isinstance(caught.value.batch_outputs, list)  # type: ignore[attr-defined]
    # the records before it reached the batch rule; the failing one and those after it did not
    assert seen.batches == [("*", ["settlements", "inventory"] * 2)]
    assert engine.stats.records["settlements"] == 3 and engine.stats.records["inventory"] == 2
    engine.process_batch(records[index + 1:])  # the caller goes on after it
    assert seen.batches[-1] == ("*", ["inventory", "settlements", "inventory"])

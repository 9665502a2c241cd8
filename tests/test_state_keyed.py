"""The engine's keyed state in checkpoints (``monitor.state.keyed``, issue #14 point 2): the rules' state,
the registry, the ledger and the timers are written per key, only the keys that changed; a restore gives
the uninterrupted engine back (same contents, same dict order, same outputs) on both backends."""

from __future__ import annotations

import heapq
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PHARMACY, institution

from monitor.clock import CST
from monitor.engine import Engine
from monitor.nhsa import apply as nhsa_apply
from monitor.nhsa import stream_decoder
from monitor.policy.pack import load_pack
from monitor.privacy import Pseudonymizer
from monitor.records import Record, parse_value
from monitor.replay import _MERGE_KEY, _read_stream, input_files
from monitor.simulate import SimConfig, simulate
from monitor.state.checkpoint import CheckpointDir
from monitor.state.keyed import KeyedState, slots
from monitor.state.safepickle import CheckpointError

PSEUDO = Pseudonymizer("k" * 32)
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=CST)
FMT = "%Y-%m-%d %H:%M:%S"


def _city(folder: Path) -> list[Record]:
    """A simulated city's records in replay's arrival order (every rule family has state)."""
    simulate(SimConfig(out=folder, days=14, institutions=8, scale=0.05, seed=7))
    decode = stream_decoder(Engine(load_pack("ezhou"), PSEUDO))
    streams = [_read_stream(p, i, timedelta(minutes=60), None, decode) for i, p in enumerate(input_files(folder))]
    return [item.record for item in heapq.merge(*streams, key=_MERGE_KEY) if item.record is not None]


def _same_slots(got: Engine, want: Engine) -> None:
    a, b = slots(got), slots(want)
    assert list(a) == list(b)
    for name, box in b.items():
        if name == "timers._heap":  # a heap: the same entries, any layout (TimerQueue.unordered_state)
            assert sorted(a[name]) == sorted(box)
            continue
        assert a[name] == box, name
        if not isinstance(box, set):
            assert list(a[name]) == list(box), f"{name}: order"


def _version_1(ckpt: CheckpointDir, engine: Engine, shell: Any) -> CheckpointDir:
    """Write ``engine`` into ``ckpt``'s folder as a version-1 envelope (the engine pickled whole, as
    written before the keyed entries) and close it; a new ``CheckpointDir`` of the folder."""
    import pickle

    from monitor.engine import seal
    from monitor.state import MemoryStore
    from monitor.state.checkpoint import Envelope
    from monitor.state.rocks import RocksStore

    store = ckpt.store()
    delta = store.dump() if isinstance(store, MemoryStore) else None
    old = Envelope(1, "worker", engine.pack.label, ckpt.backend, 1, True, engine.small_state(), shell,
                   store.now_s, delta, None)
    blob = seal(pickle.dumps(old, protocol=pickle.HIGHEST_PROTOCOL), PSEUDO)
    if isinstance(store, RocksStore):
        store.commit({"envelope": blob})
    else:
        (ckpt.path / "ckpt-0000000001.base").write_bytes(blob)
    ckpt.close()
    return CheckpointDir(ckpt.path, PSEUDO, "worker")


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_city_checkpointed_per_key_and_restored_twice_equals_the_uninterrupted_run(tmp_path: Path,
                                                                                    backend: str) -> None:
    recs = _city(tmp_path / "city")
    assert len(recs) > 2_000
    pack = load_pack("ezhou")
    whole = Engine(pack, PSEUDO)
    want = [o.model_dump_json() for rec in recs for o in nhsa_apply(whole, rec, None)]

    ckpt = CheckpointDir(tmp_path / "state", PSEUDO, "worker", backend)
    ckpt.keyed.strict = True  # no mutable object reachable from two entries (monitor.state.keyed)
    engine = Engine(pack, PSEUDO, store=ckpt.store())
    twin = Engine(pack, PSEUDO)  # uninterrupted, in lockstep: compared at each restore
    every = len(recs) // 9
    restores = {3 * every, 6 * every}
    got: list[str] = []
    for i, rec in enumerate(recs, start=1):
        got += [o.model_dump_json() for o in nhsa_apply(engine, rec, None)]
        nhsa_apply(twin, rec, None)
        if i % every == 0:
            ckpt.save(engine, {"position": i})
            if i in restores:
                ckpt.close()
                ckpt = CheckpointDir(tmp_path / "state", PSEUDO, "worker")
                ckpt.keyed.strict = True
                loaded = ckpt.load(pack)
                assert loaded is not None and loaded[1] == {"position": i}
                engine = loaded[0]
                _same_slots(engine, twin)
                again = ckpt.save(engine, {"position": i})  # nothing changed since: (almost) nothing written
                if not again.base:
                    assert again.entries <= len(ckpt.keyed) // 100, (again, len(ckpt.keyed))
    ckpt.close()
    assert got == want
    assert len([o for o in want if '"alert_id"' in o]) > 20 and any('"ticket_id"' in o for o in want)


def _inventory(lots: int, first_hour: int, hours: int) -> list[tuple[str, dict[str, Any]]]:
    """``lots`` purchases (one lot each) spread over ``hours`` hours from ``T0 + first_hour``."""
    out = []
    for i in range(lots):
        when = T0 + timedelta(hours=first_hour, seconds=i * hours * 3600 // max(lots, 1))
        out.append(("inventory", {
            "infno": "3503", "fixmedins_code": PHARMACY, "med_list_codg": "XA01AAA001",
            "fixmedins_hilist_id": "H001", "fixmedins_bchno": f"B{first_hour}-{i}", "finl_trns_pric": "12.50",
            "purc_retn_stoin_time": when.strftime(FMT), "purc_retn_cnt": "10",
            "inf_time": (when + timedelta(minutes=1)).strftime(FMT)}))
    return out


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_checkpoint_writes_the_rules_change_not_their_state(tmp_path: Path, backend: str) -> None:
    """Part 1 leaves 400 or 4 000 inventory lots in the rules' state (batches, per-lot movements: not a
    store table); part 2 adds the same 40 lots: its checkpoint is about the same size either way. (The
    whole engine pickled at every checkpoint wrote 10× more after the larger part 1.)"""
    written = {}
    for lots in (400, 4_000):
        ckpt = CheckpointDir(tmp_path / f"s{lots}", PSEUDO, "worker", backend)
        engine = Engine(load_pack("ezhou"), PSEUDO, store=ckpt.store())
        rows = [("institutions", institution(PHARMACY)), *_inventory(lots, 0, 20)]
        for stream, raw in rows:
            for rec in parse_value(stream, json.dumps(raw).encode()):
                engine.process(rec)  # type: ignore[arg-type]
        first = ckpt.save(engine, {})
        for stream, raw in _inventory(40, 21, 1):
            for rec in parse_value(stream, json.dumps(raw).encode()):
                engine.process(rec)  # type: ignore[arg-type]
        second = ckpt.save(engine, {})
        assert not second.base and first.entries > lots  # the lots are entries, not one blob
        written[lots] = second.bytes
        ckpt.close()
    assert written[4_000] < 1.3 * written[400], written


def test_dict_order_survives_deletes_and_re_insertions_across_checkpoints(tmp_path: Path) -> None:
    ckpt = CheckpointDir(tmp_path / "s", PSEUDO, "replay", "memory")
    engine = Engine(load_pack("ezhou"), PSEUDO, store=ckpt.store())
    rule = engine.detectors[0]
    box: dict[str, list[int]] = {f"k{i}": [i] for i in range(40)}
    rule.scratch = box  # type: ignore[union-attr]
    rule.flags = {3, 1, 2}  # type: ignore[union-attr]
    ckpt.save(engine, {})
    del box["k5"]
    box["new"] = [0]
    box["k5"] = [5]  # deleted and set again: now last
    box["k7"].append(7)  # changed in place: seen by its digest
    for i in range(10, 40):  # most keys gone: the slot is rewritten, not 30 deletes
        del box[f"k{i}"]
    box["k39"] = [39]
    written = ckpt.save(engine, {})
    assert written.entries < 20
    ckpt.close()
    loaded = CheckpointDir(tmp_path / "s", PSEUDO, "replay").load()
    assert loaded is not None
    again = loaded[0].detectors[0]
    assert list(again.scratch.items()) == list(box.items())  # type: ignore[union-attr]
    assert again.flags == {1, 2, 3}  # type: ignore[union-attr]


def test_strict_mode_refuses_a_mutable_object_reachable_from_two_keys(tmp_path: Path) -> None:
    engine = Engine(load_pack("ezhou"), PSEUDO)
    shared: list[int] = []
    engine.detectors[0].twice = {"a": shared, "b": shared}  # type: ignore[union-attr]
    KeyedState().checkpoint(engine)  # not checked by default (the checkpoint's cost)
    with pytest.raises(CheckpointError, match="reachable from"):
        KeyedState(strict=True).checkpoint(engine)
    engine.detectors[0].twice = {"a": (1, 2), "b": (1, 2)}  # type: ignore[union-attr]
    KeyedState(strict=True).checkpoint(engine)  # immutable values may be shared


def test_a_checkpoint_that_failed_to_write_is_written_again_by_the_next(tmp_path: Path) -> None:
    """The digests move on only once a checkpoint is durable: after a failed write the next checkpoint
    carries that change too (else the change would never reach the disk)."""
    keyed = KeyedState()
    engine = Engine(load_pack("ezhou"), PSEUDO)
    box: dict[str, int] = {"a": 1}
    engine.detectors[0].scratch = box  # type: ignore[union-attr]
    keyed.checkpoint(engine)
    keyed.committed()
    box["b"] = 2
    _, lost = keyed.checkpoint(engine)  # written nowhere: no committed()
    _, again = keyed.checkpoint(engine)
    keyed.committed()
    assert [k for k, _, _ in lost.puts] == [k for k, _, _ in again.puts] and len(again.puts) == 1
    _, nothing = keyed.checkpoint(engine)
    assert nothing.puts == [] and nothing.deletes == []


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_folder_of_the_version_before_keyed_entries_is_restored_and_continued(tmp_path: Path,
                                                                               backend: str) -> None:
    """An envelope of version 1 (the engine pickled whole, as written before this version) restores; the
    next checkpoint writes every keyed entry, and the one after only what changed."""
    ckpt = CheckpointDir(tmp_path / "s", PSEUDO, "worker", backend)
    engine = Engine(load_pack("ezhou"), PSEUDO, store=ckpt.store())
    for stream, raw in [("institutions", institution(PHARMACY)), *_inventory(50, 0, 5)]:
        for rec in parse_value(stream, json.dumps(raw).encode()):
            engine.process(rec)  # type: ignore[arg-type]
    again = _version_1(ckpt, engine, {"at": 1})
    loaded = again.load()
    assert loaded is not None and loaded[1] == {"at": 1}
    restored = loaded[0]
    _same_slots(restored, engine)
    first = again.save(restored, {"at": 2})
    second = again.save(restored, {"at": 3})
    assert first.entries >= 50 and second.entries == 0 and (backend == "rocksdb" or first.base)
    again.close()


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_trace_code_timers_written_as_tuples_before_typed_keys_fire_as_the_typed_keys(tmp_path: Path,
                                                                                        backend: str) -> None:
    """A folder written before the trace-code rule's typed timers (574ae32: version-1 envelope) holds its
    timers as tuples — ``("suspect", key)``, ``("forget_links", day)``, ``("judge"|"forget", code, day)``
    — and its institution-day tallies as ``days``. Restored, they are converted (``TraceCodes.legacy_timer``,
    ``TimerQueue.rekey``): the judgments fire and give the uninterrupted engine's alerts (trace.duplicate,
    LN-TIER 三(一)3; trace.missing, EZ-DM 二(一))."""
    import dataclasses

    from test_detectors_tracecodes import OTHER, codes_for, h, insured_sale, scan

    from monitor.contract import ForgetDay, JudgeDay
    from monitor.detectors.tracecodes import ForgetLinks, Recount, SettleSuspect
    from monitor.outputs import Alert

    ckpt = CheckpointDir(tmp_path / "s", PSEUDO, "worker", backend)
    engine = Engine(load_pack("ezhou"), PSEUDO, store=ckpt.store())
    items = [insured_sale(i) for i in range(10)] + [c for i in range(5) for c in codes_for(i)]
    items += [scan(h(0.5), code="81234567890123456789"), scan(h(3), code="81234567890123456789", inst=OTHER)]
    regs = [("institutions", institution(c)) for c in (PHARMACY, OTHER)]
    for stream, raw in regs + sorted(items, key=lambda it: it[1]["inf_time"]):
        for rec in parse_value(stream, json.dumps(raw).encode()):
            engine.process(rec)  # type: ignore[arg-type]
    want = Engine.restore(engine.snapshot(), PSEUDO)  # the uninterrupted engine

    kinds = {SettleSuspect: "suspect", ForgetLinks: "forget_links", JudgeDay: "judge", ForgetDay: "forget",
             Recount: "recount"}

    def old(key: Any) -> Any:
        return (kinds[type(key)], *dataclasses.astuple(key))

    timers = engine.timers
    timers._heap = [(d, r, s, o, old(k) if o == "tracecodes" else k) for d, r, s, o, k in timers._heap]
    timers._pending = {(o, old(k) if o == "tracecodes" else k) for o, k in timers._pending}
    assert {k[0] for *_, o, k in timers._heap if o == "tracecodes"} == {"suspect", "forget_links", "judge", "forget"}
    rule = next(d for d in engine.detectors if d.name == "tracecodes")
    rule.__dict__ = {("days" if k == "windows" else k): (v.days if k == "windows" else v)
                     for k, v in vars(rule).items()}
    again = _version_1(ckpt, engine, {})
    loaded = again.load()
    assert loaded is not None
    restored = loaded[0]
    _same_slots(restored, want)
    assert restored.timers._pending == want.timers._pending
    as_of = datetime(2026, 1, 20, tzinfo=CST)
    got, expected = restored.advance(as_of), want.advance(as_of)
    assert got == expected
    assert {o.rule_id for o in got if isinstance(o, Alert)} >= {"trace.duplicate", "trace.missing"}
    again.close()

"""monitor.state: the keyed-state contract, the same tests on the memory and the RocksDB backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from monitor.clock import CST
from monitor.state import DATE, PICKLE, STR, U64, MemoryStore, StateStore, TupleKey
from monitor.state.packed import PackedTable
from monitor.state.rocks import RocksStore
from monitor.state.safepickle import CheckpointError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=CST)
KEY = b"k" * 32


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore(track_changes=True)
    else:
        s = RocksStore(tmp_path / "db", KEY)
        yield s
        s.close()


def test_get_set_delete_and_typed_keys(store: StateStore) -> None:
    t = store.table("days", TupleKey(STR, DATE), PICKLE)
    assert store.table("days", TupleKey(STR, DATE), PICKLE) is t
    with pytest.raises(ValueError, match="days is"):
        store.table("days", STR, PICKLE)
    k1, k2 = ("P4207001", date(2026, 3, 1)), ("P4207002", date(2026, 3, 2))
    assert t.get(k1) is None and t.get(k1, "x") == "x" and k1 not in t
    t.set(k1, {"n": 1})
    t.set(k2, [1, 2])
    t.set(k1, {"n": 2})
    assert t.get(k1) == {"n": 2} and k2 in t and len(t) == 2
    assert list(t.keys()) == [k1, k2]  # encoded-key order
    t.delete(k2)
    t.delete(("absent", date(2026, 1, 1)))
    assert list(t.items()) == [(k1, {"n": 2})]


def test_entries_expire_when_event_time_passes_them(store: StateStore) -> None:
    t = store.table("seen", U64, U64)
    t.set(10, 1, expires_at=T0 + timedelta(days=1))
    t.set(11, 2, expires_at=T0 + timedelta(days=2))
    t.set(12, 3)  # never expires
    t.set(13, 4, expires_at=T0 + timedelta(days=1))
    t.set(13, 5, expires_at=T0 + timedelta(days=3))  # set again: the new expiry counts
    assert t.expires(11) == T0 + timedelta(days=2) and t.expires(12) is None
    assert store.expire(T0 + timedelta(days=1) - timedelta(seconds=1)) == 0
    assert t.get(10) == 1  # readable until expire() passes it
    assert store.expire(T0 + timedelta(days=1)) == 1
    assert t.get(10) is None and t.get(11) == 2 and t.get(13) == 5
    # an entry set with an expiry already passed is not stored
    t.set(14, 6, expires_at=T0)
    assert t.get(14) is None
    assert store.expire(T0 + timedelta(days=10)) == 2
    assert sorted(t.keys()) == [12]


def test_change_tracking_reports_puts_and_deletes_since_the_last_commit(store: StateStore) -> None:
    t = store.table("codes", U64, U64)
    other = store.table("names", STR, PICKLE)
    t.set(5, 50)
    t.set(6, 60, expires_at=T0)
    other.set("a", ("x", 1))
    if isinstance(store, RocksStore):
        store.commit({})
    else:
        store.committed()
    assert store.changes() == {}
    t.set(5, 51)
    t.delete(6)
    ch = store.changes()
    assert list(ch) == ["codes"]
    assert ch["codes"].puts == [((5).to_bytes(8, "big"), (51).to_bytes(8, "big"), 0)]
    assert ch["codes"].deletes == [(6).to_bytes(8, "big")]


def test_memory_checkpoint_base_plus_delta_restores_the_same_tables() -> None:
    a = MemoryStore(track_changes=True)
    codes, days = a.table("codes", U64, U64), a.table("days", TupleKey(STR, DATE), PICKLE)
    for i in range(2, 3000):
        codes.set(i, i * 7, expires_at=T0 + timedelta(hours=i))
    days.set(("P1", date(2026, 3, 1)), {"late": 3}, expires_at=T0 + timedelta(days=5))
    base = a.dump()
    a.committed()
    codes.set(2, 99)
    codes.delete(3)
    days.delete(("P1", date(2026, 3, 1)))
    delta = a.changes()
    assert sum(len(d) for d in delta.values()) == 3  # the change, not the state
    b = MemoryStore(track_changes=True)
    b.apply(base)
    b.apply(delta)
    bc = b.table("codes", U64, U64)
    assert isinstance(bc, PackedTable)
    assert list(bc.items()) == list(codes.items()) and len(b.table("days", TupleKey(STR, DATE), PICKLE)) == 0
    assert bc.expires(4) == T0 + timedelta(hours=4) and b.changes() == {}


def test_rocks_commit_survives_reopening_and_pending_changes_do_not(tmp_path: Path) -> None:
    s = RocksStore(tmp_path / "db", KEY)
    t = s.table("codes", U64, PICKLE)
    t.set(7, {"a": 1}, expires_at=T0)
    s.commit({"envelope": b"E1"})
    t.set(8, {"b": 2})  # not committed: lost on a crash
    s.close()
    s = RocksStore(tmp_path / "db", KEY)
    t = s.table("codes", U64, PICKLE)
    assert t.get(7) == {"a": 1} and t.get(8) is None and s.meta("envelope") == b"E1"
    assert s.expire(T0) == 1 and t.get(7) is None
    s.commit({})
    s.close()
    s = RocksStore(tmp_path / "db", KEY)
    assert s.table("codes", U64, PICKLE).get(7) is None
    s.close()


def test_rocks_entries_are_verified_before_they_are_decoded(tmp_path: Path) -> None:
    s = RocksStore(tmp_path / "db", KEY)
    s.table("codes", U64, PICKLE).set(7, {"a": 1})
    s.commit({})
    raw = s.db.get(b"Tcodes\0" + (7).to_bytes(8, "big"))
    s.db.put(b"Tcodes\0" + (7).to_bytes(8, "big"), raw[:-9] + b"X" + raw[-8:])  # one byte changed
    s.close()
    s = RocksStore(tmp_path / "db", KEY)
    with pytest.raises(CheckpointError, match="does not match its tag"):
        s.table("codes", U64, PICKLE).get(7)
    s.close()
    s = RocksStore(tmp_path / "db", b"another key" * 3)  # another MONITOR_PII_KEY: nothing verifies
    with pytest.raises(CheckpointError):
        s.table("codes", U64, PICKLE).get(7)
    s.close()


def test_an_institutions_ticket_list_in_the_ledger_is_bounded() -> None:
    """The ledger's per-institution ticket list (inspection only) keeps the newest RECENT_TICKETS ids:
    a ledger that runs for years no longer grows with every ticket (issue #14)."""
    from monitor.policy.ledger import RECENT_TICKETS, InstitutionLedger

    book = InstitutionLedger()
    for i in range(RECENT_TICKETS + 36):
        book.tickets.append(f"TK{i}")
    assert len(book.tickets) == RECENT_TICKETS and book.tickets[-1] == f"TK{RECENT_TICKETS + 35}"
    assert book.tickets[0] == "TK36"


"""The engine's in-memory state, checkpointed per key: a checkpoint writes the keys that changed.

Issue #14 point 2 for everything that is not a store table: the rules' state (``Rule.state`` and every
other container a rule or detector keeps), the registry and its ``valid_from`` history, the ledger's
books (ladders, sanctions, deadlines) and the timer heap. Rules keep plain dicts, sets and lists and
change them in place as they like: nothing on the per-record path knows about checkpoints (no
wrapper, no dirty flag, no per-rule code). The cost moves to the checkpoint, which **diffs by digest**.

Contract
--------
* **Slots.** The roots are every detector/rule (``rule:NAME``), ``engine.registry``, ``engine.ledger``
  and ``engine.timers``. Every attribute of a root that is a ``dict`` (``defaultdict``, ``Counter``,
  ``OrderedDict`` included), a ``set`` or a ``list`` is a *slot* (``rule:inventory.moves``,
  ``timers._heap``); so is such an attribute of a plain helper object one level down
  (``rule:pricing.windows.days``: a ``DayWindows``). Objects that pickle themselves (a custom
  ``__getstate__``/``__reduce__``, e.g. the institution-day collector) and store tables are not opened.
  Which attributes are slots follows from the objects, never from a list kept here. A class may name
  containers it can rebuild from its slots (``derived_state``, e.g. the timers' pending set, which is
  the heap's entries): they are not written, restored empty, and its ``derive_state()`` fills them.
* **Entries.** A slot is written per key: dict → one entry per key (its value pickled), set → one per
  element, list → one per index (the timer heap's sift moves only O(log n) positions). Dict and set
  entries carry their **insertion sequence**, so a restored dict iterates in the order the running one
  did (rules' outputs depend on it); a key deleted and set again is a new insertion.
* **Diff.** At each checkpoint every dict/list value is digested (the 64-bit ``hash`` of its MessagePack
  encoding; a scalar the same object as last time is unchanged without one) and compared with the
  digest written last: only entries whose digest changed are pickled and *put*, keys gone are
  *deleted*. Set and heap elements are immutable: they are compared by identity (an element is new
  when it is another object). Bytes written ∝ the change; CPU = one encoding pass over the state plus
  pickling the change, zero per record.
* **Pickles.** Values go through one reused pickler whose ``dispatch_table`` rebuilds a slots dataclass
  of ``monitor.*`` by calling it with its fields (pickle's own path runs dataclasses' Python
  ``__getstate__``/``__setstate__``); everything else is pickled as ``pickle.dumps`` would.
* **Residue.** The rest of the engine is pickled whole, each slot container replaced by a persistent
  id ``(slot, container type, default factory)``: references to one container from two places stay one
  container. It is small (settings, counters, scalars) and does not grow with history.
* **Keys** are pickled canonically (no memo: equal keys give equal bytes) when an entry is new; the
  bytes are kept (or, at a restore, the ones read), so a changed entry overwrites the very store key
  it had and a delete removes it, whichever version encoded it. Entry key = ``slot | NUL | key
  pickle``; value = ``sequence (8 bytes BE) | value pickle`` (lists: the value pickle only).
* **What a rule must keep true**: a *mutable* object (list, dict, set, a tally object) is reachable from
  one key of one slot only (or from the residue only). Per-key pickling would restore two copies of a
  shared one. Immutable values (str, tuples, dates, frozen dataclasses) may be shared freely.
  ``KeyedState(strict=True)`` checks it (the tests run it on simulated cities).

``KeyedState.checkpoint(engine, full)`` → ``(residue, TableDelta)``; ``KeyedState.restore(residue,
entries, pseudo, store)`` → the engine, and the digests of what was read (the next checkpoint writes
only what changes after the restore). The store's backends keep the entries (``monitor.state.checkpoint``).
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import operator
import pickle
import sys
from array import array
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from types import BuiltinFunctionType, FunctionType
from typing import TYPE_CHECKING, Any

from monitor.state import BYTES, StateStore, Table, TableDelta
from monitor.state.safepickle import CheckpointError

if TYPE_CHECKING:
    from monitor.engine import Engine
    from monitor.privacy import Pseudonymizer

#: the store table of the entries (RocksDB backend); memory checkpoints carry them in their files
TABLE = "engine"
_PROTO = pickle.HIGHEST_PROTOCOL
_DICTS = (dict, defaultdict, Counter, OrderedDict)
_SEQ = 8
#: the value of a set's (or unordered list's) element: no value, no sequence
_NO_SEQ = bytes(_SEQ)
#: what was written of a dict or list entry: (insertion sequence, −1 for a list; digest; the value when it
#: is a scalar; its store key; its stored value when ``KeyedState.keep_bytes``)
_Entry = tuple[int, int, Any, bytes, "bytes | None"]
_SCALARS = frozenset({int, str, float, bool, bytes, type(None), date, datetime, Decimal})
_ENCODER: Any = None


def _scalar(value: Any) -> bool:
    """Immutable all the way down (a scalar, or a tuple of scalars): unchanged while it is the same object."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    return kind is tuple and all(type(x) in _SCALARS for x in value)


def _pickle_hook(obj: Any) -> Any:
    if type(obj) is array:  # a tally's compact array (upload lags): its machine bytes, not a pickle
        return (obj.typecode, obj.tobytes())
    return pickle.dumps(obj, _PROTO)


def _fast_reducer(cls: type) -> Any:
    """A reducer rebuilding ``cls`` by calling it with its fields, for a dataclass with ``__slots__``
    whose fields are all positional ``__init__`` fields (and no ``__post_init__``); else ``None``.
    Pickle's own path for such a class runs dataclasses' ``__getstate__``/``__setstate__`` in Python
    (``fields()`` per object: ≈ 3 µs each way); the rules' tallies and typed timer keys are such classes."""
    if not (dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__) or hasattr(cls, "__post_init__"):
        return None
    own_state = (cls.__getstate__ is not object.__getstate__  # frozen: dataclasses' own; else pickle's
                 and getattr(cls.__getstate__, "__qualname__", "") != "_dataclass_getstate")
    if (own_state or cls.__reduce__ is not object.__reduce__ or cls.__reduce_ex__ is not object.__reduce_ex__):
        return None
    fields = dataclasses.fields(cls)
    if not fields or any(not f.init or f.kw_only for f in fields):
        return None
    names = [f.name for f in fields]
    if len(names) == 1:
        one = names[0]
        return lambda obj: (cls, (getattr(obj, one),))
    get = operator.attrgetter(*names)
    return lambda obj: (cls, get(obj))


#: ``Pickler.dispatch_table`` of the entries' picklers: ``_fast_reducer`` of every such class of
#: ``monitor.*`` (a plain dict: a class not in it is pickled as pickle would, at C speed)
_REDUCERS: dict[type, Any] = {}
_SCANNED = [0]


def _register_reducers() -> None:
    """Fill ``_REDUCERS`` with the classes of the ``monitor`` modules imported so far (again when more
    modules were imported since)."""
    if len(sys.modules) == _SCANNED[0]:
        return
    _SCANNED[0] = len(sys.modules)
    for cls, reduce in copyreg.dispatch_table.items():  # a Pickler's own table replaces copyreg's
        _REDUCERS.setdefault(cls, reduce)
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == "monitor" or mod_name.startswith("monitor.")):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, type) and obj not in _REDUCERS and obj.__module__ == mod_name:
                found = _fast_reducer(obj)
                if found is not None:
                    _REDUCERS[obj] = found


class _Pickler(pickle.Pickler):
    """The bytes of ``pickle.dumps``, but the slots dataclasses of ``_REDUCERS`` by their fast reducer."""

    dispatch_table = _REDUCERS


def _dumps_value(value: Any) -> bytes:
    """A value's pickle. A new pickler per value: a reused one's ``clear_memo`` costs the largest memo
    it ever held (one big list of moves makes every later value cost a millisecond)."""
    buf = io.BytesIO()
    _Pickler(buf, _PROTO).dump(value)
    return buf.getvalue()


def _digest(value: Any) -> tuple[int, int]:
    """(digest, size) of a value: the 64-bit hash of its MessagePack encoding (``msgspec``, C speed;
    objects it does not know — pydantic records — by their pickle), or of its pickle when it cannot
    be encoded (e.g. a dict keyed by a class instance)."""
    global _ENCODER
    if _ENCODER is None:
        import msgspec

        _ENCODER = msgspec.msgpack.Encoder(enc_hook=_pickle_hook)
    try:
        raw = _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError):
        raw = pickle.dumps(value, _PROTO)
    return hash(raw), len(raw)


class _Canonical:
    """Keys pickled without memo (``Pickler.fast``): equal keys, equal bytes, whether or not a part of
    the key is one object twice. One pickler, reused (a checkpoint encodes every changed key)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.pickler = pickle.Pickler(self.buf, _PROTO)
        self.pickler.fast = True
        self.pickler.dispatch_table = _REDUCERS

    def __call__(self, item: Any) -> bytes:
        if type(item) is str or type(item) is int:
            return pickle.dumps(item, _PROTO)  # one object: nothing to memoize
        buf = self.buf
        buf.seek(0)
        buf.truncate()
        self.pickler.dump(item)
        return buf.getvalue()


_dumps_canonical = _Canonical()


def _opens(obj: Any) -> bool:
    """Whether ``obj`` is a plain object of ours whose attributes may hold slots (it pickles by its
    ``__dict__``: no ``__getstate__``/``__reduce__`` of its own or of a base, not a store table)."""
    cls = type(obj)
    if not cls.__module__.startswith("monitor.") or not hasattr(obj, "__dict__") or isinstance(obj, Table):
        return False
    return (cls.__getstate__ is object.__getstate__ and cls.__reduce__ is object.__reduce__
            and cls.__reduce_ex__ is object.__reduce_ex__)


_IMMUTABLE = (str, bytes, int, float, complex, tuple, frozenset, type, date, time, timedelta, tzinfo, Decimal, Enum,
              BuiltinFunctionType, FunctionType)


_PYDANTIC_INNER = ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def _mutable(obj: Any) -> bool:
    """Whether a change in place of ``obj`` could be seen through another reference (strict mode)."""
    if obj is None or isinstance(obj, _IMMUTABLE):
        return False
    cls = type(obj)
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None:
        return not params.frozen
    config = getattr(cls, "model_config", None)
    if isinstance(config, dict):
        return not config.get("frozen", False)
    return True


def slots(engine: Engine) -> dict[str, Any]:
    """``slot name → container`` of ``engine`` (module docstring). A container reached twice keeps its
    first name."""
    return _find(engine)[0]


def _find(engine: Engine) -> tuple[dict[str, Any], set[str], dict[str, tuple[Any, Any]]]:
    """The slots, which of them are unordered lists (a class's ``unordered_state``: heaps), and the
    derived containers (a class's ``derived_state``: name → (container, its object)), which are not
    checkpointed: the object's ``derive_state()`` rebuilds them after a restore."""
    roots: list[tuple[str, Any]] = [(f"rule:{d.name}", d) for d in engine.detectors]
    roots += [("registry", engine.registry), ("ledger", engine.ledger), ("timers", engine.timers)]
    found: dict[str, Any] = {}
    unordered: set[str] = set()
    derived: dict[str, tuple[Any, Any]] = {}
    seen: set[int] = set()

    def visit(path: str, obj: Any, depth: int) -> None:
        if not _opens(obj):
            return
        heaps = getattr(type(obj), "unordered_state", ())
        rebuilt = getattr(type(obj), "derived_state", ())
        for attr, value in vars(obj).items():
            if id(value) in seen:
                continue
            if attr in rebuilt and isinstance(value, (dict, set, list)):
                seen.add(id(value))
                derived[f"{path}.{attr}"] = (value, obj)
            elif isinstance(value, (dict, set, list)):
                seen.add(id(value))
                found[f"{path}.{attr}"] = value
                if attr in heaps and isinstance(value, list):
                    unordered.add(f"{path}.{attr}")
            elif depth < 1 and _opens(value):
                seen.add(id(value))
                visit(f"{path}.{attr}", value, depth + 1)

    seen.update(id(obj) for _, obj in roots)
    seen.add(id(engine))
    for path, obj in roots:
        visit(path, obj, 0)
    return found, unordered, derived


class _Residue(pickle.Pickler):
    def __init__(self, buf: io.BytesIO, ids: dict[int, tuple[Any, ...]]) -> None:
        super().__init__(buf, _PROTO)
        self._ids = ids

    def persistent_id(self, obj: Any) -> Any:
        return self._ids.get(id(obj))


class _Shared(pickle.Pickler):
    """Strict mode: records every mutable object pickled, to find one reachable from two entries."""

    def __init__(self, buf: io.BytesIO, owner: str, owners: dict[int, str], ids: dict[int, Any] | None) -> None:
        super().__init__(buf, _PROTO)
        self.dispatch_table = _REDUCERS  # the bytes of the values' pickler
        self._owner = owner
        self._owners = owners
        self._ids = ids
        self.keep: list[Any] = []  # objects must stay alive while their id() is in owners
        self._inner: set[int] = set()

    def persistent_id(self, obj: Any) -> Any:
        if self._ids is not None and id(obj) in self._ids:
            if self._owner == "residue":
                return self._ids[id(obj)]
            raise CheckpointError(f"state slot {self._ids[id(obj)][0]} is reachable from {self._owner}")
        if id(obj) in self._inner:
            return None
        if not _mutable(obj):
            if hasattr(obj, "__dict__") and not isinstance(obj, type):  # a frozen object's own state
                inner = [vars(obj)] + [getattr(obj, a, None) for a in _PYDANTIC_INNER]
                self.keep.extend(inner)
                self._inner.update(id(x) for x in inner if x is not None)
            return None
        have = self._owners.setdefault(id(obj), self._owner)
        if have != self._owner:
            raise CheckpointError(f"state object {type(obj).__name__} is reachable from {have} and from "
                                  f"{self._owner}: per-key checkpoints would restore two copies")
        self.keep.append(obj)
        return None


class KeyedState:
    """Digests of the entries last written (module docstring). One per checkpoint folder.

    ``keep_bytes``: also keep every entry's value bytes as last written, so a base (every entry) pickles
    only what changed (the memory backend's bases; memory ≈ the keyed entries' encoded size)."""

    def __init__(self, strict: bool = False, keep_bytes: bool = False) -> None:
        #: slot → what was written last. dict/list slot: key (index) → ``_Entry``; set or unordered
        #: list: ``id(element)`` → (element, entry key) — the element is kept, so its id stays its own
        self._known: dict[str, dict[Any, Any]] = {}
        #: slot → the next insertion sequence
        self._next: dict[str, int] = {}
        self.strict = strict
        self.keep_bytes = keep_bytes
        #: pickled bytes per slot and of the residue at the last checkpoint (what a base would write)
        self.slot_bytes: dict[str, int] = {}
        self.residue_bytes = 0
        #: the digests of a checkpoint not yet durable (``committed``)
        self._staged: tuple[dict[str, dict[Any, Any]], dict[str, int]] | None = None
        #: whether the digests reflect what the store holds (False: the first checkpoint writes all)
        self.synced = False

    def __len__(self) -> int:
        return sum(len(k) for k in self._known.values())

    def checkpoint(self, engine: Engine, full: bool = False) -> tuple[bytes, TableDelta]:
        """The residue and the entries to write: the changed ones, or every one (``full``: a base)."""
        delta = TableDelta(BYTES.name, BYTES.name, full=full or not self.synced)
        _register_reducers()
        containers, unordered, derived = _find(engine)
        ids: dict[int, tuple[Any, ...]] = {}
        owners: dict[int, str] = {}
        keep: list[Any] = []
        for name, box in containers.items():
            ids[id(box)] = (name, type(box), getattr(box, "default_factory", None), name in unordered)
            owners[id(box)] = name
        for name, (box, _) in derived.items():
            ids[id(box)] = ("derived", name, type(box))
            owners[id(box)] = name
        self._staged = ({}, {})
        for name, box in containers.items():
            keep += self._slot(name, box, delta, owners if self.strict else None, ids, name in unordered)
        for name in [n for n in self._known if n not in containers]:  # a slot gone: every entry deleted
            self.slot_bytes.pop(name, None)
            if not delta.full:
                delta.clears.append(name.encode() + b"\0")
        buf = io.BytesIO()
        if self.strict:
            pickler: pickle.Pickler = _Shared(buf, "residue", owners, ids)
        else:
            pickler = _Residue(buf, ids)
        pickler.dump(engine)
        self.residue_bytes = buf.tell()
        return buf.getvalue(), delta

    def committed(self) -> None:
        """The last ``checkpoint``'s entries are durable: its digests become the ones to diff against
        (until then a failed write leaves the previous digests, and the next checkpoint writes the
        change again)."""
        if self._staged is None:
            return
        known, following = self._staged
        self._next = {**{n: v for n, v in self._next.items() if n in known}, **following}
        self._known = known
        self._staged = None
        self.synced = True

    def _slot(self, name: str, box: Any, delta: TableDelta, owners: dict[int, str] | None,
              ids: dict[int, Any], unordered: bool = False, rewrite: bool = False) -> list[Any]:
        """Add the changed entries of slot ``name`` to ``delta``. A slot that lost more keys than it kept
        (a day's tallies forgotten at once) is rewritten instead: one clear of its prefix and its
        remaining entries, so its bytes are bounded by what remains, not by what went.

        An entry's store key is encoded once, when the entry is new (or read at a restore), and kept:
        its later puts and its delete use the very bytes the store holds."""
        known = self._known.get(name, {})
        now: dict[Any, Any] = {}
        prefix = name.encode() + b"\0"
        puts: list[tuple[bytes, bytes, int]] = []
        full = delta.full or rewrite
        cache = self.keep_bytes
        keep: list[Any] = []
        size = 0
        gone: list[bytes]

        def dumps(value: Any, key: Any) -> bytes:
            if owners is None:
                return _dumps_value(value)
            buf = io.BytesIO()
            p = _Shared(buf, f"{name}[{key!r}]", owners, ids)
            p.dump(value)
            keep.extend(p.keep)
            return buf.getvalue()

        def again(old: _Entry, value: Any) -> None:  # an unchanged entry into a base
            vb = old[4]
            if vb is None:
                vb = dumps(value, None) if old[0] < 0 else old[0].to_bytes(_SEQ, "big") + dumps(value, None)
            puts.append((old[3], vb, 0))

        if isinstance(box, set) or unordered:  # no order to keep (a set's is its hashes'; a heap's its own)
            # by identity: an element stays the one object while it is in (elements are immutable)
            for key in box:
                ident = id(key)
                had = known.get(ident)
                if had is None:
                    had = (key, prefix + _dumps_canonical(key))
                    puts.append((had[1], _NO_SEQ, 0))
                elif full:
                    puts.append((had[1], _NO_SEQ, 0))
                now[ident] = had
            if len(now) != len(box):
                raise CheckpointError(f"state slot {name}: an unordered list holds an element twice")
            if owners is not None:
                for key in box:
                    dumps(key, key)
            # an element gone; one equal to it set again is a new object: its delete, then its put
            gone = [had[1] for ident, had in known.items() if ident not in now] \
                if len(now) - len(puts) != len(known) or full else []
        elif isinstance(box, list):
            for i, value in enumerate(box):
                old = known.get(i)
                if owners is not None:
                    dumps(value, i)
                if old is not None and old[2] is value and _scalar(value):
                    now[i] = old
                    if full:
                        again(old, value)
                    continue
                digest, n = _digest(value)
                size += n
                if old is not None and old[1] == digest:
                    now[i] = old
                    if full:
                        again(old, value)
                    continue
                kb = old[3] if old is not None else prefix + _dumps_canonical(i)
                vb = dumps(value, i)
                now[i] = (-1, digest, value if _scalar(value) else None, kb, vb if cache else None)
                puts.append((kb, vb, 0))
            gone = [known[i][3] for i in range(len(box), len(known))]
        else:
            seq = 0 if rewrite else self._next.get(name, 0)
            last = -1
            kept = 0
            for key, value in box.items():
                old = None if rewrite else known.get(key)
                if owners is not None:
                    dumps(value, key)
                if old is not None and old[0] > last:
                    kept += 1
                    last = old[0]
                    if old[2] is value and _scalar(value):
                        now[key] = old
                        if full:
                            again(old, value)
                        continue
                    digest, n = _digest(value)
                    size += n
                    if old[1] == digest:
                        now[key] = old
                        if full:
                            again(old, value)
                        continue
                    at, kb = old[0], old[3]  # same place, new value
                    vb = at.to_bytes(_SEQ, "big") + dumps(value, key)
                else:
                    digest, n = _digest(value)
                    size += n
                    at = seq  # new, or moved to the end (deleted and set again), or a rewrite
                    seq += 1
                    last = at
                    was = known.get(key) if old is None else old
                    if was is None:
                        kb = prefix + _dumps_canonical(key)
                        vb = at.to_bytes(_SEQ, "big") + dumps(value, key)
                    else:
                        kb = was[3]
                        same = was[1] == digest and was[4] is not None
                        vb = at.to_bytes(_SEQ, "big") + (was[4][_SEQ:] if same else dumps(value, key))
                now[key] = (at, digest, value if _scalar(value) else None, kb, vb if cache else None)
                puts.append((kb, vb, 0))
            assert self._staged is not None
            self._staged[1][name] = seq
            # some known key is gone, or moved (its put has the new sequence)
            gone = [e[3] for k, e in known.items() if k not in now] if kept < len(known) and not rewrite else []
        if not delta.full and not rewrite and len(gone) > max(len(now), 8):
            return keep + self._slot(name, box, delta, owners, ids, unordered, rewrite=True)
        if rewrite:
            delta.clears.append(prefix)
        elif not delta.full:
            delta.deletes += gone
        delta.puts += puts
        assert self._staged is not None
        self._staged[0][name] = now
        if size or name in self.slot_bytes:
            self.slot_bytes[name] = size
        return keep

    def restore(self, residue: bytes, entries: Iterable[tuple[bytes, bytes]], pseudo: Pseudonymizer | None,
                store: StateStore) -> Engine:
        """The engine of ``residue`` with its slots filled from ``entries`` (``(entry key, value)``, any
        order); the digests now describe those entries."""
        from monitor.engine import Engine
        from monitor.state.safepickle import load_state

        by_slot: dict[str, list[tuple[bytes, Any, bytes]]] = {}
        for kraw, vraw in entries:
            slot, _, kpart = kraw.partition(b"\0")
            by_slot.setdefault(slot.decode(), []).append((kraw, load_state(kpart), vraw))
        self._known, self._next = {}, {}
        cache = self.keep_bytes

        def fill(pid: Any) -> Any:
            if isinstance(pid, tuple) and len(pid) == 3 and pid[0] == "derived":  # rebuilt below
                if not (isinstance(pid[2], type) and issubclass(pid[2], (dict, set, list))):
                    raise CheckpointError(f"derived state {pid[1]} is a {pid[2]!r}")
                return pid[2]()
            if not (isinstance(pid, tuple) and len(pid) == 4 and isinstance(pid[0], str)):
                raise CheckpointError(f"checkpoint refers to unknown state {pid!r}")
            name, cls, factory, unordered = pid
            if not (isinstance(cls, type) and issubclass(cls, (dict, set, list))):
                raise CheckpointError(f"state slot {name} is a {cls!r}")
            rows = by_slot.pop(name, [])
            known: dict[Any, Any] = {}
            box: Any
            if issubclass(cls, set) or unordered:
                if unordered:
                    rows.sort(key=lambda r: r[1])  # a sorted list is a heap
                box = cls(key for _, key, _ in rows)
                kraws = {id(key): kraw for kraw, key, _ in rows}
                known = {id(key): (key, kraws[id(key)]) for key in box}
            elif issubclass(cls, list):
                rows.sort(key=lambda r: r[1])
                if [r[1] for r in rows] != list(range(len(rows))):
                    raise CheckpointError(f"state slot {name}: list entries are not 0…{len(rows) - 1}")
                box = cls(load_state(raw) for _, _, raw in rows)
                for i, ((kraw, _, raw), value) in enumerate(zip(rows, box, strict=True)):
                    known[i] = (-1, _digest(value)[0], value if _scalar(value) else None, kraw,
                                raw if cache else None)
            else:
                ordered = sorted(((int.from_bytes(raw[:_SEQ], "big"), kraw, key, raw) for kraw, key, raw in rows),
                                 key=lambda r: r[0])
                box = cls(factory) if issubclass(cls, defaultdict) else cls()
                for at, kraw, key, raw in ordered:
                    value = box[key] = load_state(raw[_SEQ:])
                    known[key] = (at, _digest(value)[0], value if _scalar(value) else None, kraw,
                                  raw if cache else None)
                self._next[name] = ordered[-1][0] + 1 if ordered else 0
            self._known[name] = known
            return box

        engine = Engine.restore(residue, pseudo, store, persistent=fill)
        for owner in {id(obj): obj for _, obj in _find(engine)[2].values()}.values():
            owner.derive_state()
        if by_slot:
            # entries of a slot the engine no longer has (e.g. a rule disabled): dropped at the next checkpoint
            for gone, rows in by_slot.items():
                self._known[gone] = dict(enumerate(rows))
        self.synced = True
        return engine


__all__ = ["TABLE", "KeyedState", "slots"]

"""The allow-list unpickler of engine state (checkpoints and pickled table values).

Unpickles state types only: builtins containers and scalars, ``datetime``/``Decimal``/``ZoneInfo``,
``array``, and classes of ``monitor.*`` (a class, never a function). A detector class attached at run time
from another module is accepted too (an observer checkpointed with the engine). Anything else raises
``CheckpointError``. Callers verify a checkpoint's HMAC seal *before* handing bytes to ``load_state``.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Callable
from typing import Any

#: What a checkpoint may name when unpickled: state types only. ``monitor.*`` names must be classes.
SAFE_GLOBALS: dict[str, frozenset[str] | None] = {
    "builtins": frozenset({"list", "dict", "set", "frozenset", "tuple", "bytearray", "int", "float", "str",
                           "bytes", "bool", "complex", "slice", "range", "getattr"}),
    "collections": frozenset({"Counter", "defaultdict", "deque", "OrderedDict"}),
    "datetime": frozenset({"date", "datetime", "timedelta", "time", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "zoneinfo": frozenset({"ZoneInfo"}),
    "array": frozenset({"array", "_array_reconstructor"}),
    "copyreg": frozenset({"_reconstructor"}),
}


#: (module, name) → the class ``StateUnpickler.find_class`` allowed for it
_ALLOWED: dict[tuple[str, str], Any] = {}


class CheckpointError(ValueError):
    """A checkpoint that is not one of ours, was changed after it was written, or names a foreign type."""


class StateUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` restricted to ``SAFE_GLOBALS`` and ``monitor.*`` classes; ``persistent``
    resolves persistent ids (the store's tables, ``monitor.state``)."""

    def __init__(self, file: io.BytesIO, persistent: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file)
        self._persistent = persistent

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise CheckpointError(f"checkpoint refers to external state {pid!r} but no store was given")
        return self._persistent(pid)

    def find_class(self, module: str, name: str) -> Any:
        # a checkpoint's keyed entries are unpickled one by one (monitor.state.keyed): a name allowed once
        # is allowed again, so the answer is kept (refusals are not)
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        found = self._find_class(module, name)
        _ALLOWED[(module, name)] = found
        return found

    def _find_class(self, module: str, name: str) -> Any:
        allowed = SAFE_GLOBALS.get(module)
        if allowed is not None and name in allowed:
            return super().find_class(module, name)
        if module == "monitor" or module.startswith("monitor."):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
        loaded = sys.modules.get(module)  # a rule attached at run time: never imported from here
        obj = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(obj, type):
            from monitor.contract import Rule  # late: the contract's rules import the store

            if issubclass(obj, Rule):
                return obj
        raise CheckpointError(f"checkpoint names {module}.{name}: not a state type")


class _Entry(StateUnpickler):
    """``StateUnpickler`` without persistent ids and without a Python ``__init__``: a checkpoint's keyed
    entries are unpickled one by one (300 000 at a city-year's restore)."""

    __init__ = pickle.Unpickler.__init__
    _persistent = None


def load_state(blob: bytes, persistent: Callable[[Any], Any] | None = None) -> Any:
    """Unpickle engine state with the allow-list above (never a function, never a foreign class)."""
    if persistent is None:
        return _Entry(io.BytesIO(blob)).load()
    return StateUnpickler(io.BytesIO(blob), persistent).load()

"""Lean decode of the hot path (issue #16): typed JSON into msgspec Structs, then the pydantic record.

The pydantic models of ``monitor.records`` stay the documented contract and the only source of error
messages. This module *generates* from them, once at import, one ``msgspec.Struct`` per model (per
``infno`` for the inventory union) whose types are a **subset** of what the model accepts — plain NHSA
text as institutions upload it — and a converter that builds the very same pydantic instance
(``__dict__``, fields set, extra, private) without running pydantic's validation:

* ``Code`` → a string of 1–64 characters with nothing for pydantic's ``strip_whitespace`` to strip;
  ``TraceCodeStr`` → 1–100 ASCII letters and digits;
* ``Money`` → a decimal *string* ``-?[0-9]{1,10}(.[0-9]{1,14})?`` (|x| < 10¹⁰, ≤ 24 digits: inside the
  bounds of issue #17); ``Price``/``Quantity`` → ``[0-9]{1,8}(.[0-9]{1,16})?`` (0 ≤ x < 10⁸), and ``gt``
  checked after;
* ``CstDateTime`` → exactly ``yyyy-MM-dd HH:mm:ss`` (ASCII), read as Asia/Shanghai and held to the
  1990–2099 window as ``records._to_cst`` does; ``BizDate`` → an RFC 3339 date in the same window;
* ``Literal``, ``bool``, ``str``, ``int`` ranges, optional fields, nested lists of models: as declared;
* the models' own ``mode="after"`` validators run on the built instance.

Anything else — numbers where text is usual (``coerce_numbers_to_str``), other time forms (compact,
epoch milliseconds, date-only, with an offset), whitespace to strip, values at or past a bound, bad JSON,
nesting too deep, invalid UTF-8 — makes the fast path give up (``None``) and ``records.parse_value`` runs
pydantic as before: the same records, the same dead letters with the same reasons. The fast path can
only be narrower than the models, never wider; ``tests/test_lean_decode.py`` checks that every model
compiles, that both paths give identical instances on the simulated cities and on edge values, and
the adversarial suite runs through it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

import msgspec
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel

from monitor.clock import CST

#: What the fast path refuses: it gives the value to pydantic instead.
_FAIL = (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError, ArithmeticError)

_CODE = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_TRACE = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_MONEY = Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]{1,10}(?:\.[0-9]{1,14})?\Z")]
_UNSIGNED = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,8}(?:\.[0-9]{1,16})?\Z")]
_UNSET = msgspec.UNSET

_EARLIEST = date(1990, 1, 1)
_LATEST = date(2099, 12, 31)
_TIME_MEMO: dict[str, datetime] = {}
_TIME_MEMO_MAX = 1 << 16
_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")


class _GiveUp(ValueError):
    """Not a value the fast path reads: pydantic decides."""


def _time(text: str) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` → the aware Asia/Shanghai instant (``records.CstDateTime`` on that form)."""
    hit = _TIME_MEMO.get(text)
    if hit is None:
        if _TIME_SHAPE.match(text) is None:
            raise _GiveUp(text)
        naive = datetime.fromisoformat(text)
        if not _EARLIEST <= naive.date() <= _LATEST:
            raise _GiveUp(text)
        if len(_TIME_MEMO) >= _TIME_MEMO_MAX:
            _TIME_MEMO.clear()
        hit = _TIME_MEMO[text] = datetime(naive.year, naive.month, naive.day, naive.hour, naive.minute,
                                          naive.second, 0, CST)
    return hit


def _fail(text: str) -> Any:
    """The generated converters check codes and trace codes inline and call this to give up:

    * a code pydantic's ``strip_whitespace`` leaves as it is: ``v.strip() is v`` (``str.strip`` removes a
      superset of the White_Space characters pydantic-core trims, and returns the same object when it
      removes nothing);
    * ``records.TraceCodeStr``: 1–100 ASCII letters and digits (the length is the Struct's)."""
    raise _GiveUp(text)


def _date(value: date) -> date:
    if not _EARLIEST <= value <= _LATEST:
        raise _GiveUp(str(value))
    return value


def _positive(text: str) -> Decimal:
    value = Decimal(text)
    if not value > 0:
        raise _GiveUp(text)
    return value


# ------------------------------------------------------------------------------------------ generation
#: What a pydantic instance holds besides its class (``__dict__``, fields set, extra, private), in the
#: order the generated converters set them (``_set0`` … ``_set3``).
_INSTANCE_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def _slot_setter(model: type[BaseModel], name: str) -> Callable[[Any, Any], None]:
    """``object.__setattr__(o, name, v)`` as the bound ``__set__`` of the descriptor it resolves to on
    ``model`` (``BaseModel``'s slots and ``__dict__``): the same store, without the per-call look-up
    through the class's MRO (bench/: 4 such calls were ≈ 40 % of a trace scan's conversion)."""
    for klass in model.__mro__:
        desc = klass.__dict__.get(name)
        if desc is not None:
            setter: Callable[[Any, Any], None] = desc.__set__
            return setter
    raise NotImplementedError(f"{model.__name__}: no {name} to set")


class _Compiled:
    """One model's Struct and its converters: ``convert(struct)`` and ``from_dict(mapping)`` → the
    pydantic instance (``from_dict``: see ``DictConverter``)."""

    def __init__(self, struct: type[msgspec.Struct], convert: Callable[[Any], BaseModel],
                 from_dict: Callable[[Any], BaseModel]) -> None:
        self.struct = struct
        self.convert = convert
        self.from_dict = from_dict


def _optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return hint, False


# What a normalized mapping (``monitor.nhsa.scalars.normalize``: text, aware datetimes, lists of objects)
# may hold for each role on the dict path; anything else gives up. ``{v}`` is the value, never None.
_D_CODE = "({v} if type({v}) is str and 0 < len({v}) <= 64 and {v}.strip() is {v} else _fail({v}))"
_D_TRACE = ("({v} if type({v}) is str and 0 < len({v}) <= 100 and {v}.isascii() and {v}.isalnum() "
            "else _fail({v}))")
_D_TIME = ("({v} if type({v}) is _datetime and {v}.tzinfo is _CST and not {v}.fold and _T0 <= {v} < _T1 "
           "else _fail({v}))")
_MONEY_TEXT = re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,14})?\Z")
_UNSIGNED_TEXT = re.compile(r"[0-9]{1,8}(?:\.[0-9]{1,16})?\Z")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_WHOLE_TEXT = re.compile(r"(?:0|[1-9][0-9]{0,8})\Z")
_EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=CST)
_LATEST_TIME = datetime(2100, 1, 1, tzinfo=CST)


def _money_text(value: Any) -> Decimal:
    """``records.Money`` of a text as the Struct path reads it (``_MONEY``)."""
    if type(value) is not str or _MONEY_TEXT.match(value) is None:
        raise _GiveUp(repr(value))
    return Decimal(value)


def _unsigned_text(value: Any) -> Decimal:
    """``records.Price``/``Quantity`` of a text as the Struct path reads it (``_UNSIGNED``)."""
    if type(value) is not str or _UNSIGNED_TEXT.match(value) is None:
        raise _GiveUp(repr(value))
    return Decimal(value)


def _positive_text(value: Any) -> Decimal:
    """``_unsigned_text`` and ``gt=0``."""
    number = _unsigned_text(value)
    if not number > 0:
        raise _GiveUp(repr(value))
    return number


def _date_text(value: Any) -> date:
    """``records.BizDate`` of an RFC 3339 date text (the Struct path's ``date``)."""
    if type(value) is not str or _DATE_TEXT.match(value) is None:
        raise _GiveUp(repr(value))
    return _date(date.fromisoformat(value))


def _whole(value: Any, ge: Any, le: Any) -> int:
    """``int | Decimal`` for a whole number (an ``int``, or its plain decimal text) inside the bounds."""
    if type(value) is str and _WHOLE_TEXT.match(value) is not None:
        value = int(value)
    elif type(value) is not int:
        raise _GiveUp(repr(value))
    if (ge is not None and value < ge) or (le is not None and value > le):
        raise _GiveUp(repr(value))
    return value


def compile_model(model: type[BaseModel], aliases: dict[str, Any], *, tag: str | None = None,
                  tag_field: str | None = None, name: str | None = None) -> _Compiled:
    """Generate the Struct and converters of ``model`` (module docstring). ``aliases``: the record module's
    annotated types by role (``code``, ``trace``, ``money``, ``price``, ``quantity``, ``time``, ``date``).
    Raises ``NotImplementedError`` for a field it has no lean form for (a test compiles every model)."""
    hints = typing.get_type_hints(model, include_extras=True)
    env: dict[str, Any] = {"_UNSET": _UNSET, "_time": _time, "_date": _date, "_Decimal": Decimal,
                           "_positive": _positive, "_new": object.__new__,
                           "_fail": _fail, "_TM": _TIME_MEMO, "_datetime": datetime, "_CST": CST,
                           "_T0": _EARLIEST_TIME, "_T1": _LATEST_TIME, "_money": _money_text,
                           "_unsigned": _unsigned_text, "_positive_text": _positive_text,
                           "_date_text": _date_text, "_whole": _whole, "_cls": model, "_dict": dict,
                           **{f"_set{i}": _slot_setter(model, n) for i, n in enumerate(_INSTANCE_SLOTS)}}
    struct_fields: list[tuple[str, Any, Any]] = []
    lines: list[str] = []
    dlines: list[str] = []
    required: list[str] = []
    names: list[str] = []
    for i, (fname, info) in enumerate(model.model_fields.items()):
        names.append(fname)
        var = f"x{i}"
        if fname == tag_field:
            lines.append(f"    {var} = {tag!r}")
            dlines.append(f"    {var} = {tag!r}")
            required.append(fname)
            continue
        hint, optional = _optional(hints[fname])
        strict_positive = any(isinstance(m, Gt) and m.gt == 0 for m in info.metadata)
        ftype: Any
        expr = "{v}"
        if hint == aliases["code"]:
            ftype, expr, dexpr = _CODE, "({v} if {v}.strip() is {v} else _fail({v}))", _D_CODE  # see _fail
        elif hint == aliases["trace"]:
            ftype, expr, dexpr = _TRACE, "({v} if {v}.isascii() and {v}.isalnum() else _fail({v}))", _D_TRACE
        elif hint == aliases["money"]:
            ftype, expr, dexpr = _MONEY, "_Decimal({v})", "_money({v})"
        elif hint in (aliases["price"], aliases["quantity"]):
            ftype, expr = _UNSIGNED, ("_positive({v})" if strict_positive else "_Decimal({v})")
            dexpr = "_positive_text({v})" if strict_positive else "_unsigned({v})"
        elif hint == aliases["time"]:
            ftype, expr, dexpr = str, "(_TM.get({v}) or _time({v}))", _D_TIME  # the memo first: no call
        elif hint == aliases["date"]:
            ftype, expr, dexpr = date, "_date({v})", "_date_text({v})"
        elif hint is str or hint is bool:
            ftype, dexpr = hint, f"({{v}} if type({{v}}) is {hint.__name__} else _fail({{v}}))"
        elif typing.get_origin(hint) is Literal and all(isinstance(a, str) for a in typing.get_args(hint)):
            env[f"_l{i}"] = frozenset(typing.get_args(hint))
            ftype, dexpr = hint, f"({{v}} if type({{v}}) is str and {{v}} in _l{i} else _fail({{v}}))"
        elif typing.get_origin(hint) is list and isinstance(typing.get_args(hint)[0], type) and issubclass(
                typing.get_args(hint)[0], BaseModel):
            sub = compile_model(typing.get_args(hint)[0], aliases)
            env[f"_c{i}"], env[f"_e{i}"] = sub.convert, sub.from_dict
            ftype, expr = list[sub.struct], f"[_c{i}(e) for e in {{v}}]"  # type: ignore[name-defined]
            dexpr = f"([_e{i}(e) for e in {{v}}] if type({{v}}) is list else _fail({{v}}))"
        elif set(typing.get_args(hint)) == {int, Decimal}:  # whole numbers on the fast path
            ge: Any = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
            le: Any = next((m.le for m in info.metadata if isinstance(m, Le)), None)
            ftype, dexpr = Annotated[int, msgspec.Meta(ge=ge, le=le)], f"_whole({{v}}, {ge!r}, {le!r})"
        else:
            raise NotImplementedError(f"{model.__name__}.{fname}: no lean form for {hints[fname]!r}")
        if optional:
            ftype = ftype | None
        if info.is_required():
            required.append(fname)
            struct_fields.append((fname, ftype, msgspec.NODEFAULT))
            lines.append(f"    {var} = {expr.format(v=f's.{fname}')}")
            dlines.append(f"    {var} = d.get({fname!r})")
            dlines.append(f"    {var} = {dexpr.format(v=var)}" if optional else
                          f"    {var} = _fail({fname!r}) if {var} is None else {dexpr.format(v=var)}")
        else:
            env[f"_d{i}"] = info.default
            struct_fields.append((fname, ftype | msgspec.UnsetType, _UNSET))
            conv = expr.format(v=var)
            lines.append(f"    {var} = s.{fname}")
            lines.append(f"    if {var} is _UNSET:\n        {var} = _d{i}\n    else:\n        fs.add({fname!r})")
            if conv != var:
                lines.append(f"        if {var} is not None:\n            {var} = {conv}")
            dlines.append(f"    {var} = d.get({fname!r}, _UNSET)")
            dlines.append(f"    if {var} is _UNSET:\n        {var} = _d{i}\n    else:\n        fs.add({fname!r})")
            dlines.append(f"        if {var} is not None:\n            {var} = {dexpr.format(v=var)}")
    validators = list(model.__pydantic_decorators__.model_validators.values())
    if model.__pydantic_decorators__.field_validators or any(v.info.mode != "after" for v in validators):
        raise NotImplementedError(f"{model.__name__}: only mode='after' model validators have a lean form")
    for j, v in enumerate(validators):
        env[f"_v{j}"] = v.func
    mapping = ", ".join(f"{n!r}: x{i}" for i, n in enumerate(names))
    checks = "".join(f"    _v{j}(o)\n" for j in range(len(validators)))
    env["_required"] = frozenset(required)
    tail = (f"    o = _new(_cls)\n"
            f"    _set0(o, {{{mapping}}})\n    _set1(o, fs)\n    _set2(o, None)\n    _set3(o, None)\n"
            f"{checks}    return o\n")
    source = "def convert(s):\n    fs = set(_required)\n" + "\n".join(lines) + "\n" + tail
    source += ("def from_dict(d):\n    if type(d) is not _dict:\n        _fail(d)\n    fs = set(_required)\n"
               + "\n".join(dlines) + "\n" + tail)
    exec(compile(source, f"<lean {model.__name__}>", "exec"), env)  # the converters generated from the model
    kw: dict[str, Any] = {"kw_only": True, "frozen": True}
    if tag is not None:
        kw.update(tag=tag, tag_field=tag_field)
    struct = msgspec.defstruct(name or f"Lean{model.__name__}", struct_fields, **kw)
    return _Compiled(struct, env["convert"], env["from_dict"])


#: What a generated ``from_dict`` raises to give up (the value goes to pydantic).
_DICT_FAIL = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError)


class DictConverter:
    """``convert(data)`` → the pydantic instance of a *normalized* mapping (``monitor.nhsa``: after
    ``scalars.normalize`` keys are snake-case, ``""`` is gone, numbers are decimal text and times are aware
    Asia/Shanghai datetimes), or ``None`` when the lean path gives up and ``TypeAdapter.validate_python``
    must decide (the same instance, or the error text). Per field it accepts only what the Struct path
    accepts after decoding — codes and trace codes as text with nothing to strip, money/prices/quantities
    as plain decimal text inside the bounds, times as aware CST ``datetime`` in 1990–2099 (pydantic
    keeps them), dates as ``yyyy-MM-dd`` text, whole numbers as ``int`` or plain digits, literals and
    nested lists of objects as declared — and extra keys are ignored as the models ignore them.
    ``variants``/``tag_field``: as ``LeanDecoder`` (several: dispatched by the mapping's ``tag_field``)."""

    def __init__(self, variants: list[tuple[type[BaseModel], str | None]], aliases: dict[str, Any],
                 tag_field: str | None = None) -> None:
        self._tag_field = tag_field
        self._by_tag: dict[str | None, Callable[[Any], BaseModel]] = {
            t: compile_model(m, aliases, tag=t, tag_field=tag_field).from_dict for m, t in variants}

    def convert(self, data: dict[str, Any]) -> Any:
        try:
            if self._tag_field is None:
                return self._by_tag[None](data)
            build = self._by_tag.get(data.get(self._tag_field))
            return None if build is None else build(data)
        except _DICT_FAIL:
            return None


class LeanDecoder:
    """``decode(raw)`` → the list of records of one stream's value, or ``None`` when the fast path gives up
    (module docstring). ``variants``: (model, tag) pairs; several form a union tagged by ``tag_field``."""

    def __init__(self, variants: list[tuple[type[BaseModel], str | None]], aliases: dict[str, Any],
                 tag_field: str | None = None) -> None:
        compiled = [compile_model(m, aliases, tag=t, tag_field=tag_field,
                                  name=f"Lean{m.__name__}{t or ''}") for m, t in variants]
        self._convert: dict[type, Callable[[Any], BaseModel]] = {c.struct: c.convert for c in compiled}
        one: Any = compiled[0].struct if len(compiled) == 1 else Union[tuple(c.struct for c in compiled)]  # noqa: UP007
        self._decoder = msgspec.json.Decoder(Union[one, list[one]])  # noqa: UP007

    def decode(self, raw: bytes) -> list[Any] | None:
        try:
            value = self._decoder.decode(raw)
            if type(value) is list:
                if not value:
                    return None  # "empty array" is pydantic's (records.parse_value) to say
                convert = self._convert
                return [convert[type(v)](v) for v in value]
            return [self._convert[type(value)](value)]
        except _FAIL:
            return None

"""The platform's own message shapes → the records of design §3 (issue #13).

``Codec.decode(stream, raw, quality)`` is what both shells call instead of ``records.parse_value``:
bytes in, a list of records, join items (``monitor.nhsa.items``) and ``InvalidRecord`` out. ``stream``
is the input topic's stream, or ``None`` for ``medins.uploads`` (everything routed by ``infno``).

Contract
--------
* A value is an **envelope** when it carries ``input`` or ``output`` (the platform's common parameters
  ``infno``/``infon``, ``msgid``, ``inf_time``, ``fixmedins_code``/``medins_code``): it is decoded by its
  ``infno`` whatever topic it came on; a JSON array of envelopes is accepted. An unknown ``infno`` or a
  part that cannot be placed → ``InvalidRecord`` naming the interface and the part (``input.selinfo[2]
  .sel_retn_time: …``); the shell dead-letters the original bytes with that reason.
* Any other value is a **flat record** of design §3. The plain ones go to ``records.parse_value``
  (fast path; its time fields read ``yyyyMMddHHmmss`` and epoch ms, refuse other digit strings and
  count date-only times here); one with upper-case keys (``MDTRT_SETL_TYPE``), camelCase required
  keys (``fixmedinsCode``) or, on inventory, an
  embedded ``drugtracinfo`` is normalized first like a row of an envelope.
* Scalars: ``monitor.nhsa.scalars`` (``""`` absent, numbers are codes, keys case-insensitive, the
  pack's ``nhsa_aliases`` added to the built-in alias table, the accepted time formats).
* Counted in ``quality`` (the engine's data-quality figures), never dropped silently:
  ``{stream}.date_only_time.{field}`` (a date where a time is required: start of that day is used),
  ``inventory.setl_type_from_hi_feesetl_type`` / ``…_from_setl_id`` (older 3505 without
  ``mdtrt_setl_type``), ``tracecodes.trdn_flag_from_default`` (a code row and its movement without
  ``trdn_flag``: whole pack ``0``), ``tracecodes.not_judged.{infno}`` (codes on 3501/3502/3504: no rule
  reads stock or stock-out scans), ``tracecodes.settlement_codes_not_split`` (2207 ``drug_trac_info``:
  no ``rtal_docno``/``med_list_codg`` to place them; the 3505 of the sale carries them),
  ``nhsa.{infno}.no_record`` (2101 pre-settlement, prescription-centre queries: no record in §3),
  ``prescriptions.valid_end_from_valid_days``, ``prescriptions.revocation_fields_filled``,
  ``settlements.inscp_scp_amt_from_medfee_sumamt`` (``inscp_scp_amt`` ``""``: total − ``fulamt_ownpay_amt``).
* 3505 → trace scans ``sale``, 3506 → ``sale_return``, 3503 → ``stock_in``; each scan takes the
  movement's time, institution, drug, batch, ``setl_id``, ``rtal_docno``, ``trdn_flag`` and upload time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from pydantic import TypeAdapter, ValidationError

from monitor.nhsa.items import INV_DATA_TYPE, EnvelopeSettlement, FeeLines, Pending, Retraction, Revocation
from monitor.nhsa.scalars import DEFAULT_ALIASES, ScalarError, normalize, snake, to_time
from monitor.records import (
    _ADAPTERS as ADAPTERS,
)
from monitor.records import (
    _LEAN,
    _LEAN_DICT,
    DATE_ONLY_COUNTS,
    MAX_VALUE_BYTES,
    DrugDetail,
    InvalidRecord,
    Prescription,
    Record,
    Settlement,
    TraceScan,
    _describe,
    _utf8_problem,
    parse_value,
)

Item = Record | Pending | InvalidRecord
#: ``isinstance(x, _MAPPINGS)`` is ``isinstance(x, Mapping)``, a JSON object (``dict``) decided first.
_MAPPINGS = (dict, Mapping)
#: A nested node (not a scalar field) of a normalized mapping: ``isinstance(v, (Mapping, list))``.
_NODES = (dict, list, Mapping)

#: Wrapper names of the business node of a 35xx message, in the order they are looked for.
INVENTORY_WRAPPERS = ("selinfo", "purcinfo", "invinfo", "data", "selinfo_detail", "purcinfo_detail",
                      "invinfo_detail", "invinfodetail", "selinfodetail", "purcinfodetail")
SCAN_KIND = {"3505": "sale", "3506": "sale_return", "3503": "stock_in"}
#: The prescription centre's camelCase interfaces (numbering differs by province; our reading):
#: A0001 upload check and A0002 upload carry a prescription, A0004 revokes it, the others are queries.
RX_CENTRE_DEFAULT = {"A0001": "upload", "A0002": "upload", "A0003": "query", "A0004": "revoke",
                     "A0005": "query", "A0006": "query"}

_TRACE_ADAPTER: TypeAdapter[TraceScan] = TypeAdapter(TraceScan)
_LINE_ADAPTER: TypeAdapter[DrugDetail] = TypeAdapter(DrugDetail)
_SETL_ADAPTER: TypeAdapter[Settlement] = TypeAdapter(Settlement)
_RX_ADAPTER: TypeAdapter[Prescription] = TypeAdapter(Prescription)

#: Byte pre-filters, after a flat parse failed or passed (bench/ "nhsa": each search of a JSON line
#: costs ~1 µs, so a valid plain record pays only the upper-case key search): ``put`` for the envelope's
#: ``input``/``output`` (confirmed on the parsed object), ``trac`` for embedded trace codes.
_ENVELOPE_HINT = b"put"
_TRACE_HINT = b"trac"
#: Flat lines that need the codec: upper-case keys (``MDTRT_SETL_TYPE``: an underscore and two capitals,
#: which codes in values do not have) and, on inventory, embedded trace codes. Kept to C-speed byte
#: searches (bench/ "nhsa"): times as uploads write them are read by ``records`` itself, and ``""`` on
#: a flat record is an error, not a silent distortion.
_UPPER_KEY = re.compile(rb"_[A-Z]{2}")
#: camelCase keys (``fixmedinsCode``: a lower-case letter, then a capital, in a name followed by ``":``),
#: searched only once the flat parse failed (this search costs ~35 µs a line, 20× the one above): a
#: record whose required keys are camelCase is normalized like one with upper-case keys; an *optional*
#: camelCase key beside snake-case required ones is not looked for.
_CAMEL_KEY = re.compile(rb'[a-z][A-Z][A-Za-z_]*"\s*:')


class Fail(ValueError):
    """A part of a message that cannot be placed: ``part`` (e.g. ``input.selinfo[2]``) and why."""

    def __init__(self, part: str, reason: str, index: int | None = None) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason
        self.index = index


_MSGSPEC = msgspec.json.Decoder(float_hook=Decimal)


def _loads(text: bytes | str) -> Any:
    """``json.loads(text, parse_float=Decimal)``: msgspec's decoder (the same objects — dicts in key
    order, the last of a repeated key, big integers, floats as ``Decimal`` of their text), and ``json``
    itself for anything msgspec refuses (its errors, ``NaN``, lone surrogates, UTF-16 …)."""
    try:
        return _MSGSPEC.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(text, parse_float=Decimal)


def _json(value: Any, part: str) -> Any:
    """A node given as a JSON string is read as JSON (floats as Decimal)."""
    if isinstance(value, (bytes, str)):
        text = value.strip()
        if text[:1] in ("{", "[", b"{", b"["):
            try:
                return _loads(text)
            except ValueError as exc:
                raise Fail(part, f"JSON string that is not JSON: {exc}") from None
    return value


def _as_rows(value: Any, part: str) -> list[Mapping[str, Any]]:
    value = _json(value, part)
    if isinstance(value, _MAPPINGS):
        return [value]
    if isinstance(value, list):
        for i, row in enumerate(value):
            if not isinstance(row, _MAPPINGS):
                raise Fail(f"{part}[{i}]", f"an object expected, not {type(row).__name__}")
        return value
    raise Fail(part, f"an object, an array or a JSON string expected, not {type(value).__name__}")


def _node(value: Any, part: str) -> dict[str, Any]:
    """An object node (``input``, ``output``, ``setlinfo`` …); a one-element array is its element."""
    value = _json(value, part)
    if value is None or value == "":
        return {}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, _MAPPINGS):
        raise Fail(part, f"an object expected, not {type(value).__name__}")
    return dict(value)


#: The lean build of each adapter's normalized mapping (``monitor.lean.DictConverter``; ``None`` from it:
#: pydantic decides, and is the only source of error texts).
_LEAN_OF: dict[int, Any] = {id(ADAPTERS[s]): _LEAN_DICT[s] for s in ADAPTERS}
_LEAN_OF.update({id(_TRACE_ADAPTER): _LEAN_DICT["tracecodes"], id(_LINE_ADAPTER): _LEAN_DICT["drugdetail"],
                 id(_SETL_ADAPTER): _LEAN_DICT["settlements"], id(_RX_ADAPTER): _LEAN_DICT["prescriptions"]})


def _validate(adapter: TypeAdapter[Any], data: dict[str, Any], part: str) -> Any:
    """The record of a normalized mapping: the lean build when it reads every field, else the model's."""
    lean = _LEAN_OF.get(id(adapter))
    if lean is not None:
        built = lean.convert(data)
        if built is not None:
            return built
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise Fail(part, _describe(exc)) from None


def _count(quality: dict[str, int], name: str, n: int = 1) -> None:
    quality[name] = quality.get(name, 0) + n


class Codec:
    """One per policy pack (its alias table). Stateless: the join state lives in ``monitor.nhsa.join``."""

    def __init__(self, aliases: Mapping[str, str] | None = None,
                 rx_centre: Mapping[str, str] | None = None) -> None:
        table = dict(DEFAULT_ALIASES)
        for key, value in (aliases or {}).items():
            table[snake(key)] = snake(value)
        self.aliases = table
        #: ``normalize`` gives keys no alias renames again unless one alias leads to another: then a
        #: node taken from a normalized parent is normalized once more (as it always was), else it is
        #: used as it is (``_again``).
        self._chained = any(v in table and table[v] != v for v in table.values())
        self.rx_centre = dict(rx_centre or RX_CENTRE_DEFAULT)
        self._handlers: dict[str, Callable[[str, dict[str, Any], dict[str, Any], _Env, dict[str, int]],
                                           list[Item]]] = {}
        for infno in ("3501", "3502", "3503", "3504", "3505", "3506"):
            self._handlers[infno] = self._inventory
        for infno in ("3501A", "3502A", "3503A", "3504A", "3505A"):
            self._handlers[infno] = self._inventory
        self._handlers["3507"] = self._retraction
        self._handlers["2101"] = self._no_record
        self._handlers["2102"] = self._settlement
        self._handlers["2207"] = self._settlement
        self._handlers["2204"] = self._fee_lines
        self._handlers["2103"] = self._revocation
        self._handlers["2208"] = self._revocation
        self._handlers["7101"] = self._prescription
        self._handlers["7104"] = self._rx_revocation
        for infno, kind in self.rx_centre.items():
            self._handlers[infno.upper()] = {"upload": self._prescription, "revoke": self._rx_revocation
                                             }.get(kind, self._no_record)

    def _again(self, given: Any, rows: list[Any], quality: dict[str, int], where: str) -> list[Any]:
        """``rows`` of the value ``given`` of a normalized node, normalized: ``given`` was normalized with
        its parent (a repeated ``normalize`` changes nothing: no ``""``, keys, texts and times as they
        come out of it, each date-only time counted once) unless it was JSON text."""
        if self._chained or isinstance(given, (str, bytes)):
            return [normalize(r, self.aliases, quality, where) for r in rows]
        return rows

    def _setlinfo(self, out_n: dict[str, Any], quality: dict[str, int]) -> dict[str, Any]:
        given = out_n.get("setlinfo")
        node: dict[str, Any] = self._again(given, [_node(given, "output.setlinfo")], quality, "settlements")[0]
        return node

    @classmethod
    def for_pack(cls, pack: Any) -> Codec:
        return cls(pack.setting("nhsa_aliases", {}), pack.setting("nhsa_rx_centre", None))

    @property
    def interfaces(self) -> list[str]:
        return sorted(self._handlers)

    # ------------------------------------------------------------------------------------------ entry
    def decode(self, stream: str | None, raw: bytes, quality: dict[str, int]) -> list[Item]:
        """See the module docstring. Never raises for bad data."""
        hinted = False
        if stream is not None and (raw[-2:] if raw[-1:] == b"}" else raw.rstrip()[-2:]) != b"}}":
            # Fast path: a valid flat record without upper-case keys or embedded codes is what it says.
            # (A value ending in "}}" closes a nested node: an envelope's input/output — no flat record of
            # design §3 ends with an object — and skips the flat parse, whose failure costs ~150 µs.)
            # The lean decode first (``records.parse_value``'s own first step).
            lean = _LEAN.get(stream)
            parsed = lean.decode(raw) if lean is not None and len(raw) <= MAX_VALUE_BYTES else None
            if parsed is not None:  # records only (the lean decode gives up on anything else)
                if _UPPER_KEY.search(raw) is None and (stream != "inventory" or _TRACE_HINT not in raw):
                    return parsed
                return self._flat(stream, raw, quality)
            # Not plain NHSA text: an envelope whose input is a JSON string (it ends in '"}') skips the
            # models' flat parse too once its key is seen — the JSON below confirms it is an envelope.
            hinted = b'"input"' in raw or b'"output"' in raw
            if not hinted:
                plain = self._plain(stream, raw, quality)
                if plain is not None:
                    return plain
        if len(raw) > MAX_VALUE_BYTES:
            return [InvalidRecord(f"value too large: {len(raw)} bytes > {MAX_VALUE_BYTES} (not read)")]
        try:
            value = _loads(raw)
        except UnicodeDecodeError:
            return [InvalidRecord(_utf8_problem(raw) or "not UTF-8")]
        except ValueError as exc:
            return [InvalidRecord(_utf8_problem(raw) or f"malformed JSON: {exc}")]
        envelopes = value if isinstance(value, list) else [value]
        if not envelopes:
            return [InvalidRecord("empty array: no messages")]
        if stream is not None and not any(
                isinstance(e, _MAPPINGS) and ("input" in e or "output" in e
                                              or any(str(k).lower() in ("input", "output") for k in e))
                for e in envelopes):
            if hinted:  # "input" was in a value: the flat paths as for any other line
                plain = self._plain(stream, raw, quality)
                if plain is not None:
                    return plain
            return self._flat(stream, raw, quality)  # "put" was in a value, not an envelope key
        out: list[Item] = []
        for i, env in enumerate(envelopes):
            index = i if isinstance(value, list) else None
            prefix = f"[{i}]." if index is not None else ""
            if not isinstance(env, _MAPPINGS):
                out.append(InvalidRecord(f"{prefix}value: an envelope object expected", index=index))
                continue
            try:
                items = self.envelope(env, quality)
            except Fail as exc:
                out.append(InvalidRecord(f"{prefix}{exc}", index=index if exc.index is None else exc.index))
                continue
            except ScalarError as exc:
                out.append(InvalidRecord(f"{prefix}{exc}", index=index))
                continue
            out.extend(items)
        return out

    def _plain(self, stream: str, raw: bytes, quality: dict[str, int]) -> list[Item] | None:
        """A flat line the lean decode did not read: its records by ``records.parse_value`` (read with
        the date-only counter armed — only the models read date-only times), the codec's normalizing
        ``_flat`` when it needs it, or ``None``: it may be an envelope (the JSON path)."""
        sink = DATE_ONLY_COUNTS
        sink.target = (quality, stream)
        try:
            parsed = parse_value(stream, raw)
        finally:
            sink.target = None
        if (type(parsed[0]) is not InvalidRecord if len(parsed) == 1
                else all(type(p) is not InvalidRecord for p in parsed)):
            if _UPPER_KEY.search(raw) is None and (stream != "inventory" or _TRACE_HINT not in raw):
                return parsed  # type: ignore[return-value]
            return self._flat(stream, raw, quality)
        if _ENVELOPE_HINT not in raw or len(raw) > MAX_VALUE_BYTES:
            return (self._flat(stream, raw, quality)  # type: ignore[return-value]
                    if _UPPER_KEY.search(raw) or b'""' in raw or _CAMEL_KEY.search(raw) else parsed)
        return None

    def _flat(self, stream: str, raw: bytes, quality: dict[str, int]) -> list[Item]:
        if len(raw) > MAX_VALUE_BYTES:
            return [InvalidRecord(f"value too large: {len(raw)} bytes > {MAX_VALUE_BYTES} (not read)")]
        try:
            value = _loads(raw)
        except (UnicodeDecodeError, ValueError):
            return list(parse_value(stream, raw))  # the same precise error as before
        rows = value if isinstance(value, list) else [value]
        out: list[Item] = []
        for i, row in enumerate(rows):
            index = i if isinstance(value, list) else None
            prefix = f"[{i}]." if index is not None else ""
            if not isinstance(row, _MAPPINGS):
                out.append(InvalidRecord(f"{prefix}value: an object expected", index=index))
                continue
            try:
                data = normalize(row, self.aliases, quality, stream)
                if stream == "inventory":
                    infno = str(data.get("infno", ""))
                    out.extend(self._movement(infno, data, _Env("", None), quality, prefix.rstrip(".")
                                              or "value"))
                else:
                    out.append(_validate(ADAPTERS[stream], data, prefix.rstrip(".") or "value"))
            except (Fail, ScalarError) as exc:
                out.append(InvalidRecord(f"{prefix}{exc}" if isinstance(exc, ScalarError) else str(exc),
                                         index=index))
        return out

    def envelope(self, env: Mapping[str, Any], quality: dict[str, int]) -> list[Item]:
        """One envelope → items (raises ``Fail``/``ScalarError`` for a part that cannot be placed)."""
        head: dict[str, Any] = {}
        for key, value in env.items():
            name = snake(key)
            head[self.aliases.get(name, name)] = value
        infno = str(head.get("infno") or "").strip().upper()
        if not infno:
            raise Fail("envelope", "infno missing (the interface number says what the message is)")
        handler = self._handlers.get(infno)
        if handler is None:
            raise Fail("envelope.infno", f"unknown infno {infno!r} (accepted: {', '.join(self.interfaces)})")
        inp = _node(head.get("input"), "input")
        out = _node(head.get("output"), "output")
        if not inp and not out:
            raise Fail("envelope", f"infno {infno}: neither input nor output carries a business node")
        inf_time = None
        if head.get("inf_time") not in (None, ""):
            try:
                inf_time, date_only = to_time(head["inf_time"])
            except ScalarError as exc:
                raise Fail("envelope.inf_time", str(exc)) from None
            if date_only:
                _count(quality, "nhsa.date_only_time.inf_time")
        code = head.get("fixmedins_code")
        env_info = _Env(str(code).strip() if code not in (None, "") else "", inf_time)
        try:
            return handler(infno, inp, out, env_info, quality)
        except Fail as exc:
            raise Fail(f"infno {infno}: {exc.part}", exc.reason, exc.index) from None
        except ScalarError as exc:
            raise Fail(f"infno {infno}", str(exc)) from None

    # ------------------------------------------------------------------------------------ inventory
    def _inventory(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                   quality: dict[str, int]) -> list[Item]:
        base = infno.rstrip("A")
        rows: list[Mapping[str, Any]] | None = None
        part = "input"
        lowered = {snake(k): v for k, v in inp.items()}
        for wrapper in INVENTORY_WRAPPERS:
            if wrapper in lowered and lowered[wrapper] not in (None, ""):
                part = f"input.{wrapper}"
                rows = _as_rows(lowered[wrapper], part)
                break
        if rows is None:
            if "med_list_codg" in lowered or "fixmedins_bchno" in lowered:
                rows = [inp]
            else:
                raise Fail("input", f"no business node (looked for {', '.join(INVENTORY_WRAPPERS)})")
        if not rows:
            raise Fail(part, "empty array: no movements")
        items: list[Item] = []
        batch = len(rows) > 1 or infno.endswith("A")
        for i, row in enumerate(rows):
            where = f"{part}[{i}]" if batch else part
            try:
                data = normalize(row, self.aliases, quality, "inventory")
                data["infno"] = base
                items.extend(self._movement(base, data, env, quality, where))
            except Fail as exc:
                items.append(InvalidRecord(f"infno {infno}: {exc}", index=i if batch else None))
            except ScalarError as exc:
                items.append(InvalidRecord(f"infno {infno}: {where}.{exc}", index=i if batch else None))
        return items

    def _movement(self, infno: str, data: dict[str, Any], env: _Env, quality: dict[str, int],
                  where: str) -> list[Item]:
        """One normalized 35xx row → the movement and the trace scans its codes make."""
        codes = self._codes(data.pop("drugtracinfo", None), data.pop("drug_trac_codg", None), where)
        if env.code and "fixmedins_code" not in data:
            data["fixmedins_code"] = env.code
        if env.inf_time is not None and "inf_time" not in data:
            data["inf_time"] = env.inf_time
        if infno == "3505" and "mdtrt_setl_type" not in data:
            # older versions (before 2024): insured vs self-pay by hi_feesetl_type, else by setl_id
            hi = data.get("hi_feesetl_type")
            if hi is not None:
                data["mdtrt_setl_type"] = "2" if hi == "0" else "1"
                _count(quality, "inventory.setl_type_from_hi_feesetl_type")
            else:
                data["mdtrt_setl_type"] = "1" if data.get("setl_id") else "2"
                _count(quality, "inventory.setl_type_from_setl_id")
        movement = _validate(ADAPTERS["inventory"], data, where)
        items: list[Item] = [movement]
        if not codes:
            return items
        kind = SCAN_KIND.get(infno)
        if kind is None:
            _count(quality, f"tracecodes.not_judged.{infno}", len(codes))
            return items
        for j, (code, entry) in enumerate(codes):
            trdn = entry.get("trdn_flag") or data.get("trdn_flag")
            if trdn is None:
                trdn = "0"
                _count(quality, "tracecodes.trdn_flag_from_default")
            scan = {
                "drug_trac_codg": code, "fixmedins_code": movement.fixmedins_code,
                "med_list_codg": movement.med_list_codg, "scan_kind": kind, "trdn_flag": trdn,
                "scan_time": entry.get("scan_time") or movement.business_time,
                "setl_id": movement.setl_id, "rtal_docno": movement.rtal_docno,
                "fixmedins_bchno": movement.fixmedins_bchno, "inf_time": movement.inf_time,
            }
            try:
                items.append(_validate(_TRACE_ADAPTER, scan, f"{where}.drugtracinfo[{j}]"))
            except Fail as exc:
                items.append(InvalidRecord(str(exc)))
        return items

    @staticmethod
    def _codes(node: Any, inline: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
        """``drugtracinfo`` as a list, one object, a JSON string or a plain code string, plus a legacy
        inline ``drug_trac_codg`` (``""`` was already dropped as absent)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if node is not None:
            node = _json(node, f"{where}.drugtracinfo")
            if isinstance(node, str):
                entries: list[Any] = [c for c in re.split(r"[,;\s]+", node) if c]
            elif isinstance(node, _MAPPINGS):
                entries = [node]
            elif isinstance(node, list):
                entries = node
            else:
                raise Fail(f"{where}.drugtracinfo", f"not a list, object or string: {type(node).__name__}")
            for j, entry in enumerate(entries):
                if isinstance(entry, _MAPPINGS):
                    code = entry.get("drug_trac_codg")
                    if code is None:
                        raise Fail(f"{where}.drugtracinfo[{j}]", "drug_trac_codg missing")
                    out.append((str(code), dict(entry)))
                elif isinstance(entry, str):
                    out.append((entry, {}))
                else:
                    raise Fail(f"{where}.drugtracinfo[{j}]", f"not a code: {type(entry).__name__}")
        if inline is not None:
            if not any(code == str(inline) for code, _ in out):
                out.append((str(inline), {}))
        return out

    def _retraction(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                    quality: dict[str, int]) -> list[Item]:
        """3507: one ``Retraction`` per row (``data`` or the input itself); the engine undoes the movement."""
        lowered = {snake(k): v for k, v in inp.items()}
        node = next((lowered[w] for w in INVENTORY_WRAPPERS if lowered.get(w) not in (None, "")), None)
        part = "input" if node is None else "input.data"
        rows = [inp] if node is None else _as_rows(node, part)
        items: list[Item] = []
        for i, row in enumerate(rows):
            where = f"{part}[{i}]" if len(rows) > 1 else part
            data = normalize(row, self.aliases, quality, "inventory")
            code = str(data.get("fixmedins_code") or env.code)
            bchno, kind = data.get("fixmedins_bchno"), str(data.get("inv_data_type") or "")
            problem = ("fixmedins_bchno missing (it names the movement deleted)" if not bchno else
                       f"inv_data_type {kind!r} not one of {', '.join(INV_DATA_TYPE)}" if kind not in INV_DATA_TYPE
                       else "fixmedins_code missing" if not code else None)
            if problem is not None:
                items.append(InvalidRecord(f"infno {infno}: {where}.{problem}", index=i if len(rows) > 1 else None))
                continue
            raw = json.dumps({"infno": "3507", "fixmedins_code": code, "fixmedins_bchno": str(bchno),
                              "inv_data_type": kind}, ensure_ascii=False).encode()
            items.append(Retraction(code, str(bchno), kind, env.inf_time, raw))
        return items

    def _no_record(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                   quality: dict[str, int]) -> list[Item]:
        _count(quality, f"nhsa.{infno}.no_record")
        return []

    # ---------------------------------------------------------------------------------- settlements
    def _settlement(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                    quality: dict[str, int]) -> list[Item]:
        inp_n = normalize(inp, self.aliases, quality, "settlements")
        out_n = normalize(out, self.aliases, quality, "settlements")
        setl = self._setlinfo(out_n, quality)
        if not setl:
            raise Fail("output.setlinfo", "missing (the settlement is the platform's response)")
        data: dict[str, Any] = {}
        for node in (inp_n.get("mdtrtinfo"), inp_n.get("data"), inp_n):
            if isinstance(node, _MAPPINGS):
                for key, value in node.items():
                    if type(value) is str or not isinstance(value, _NODES):
                        data.setdefault(key, value)
        data.update({k: v for k, v in setl.items() if type(v) is str or not isinstance(v, _NODES)})
        lines = given = None
        for name in ("drugdetail", "druginfo", "feedetail"):
            if name in inp_n:
                given = inp_n[name]
                lines = _as_rows(given, f"input.{name}")
                break
        if env.code and "fixmedins_code" not in data:
            data["fixmedins_code"] = env.code
        if env.inf_time is not None:
            data.setdefault("inf_time", env.inf_time)
        data["setl_status"] = "settled"
        data["drugdetail"] = self._again(given, lines, quality, "settlements") if lines else []
        if "drug_trac_info" in inp_n or "drugtracinfo" in inp_n:
            node = inp_n.get("drugtracinfo", inp_n.get("drug_trac_info"))
            _count(quality, "tracecodes.settlement_codes_not_split",
                   len(node) if isinstance(node, list) else 1)
        if "inscp_scp_amt" not in data and "medfee_sumamt" in data:
            # seen as "": the in-scope amount is at most the total less the fully self-paid part (an upper
            # bound: benefit ratios judged on it can only under-, never over-accuse); counted
            own = Decimal(str(data.get("fulamt_ownpay_amt", "0")))
            data["inscp_scp_amt"] = str(Decimal(str(data["medfee_sumamt"])) - own)
            _count(quality, "settlements.inscp_scp_amt_from_medfee_sumamt")
        settlement = _validate(_SETL_ADAPTER, data, "output.setlinfo")
        return [EnvelopeSettlement(settlement, has_lines=bool(lines))]

    def _fee_lines(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                   quality: dict[str, int]) -> list[Item]:
        inp_n = normalize(inp, self.aliases, quality, "settlements")
        rows = inp_n.get("feedetail")
        if rows is None:
            raise Fail("input.feedetail", "missing (2204 uploads fee details)")
        rows = self._again(rows, _as_rows(rows, "input.feedetail"), quality, "settlements")
        outer_id = inp_n.get("mdtrt_id")
        code = env.code or str(inp_n.get("fixmedins_code", ""))
        groups: dict[str, list[DrugDetail]] = {}
        times: dict[str, datetime] = {}
        items: list[Item] = []
        for i, row in enumerate(rows):
            where = f"input.feedetail[{i}]"
            mdtrt_id = row.get("mdtrt_id", outer_id)
            if mdtrt_id is None:
                items.append(InvalidRecord(f"infno {infno}: {where}: mdtrt_id missing (the join key)", index=i))
                continue
            try:
                line = _validate(_LINE_ADAPTER, dict(row), where)
            except Fail as exc:
                items.append(InvalidRecord(f"infno {infno}: {exc}", index=i))
                continue
            groups.setdefault(str(mdtrt_id), []).append(line)
            when = row.get("fee_ocur_time")
            if isinstance(when, datetime) and (str(mdtrt_id) not in times or when > times[str(mdtrt_id)]):
                times[str(mdtrt_id)] = when
        if not code:
            raise Fail("envelope.fixmedins_code", "missing (2204 lines are joined per institution)")
        for mdtrt_id, lines in groups.items():
            items.append(FeeLines(code, mdtrt_id, tuple(lines), env.inf_time, times.get(mdtrt_id)))
        return items

    def _revocation(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                    quality: dict[str, int]) -> list[Item]:
        inp_n = normalize(inp, self.aliases, quality, "settlements")
        out_n = normalize(out, self.aliases, quality, "settlements")
        data: dict[str, Any] = {}
        setl = self._setlinfo(out_n, quality)
        for node in (setl, _node(inp_n.get("data"), "input.data"),
                     inp_n.get("mdtrtinfo"), inp_n):
            if isinstance(node, _MAPPINGS):
                for key, value in node.items():
                    if type(value) is str or not isinstance(value, _NODES):
                        data.setdefault(key, value)
        setl_id = data.get("setl_id")
        if not setl_id:
            raise Fail("input", "setl_id missing (a revocation names the settlement it revokes)")
        code = env.code or str(data.get("fixmedins_code", ""))
        if not code:
            raise Fail("envelope.fixmedins_code", "missing")
        data["fixmedins_code"] = code
        return [Revocation(str(setl_id), code, env.inf_time, tuple(sorted(data.items())))]

    # -------------------------------------------------------------------------------- prescriptions
    def _rx_fields(self, inp: dict[str, Any], out: dict[str, Any], quality: dict[str, int]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
        inp_n = normalize(inp, self.aliases, quality, "prescriptions")
        out_n = normalize(out, self.aliases, quality, "prescriptions")
        data: dict[str, Any] = {}
        nodes = [out_n.get("data"), out_n, inp_n.get("mdtrtinfo"), inp_n.get("rxinfo"), inp_n.get("data"), inp_n]
        for node in nodes:
            if isinstance(node, _MAPPINGS):
                for key, value in node.items():
                    if type(value) is str or not isinstance(value, _NODES):
                        data.setdefault(key, value)
        return data, inp_n

    def _prescription(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                      quality: dict[str, int]) -> list[Item]:
        data, inp_n = self._rx_fields(inp, out, quality)
        lines = given = None
        for holder in (inp_n, inp_n.get("data"), inp_n.get("rxinfo")):
            if isinstance(holder, _MAPPINGS):
                for name in ("rxdrugdetail", "rx_drug_detail", "drugdetail"):
                    if name in holder:
                        given = holder[name]
                        lines = _as_rows(given, f"input.{name}")
                        break
            if lines is not None:
                break
        if lines is None:
            raise Fail("input.rxdrugdetail", "missing (the drugs prescribed)")
        if "valid_end_time" not in data and "valid_days" in data and isinstance(data.get("prsc_time"), datetime):
            data["valid_end_time"] = data["prsc_time"] + timedelta(days=float(Decimal(str(data["valid_days"]))))
            _count(quality, "prescriptions.valid_end_from_valid_days")
        if env.code and "fixmedins_code" not in data:
            data["fixmedins_code"] = env.code
        if env.inf_time is not None:
            data.setdefault("inf_time", env.inf_time)
        if "hi_rxno" not in data:
            raise Fail("output.hi_rxno", "missing (the platform's prescription number is in the response)")
        data["rx_status"] = "uploaded"
        data["rxdrugdetail"] = self._again(given, lines, quality, "prescriptions")
        return [_validate(_RX_ADAPTER, data, "input")]

    def _rx_revocation(self, infno: str, inp: dict[str, Any], out: dict[str, Any], env: _Env,
                       quality: dict[str, int]) -> list[Item]:
        data, _ = self._rx_fields(inp, out, quality)
        if "hi_rxno" not in data:
            raise Fail("input.hi_rxno", "missing (a revocation names the prescription)")
        undo = data.get("undo_time") or env.inf_time
        if undo is None:
            raise Fail("input.undo_time", "missing (and no inf_time)")
        filled = 0
        for key, value in (("hosp_rxno", data["hi_rxno"]), ("psn_no", "unknown"), ("prsc_time", undo),
                           ("valid_end_time", undo)):
            if key not in data:
                data[key] = value
                filled += 1
        if filled:
            _count(quality, "prescriptions.revocation_fields_filled")
        if env.code and "fixmedins_code" not in data:
            data["fixmedins_code"] = env.code
        if env.inf_time is not None:
            data.setdefault("inf_time", env.inf_time)
        data["rx_status"] = "revoked"
        data["rxdrugdetail"] = []
        return [_validate(_RX_ADAPTER, data, "input")]


class _Env:
    """What every business node inherits from its envelope."""

    __slots__ = ("code", "inf_time")

    def __init__(self, code: str, inf_time: datetime | None) -> None:
        self.code = code
        self.inf_time = inf_time

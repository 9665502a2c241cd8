"""Scalars as institutions' systems write them (notes/nhsa-fields.md, "How real uploads vary").

Contract
--------
* ``snake(key)``: ``MDTRT_SETL_TYPE`` → ``mdtrt_setl_type``, ``psnCash_pay`` → ``psn_cash_pay``,
  ``hospRxno`` → ``hosp_rxno`` (keys match case-insensitively; camelCase of the prescription centre is
  the same name); then the alias table maps regional names (``med_fee_sumamt`` → ``medfee_sumamt``).
* ``normalize(obj, aliases)``: a JSON object with normalized keys, ``""``/``null`` values removed
  (``""`` means absent), numbers as decimal strings (``rx_flag: 1`` is the code ``"1"``; ``7.5`` stays
  ``"7.5"``: JSON floats are read as ``Decimal``, never as binary floats), and every time field turned
  into an aware Asia/Shanghai ``datetime`` by ``to_time``. Nested objects and arrays are normalized too.
* ``to_time(value)`` accepts ``yyyy-MM-dd HH:mm:ss`` (also ``/`` and ``T``), ISO-8601 with an offset,
  ``yyyyMMddHHmmss``, epoch **milliseconds** (13 digits, number or string, also .NET ``/Date(ms)/``),
  and date-only ``yyyy-MM-dd``/``yyyyMMdd`` (start of that day, reported as ``date_only`` so the caller
  counts it as a data-quality figure). Any other digit string — in particular a 10-digit epoch in
  *seconds* — is refused with a reason: a digit string is never guessed into a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from monitor.clock import CST

_EPOCH = datetime(1970, 1, 1, 8, tzinfo=CST)  # 1970-01-01T00:00Z, in CST

#: Names that are times in some record of design §3 or in the platform's messages.
TIME_FIELDS = frozenset({
    "inf_time", "setl_time", "sel_retn_time", "inv_chg_time", "purc_retn_stoin_time", "scan_time",
    "prsc_time", "valid_end_time", "fee_ocur_time", "undo_time", "occurred_at", "valid_from",
})
#: Names that are dates (a time of day is not expected).
DATE_FIELDS = frozenset({"invdate", "manu_date", "expy_end", "agreement_start", "agreement_end",
                         "designated_since"})

#: Regional and versioned names seen in the field → the names of design §3. A pack may add more
#: (setting ``nhsa_aliases``); keys are compared after ``snake``.
DEFAULT_ALIASES: dict[str, str] = {
    "infon": "infno",                      # Hunan SDK
    "medins_code": "fixmedins_code",
    "med_fee_sumamt": "medfee_sumamt",
    "cert_no": "certno",
    "psncash_pay": "psn_cash_pay",
    "vali_end_time": "valid_end_time",     # prescription centre (valiEndTime)
    "vali_days": "valid_days",
    "hosp_rx_no": "hosp_rxno",
    "hi_rx_no": "hi_rxno",
    "rx_trace_code": "rx_trace_code",
    "drug_trac_info": "drugtracinfo",      # 2207 (2025)
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SNAKE_MEMO: dict[str, str] = {}


def snake(key: str) -> str:
    """Case-insensitive key: camelCase → snake_case, then lower case (memoised; keys repeat)."""
    hit = _SNAKE_MEMO.get(key)
    if hit is None:
        hit = _CAMEL.sub("_", key).lower() if not key.islower() else key
        if len(_SNAKE_MEMO) < 4096:
            _SNAKE_MEMO[key] = hit
    return hit


class ScalarError(ValueError):
    """A scalar the codec refuses (a time it cannot read without guessing)."""


_LOCAL = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?$")
_NET_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def to_time(value: Any) -> tuple[datetime, bool]:
    """``(instant in CST, date_only)``; raises ``ScalarError`` with the reason. See the module doc."""
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=CST)).astimezone(CST), False
    if isinstance(value, bool):
        raise ScalarError(f"{value!r} is not a time")
    if isinstance(value, (int, Decimal)):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ScalarError(f"{type(value).__name__} is not a time")
    if text.isdigit():
        if len(text) == 14:
            try:  # fixed-width ASCII fields first: what strptime reads when each is valid (its first match)
                if text.isascii():
                    return datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                                    int(text[10:12]), int(text[12:]), tzinfo=CST), False
            except ValueError:
                pass
            try:
                return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=CST), False
            except ValueError as exc:
                raise ScalarError(f"{text!r} is not a yyyyMMddHHmmss time: {exc}") from None
        if len(text) == 13:
            return _from_ms(int(text)), False
        if len(text) == 8:
            try:
                return datetime.strptime(text, "%Y%m%d").replace(tzinfo=CST), True
            except ValueError as exc:
                raise ScalarError(f"{text!r} is not a yyyyMMdd date: {exc}") from None
        raise ScalarError(f"digit string {text!r} is not a time (yyyyMMddHHmmss or epoch milliseconds "
                          "expected; epoch seconds are not accepted)")
    m = _LOCAL.match(text)
    if m is not None:
        y, mo, d, h, mi, s, frac = m.groups()
        try:
            moment = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                              int((frac or "0").ljust(6, "0")), CST)
        except ValueError as exc:
            raise ScalarError(f"{text!r}: {exc}") from None
        return moment, h is None
    m = _NET_DATE.match(text)
    if m is not None:
        return _from_ms(int(m.group(1))), False
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScalarError(f"{text!r} is not a time (yyyy-MM-dd HH:mm:ss, ISO-8601, yyyyMMddHHmmss "
                          "or epoch milliseconds)") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=CST)).astimezone(CST), False


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    return value


#: ``to_time`` of texts seen (uploads of one institution repeat their ``inf_time`` and neighbouring
#: times): the results are immutable; bounded (cleared when full).
_TIME_MEMO: dict[str, tuple[datetime, bool]] = {}
_TIME_MEMO_MAX = 1 << 16


def _time_field(key: str, value: Any, quality: dict[str, int] | None, where: str) -> datetime:
    """``to_time`` of a time field, the refusal naming the field, a date-only value counted."""
    hit = _TIME_MEMO.get(value) if type(value) is str else None
    if hit is None:
        try:
            hit = to_time(value)
        except ScalarError as exc:
            raise ScalarError(f"{key}: {exc}") from None
        if type(value) is str:
            if len(_TIME_MEMO) >= _TIME_MEMO_MAX:
                _TIME_MEMO.clear()
            _TIME_MEMO[value] = hit
    moment, date_only = hit
    if date_only and quality is not None:
        name = f"{where}.date_only_time.{key}" if where else f"date_only_time.{key}"
        quality[name] = quality.get(name, 0) + 1
    return moment


def normalize(obj: Mapping[str, Any], aliases: Mapping[str, str], quality: dict[str, int] | None = None,
              where: str = "") -> dict[str, Any]:
    """See the module docstring. ``quality`` receives ``date_only_time`` counts (``{where}.field``);
    a refused time raises ``ScalarError`` naming the field. (Text, the common case, is tested first by
    its exact type: the same steps as for any value, without the ``Mapping`` check.)"""
    out: dict[str, Any] = {}
    memo = _SNAKE_MEMO
    for raw_key, value in obj.items():
        if value is None or value == "":
            continue
        key = memo.get(raw_key) or snake(raw_key)
        key = aliases.get(key, key)
        kind = type(value)
        if kind is str:
            if key in TIME_FIELDS:
                value = _time_field(key, value, quality, where)
            elif key in DATE_FIELDS and len(value) == 8 and value.isdigit():
                value = f"{value[:4]}-{value[4:6]}-{value[6:]}"
        elif kind is dict or (kind is not list and isinstance(value, Mapping)):
            value = normalize(value, aliases, quality, where)
        elif kind is list:
            value = [normalize(v, aliases, quality, where) if isinstance(v, (dict, Mapping)) else _scalar(v)
                     for v in value if v is not None and v != ""]
        elif key in TIME_FIELDS:
            value = _time_field(key, value, quality, where)
        elif key in DATE_FIELDS and isinstance(value, (str, int)) and str(value).isdigit() and len(str(value)) == 8:
            text = str(value)
            value = f"{text[:4]}-{text[4:6]}-{text[6:]}"
        else:
            value = _scalar(value)
        if key in out and out[key] != value:
            raise ScalarError(f"{key}: given twice with different values (keys match case-insensitively)")
        out[key] = value
    return out

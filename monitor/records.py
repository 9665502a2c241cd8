"""Input records of the seven topics of design §3, with NHSA field names.

Every model keeps NHSA's names (``setl_id``, ``fixmedins_code``, ``sel_retn_cnt`` …) so that an upstream
gateway can forward what the platform returns without renaming. Money and quantities are ``Decimal``;
times are timezone-aware in Asia/Shanghai (NHSA's ``yyyy-MM-dd HH:mm:ss`` is read as local time, ISO-8601
with an offset is converted). Unknown extra fields are ignored, never fatal: the platform adds fields
between interface versions.

``parse_value(stream, raw)`` is the only entry point the shells use: bytes in, a list of records or
``InvalidRecord`` (with the field path and the reason) out. A message value may be one JSON object or a
JSON array of objects of the same topic (NHSA batch interfaces such as 3501A–3504A).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from monitor.clock import CST, as_cst, day_start
from monitor.lean import DictConverter, LeanDecoder

#: Naive local time → the aware Asia/Shanghai instant, memoised: records uploaded together repeat their
#: ``inf_time`` and neighbouring business times, and ``datetime.replace(tzinfo=…)`` is the dearest step of
#: parsing a time (bench/). Bounded (cleared when full); the values are immutable, so sharing is safe.
_CST_MEMO: dict[datetime, datetime] = {}
_CST_MEMO_MAX = 1 << 16


#: Plausible business dates (issue #17): designated institutions exist since the 1998 reform; nothing a
#: pharmacy uploads is dated in the next century. Outside this window a record is dead-lettered (dates at
#: the calendar's edges, 0001-01-01 / 9999-12-31, overflow date arithmetic in every rule).
EARLIEST_DATE = date(1990, 1, 1)
LATEST_DATE = date(2099, 12, 31)
_EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=CST)
_LATEST_TIME = datetime(2100, 1, 1, tzinfo=CST)
_WINDOW = f"outside the plausible window {EARLIEST_DATE} – {LATEST_DATE}"


def _to_cst(value: datetime) -> datetime:
    """``clock.as_cst`` (same result), faster for the common naive ``yyyy-MM-dd HH:mm:ss`` form; a time
    outside ``EARLIEST_DATE``–``LATEST_DATE`` is refused."""
    if value.tzinfo is not None or value.fold:
        if not EARLIEST_DATE <= value.date() <= LATEST_DATE:
            raise ValueError(f"{value.date()} is {_WINDOW}")
        aware = as_cst(value)
        if not _EARLIEST_TIME <= aware < _LATEST_TIME:
            raise ValueError(f"{value} is {_WINDOW}")
        return aware
    hit = _CST_MEMO.get(value)
    if hit is None:
        if not EARLIEST_DATE <= value.date() <= LATEST_DATE:
            raise ValueError(f"{value.date()} is {_WINDOW}")
        if len(_CST_MEMO) >= _CST_MEMO_MAX:
            _CST_MEMO.clear()
        hit = _CST_MEMO[value] = datetime(value.year, value.month, value.day, value.hour, value.minute,
                                          value.second, value.microsecond, CST)
    return hit


class _CountSink:
    """Where date-only times are counted while a shell parses: ``monitor.nhsa`` sets ``target`` to (its
    quality figures, the stream) around ``parse_value`` and clears it after (shells parse on one thread;
    a plain attribute costs less than a context variable on the hot path). Unset, a date-only time is
    still read as the start of that day."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: tuple[dict[str, int], str] | None = None


DATE_ONLY_COUNTS = _CountSink()
_EPOCH_MS = datetime(1970, 1, 1, 8, tzinfo=CST)  # 1970-01-01T00:00Z


def _time_as_uploaded(value: Any, info: ValidationInfo) -> Any:
    """Times as uploads write them (issue #13): ``yyyyMMddHHmmss`` is local time and 13 digits are epoch
    milliseconds; any other digit string or integer (an epoch in *seconds* …) is refused, never guessed
    (pydantic alone would read ``"20210512100000"`` as a timestamp in the year 2610). A date-only value
    is the start of that day and counted (``DATE_ONLY_COUNTS``)."""
    if isinstance(value, str):
        if value.isdigit():
            if len(value) == 14:
                return datetime.strptime(value, "%Y%m%d%H%M%S")
            if len(value) == 13:
                return _EPOCH_MS + timedelta(milliseconds=int(value))
            raise ValueError(f"digit string {value!r} is not a time (yyyyMMddHHmmss or epoch milliseconds "
                             "expected; epoch seconds are not accepted)")
        if len(value) == 10 and value[4:5] == "-" and value[7:8] == "-":
            counts = DATE_ONLY_COUNTS.target
            if counts is not None:
                name = f"{counts[1]}.date_only_time.{info.field_name}"
                counts[0][name] = counts[0].get(name, 0) + 1
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == int(value) and len(str(abs(int(value)))) in (13, 14):
            return _time_as_uploaded(str(int(value)), info)
        raise ValueError(f"number {value} is not a time (epoch milliseconds expected; epoch seconds are not "
                         "accepted)")
    return value


def _plausible_date(value: date) -> date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"{value} is {_WINDOW}")
    return value


CstDateTime = Annotated[datetime, BeforeValidator(_time_as_uploaded), AfterValidator(_to_cst)]
BizDate = Annotated[date, AfterValidator(_plausible_date)]
#: Money in yuan (NHSA decimal(16,2)), |x| ≤ 10^10, at most 24 digits (a double written out by a gateway,
#: 31.989999999999995, still fits): "1e30", "1E+999999999" or "1E-999999999" are refused here instead of
#: overflowing the benefit and pricing arithmetic (issue #17).
Money = Annotated[Decimal, Field(max_digits=24, ge=Decimal("-1e10"), le=Decimal("1e10"))]
#: Unit prices (NHSA decimal(16,6)), 0 ≤ x ≤ 10^8.
Price = Annotated[Decimal, Field(max_digits=24, ge=0, le=Decimal("1e8"))]
#: Quantities (NHSA decimal(16,4)), 0 ≤ x ≤ 10^8.
Quantity = Annotated[Decimal, Field(max_digits=24, ge=0, le=Decimal("1e8"))]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Flag = Literal["0", "1", "2"]
#: 药品追溯码: usually 20 digits; other schemes exist, so 1–100 letters/digits are accepted.
TraceCodeStr = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9A-Za-z]{1,100}$")]

STREAMS: tuple[str, ...] = (
    "institutions",
    "drugs",
    "settlements",
    "inventory",
    "tracecodes",
    "prescriptions",
    "findings",
)

#: Largest accepted message value / JSONL line. Larger values are dead-lettered unread.
MAX_VALUE_BYTES = 4 * 1024 * 1024


def _stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's ``hash`` is salted per process,
    and engine state is checkpointed and restored across processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    STREAM: ClassVar[str]

    inf_time: CstDateTime | None = None

    @property
    def business_time(self) -> datetime | None:
        """The record's own time (design §3 'business time'); ``None`` for registry records."""
        return None

    @property
    def arrival_time(self) -> datetime | None:
        """Upload time: ``inf_time``, else the business time (design §2 'Time')."""
        return self.inf_time if self.inf_time is not None else self.business_time

    def dedup_key(self) -> int | None:
        """Identity of this record for at-least-once de-duplication; ``None`` = upsert, never counted."""
        return None


# ---------------------------------------------------------------------------------------------- settlements
class DrugDetail(BaseModel):
    """One drug line of a settlement (2102/2207 ``drugdetail``)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    feedetl_sn: str | None = None
    med_list_codg: Code
    cnt: Quantity = Field(gt=0)
    pric: Price | None = None
    det_item_fee_sumamt: Money | None = None
    rx_flag: Flag | None = None
    trdn_flag: Flag | None = None


class Settlement(_Record):
    """A pharmacy/clinic settlement (2102/2207 ``setlinfo``) or its revocation (2103/2208)."""

    STREAM: ClassVar[str] = "settlements"

    setl_id: Code
    mdtrt_id: Code
    fixmedins_code: Code
    psn_no: Code
    insutype: Code
    psn_type: Code
    med_type: Code
    setl_time: CstDateTime
    medfee_sumamt: Money
    inscp_scp_amt: Money
    hifp_pay: Money
    acct_pay: Money
    psn_cash_pay: Money
    setl_status: Literal["settled", "revoked"]
    drugdetail: list[DrugDetail]
    certno: str | None = None
    psn_name: str | None = None
    fund_pay_sumamt: Money | None = None
    insuplc_admdvs: str | None = None
    hi_rxno: str | None = None

    @property
    def business_time(self) -> datetime:
        return self.setl_time

    def dedup_key(self) -> int:
        return _stable_hash(f"S|{self.setl_id}|{self.setl_status}")


# ------------------------------------------------------------------------------------------------ inventory
class _Movement(_Record):
    """One 进销存 movement; ``infno`` says which (3501–3506)."""

    STREAM: ClassVar[str] = "inventory"

    infno: str
    fixmedins_code: Code
    med_list_codg: Code
    fixmedins_hilist_id: Code
    fixmedins_bchno: Code
    finl_trns_pric: Price | None = None
    pric: Price | None = None
    mdtrt_setl_type: Literal["1", "2"] | None = None
    setl_id: str | None = None
    psn_no: str | None = None
    certno: str | None = None
    psn_name: str | None = None
    rx_flag: Flag | None = None
    trdn_flag: Flag | None = None
    rxno: str | None = None
    rtal_docno: str | None = None
    inv_chg_type: str | None = None
    manu_lotnum: str | None = None

    @property
    def quantity(self) -> Decimal:
        raise NotImplementedError

    @property
    def business_time(self) -> datetime:
        raise NotImplementedError

    def dedup_key(self) -> int:
        return _stable_hash(
            f"I|{self.infno}|{self.fixmedins_code}|{self.med_list_codg}|{self.fixmedins_bchno}|"
            f"{self.business_time.isoformat()}|{self.quantity}|{self.setl_id}|{self.rtal_docno}|"
            f"{self.inv_chg_type}"
        )


class Stocktake(_Movement):
    """3501 商品盘存: the counted stock of a batch on ``invdate`` (a balance baseline)."""

    invdate: BizDate
    inv_cnt: Quantity

    @property
    def quantity(self) -> Decimal:
        return self.inv_cnt

    @property
    def business_time(self) -> datetime:
        return day_start(self.invdate)


#: 3502 ``inv_chg_type`` signs (notes/nhsa-fields.md): + in, − out.
INV_CHG_SIGN: dict[str, int] = {
    "101": 1, "102": -1, "103": 1, "104": -1, "105": -1, "106": 1,
    "107": -1, "108": 1, "109": -1, "110": 1, "111": -1,
}


class StockChange(_Movement):
    """3502 商品库存变更: a signed change by ``inv_chg_type``."""

    inv_chg_time: CstDateTime
    cnt: Quantity
    inv_chg_type: str

    @model_validator(mode="after")
    def _known_change_type(self) -> StockChange:
        if self.inv_chg_type not in INV_CHG_SIGN:
            raise ValueError(f"inv_chg_type {self.inv_chg_type!r} is not one of 101–111")
        return self

    @property
    def quantity(self) -> Decimal:
        return self.cnt

    @property
    def business_time(self) -> datetime:
        return self.inv_chg_time


class PurchaseMovement(_Movement):
    """3503 商品采购 (stock in) and 3504 采购退货 (stock out)."""

    purc_retn_stoin_time: CstDateTime
    purc_retn_cnt: Quantity

    @property
    def quantity(self) -> Decimal:
        return self.purc_retn_cnt

    @property
    def business_time(self) -> datetime:
        return self.purc_retn_stoin_time


class SaleMovement(_Movement):
    """3505 商品销售 (stock out) and 3506 销售退货 (stock in)."""

    sel_retn_time: CstDateTime
    sel_retn_cnt: Quantity

    @property
    def quantity(self) -> Decimal:
        return self.sel_retn_cnt

    @property
    def business_time(self) -> datetime:
        return self.sel_retn_time


def _infno_of(value: Any) -> str | None:
    raw = value.get("infno") if isinstance(value, dict) else getattr(value, "infno", None)
    return None if raw is None else str(raw)


InventoryMovement = Annotated[
    Annotated[Stocktake, Tag("3501")]
    | Annotated[StockChange, Tag("3502")]
    | Annotated[PurchaseMovement, Tag("3503")]
    | Annotated[PurchaseMovement, Tag("3504")]
    | Annotated[SaleMovement, Tag("3505")]
    | Annotated[SaleMovement, Tag("3506")],
    Discriminator(
        _infno_of,
        custom_error_type="unknown_infno",
        custom_error_message="infno must be one of 3501–3506",
    ),
]


# ---------------------------------------------------------------------------------------------- trace codes
class TraceScan(_Record):
    """One scanned drug trace code (药品追溯码), split out of 3505/3506 ``drugtracinfo`` or a stock-in."""

    STREAM: ClassVar[str] = "tracecodes"

    drug_trac_codg: TraceCodeStr
    fixmedins_code: Code
    med_list_codg: Code
    scan_kind: Literal["sale", "sale_return", "stock_in"]
    trdn_flag: Flag
    scan_time: CstDateTime
    setl_id: str | None = None
    rtal_docno: str | None = None
    fixmedins_bchno: str | None = None

    @model_validator(mode="after")
    def _sale_has_docno(self) -> TraceScan:
        if self.scan_kind == "sale" and not self.rtal_docno:
            raise ValueError("rtal_docno is required for every sale scan")
        return self

    @property
    def business_time(self) -> datetime:
        return self.scan_time

    def dedup_key(self) -> int:
        return _stable_hash(
            f"T|{self.drug_trac_codg}|{self.scan_kind}|{self.fixmedins_code}|{self.scan_time.isoformat()}"
        )


# ------------------------------------------------------------------------------------------- prescriptions
class RxDrugDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    med_list_codg: Code
    drug_cnt: Quantity = Field(gt=0)
    #: num(8,2) on the platform (7.5 days occurs); whole days stay ``int``.
    medc_days: int | Decimal = Field(ge=0, le=36500)


class Prescription(_Record):
    """An e-prescription upload (7101) or revocation (7104), keyed by ``hi_rxno``."""

    STREAM: ClassVar[str] = "prescriptions"

    hi_rxno: Code
    hosp_rxno: Code
    fixmedins_code: Code
    psn_no: Code
    prsc_time: CstDateTime
    valid_end_time: CstDateTime
    rx_status: Literal["uploaded", "revoked"]
    rxdrugdetail: list[RxDrugDetail]
    certno: str | None = None
    psn_name: str | None = None

    @property
    def business_time(self) -> datetime:
        return self.prsc_time

    def dedup_key(self) -> int:
        return _stable_hash(f"P|{self.hi_rxno}|{self.rx_status}")


# ------------------------------------------------------------------------------------------------ findings
FindingKind = Literal[
    "complaint_verified",
    "data_incomplete_verified",
    "data_falsified_verified",
    "cloud_monitor_notice",
    "infostd_substandard",
    "major_negative_impact",
    "interview",
    "payment_suspended",
    "payment_refused",
    "agreement_suspended",
    "admin_penalty",
    "agreement_terminated",
    "rectified",
    "ticket_approved",
    "ticket_rejected",
]


class Finding(_Record):
    """A verified finding or agency action reported by inspectors or the case system."""

    STREAM: ClassVar[str] = "findings"

    finding_id: Code
    fixmedins_code: Code
    kind: FindingKind
    occurred_at: CstDateTime
    ref_ticket_id: str | None = None
    note: str | None = None

    @property
    def business_time(self) -> datetime:
        return self.occurred_at

    def dedup_key(self) -> int:
        return _stable_hash(f"F|{self.finding_id}")


# ---------------------------------------------------------------------------------------------- registries
class Institution(_Record):
    """Registry entry of a designated institution (compacted topic; the latest ``valid_from`` wins)."""

    STREAM: ClassVar[str] = "institutions"

    fixmedins_code: Code
    fixmedins_name: str
    fixmedins_type: Literal["1", "2"]
    admdvs: Code
    outpatient_pooling: bool
    agreement_start: BizDate
    agreement_end: BizDate
    designated_since: BizDate
    tier: str | None = None
    tier_scheme: Literal["XY", "LN"] | None = None
    valid_from: CstDateTime

    @property
    def business_time(self) -> datetime:
        return self.valid_from

    @property
    def is_pharmacy(self) -> bool:
        return self.fixmedins_type == "2"


class Drug(_Record):
    """Drug catalogue entry (compacted topic keyed by ``med_list_codg``)."""

    STREAM: ClassVar[str] = "drugs"

    med_list_codg: Code
    name: str
    spec: str | None = None
    prodentp_name: str | None = None
    listed_price: Price | None = None
    rx_flag: Flag | None = None
    high_value: bool = False


Record = Settlement | Stocktake | StockChange | PurchaseMovement | SaleMovement | TraceScan | Prescription | (
    Finding | Institution | Drug
)

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "settlements": TypeAdapter(Settlement),
    "inventory": TypeAdapter(InventoryMovement),
    "tracecodes": TypeAdapter(TraceScan),
    "prescriptions": TypeAdapter(Prescription),
    "findings": TypeAdapter(Finding),
    "institutions": TypeAdapter(Institution),
    "drugs": TypeAdapter(Drug),
}

#: The lean decoders (``monitor.lean``), generated from the models above.
_LEAN_ALIASES = {"code": Code, "trace": TraceCodeStr, "money": Money, "price": Price, "quantity": Quantity,
                 "time": CstDateTime, "date": BizDate}
#: Each stream's models (several: a union tagged by ``infno``).
_VARIANTS: dict[str, tuple[list[tuple[type[BaseModel], str | None]], str | None]] = {
    "settlements": ([(Settlement, None)], None),
    "inventory": ([(Stocktake, "3501"), (StockChange, "3502"), (PurchaseMovement, "3503"),
                   (PurchaseMovement, "3504"), (SaleMovement, "3505"), (SaleMovement, "3506")], "infno"),
    "tracecodes": ([(TraceScan, None)], None),
    "prescriptions": ([(Prescription, None)], None),
    "findings": ([(Finding, None)], None),
    "institutions": ([(Institution, None)], None),
    "drugs": ([(Drug, None)], None),
}
_LEAN: dict[str, LeanDecoder] = {stream: LeanDecoder(variants, _LEAN_ALIASES, tag_field=tag)
                                 for stream, (variants, tag) in _VARIANTS.items()}
#: The same, for the mappings the NHSA codec builds (``monitor.lean.DictConverter``): by stream, and
#: ``drugdetail`` for a 2204 line.
_LEAN_DICT: dict[str, DictConverter] = {stream: DictConverter(variants, _LEAN_ALIASES, tag_field=tag)
                                        for stream, (variants, tag) in _VARIANTS.items()}
_LEAN_DICT["drugdetail"] = DictConverter([(DrugDetail, None)], _LEAN_ALIASES)


# ------------------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A value that cannot become a record. ``reason`` names the field path and what is wrong;
    ``index`` is the element's position when the value was a JSON array."""

    reason: str
    index: int | None = None


def _describe(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in err.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"] if p not in ("function-after",))
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "value")
        if item["type"] == "json_invalid":
            parts.append(f"malformed JSON: {item['msg']}")
        else:
            parts.append(f"{where}: {item['msg']}")
    more = len(err.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more errors")
    return "; ".join(parts)


def _utf8_problem(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    return None


def parse_value(stream: str, raw: bytes) -> list[Record | InvalidRecord]:
    """Turn one message value / JSONL line into records, or into precise errors.

    Never raises for bad data: every problem becomes an ``InvalidRecord`` that the shell dead-letters
    with the original bytes. Raises ``KeyError`` only for an unknown stream (a programming error).
    Plain NHSA text takes the lean path (``monitor.lean``: the same records, no pydantic validation per
    record); anything it does not read goes through the models (``parse_value_with_models``).
    """
    if len(raw) > MAX_VALUE_BYTES:
        return [InvalidRecord(f"value too large: {len(raw)} bytes > {MAX_VALUE_BYTES} (not read)")]
    fast = _LEAN[stream].decode(raw)
    if fast is not None:
        return fast
    return parse_value_with_models(stream, raw)


def parse_value_with_models(stream: str, raw: bytes) -> list[Record | InvalidRecord]:
    """``parse_value`` through the pydantic models only: the contract, and the source of every error."""
    adapter = _ADAPTERS[stream]
    if len(raw) > MAX_VALUE_BYTES:
        return [InvalidRecord(f"value too large: {len(raw)} bytes > {MAX_VALUE_BYTES} (not read)")]
    body = raw.lstrip()
    if body[:1] == b"[":
        try:
            items = json.loads(raw)
        except RecursionError:  # "[" × 100 000: nesting deeper than the parser's stack (issue #17)
            return [InvalidRecord("malformed JSON: nested too deeply")]
        except UnicodeDecodeError:
            return [InvalidRecord(_utf8_problem(raw) or "not UTF-8")]
        except ValueError as exc:
            return [InvalidRecord(_utf8_problem(raw) or f"malformed JSON: {exc}")]
        out: list[Record | InvalidRecord] = []
        for i, item in enumerate(items):
            try:
                out.append(adapter.validate_python(item))
            except ValidationError as exc:
                out.append(InvalidRecord(_describe(exc, f"[{i}]."), index=i))
        if not items:
            out.append(InvalidRecord("empty array: no records"))
        return out
    try:
        return [adapter.validate_json(raw)]
    except ValidationError as exc:
        problem = _utf8_problem(raw)
        return [InvalidRecord(problem or _describe(exc))]

"""Input records: NHSA names, Decimal money, both time formats, precise errors (design §3)."""

import json
from datetime import datetime
from decimal import Decimal

import pytest
from builders import institution, sale, settlement

from monitor.clock import CST
from monitor.records import (
    InvalidRecord,
    PurchaseMovement,
    SaleMovement,
    Settlement,
    StockChange,
    Stocktake,
    parse_value,
)


def one(stream: str, rec: dict) -> object:
    out = parse_value(stream, json.dumps(rec, ensure_ascii=False).encode())
    assert len(out) == 1
    return out[0]


def test_settlement_fields_and_types() -> None:
    rec = one("settlements", settlement("S1", "2026-01-10 10:00:00", "2026-01-10T02:05:00Z"))
    assert isinstance(rec, Settlement)
    assert rec.setl_time == datetime(2026, 1, 10, 10, 0, tzinfo=CST)
    assert rec.inf_time == datetime(2026, 1, 10, 10, 5, tzinfo=CST)
    assert rec.medfee_sumamt == Decimal("30.00")
    assert rec.drugdetail[0].cnt == Decimal("1")


def test_numbers_for_money_and_codes_are_accepted() -> None:
    rec = one("settlements", settlement("S1", "2026-01-10 10:00:00", med_type=41, hifp_pay=12.34))
    assert isinstance(rec, Settlement)
    assert rec.med_type == "41"
    assert rec.hifp_pay == Decimal("12.34")


def test_unknown_extra_fields_are_ignored() -> None:
    rec = one("settlements", settlement("S1", "2026-01-10 10:00:00", brand_new_field={"x": 1}))
    assert isinstance(rec, Settlement)


@pytest.mark.parametrize(
    ("infno", "extra", "cls", "qty"),
    [
        (3501, {"invdate": "2026-01-01", "inv_cnt": "40"}, Stocktake, Decimal("40")),
        ("3502", {"inv_chg_time": "2026-01-02 09:00:00", "cnt": "2", "inv_chg_type": "104"}, StockChange,
         Decimal("2")),
        ("3503", {"purc_retn_stoin_time": "2026-01-02 09:00:00", "purc_retn_cnt": "10"}, PurchaseMovement,
         Decimal("10")),
        ("3504", {"purc_retn_stoin_time": "2026-01-02 09:00:00", "purc_retn_cnt": "3"}, PurchaseMovement,
         Decimal("3")),
        ("3506", {"sel_retn_time": "2026-01-02 09:00:00", "sel_retn_cnt": "1"}, SaleMovement, Decimal("1")),
    ],
)
def test_inventory_is_discriminated_by_infno(infno: object, extra: dict, cls: type, qty: Decimal) -> None:
    base = {"infno": infno, "fixmedins_code": "P42070200001", "med_list_codg": "XA01", "fixmedins_hilist_id": "H1",
            "fixmedins_bchno": "B1", **extra}
    rec = one("inventory", base)
    assert isinstance(rec, cls)
    assert rec.quantity == qty  # type: ignore[attr-defined]
    assert rec.infno == str(infno)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"setl_id": "S1", ', "malformed JSON"),
        (json.dumps(settlement("S1", "2026-01-10 10:00:00", medfee_sumamt="abc")).encode(), "medfee_sumamt"),
        (json.dumps({k: v for k, v in settlement("S1", "2026-01-10 10:00:00").items() if k != "psn_no"}).encode(),
         "psn_no: Field required"),
        (json.dumps(settlement("S1", "2026-01-10 10:00:00", drugdetail=[{"med_list_codg": "X", "cnt": "-1"}])
                    ).encode(), "drugdetail.0.cnt"),
        (json.dumps(settlement("S1", "10/01/2026")).encode(), "setl_time"),
        ("{\"setl_id\": \"张\"}".encode("gbk"), "not UTF-8"),
        (b"x" * (5 * 1024 * 1024), "too large"),
        (b"[]", "empty array"),
    ],
)
def test_bad_settlements_are_precise_errors(raw: bytes, needle: str) -> None:
    out = parse_value("settlements", raw)
    assert len(out) == 1 and isinstance(out[0], InvalidRecord)
    assert needle in out[0].reason


def test_unknown_infno_is_named() -> None:
    out = parse_value("inventory", json.dumps({**sale("B1", "2026-01-01 10:00:00"), "infno": "3599"}).encode())
    assert isinstance(out[0], InvalidRecord)
    assert "infno must be one of 3501–3506" in out[0].reason


def test_array_values_keep_good_records_and_name_bad_elements() -> None:
    good = sale("B1", "2026-01-01 10:00:00")
    bad = {**sale("B2", "2026-01-01 10:00:00"), "sel_retn_cnt": "many"}
    out = parse_value("inventory", json.dumps([good, bad, good]).encode())
    assert [type(o).__name__ for o in out] == ["SaleMovement", "InvalidRecord", "SaleMovement"]
    assert isinstance(out[1], InvalidRecord) and out[1].index == 1
    assert out[1].reason.startswith("[1].")


def test_trace_code_shape_is_checked() -> None:
    scan = {"drug_trac_codg": "8" + "1" * 19, "fixmedins_code": "P42070200001", "med_list_codg": "XA01",
            "scan_kind": "sale", "trdn_flag": "0", "scan_time": "2026-01-01 10:00:00", "rtal_docno": "R1"}
    assert not isinstance(one("tracecodes", scan), InvalidRecord)
    bad = one("tracecodes", {**scan, "drug_trac_codg": "81-23"})
    assert isinstance(bad, InvalidRecord) and "drug_trac_codg" in bad.reason
    nodoc = one("tracecodes", {**scan, "rtal_docno": None})
    assert isinstance(nodoc, InvalidRecord) and "rtal_docno" in nodoc.reason


def test_institution_registry_record() -> None:
    rec = one("institutions", institution())
    assert not isinstance(rec, InvalidRecord)
    assert rec.is_pharmacy  # type: ignore[union-attr]


@pytest.mark.parametrize(("field", "value"), [
    ("hifp_pay", "1e30"), ("hifp_pay", "1E+999999999"), ("hifp_pay", "1E-999999999"), ("psn_cash_pay", "NaN"),
    ("setl_time", "9999-12-31 23:59:59"), ("setl_time", "0001-01-01 00:00:00"), ("inf_time", "9999-12-31 00:00:00"),
])
def test_values_the_rules_cannot_compute_are_refused_by_the_model(field: str, value: str) -> None:
    """Issue #17: accepted by the model, then InvalidOperation/Overflow/OverflowError in the rules."""
    rec = {**settlement("S1", "2026-01-10 10:00:00", "2026-01-10 10:01:00"), field: value}
    [parsed] = parse_value("settlements", json.dumps(rec).encode())
    assert isinstance(parsed, InvalidRecord) and field in parsed.reason


def test_a_json_nesting_bomb_is_an_invalid_record_not_a_recursion_error() -> None:
    [parsed] = parse_value("settlements", b"[" * 100_000)
    assert isinstance(parsed, InvalidRecord) and "nested too deeply" in parsed.reason


def test_a_float_written_out_by_a_gateway_is_still_money() -> None:
    rec = settlement("S1", "2026-01-10 10:00:00", "2026-01-10 10:01:00", psn_cash_pay=31.989999999999995)
    [parsed] = parse_value("settlements", json.dumps(rec).encode())
    assert not isinstance(parsed, InvalidRecord), parsed

"""The NHSA codec (issue #13): one hand-written fixture per interface, the envelope's variance, scalars."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import CST
from monitor.nhsa.codec import Codec
from monitor.nhsa.items import EnvelopeSettlement, FeeLines, Retraction, Revocation
from monitor.nhsa.scalars import ScalarError, to_time
from monitor.records import (
    InvalidRecord,
    Prescription,
    PurchaseMovement,
    SaleMovement,
    StockChange,
    Stocktake,
    TraceScan,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nhsa"


def decode(name: str, stream: str | None = None) -> tuple[list[Any], Counter[str]]:
    quality: Counter[str] = Counter()
    return Codec().decode(stream, (FIXTURES / f"{name}.json").read_bytes(), quality), quality


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CST)


def kinds(items: list[Any]) -> list[str]:
    return [type(i).__name__ for i in items]


# ------------------------------------------------------------------------------------------------ 进销存
def test_3501_stocktake_under_invinfo_with_its_codes_counted() -> None:
    items, q = decode("3501")
    assert kinds(items) == ["Stocktake"]
    st = items[0]
    assert isinstance(st, Stocktake)
    assert (st.fixmedins_code, st.inv_cnt, st.rx_flag, str(st.invdate)) == ("P42070200001", Decimal("40.00"), "1",
                                                                            "2026-01-05")
    assert q["tracecodes.not_judged.3501"] == 1  # a stock scan: no rule reads it, counted


def test_3502_stock_change_numeric_type_and_yyyymmddhhmmss() -> None:
    items, _ = decode("3502")
    (chg,) = items
    assert isinstance(chg, StockChange)
    assert chg.inv_chg_type == "104" and chg.cnt == 1 and chg.trdn_flag == "0"
    assert chg.inv_chg_time == t("2026-01-05 10:00:00")
    assert chg.inf_time == t("2026-01-05 10:15:00")


def test_3503_purchase_codes_from_a_json_string_become_stock_in_scans() -> None:
    items, q = decode("3503")
    assert kinds(items) == ["PurchaseMovement", "TraceScan", "TraceScan"]
    purchase, *scans = items
    assert isinstance(purchase, PurchaseMovement) and purchase.finl_trns_pric is None  # "" = absent
    assert [s.drug_trac_codg for s in scans] == ["81000000000000000101", "81000000000000000102"]
    assert all(s.scan_kind == "stock_in" and s.fixmedins_bchno == "B0002" and s.scan_time == t("2026-01-05 11:00:00")
               and s.inf_time == t("2026-01-05 11:02:00") for s in scans)
    assert q["tracecodes.trdn_flag_from_default"] == 2


def test_3504_under_selinfo_epoch_ms_envelope_and_iso_offset() -> None:
    items, q = decode("3504")
    (ret,) = items
    assert isinstance(ret, PurchaseMovement) and ret.infno == "3504"
    assert ret.purc_retn_stoin_time == t("2026-01-06 10:00:00")
    assert ret.inf_time == t("2026-01-06 10:45:00")  # 1767667500000 ms
    assert ret.finl_trns_pric == Decimal("8.75")
    assert q["tracecodes.not_judged.3504"] == 1


def test_3505_sale_upper_case_setl_type_and_trace_codes_linked() -> None:
    items, _ = decode("3505")
    sale, *scans = items
    assert isinstance(sale, SaleMovement)
    assert sale.mdtrt_setl_type == "1" and sale.setl_id == "ST0001" and sale.finl_trns_pric is None
    assert sale.sel_retn_time == t("2026-01-06 10:30:00") and sale.sel_retn_cnt == 2
    assert [(s.scan_kind, s.drug_trac_codg, s.setl_id, s.rtal_docno, s.med_list_codg) for s in scans] == [
        ("sale", "81000000000000000001", "ST0001", "RD0001", "XA01"),
        ("sale", "81000000000000000002", "ST0001", "RD0001", "XA01"),
    ]


def test_3505a_batch_selinfodetail_with_legacy_inline_codes() -> None:
    items, q = decode("3505A")
    assert kinds(items) == ["SaleMovement", "SaleMovement", "TraceScan"]
    split, whole, scan = items
    assert split.mdtrt_setl_type == "2" and split.setl_id is None and split.trdn_flag == "1"
    assert whole.mdtrt_setl_type == "2"  # hi_feesetl_type 0 (非医保), no mdtrt_setl_type: counted
    assert q["inventory.setl_type_from_hi_feesetl_type"] == 1
    assert isinstance(scan, TraceScan) and scan.drug_trac_codg == "81000000000000000301" and scan.rtal_docno == "RD0002"


def test_3506_sale_return_with_a_single_code_object() -> None:
    items, _ = decode("3506")
    ret, scan = items
    assert isinstance(ret, SaleMovement) and ret.infno == "3506"
    assert scan.scan_kind == "sale_return" and scan.drug_trac_codg == "81000000000000000002"


# ------------------------------------------------------------------------------------------------ 结算
def test_2101_presettlement_makes_no_record_but_is_counted() -> None:
    items, q = decode("2101")
    assert items == [] and q["nhsa.2101.no_record"] == 1


def test_2102_request_lines_and_response_setlinfo_with_regional_names() -> None:
    items, _ = decode("2102")
    (env,) = items
    assert isinstance(env, EnvelopeSettlement) and env.has_lines
    st = env.settlement
    assert st.fixmedins_code == "P42070200001"  # from medins_code: the response left it ""
    assert (st.medfee_sumamt, st.psn_cash_pay, st.certno) == (Decimal("25.5"), Decimal("0.00"), "420702198001011234")
    assert st.setl_time == t("2026-01-06 10:30:00") and st.setl_status == "settled"
    assert [(d.feedetl_sn, d.med_list_codg, d.cnt, d.rx_flag) for d in st.drugdetail] == [("1", "XA01", 2, None)]


def test_2204_fee_lines_grouped_by_mdtrt_id() -> None:
    items, _ = decode("2204")
    (fee,) = items
    assert isinstance(fee, FeeLines) and (fee.fixmedins_code, fee.mdtrt_id) == ("H42070200002", "MD0002")
    assert [(d.feedetl_sn, d.cnt, d.pric) for d in fee.lines] == [("1", 2, Decimal("12.5")), ("2", Decimal("0.5"),
                                                                                             Decimal("3.2"))]
    assert fee.fee_time == t("2026-01-07 09:00:00")


def test_2207_input_as_json_string_without_lines_and_empty_inscp() -> None:
    items, q = decode("2207")
    (env,) = items
    assert isinstance(env, EnvelopeSettlement) and not env.has_lines
    assert env.settlement.inscp_scp_amt == Decimal("26.60")
    assert q["settlements.inscp_scp_amt_from_medfee_sumamt"] == 1


@pytest.mark.parametrize("name, code", [("2103", "P42070200001"), ("2208", "H42070200002")])
def test_revocations_carry_only_ids(name: str, code: str) -> None:
    items, _ = decode(name)
    (rev,) = items
    assert isinstance(rev, Revocation) and rev.fixmedins_code == code
    assert rev.setl_id in ("ST0001", "ST0002")


# ---------------------------------------------------------------------------------------- prescriptions
def test_7101_psn_no_under_mdtrtinfo_hi_rxno_from_response_decimal_days() -> None:
    items, q = decode("7101")
    (rx,) = items
    assert isinstance(rx, Prescription)
    assert (rx.hi_rxno, rx.hosp_rxno, rx.psn_no, rx.rx_status) == ("RX0000000001", "HR00000001", "42000033334444",
                                                                   "uploaded")
    assert rx.rxdrugdetail[0].medc_days == Decimal("7.5")
    assert rx.valid_end_time == t("2026-01-10 08:45:00")
    assert q["prescriptions.valid_end_from_valid_days"] == 1


def test_7104_and_a0004_revoke_by_hi_rxno() -> None:
    for name, rxno, when in (("7104", "RX0000000001", "2026-01-07 11:00:00"),
                             ("A0004", "RX0000000002", "2026-01-07 12:59:00")):
        items, q = decode(name)
        (rx,) = items
        assert isinstance(rx, Prescription) and rx.rx_status == "revoked" and rx.hi_rxno == rxno
        assert rx.prsc_time == t(when)
        assert q["prescriptions.revocation_fields_filled"] == 1


def test_prescription_centre_camel_case() -> None:
    items, _ = decode("A0002")
    (rx,) = items
    assert (rx.hi_rxno, rx.hosp_rxno, rx.psn_no) == ("RX0000000002", "HR00000002", "42000033334444")
    assert rx.rxdrugdetail[0].med_list_codg == "XA03" and rx.valid_end_time == t("2026-01-10 11:55:00")
    items, q = decode("A0003")
    assert items == [] and q["nhsa.A0003.no_record"] == 1


# ------------------------------------------------------------------------------------------ envelope
def test_every_fixture_is_accepted_on_its_own_topic_and_on_uploads() -> None:
    topic_of = {"35": "inventory", "21": "settlements", "22": "settlements", "71": "prescriptions",
                "A0": "prescriptions"}
    for path in sorted(FIXTURES.glob("*.json")):
        for stream in (None, topic_of[path.stem[:2]]):
            items, _ = decode(path.stem, stream)
            assert not [i for i in items if isinstance(i, InvalidRecord)], (path.name, stream, items)


def test_unknown_infno_and_unplaceable_parts_name_the_part() -> None:
    codec = Codec()
    q: Counter[str] = Counter()
    (bad,) = codec.decode(None, json.dumps({"infno": "9999", "input": {"data": {}}}).encode(), q)
    assert isinstance(bad, InvalidRecord) and "unknown infno '9999'" in bad.reason
    env = json.loads((FIXTURES / "3505A.json").read_text())
    env["input"]["selinfoDetail"][1]["sel_retn_time"] = "1620784800"  # epoch seconds: refused
    items = codec.decode("inventory", json.dumps(env).encode(), q)
    assert kinds(items) == ["SaleMovement", "InvalidRecord"]
    assert items[1].index == 1 and "input.selinfo_detail[1]" in items[1].reason
    assert "epoch seconds are not accepted" in items[1].reason
    (bad,) = codec.decode(None, b'{"infno":"3505","input":{"selinfo":"[{\\"med_list_codg\\""}}', q)
    assert isinstance(bad, InvalidRecord) and "input.selinfo" in bad.reason and "JSON" in bad.reason
    (bad,) = codec.decode(None, b'{"infno":"3505","input":{"memo":"x"}}', q)
    assert "no business node" in bad.reason


def test_3507_becomes_a_retraction_not_dropped() -> None:
    env = {"infno": "3507", "fixmedins_code": "P42070200001", "input": {"data": {"fixmedins_bchno": "B0001",
                                                                                 "inv_data_type": 4}}}
    (item,) = Codec().decode(None, json.dumps(env).encode(), Counter())
    assert isinstance(item, Retraction) and (item.fixmedins_bchno, item.inv_data_type) == ("B0001", "4")


def test_wrappers_of_one_integration_every_35xx_under_purcinfo() -> None:
    env = json.loads((FIXTURES / "3505.json").read_text())
    env["input"] = {"purcinfo": [env["input"]["selinfo"]]}
    items = Codec().decode(None, json.dumps(env).encode(), Counter())
    assert kinds(items) == ["SaleMovement", "TraceScan", "TraceScan"]


def test_pack_alias_table_adds_regional_names() -> None:
    env = json.loads((FIXTURES / "2102.json").read_text())
    env["output"]["setlinfo"]["hifp_pay_amt"] = env["output"]["setlinfo"].pop("hifp_pay")
    (bad,) = Codec().decode(None, json.dumps(env).encode(), Counter())
    assert isinstance(bad, InvalidRecord) and "hifp_pay" in bad.reason
    (good,) = Codec({"hifp_pay_amt": "hifp_pay"}).decode(None, json.dumps(env).encode(), Counter())
    assert isinstance(good, EnvelopeSettlement) and good.settlement.hifp_pay == 0


# -------------------------------------------------------------------------------------------- scalars
@pytest.mark.parametrize("value, expect, date_only", [
    ("2021-05-12 10:00:00", "2021-05-12 10:00:00", False),
    ("20210512100000", "2021-05-12 10:00:00", False),
    ("2021-05-12T02:00:00Z", "2021-05-12 10:00:00", False),
    ("2021-05-12T10:00:00+08:00", "2021-05-12 10:00:00", False),
    (1620784800000, "2021-05-12 10:00:00", False),
    ("1620784800000", "2021-05-12 10:00:00", False),
    ("/Date(1620784800000+0800)/", "2021-05-12 10:00:00", False),
    ("2021/05/12 10:00:00", "2021-05-12 10:00:00", False),
    ("2021-05-12", "2021-05-12 00:00:00", True),
    ("20210512", "2021-05-12 00:00:00", True),
])
def test_time_formats(value: Any, expect: str, date_only: bool) -> None:
    assert to_time(value) == (t(expect), date_only)


@pytest.mark.parametrize("value", ["1620784800", 1620784800, "202105121000", "2021-13-01 00:00:00", "soon", True])
def test_times_that_would_need_a_guess_are_refused(value: Any) -> None:
    with pytest.raises(ScalarError):
        to_time(value)

"""Evidence tables (issue 18 §2): one row per sample record the detector kept, the alert's facts in each
row, the other institution of a repeated trace code, totals; personal fields masked, never in clear."""

from __future__ import annotations

from decimal import Decimal

from monitor.inspect.evidence import evidence_table, parse_reference
from monitor.inspect.model import mask_evidence


def test_references_split_into_columns() -> None:
    assert parse_reference("setl_id=S1;med_list_codg=XA01") == {"setl_id": "S1", "med_list_codg": "XA01"}
    assert parse_reference("3505:DOC-9") == {"infno": "3505", "ref": "DOC-9"}
    assert parse_reference("doc:R-1") == {"doc": "R-1"}
    assert parse_reference("drug_trac_codg=81356355000000000049") == {"drug_trac_codg": "81356355000000000049"}
    assert parse_reference("S1;packs=2;codes=1") == {"ref": "S1", "packs": "2", "codes": "1"}


def test_dual_price_rows_are_the_sample_records_with_drug_and_prices() -> None:
    ev = {"business_date": "2026-01-05", "med_list_codg": "XA01", "split_pack": False,
          "insured_unit_price": "12.50", "selfpay_unit_price": "10.00", "overcharge": "7.50",
          "sample_records": ["setl_id=S1", "setl_id=S2", "doc:R-3"]}
    tab = evidence_table("price.dual", ev, "P1", Decimal("7.50"))
    assert [r["record"] for r in tab.rows] == ev["sample_records"]
    assert [r.get("setl_id") for r in tab.rows] == ["S1", "S2", None] and tab.rows[2]["doc"] == "R-3"
    assert all(r["med_list_codg"] == "XA01" and r["insured_unit_price"] == "12.50" for r in tab.rows)
    assert {c.key for c in tab.columns} >= {"setl_id", "doc", "med_list_codg", "insured_unit_price"}
    assert next(c for c in tab.columns if c.key == "setl_id").zh == "结算流水号"
    assert tab.amount == "7.50"
    assert {f["key"] for f in tab.facts} == {"business_date", "med_list_codg", "split_pack", "insured_unit_price",
                                             "selfpay_unit_price", "overcharge"}


def test_a_repeated_trace_code_shows_both_sales_and_the_other_institution() -> None:
    ev = {"drug_trac_codg": "81356355000000000049", "cross_institution": True,
          "first_sale": {"fixmedins_code": "P2", "scan_time": "2026-01-03T10:00:00+08:00"},
          "later_sale": {"fixmedins_code": "P1", "scan_time": "2026-01-05T09:00:00+08:00", "rtal_docno": "R9"}}
    tab = evidence_table("trace.duplicate", ev, "P1")
    assert len(tab.rows) == 2
    first, later = tab.rows
    assert first["other_institution"] == "P2" and "other_institution" not in later
    assert later["rtal_docno"] == "R9" and first["drug_trac_codg"] == ev["drug_trac_codg"]


def test_counts_beyond_the_samples_are_the_total() -> None:
    ev = {"business_date": "2026-01-05", "records": 97, "late": 28,
          "sample_records": ["setl_id=S1", "3505:DOC-2", "drug_trac_codg=81356"]}
    tab = evidence_table("upload.late", ev, "P1")
    assert len(tab.rows) == 3 and tab.records_total == 28 and tab.amount is None


def test_people_in_evidence_are_masked_in_the_table() -> None:
    raw = {"business_date": "2026-01-05", "psn_name": "王小明", "certno": "420704199001011234",
           "psn_no": "42000000000000000012",
           "sample_records": ["setl_id=S1;psn=psn:ab12cd34", "note 420704199001011234"]}
    tab = evidence_table("benefit.overpaid", mask_evidence(raw), "P1")
    text = repr(tab.model_dump())
    assert "王小明" not in text and "420704199001011234" not in text and "42000000000000000012" not in text
    assert "psn:ab12cd34" in text  # the pseudonymous token stays: it links the records of one person
    assert len(tab.rows) == 2

"""Evidence as tables (issue 18 §2): the records that prove an alert, one row per sample record.

Detectors keep, per alert, short references to the records behind it (``sample_records``,
``sample_unmatched``, ``sample_uncovered``, ``sample_short``, ``sample_record``; the two sales of a
repeated trace code as ``first_sale`` / ``later_sale``) and the alert's facts (day, drug, prices,
counts). ``evidence_table`` turns that into:

* ``rows`` — exactly one row per sample record, in the detector's order, each keeping the reference
  as written (``record``) and its parts as columns (``setl_id=…;med_list_codg=…`` → two columns;
  ``3505:DOC`` → interface and document; ``doc:…`` → document). Facts the alert states once for all
  its records (business date, drug, unit price) fill the rows that lack them, so a row reads as a record;
* ``facts`` — the remaining scalar facts of the evidence, labelled;
* totals — the alert's amount (``vola_amt``) and, where the evidence counts them, how many records the
  alert covers beyond the samples shown (``records_total``).

Input is evidence already masked (``mask_evidence``): person fields are tokens or masked, never clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from monitor.inspect.names import field_name

SAMPLE_LISTS = ("sample_records", "sample_unmatched", "sample_uncovered", "sample_short")
#: facts copied into each row that lacks them, per rule family (the part of the id before the dot)
ROW_CONTEXT: dict[str, tuple[str, ...]] = {
    "price": ("business_date", "med_list_codg", "insured_unit_price", "unit_price", "selfpay_unit_price",
              "listed_price", "modal_price", "quantity"),
    "upload": ("business_date",),
    "data": ("business_date",),
    "trace": ("business_date", "drug_trac_codg"),
    "rx": ("business_date",),
    "status": ("business_date", "hifp_pay"),
    "benefit": ("business_date",),
    "tier": ("business_date",),
}
#: evidence keys whose value counts the records an alert covers (shown as "of N")
COUNT_KEYS = ("late", "unmatched", "uncovered", "short_sales", "settlements")


class EvidenceColumn(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    zh: str
    en: str


class EvidenceTable(BaseModel):
    """The evidence of one alert as a table (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    family: str
    columns: list[EvidenceColumn]
    rows: list[dict[str, str]]
    facts: list[dict[str, str]]
    amount: str | None = None
    records_total: int | None = None


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "是 yes" if value else "否 no"
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def parse_reference(ref: str) -> dict[str, str]:
    """Columns of one sample reference: ``k=v`` parts split on ``;``, ``doc:X`` → ``doc``, ``3505:X``
    (an interface number and a document) → ``infno``, ``ref``; anything else → ``ref``."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in ref.split(";")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if eq and key.replace("_", "").isalnum():
            out[key] = value
            continue
        head, colon, rest = part.partition(":")
        if colon and head == "doc":
            out["doc"] = rest
        elif colon and head.isdigit():
            out["infno"], out["ref"] = head, rest
        else:
            out.setdefault("ref", part)
    return out


def _sale_row(label: str, sale: Mapping[str, Any], own_code: str) -> dict[str, str]:
    row = {"sale": label, **{k: _text(v) for k, v in sale.items()}}
    code = str(sale.get("fixmedins_code", ""))
    if code and code != own_code:
        row["other_institution"] = code
    return row


def evidence_table(rule_id: str, evidence: Mapping[str, Any], own_code: str,
                   amount: Decimal | None = None) -> EvidenceTable:
    """The table of one alert's (masked) evidence; ``own_code`` is the alerted institution (a sale at
    another institution fills "other institution")."""
    family = rule_id.split(".", 1)[0]
    rows: list[dict[str, str]] = []
    used: set[str] = set()
    for key in SAMPLE_LISTS:
        samples = evidence.get(key)
        if isinstance(samples, list):
            used.add(key)
            for ref in samples:
                rows.append({"record": _text(ref), **parse_reference(_text(ref))})
    single = evidence.get("sample_record")
    if isinstance(single, str):
        used.add("sample_record")
        rows.append({"record": single, **parse_reference(single)})
    if isinstance(evidence.get("first_sale"), Mapping) and isinstance(evidence.get("later_sale"), Mapping):
        used.update(("first_sale", "later_sale"))
        for label, key in (("首次销售 first", "first_sale"), ("再次销售 repeat", "later_sale")):
            sale = evidence[key]
            ref = ";".join(f"{k}={v}" for k, v in sale.items())
            rows.append({"record": ref, **_sale_row(label, sale, own_code)})
    context = [k for k in ROW_CONTEXT.get(family, ("business_date",)) if evidence.get(k) is not None]
    for row in rows:
        for key in context:
            row.setdefault(key, _text(evidence[key]))
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key != "record" and key not in columns:
                columns.append(key)
    facts = []
    for key, value in sorted(evidence.items()):  # key order: the same from every store (ClickHouse sorts)
        if key in used:
            continue
        name = field_name(key)
        facts.append({"key": key, "zh": name.zh, "en": name.en, "value": _text(value)})
    total = next((evidence[k] for k in COUNT_KEYS if isinstance(evidence.get(k), int)), None)
    return EvidenceTable(
        family=family,
        columns=[EvidenceColumn(key=c, zh=field_name(c).zh, en=field_name(c).en) for c in columns],
        rows=rows, facts=facts, amount=str(amount) if amount else None, records_total=total,
    )

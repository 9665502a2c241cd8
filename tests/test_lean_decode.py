"""The lean decode (``monitor.lean``, issue #16) against the pydantic models it is generated from.

Every value must give exactly what the models give: the same record instances (type, fields, fields
set) or the same dead-letter reasons; the lean path only reads plain NHSA text and leaves the rest to
the models. The simulated city must take the lean path (else it would be a silent no-op).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.records import _LEAN, STREAMS, InvalidRecord, parse_value, parse_value_with_models
from monitor.simulate import SimConfig, simulate
from tests.builders import drug, finding, institution, sale, settlement


def _same(stream: str, raw: bytes) -> None:
    lean, models = parse_value(stream, raw), parse_value_with_models(stream, raw)
    assert [type(x) for x in lean] == [type(x) for x in models], raw
    for a, b in zip(lean, models, strict=True):
        if isinstance(b, InvalidRecord):
            assert a == b
        else:
            assert a.__getstate__() == b.__getstate__(), raw
            assert repr(a) == repr(b)


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lean-city")
    simulate(SimConfig(out=out, days=8, seed=5, institutions=12, scale=0.05))
    return out


def test_the_simulated_city_takes_the_lean_path_and_gives_the_models_records(city: Path) -> None:
    seen = 0
    for stream in STREAMS:
        path = city / f"{stream}.jsonl"
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            if not raw.strip():
                continue
            assert _LEAN[stream].decode(raw) is not None, raw  # plain NHSA text: no fallback
            _same(stream, raw)
            seen += 1
    assert seen > 1000


def _variants() -> list[tuple[str, Any]]:
    base = settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:05:00")
    out: list[tuple[str, Any]] = []

    def over(stream: str, rec: dict[str, Any], **fields: Any) -> None:
        out.append((stream, {**rec, **fields}))

    for amount in ("9999999999.99", "10000000000", "-10000000000.01", "1e30", "1E+999999999", "NaN", "Infinity",
                   " 1.50", "1_0", "\u0661\u0662", "+1.0", "1.", ".5", "0.000000000000000000000001", 12.5, 7,
                   True, None, "31.989999999999995", "007.50"):
        over("settlements", base, medfee_sumamt=amount)
    for t in ("2026-03-02T10:00:00", "20260302100000", "1772416800000", "2026-03-02", "1989-12-31 23:59:59",
              "2100-01-01 00:00:00", "2099-12-31 23:59:59", "1990-01-01 00:00:00", "2026-02-30 10:00:00",
              "2026-03-02 24:00:00", "2026-03-02 10:00:00+08:00", "2026-03-02 10:00:00\n", 1772416800,
              "\uff12026-03-02 10:00:00", None):
        over("settlements", base, setl_time=t)
        over("settlements", base, inf_time=t)
    for code in (" P1", "P1 ", "P1\u3000", "\u3000P1", "", "P" * 64, "P" * 65, 42, "药房1", "P\n1", "P1\x1f"):
        over("settlements", base, fixmedins_code=code)
    line = base["drugdetail"][0]
    for cnt in ("0", "0.0", "-1", "100000000", "99999999.9999", "1", 1):
        over("settlements", base, drugdetail=[{**line, "cnt": cnt}])
    over("settlements", base, drugdetail=[])
    over("settlements", base, drugdetail=[{**line, "rx_flag": "3"}])
    over("settlements", base, setl_status="open")
    over("settlements", base, extra_field={"a": [1, 2, {"b": None}]})
    over("settlements", base, psn_no=None)
    over("settlements", base, certno=None)  # an explicit null: in the fields set, as pydantic has it
    mv = sale("B1", "2026-03-02 10:00:00", "2026-03-02 10:01:00")
    for infno in ("3501", "3502", "3503", "3504", "3505", "3506", "3507", 3505, None):
        over("inventory", mv, infno=infno)
    over("inventory", {**mv, "infno": "3502", "inv_chg_time": "2026-03-02 10:00:00", "cnt": "2"},
         inv_chg_type="101")
    over("inventory", {**mv, "infno": "3502", "inv_chg_time": "2026-03-02 10:00:00", "cnt": "2"},
         inv_chg_type="999")
    over("inventory", {**mv, "infno": "3501", "invdate": "2026-03-01", "inv_cnt": "5"}, invdate="1989-12-31")
    scan = {"drug_trac_codg": "81023757000000000062", "fixmedins_code": "P1", "med_list_codg": "X1",
            "scan_kind": "sale", "trdn_flag": "0", "scan_time": "2026-03-02 10:00:00", "rtal_docno": "R1"}
    for trace in ("8102-3757", "８１０２", "A" * 100, "A" * 101, " 81023757", ""):
        over("tracecodes", scan, drug_trac_codg=trace)
    over("tracecodes", scan, rtal_docno="")
    over("tracecodes", scan, rtal_docno=None)
    over("tracecodes", scan, scan_kind="stock_in", rtal_docno=None)
    rx = {"hi_rxno": "RX1", "hosp_rxno": "H1", "fixmedins_code": "P1", "psn_no": "4207", "prsc_time":
          "2026-03-02 09:00:00", "valid_end_time": "2026-03-05 09:00:00", "rx_status": "uploaded",
          "rxdrugdetail": [{"med_list_codg": "X1", "drug_cnt": "2", "medc_days": 5}]}
    for days in (5, 7.5, "5", -1, 36500, 36501, True):
        over("prescriptions", rx, rxdrugdetail=[{"med_list_codg": "X1", "drug_cnt": "2", "medc_days": days}])
    out.append(("institutions", institution()))
    out.append(("institutions", institution(outpatient_pooling="true")))
    out.append(("institutions", institution(agreement_end="2100-01-01")))
    out.append(("drugs", drug()))
    out.append(("drugs", drug(listed_price=None, high_value=True)))
    out.append(("findings", finding("F1", "complaint_verified", "2026-03-02 10:00:00")))
    out.append(("findings", finding("F1", "not_a_kind", "2026-03-02 10:00:00")))
    return out


@pytest.mark.parametrize(("stream", "value"), _variants())
def test_edge_values_give_what_the_models_give(stream: str, value: Any) -> None:
    _same(stream, _line(value))


@pytest.mark.parametrize("raw", [
    b'{"setl_id":"S1","setl_id":"S2"}',
    b"[]",
    b"[1, 2]",
    b'"text"',
    b"{" + b'"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"setl_id":"\xff"}',
    b'{"setl_id":"\\ud800"}',
    b"\xef\xbb\xbf{}",
    b"   ",
])
def test_odd_json_gives_what_the_models_give(raw: bytes) -> None:
    _same("settlements", raw)


def test_arrays_take_the_lean_path_only_whole() -> None:
    good = settlement("S1", "2026-03-02 10:00:00", "2026-03-02 10:05:00")
    raw = _line([good, {**good, "setl_id": "S2"}])
    assert _LEAN["settlements"].decode(raw) is not None
    _same("settlements", raw)
    mixed = _line([good, {**good, "medfee_sumamt": "1e30"}, {**good, "setl_time": "20260302100000"}])
    assert _LEAN["settlements"].decode(mixed) is None  # one element it does not read: all go to the models
    _same("settlements", mixed)

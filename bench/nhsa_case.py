"""Decode cost of platform envelopes vs flat records (issue #13), same city, same run.

The simulated city-month (``bench.gen.simulated_city_month``) is written a second time as platform
messages (``monitor.simulate.nhsa_writer``); each run times the shells' decode step
(``monitor.nhsa.Codec.decode``, what replay and the worker call per line/message) over every
business line of each form, and ``records.parse_value`` over the flat lines (the pre-codec path).
All three are divided by the same number: the city's flat business records, so the figures are µs
per record of the city whatever the message shape (a 2204 + 2207 pair or an envelope carrying a
movement and its trace codes counts the records it carries).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from monitor.nhsa.codec import Codec
from monitor.records import parse_value

BUSINESS = ("settlements", "inventory", "tracecodes", "prescriptions")


def _lines(folder: Path) -> list[tuple[str, bytes]]:
    out = []
    for stream in BUSINESS:
        path = folder / f"{stream}.jsonl"
        if path.exists():
            out.extend((stream, line.rstrip(b"\n")) for line in path.open("rb") if line.strip())
    return out


def prepare(flat: Path) -> Path:
    from monitor.simulate.nhsa_writer import write_nhsa

    nhsa = flat.with_name(flat.name + "-nhsa")
    if not (nhsa / "settlements.jsonl").exists():
        write_nhsa(flat, nhsa, 7)
    return nhsa


def measure(flat: Path, nhsa: Path) -> dict[str, float]:
    """µs per flat business record: codec on flat lines, codec on envelopes, parse_value on flat."""
    flat_lines, nhsa_lines = _lines(flat), _lines(nhsa)
    records = len(flat_lines)
    codec = Codec()
    quality: Counter[str] = Counter()
    out: dict[str, float] = {"records": float(records), "messages": float(len(nhsa_lines))}
    for name, lines, fn in (
        ("flat", flat_lines, lambda s, raw: codec.decode(s, raw, quality)),
        ("nhsa", nhsa_lines, lambda s, raw: codec.decode(s, raw, quality)),
        ("parse_value", flat_lines, parse_value),
    ):
        began = time.process_time()
        for stream, raw in lines:
            fn(stream, raw)
        out[name] = (time.process_time() - began) / records * 1e6
    return out

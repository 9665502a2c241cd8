"""One intake for both shells (issue #14 point 4): what turns bytes into what the engine sees.

``monitor replay`` (files) and ``monitor worker`` (Kafka) each move bytes their own way — lines of a file,
messages of a partition — and both hand every value to this module's rules:

* **parse → dead letter**: ``decoder(engine)`` is the one ``(stream, raw) → records | InvalidRecord``
  (the pack's NHSA codec over ``records.parse_value`` and its lean path, ``monitor.lean``; the Kafka
  shell adds the trace tier's findings); every ``InvalidRecord`` becomes ``dead_letter(...)``: the reason,
  the value's position (file line, or topic/partition/offset/key; the element's index in an array), a
  bounded copy with personal fields masked and its SHA-256 (``ValueCopy``), never the raw bytes
  (those go to the operator's quarantine folder only);
* **the one clock-skew rule and its one setting**: ``new_clock(pack, quorum)`` — the
  ``monitor.watermark.EventClock`` with tolerance = the pack's ``max_clock_skew_minutes`` and quorum =
  ``MONITOR_CLOCK_QUORUM``; ``claim_source(rec)`` names whose clock made a claim; registry records
  (``REGISTRY_STREAMS``) never pass the clock and never move time. Before the clock, each shell holds a
  claim against what its own transport shows about when the value was sent — replay: the earliest of the
  next ``LOOKAHEAD`` lines of the same file (files are written in upload order); worker: the message's
  Kafka timestamp — with the **same tolerance** (``ahead_of_transport``): a claim further ahead is
  clamped to that evidence and counted as ``<stream>.clock_skew``. (The worker used a setting of its own
  for this, ``MONITOR_CLOCK_SKEW_SECONDS`` = 300 s; it is gone: one setting, the pack's.)
* **the arrival merge key**: ``arrival_key(arrival, rank, *position)`` — arrival time first, then the
  stream's rank (replay: the file's place in ``input_files``, which follows ``records.STREAMS``; worker:
  ``STREAM_ORDER`` of the record's stream), then the position inside its source (replay: the line;
  worker: producer sequence, partition, offset, index). Smaller goes first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.nhsa import stream_decoder
from monitor.outputs import DeadLetter
from monitor.policy.pack import Pack
from monitor.privacy import mask_certno, mask_name
from monitor.sinks.files import Quarantine
from monitor.watermark import DEFAULT_QUORUM, EventClock

#: Streams applied outside the event clock in both shells: registry records never move time.
REGISTRY_STREAMS = frozenset({"institutions", "drugs"})
#: Both shells' garbage-collector thresholds (``gc.set_threshold``: the worker process's, the replay's while
#: it runs): the shell and the engine hold many small long-lived objects (queued records, rule state), and
#: with CPython's default (a young collection every 700 allocations, a full one over everything every
#: ≈ 70 000) collections cost the Kafka shell ≈ 9 µs per record (``bench.worker_overhead``) and the replay's
#: parse about half its time (``bench.replay_case.stages``).
GC_THRESHOLDS = (50_000, 20, 50)


def decoder(engine: Any) -> Any:
    """The ``(stream, raw) → list of records or InvalidRecord`` of both shells (module docstring)."""
    return stream_decoder(engine)


def new_clock(pack: Pack, quorum: int = DEFAULT_QUORUM) -> EventClock[Any]:
    """The event clock of both shells: tolerance = the pack's ``max_clock_skew_minutes`` (the one
    setting of the clock-skew rule), quorum = ``MONITOR_CLOCK_QUORUM``."""
    return EventClock(timedelta(minutes=float(pack.setting("max_clock_skew_minutes", 60))), quorum=quorum)


def claim_source(rec: Any) -> str:
    """Whose clock made a record's arrival claim: its institution (else its stream)."""
    code = getattr(rec, "fixmedins_code", None)
    if code is None:
        inner = getattr(rec, "settlement", None)
        code = getattr(inner, "fixmedins_code", None)
    return code if isinstance(code, str) and code else rec.STREAM


def ahead_of_transport(claim: datetime, evidence: datetime, tolerance: timedelta) -> bool:
    """A claim more than ``tolerance`` ahead of what the transport shows (module docstring): clamp it."""
    return claim - evidence > tolerance


def arrival_key(arrival: datetime, rank: int, *position: int) -> tuple[Any, ...]:
    """The arrival-order merge key of both shells (module docstring)."""
    return (arrival, rank, *position)


#: Bytes of a dead-lettered value kept in the dead letter (the rest is named by its SHA-256).
DEAD_LETTER_PREFIX_BYTES = 1024
#: Personal fields masked in dead-letter copies (design §6; notes/nhsa-fields.md).
_PERSONAL_FIELDS = ("certno", "psn_no", "psn_name", "mdtrt_cert_no", "psn_cert_no", "tel", "addr")
_FIELD_RE = re.compile(rb'("(?:' + b"|".join(f.encode() for f in _PERSONAL_FIELDS) + rb')"\s*:\s*)("?)([^",}\]]*)')
#: A citizen ID number (15 or 18 characters) anywhere, even under a wrong key or cut by the prefix.
_ID_RE = re.compile(rb"(?<![0-9A-Za-z])\d{14}(?:\d{3}[0-9Xx]|\d)?(?![0-9A-Za-z])")


def _mask_value(field: bytes, value: bytes) -> bytes:
    """The mask of one field value as it stands in JSON text (escapes decoded first; the result stays
    valid JSON string content)."""
    try:
        text = json.loads(b'"' + value + b'"')
    except ValueError:
        text = value.decode("utf-8", "replace").replace("\\", "")
    if not isinstance(text, str):
        text = str(text)
    if field == b"certno" or field.endswith(b"cert_no"):
        masked = mask_certno(text) or ""
    elif field == b"psn_name":
        masked = mask_name(text) or ""
    else:
        masked = "***" if text else ""
    return json.dumps(masked, ensure_ascii=False)[1:-1].encode("utf-8")


def mask_personal(raw: bytes) -> bytes:
    """Personal fields of a (possibly invalid or cut) JSON value replaced by masks, ID numbers masked."""
    def field(m: re.Match[bytes]) -> bytes:
        name = m.group(1).split(b'"')[1]
        masked = _mask_value(name, m.group(3))
        return m.group(1) + (m.group(2) + masked if m.group(2) else b'"' + masked + b'"')  # a number → a string

    out = _FIELD_RE.sub(field, raw)
    return _ID_RE.sub(lambda m: m.group(0)[:4] + b"*" * (len(m.group(0)) - 6) + m.group(0)[-2:], out)


@dataclass(frozen=True)
class ValueCopy:
    """The one bounded, masked copy of a dead-lettered value that all its dead letters share."""

    text: str | None
    b64: str | None
    sha256: str
    size: int
    truncated: bool
    quarantined: bool = False

    @classmethod
    def of(cls, raw: bytes, quarantine: Quarantine | None = None) -> ValueCopy:
        digest = hashlib.sha256(raw).hexdigest()
        head = raw[:DEAD_LETTER_PREFIX_BYTES + 64]  # a margin so that a field cut at the edge is still masked
        masked = mask_personal(head)[:DEAD_LETTER_PREFIX_BYTES]
        if _is_utf8(raw):  # masks are UTF-8 too: only a character cut by the prefix can be dropped
            text: str | None = masked.decode("utf-8", "ignore")
            b64 = None
        else:
            text, b64 = None, base64.b64encode(masked).decode("ascii")
        kept = quarantine.keep(digest, raw) if quarantine is not None else False
        return cls(text, b64, digest, len(raw), len(raw) > len(masked), kept)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def dead_letter(source: str, raw: bytes, error: str, *, line: int | None = None, index: int | None = None,
                partition: int | None = None, offset: int | None = None, key: str | None = None,
                copy: ValueCopy | None = None, first: bool = True) -> DeadLetter:
    """A dead letter with a bounded, masked copy of the value (text when UTF-8, else base64) and its
    SHA-256. Pass the value's ``copy`` to share it; ``first=False`` leaves the prefix to the first letter."""
    copy = copy or ValueCopy.of(raw)
    return DeadLetter(source=source, line=line, index=index, partition=partition, offset=offset, key=key,
                      value=copy.text if first else None, value_b64=copy.b64 if first else None,
                      value_sha256=copy.sha256, value_bytes=copy.size, value_truncated=copy.truncated,
                      quarantined=copy.quarantined, error=error)

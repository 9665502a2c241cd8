"""``monitor replay ROOT`` over several cities (one folder per city): both tiers in-process.

1. The trace tier reads every city's ``tracecodes.jsonl``, merged in arrival order (``inf_time``, else
   ``scan_time``; ties by city folder name, then line), through the intake clock (``monitor.trace.forward``:
   a future claim is held until ``quorum`` institutions agree, else clamped; ``as_of`` vouches at the end)
   and the same pure stages as the Faust trace-worker (``monitor.trace.rules``) →
   ``ROOT_OUT/trace_findings.jsonl`` (sorted by id). With ``--jobs N`` the clock's pass stays one, the
   stages' work is split over N processes by product identifier (``tier_part``).
2. Each city is replayed into ``ROOT_OUT/<city>/`` with its own engine; the findings charging one of
   its institutions (by region) are raised at their ``detected_at``, between its records, as the city
   worker raises them from ``monitor.trace_findings``; its ``trace.duplicate`` leaves cross-institution
   repeats to ``trace.resold``.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.clock import parse_time
from monitor.engine import Engine, Output
from monitor.policy.pack import Pack
from monitor.records import TraceScan, parse_value
from monitor.trace.city import apply_finding, without_cross_duplicates
from monitor.trace.forward import Pending, ScanClock
from monitor.trace.rules import _DUE, InProcessTier, Scan, TraceParams, scan_from_record, secs_of
from monitor.watermark import DEFAULT_QUORUM


def city_dirs(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that hold input files (one per city), by name."""
    from monitor.replay import input_files

    return sorted(p for p in root.iterdir() if p.is_dir() and input_files(p))


def _scans(path: Path, city: int) -> Iterator[tuple[int, int, int, str, Scan]]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            for item in parse_value("tracecodes", line.rstrip(b"\r\n")):
                if isinstance(item, TraceScan):  # invalid lines are the city replay's dead letters
                    scan = scan_from_record(item)
                    yield scan.arrival, city, line_no, item.drug_trac_codg, scan


def trace_findings(dirs: list[Path], params: TraceParams, as_of: datetime | None = None,
                   homes: dict[str, int] | None = None, quorum: int = DEFAULT_QUORUM,
                   jobs: int = 1) -> list[dict[str, Any]]:
    """The trace tier over several cities' trace scans, in-process (sorted by finding id). ``homes``,
    when given, is filled with each institution's city (index into ``dirs``); ``quorum`` is
    ``MONITOR_CLOCK_QUORUM`` (``monitor.trace.forward``).

    The intake clock's release decisions need the whole merged stream and are made in one pass here;
    the stages' work is then split over ``jobs`` processes by the hash of the code's product identifier
    (a code's history and its product's votes stay in one part, as the Kafka tier partitions by key),
    each part following the whole stream's event time (``tier_part``). The findings do not depend on
    ``jobs``."""
    intake = ScanClock(params.skew, quorum)
    released: list[Pending] = []
    merged = heapq.merge(*(_scans(d / "tracecodes.jsonl", i) for i, d in enumerate(dirs)))
    for _, city, _, code, scan in merged:
        if homes is not None:
            homes.setdefault(scan.inst, city)
        released.extend(intake.offer(None, code, scan))
    released.extend(intake.close(secs_of(as_of) if as_of is not None else None))
    parts = max(1, jobs)
    from monitor.replay import fan_out

    def task(k: int) -> Callable[[], list[dict[str, Any]]]:
        return lambda: tier_part(released, params, as_of, k, parts)

    found: dict[str, dict[str, Any]] = {}
    for part in fan_out([task(k) for k in range(parts)], parts):
        for f in part:
            found.setdefault(f["finding_id"], f)
    return [found[k] for k in sorted(found)]


def tier_part(released: list[Pending], params: TraceParams, as_of: datetime | None, part: int,
              parts: int) -> list[dict[str, Any]]:
    """The findings of the codes whose product identifier hashes (CRC-32) to ``part`` of ``parts``, over
    the intake's whole ``released`` stream: every scan moves the part's event time, but a scan of another
    part only fires the part's due judgments where the one-process tier would have swept its codes
    (``CodeStage.maybe_sweep``); the rest fire just before the part's next own scan, at the same event
    time and over the same histories (nothing of the part changes in between), so each finding is the
    one the whole tier makes. With ``parts`` = 1 it is the whole tier, scan by scan."""
    tier = InProcessTier(params)
    codes, products = tier.codes, tier.products
    digits = params.prefix_digits
    every = params.sweep_every
    own: dict[str, bool] = {}
    found: list[dict[str, Any]] = []
    for p in released:
        code = p.code
        mine = own.get(code)
        if mine is None:
            mine = own[code] = parts == 1 or zlib.crc32(code[:digits].encode()) % parts == part
        if mine:
            found.extend(_overdue(codes))
            found.extend(_overdue(products))
            found.extend(tier.on_scan(code, p.scan))
            continue
        codes.clock.observe("replay", p.scan.arrival)
        products.clock.observe("replay", p.scan.arrival)
        wm = codes.watermark()
        if wm is not None and (codes.last_sweep is None or wm - codes.last_sweep >= every):
            found.extend(codes._after(None))  # the one-process tier sweeps here: fire what is due first
    if as_of is not None:
        found.extend(tier.advance_to(secs_of(as_of)))
    else:
        found.extend(codes._after(None))
        found.extend(products._after(None))
    return found


def _overdue(stage: Any) -> list[dict[str, Any]]:
    """The findings of ``stage``'s judgments due before its event time (fired, in due order), else none."""
    if stage.due and int(_DUE.unpack_from(stage.due[0], 0)[0]) < (stage.watermark() or 0):
        return list(stage._after(None))
    return []


def feed_for(engine_ref: Callable[[], Engine], findings: list[dict[str, Any]]
             ) -> Iterator[tuple[datetime, Callable[[], list[Output]]]]:
    """(detected_at, raise it) for each finding, in detected_at order (``run_replay``'s ``interleave``)."""
    def raiser(finding: dict[str, Any]) -> Callable[[], list[Output]]:
        return lambda: apply_finding(engine_ref(), finding)

    for f in sorted(findings, key=lambda f: (f["detected_at"], f["finding_id"])):
        yield parse_time(f["detected_at"]), raiser(f)


def replay_cities(root: Path, out_dir: Path, pack: Pack, as_of: datetime | None = None, jobs: int = 1,
                  **replay_kwargs: Any) -> dict[str, Any]:
    """The whole multi-city job; returns a summary (per city and the trace tier's counts). ``jobs``: the
    cities' replays run in that many processes (``monitor.replay.fan_out``) after the trace tier, whose
    intake clock reads every city's scans in one pass (its rules span cities) and whose stages run in
    that many parts (``trace_findings``); outputs do not depend on it."""
    from monitor.replay import fan_out, input_files, replay_dir

    dirs = city_dirs(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = TraceParams.from_pack(pack)
    homes: dict[str, int] = {}
    findings = trace_findings(dirs, params, as_of, homes, quorum=replay_kwargs.get("quorum", DEFAULT_QUORUM),
                              jobs=jobs)
    with (out_dir / "trace_findings.jsonl").open("w", encoding="utf-8") as fh:
        for f in findings:
            fh.write(json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n")
    city_pack = without_cross_duplicates(pack)
    summary: dict[str, Any] = {"trace_findings": len(findings), "cities": {}}
    if jobs > 1:
        replay_kwargs["progress"] = False  # several processes would draw over each other's line

    def city(i: int, d: Path) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            mine = [f for f in findings if homes.get(f["fixmedins_code"]) == i]
            return replay_dir(d, out_dir / d.name, city_pack, as_of=as_of, trace_findings=mine,
                              **replay_kwargs).summary()
        return run

    # Each city's replay reads only its own folder and the findings above, and writes only OUT/<city>/:
    # in parallel (--jobs) the files are the same as one after the other.
    sizes = [float(sum(p.stat().st_size for p in input_files(d))) for d in dirs]
    for d, result in zip(dirs, fan_out([city(i, d) for i, d in enumerate(dirs)], jobs, sizes), strict=True):
        summary["cities"][d.name] = result
    return summary

"""``python -m bench.digest WORK [--jobs N]``: SHA-256 of every output of three simulated cities.

Issue #16's "outputs byte-identical before and after": simulate three cities (``monitor.simulate``,
seeds 1–3, cached in ``WORK/cities``), replay each alone (``monitor replay CITY --as-of END``) and the three
together as one multi-city input (the national trace tier, ``--jobs N``), then print one JSON object
``{output path: sha256}``. Run it with the code before and after a change (e.g. ``PYTHONPATH=OTHER_TREE``)
and compare the two objects; ``summary.json`` is included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from monitor.clock import parse_time
from monitor.policy.pack import load_pack
from monitor.privacy import Pseudonymizer

#: Small enough for a few minutes on a shared core, large enough that every ezhou rule fires.
CITIES = {"city1": 1, "city2": 2, "city3": 3}
KEY = b"bench-digest-key-0123456789abcdef"


def _cities(work: Path) -> Path:
    from monitor.simulate import SimConfig, simulate

    root = work / "cities"
    for name, seed in CITIES.items():
        if not (root / name / "settlements.jsonl").exists():
            simulate(SimConfig(out=root / name, days=20, seed=seed, institutions=40, scale=0.1))
    return root


def _as_of(city: Path) -> str:
    for line in (city / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        meta = json.loads(line)
        if meta.get("kind") == "meta":
            return str(meta["as_of"])
    raise SystemExit(f"{city}: no meta line in labels.jsonl")


def digests(work: Path, jobs: int = 1) -> dict[str, str]:
    from monitor.replay import replay_dir
    from monitor.trace.multicity import replay_cities

    root = _cities(work)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    pack = load_pack("ezhou")
    for name in CITIES:
        replay_dir(root / name, out / "alone" / name, pack, as_of=parse_time(_as_of(root / name)),
                   pseudo=Pseudonymizer(KEY))
    kwargs = {"jobs": jobs} if jobs != 1 else {}
    replay_cities(root, out / "together", pack, as_of=parse_time(_as_of(root / "city1")),
                  pseudo=Pseudonymizer(KEY), **kwargs)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.digest", description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="working folder (the simulated cities are cached there)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the multi-city replay")
    args = ap.parse_args(argv)
    json.dump(digests(args.work, args.jobs), sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

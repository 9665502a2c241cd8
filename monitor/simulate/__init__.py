"""Synthetic city: realistic 医保 traffic with planted violations, ground truth and scoring.

* ``generator.simulate(SimConfig)`` — the seven input files of design §3 + ``labels.jsonl``;
* ``plants`` — what is planted where, and the labels (rule, institution, business window, expected
  tickets);
* ``score.score(out_dir, labels)`` — precision/recall per rule and tickets expected vs issued;
* ``demo.run_demo`` — simulate a city month, replay it, summarise (``monitor demo``).
"""

from monitor.simulate.generator import SimConfig, SimResult, simulate

__all__ = ["SimConfig", "SimResult", "simulate"]

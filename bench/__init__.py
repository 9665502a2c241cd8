"""Benchmarks of medins-monitor against design §6 (issue 8): ``python -m bench`` prints the table."""

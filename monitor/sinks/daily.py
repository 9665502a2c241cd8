"""``institution_daily`` rows (design §4) from the engine's ``InstitutionDay`` outputs.

The facts of an institution-day are the engine's (``monitor.detectors.daily``: its tally of records and
upload lags, the rules' own numbers handed over as ``DayFact``, the alerts it emitted); they reach every
sink like alerts and tickets. This module only turns one into a row: nothing here is attached to the
engine or checkpointed with it. A day comes out again with a higher ``version`` when it changed; a sink
keeps the newest (ClickHouse ``ReplacingMergeTree(version)``, the files sink appends every version).
"""

from __future__ import annotations

from typing import Any

from monitor.outputs import DAILY_COLUMNS, InstitutionDay


def daily_row(item: InstitutionDay) -> tuple[Any, ...]:
    """The ``institution_daily`` row of one emission, in ``DAILY_COLUMNS`` order."""
    return item.row()


__all__ = ["DAILY_COLUMNS", "daily_row"]

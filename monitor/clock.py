"""Event time for the monitor: China Standard Time, calendar days and calendar months.

Contract
--------
* Every business rule runs on **event time**: a record's own time field (its *business time*) and its
  *arrival time* (``inf_time``, the upload time; the Kafka timestamp when absent; the business time
  when both are absent). Nothing in the core reads the wall clock.
* The **watermark** is the largest arrival time seen so far. It never moves backwards: a record that
  arrives out of order is judged by its own arrival time, but timers only fire when the watermark
  passes them.
* Days and months are those of Asia/Shanghai (UTC+8, no daylight saving since 1991).
* "One month" is a calendar month: ``add_months(2026-01-31, 1) == 2026-02-28`` and
  ``add_months(2024-01-31, 1) == 2024-02-29`` (the day is clamped to the end of the shorter month).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CST = ZoneInfo("Asia/Shanghai")

_LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"


def as_cst(value: datetime) -> datetime:
    """Attach Asia/Shanghai to a naive datetime (NHSA's ``yyyy-MM-dd HH:mm:ss`` is local time) or
    convert an aware one to it."""
    if value.tzinfo is None:
        return value.replace(tzinfo=CST)
    return value.astimezone(CST)


def parse_time(text: str) -> datetime:
    """Parse ``yyyy-MM-dd HH:mm:ss`` (Asia/Shanghai) or ISO-8601 with an offset; result is in CST."""
    return as_cst(datetime.fromisoformat(text))


def format_time(value: datetime) -> str:
    """Render an aware datetime as NHSA local time ``yyyy-MM-dd HH:mm:ss`` in Asia/Shanghai."""
    return as_cst(value).strftime(_LOCAL_FORMAT)


def business_date(value: datetime) -> date:
    """The Asia/Shanghai calendar day an instant belongs to."""
    if value.tzinfo is CST:  # every parsed record time already is: skip the no-op conversion (hot path)
        return value.date()
    return as_cst(value).date()


#: Memo of ``day_start``/``day_end`` (detectors ask for the same few days per record; bench/ showed
#: these calls among the hottest). Bounded; values are immutable, so sharing them is safe.
_DAY_START: dict[date, datetime] = {}
_DAY_END: dict[date, datetime] = {}
_MEMO_MAX = 1 << 14


def day_start(day: date) -> datetime:
    """00:00:00 of ``day`` in Asia/Shanghai."""
    hit = _DAY_START.get(day)
    if hit is None:
        if len(_DAY_START) >= _MEMO_MAX:
            _DAY_START.clear()
        hit = _DAY_START[day] = datetime.combine(day, time(0, 0), tzinfo=CST)
    return hit


def day_end(day: date) -> datetime:
    """The instant the Asia/Shanghai day ends (00:00 of the next day, exclusive)."""
    hit = _DAY_END.get(day)
    if hit is None:
        if len(_DAY_END) >= _MEMO_MAX:
            _DAY_END.clear()
        hit = _DAY_END[day] = day_start(day + timedelta(days=1))
    return hit


def add_months(day: date, months: int) -> date:
    """Calendar-month arithmetic, clamping the day to the length of the target month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def add_years(day: date, years: int) -> date:
    """Calendar-year arithmetic (29 February becomes 28 February in a common year)."""
    return add_months(day, 12 * years)


class Watermark:
    """Monotonic event-time clock: the largest arrival time observed.

    ``observe`` returns the new watermark. Clock skew is the shell's concern (it knows the broker
    timestamp); the watermark only guarantees monotonicity.
    """

    __slots__ = ("value",)

    def __init__(self, start: datetime | None = None) -> None:
        self.value: datetime | None = start

    def observe(self, arrival: datetime) -> datetime:
        if self.value is None or arrival > self.value:
            self.value = arrival
        return self.value

"""The institution-day window: one helper owns its lifecycle (open → judge → re-judge → forget).

Most rules of design §5 judge an institution's business day (Asia/Shanghai) once every in-time record
of it must have arrived, and again when a late record of that day still arrives, until the day is too
old to re-open. ``DayWindows`` is that lifecycle, written once:

* ``open(code, day, ctx)`` — the day's tally, created on first use together with its two timers:
  ``JudgeDay(code, day)`` at day end + ``judge_after`` and ``ForgetDay(code, day)`` ``forget_after``
  later (the memory bound). A record for a day already past its forget time is counted as data
  quality ``too_old`` and gets ``None``: it can no longer be judged.
* ``fire(key)`` — the rule's ``on_timer`` hands it a ``JudgeDay``/``ForgetDay``: a ``JudgeDay`` marks
  the tally judged and returns it (the rule judges it now); a ``ForgetDay`` forgets it and returns
  ``None``. After the judgment, ``tally.judged`` is True: a late record that changes the tally is
  judged at once by the rule (``open`` still returns the tally).
* The tally type is the rule's own; it must have a ``judged: bool`` attribute, which only this helper
  sets.

A rule uses one ``DayWindows`` (its timer keys are ``JudgeDay``/``ForgetDay``, declared in its
``timers``); the helper is plain picklable state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Generic, Protocol, TypeVar

from monitor.clock import day_end
from monitor.contract import ForgetDay, JudgeDay, RuleContext

DayKey = tuple[str, date]


class _Judged(Protocol):
    judged: bool


T = TypeVar("T", bound=_Judged)


class DayWindows(Generic[T]):
    """Institution-day tallies of one rule and their judge/forget timers (see the module docstring)."""

    def __init__(self, judge_after: timedelta, forget_after: timedelta, new: Callable[[], T],
                 too_old: str) -> None:
        self.judge_after = judge_after
        self.forget_after = forget_after
        self.new = new
        self.too_old = too_old
        self.days: dict[DayKey, T] = {}

    def open(self, code: str, day: date, ctx: RuleContext) -> T | None:
        """The tally of ``(code, day)``, opened with its timers on first use; None when too old."""
        key = (code, day)
        tally = self.days.get(key)
        if tally is None:
            judge_at = day_end(day) + self.judge_after
            if judge_at + self.forget_after < ctx.now:
                ctx.count(self.too_old)
                return None
            tally = self.days[key] = self.new()
            ctx.schedule(judge_at, JudgeDay(code, day))
            ctx.schedule(judge_at + self.forget_after, ForgetDay(code, day))
        return tally

    def get(self, code: str, day: date) -> T | None:
        return self.days.get((code, day))

    def fire(self, key: JudgeDay | ForgetDay) -> T | None:
        """``JudgeDay``: the tally, now judged (None if already forgotten); ``ForgetDay``: forgets it."""
        if isinstance(key, ForgetDay):
            self.days.pop((key.code, key.day), None)
            return None
        tally = self.days.get((key.code, key.day))
        if tally is not None:
            tally.judged = True
        return tally

    def __len__(self) -> int:
        return len(self.days)

    def __iter__(self) -> Iterator[DayKey]:
        return iter(self.days)

"""Asia/Shanghai calendar and calendar-month arithmetic (design §2 'Time')."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from monitor.clock import CST, Watermark, add_months, business_date, day_end, parse_time


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),  # design §2: one month from 01-31 ends 02-28
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2024, 2, 29), 1, date(2024, 3, 29)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),  # 29 Feb into a common year
        (date(2026, 12, 15), 1, date(2027, 1, 15)),  # across the new year
        (date(2026, 12, 31), 2, date(2027, 2, 28)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 5, 31), 1, date(2026, 6, 30)),
        (date(2026, 1, 15), 6, date(2026, 7, 15)),
    ],
)
def test_add_months_is_calendar_months(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_local_and_iso_times_are_the_same_instant() -> None:
    local = parse_time("2026-01-10 23:30:00")
    iso = parse_time("2026-01-10T15:30:00+00:00")
    assert local == iso
    assert local.utcoffset() == timedelta(hours=8)


def test_business_date_is_shanghai_day() -> None:
    # 16:30 UTC on the 10th is 00:30 on the 11th in Shanghai
    assert business_date(datetime(2026, 1, 10, 16, 30, tzinfo=UTC)) == date(2026, 1, 11)
    assert day_end(date(2026, 1, 10)) == datetime(2026, 1, 11, tzinfo=CST)


def test_watermark_never_moves_back() -> None:
    wm = Watermark()
    assert wm.observe(parse_time("2026-01-10 10:00:00")) == parse_time("2026-01-10 10:00:00")
    assert wm.observe(parse_time("2026-01-10 09:00:00")) == parse_time("2026-01-10 10:00:00")


# ------------------------------------------------------------------------ EventClock (monitor.watermark)
def _t(hour: float) -> datetime:
    return datetime(2026, 1, 10, tzinfo=CST) + timedelta(hours=hour)


def _arrivals(released: list[Any]) -> list[tuple[str, datetime | None, bool]]:
    return [(r.item, r.arrival, r.skewed) for r in released]


def test_event_clock_one_future_claim_among_many_institutions_is_held_then_clamped() -> None:
    from monitor.watermark import EventClock

    clock: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    for i, src in enumerate(["A", "B", "C", "D"]):
        assert _arrivals(clock.offer(f"r{i}", _t(10 + i / 60), src)) == [(f"r{i}", _t(10 + i / 60), False)]
    assert clock.offer("future", _t(24 * 30), "A") == []  # a month ahead: held, time does not move
    assert clock.value == _t(10 + 3 / 60)
    assert _arrivals(clock.close()) == [("future", _t(10 + 3 / 60), True)]


def test_event_clock_a_morning_after_a_quiet_night_moves_once_three_institutions_agree() -> None:
    from monitor.watermark import EventClock

    clock: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    for i, src in enumerate("ABCD"):
        clock.offer(f"eve{i}", _t(21 + i / 60), src)
    assert clock.offer("m1", _t(32), "A") == []
    assert clock.offer("m2", _t(32.1), "B") == []
    released = clock.offer("m3", _t(32.2), "C")
    assert _arrivals(released) == [("m1", _t(32), False), ("m2", _t(32.1), False), ("m3", _t(32.2), False)]
    assert clock.value == _t(32.2)


def test_event_clock_two_wrong_clocks_cannot_reach_a_quorum_of_three() -> None:
    from monitor.watermark import EventClock

    clock: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    for i, src in enumerate("ABCDE"):
        clock.offer(f"r{i}", _t(10 + i / 60), src)
    assert clock.offer("x1", _t(500), "X") == [] and clock.offer("y1", _t(600), "Y") == []
    assert clock.offer("ok", _t(10.2), "A")[0].arrival == _t(10.2)  # plausible claims still flow
    assert clock.held == 2


def test_event_clock_with_one_active_institution_accepts_its_claims() -> None:
    from monitor.watermark import EventClock

    clock: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    clock.offer("a", _t(10), "A")
    assert _arrivals(clock.offer("b", _t(58), "A")) == [("b", _t(58), False)]


def test_event_clock_registry_claims_never_move_time_and_as_of_vouches_for_claims() -> None:
    from monitor.watermark import EventClock

    clock: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    for i, src in enumerate("ABC"):
        clock.offer(f"r{i}", _t(10), src)
    assert _arrivals(clock.offer("inst", _t(24 * 90), "A", registry=True)) == [("inst", _t(10), False)]
    assert clock.value == _t(10)
    clock.offer("late-tail", _t(15), "A")
    assert _arrivals(clock.close(as_of=_t(16))) == [("late-tail", _t(15), False)]


def test_event_clock_accept_is_offer_when_the_item_alone_is_released_at_once() -> None:
    """``EventClock.accept`` (the Kafka shell's per-record path) takes exactly the claims ``offer`` would
    release at once and alone, with the same effect on the clock; anything else it leaves to ``offer``."""
    from monitor.watermark import EventClock

    claims = [(None, "A"), (_t(10), "A"), (_t(10.5), "B"), (_t(10.2), "C"), (_t(24 * 30), "A"), (_t(11), "B"),
              (_t(11.5), "C"), (None, "D"), (_t(12), "D"), (_t(10.9), "A"), (_t(48), "B"), (_t(48), "C"),
              (_t(48.1), "D")]
    plain: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    fast: EventClock[str] = EventClock(timedelta(minutes=60), quorum=3)
    took = []
    for i, (claim, src) in enumerate(claims):
        expected = _arrivals(plain.offer(f"r{i}", claim, src))
        if fast.accept(claim, src):
            took.append(i)
            assert expected == [(f"r{i}", claim, False)]
        else:
            assert _arrivals(fast.offer(f"r{i}", claim, src)) == expected
        assert (fast.value, fast.held, fast._active, fast._offers) == (plain.value, plain.held, plain._active,
                                                                       plain._offers)
    assert took == [2, 3]  # not before time starts (r1), nor a far claim (r4), nor while one is held

"""Asia/Shanghai calendar and calendar-month arithmetic (design §2 'Time')."""

from datetime import UTC, date, datetime, timedelta

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

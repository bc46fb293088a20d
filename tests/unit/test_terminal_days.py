"""When a terminal partition's days close, and which terminals are then published."""

from __future__ import annotations

import pytest

from core.features import DAY_MS
from streams.terminals import CLOSE_GRACE_MS, PartitionClock

DAY0 = 20_000 * DAY_MS  # the start of a UTC day, long ago
LIVE_NOW = DAY0  # a wall clock that has not passed the events below: event time decides


@pytest.mark.parametrize("latest_event, closed_through", [
    (DAY0 + DAY_MS - 1, 19_999),  # late in day 20000: the day before it closed at 01:00
    (DAY0 + DAY_MS + CLOSE_GRACE_MS - 1, 19_999),  # day 20000 ended, but not an hour ago
    (DAY0 + DAY_MS + CLOSE_GRACE_MS, 20_000),  # day 20000 ended an hour ago: closed
])
def test_a_day_closes_an_hour_after_its_end_by_the_partition_s_latest_event_time(latest_event, closed_through):
    clock = PartitionClock()
    clock.saw("T1", DAY0 + 1, now_ms=LIVE_NOW)
    clock.saw("T2", latest_event, now_ms=LIVE_NOW)
    clock.close(now_ms=LIVE_NOW)
    assert clock.closed_through == closed_through


def test_the_terminals_with_events_on_a_day_are_published_once_when_it_closes():
    clock = PartitionClock()
    for terminal in ("T1", "T2", "T1"):
        assert clock.saw(terminal, DAY0 + 5 * 3_600_000, now_ms=LIVE_NOW) is False
    assert clock.close(now_ms=LIVE_NOW) == set()
    clock.saw("T3", DAY0 + DAY_MS + CLOSE_GRACE_MS, now_ms=LIVE_NOW)  # day 20000 closes
    assert clock.close(now_ms=LIVE_NOW) == {"T1", "T2"}
    assert clock.close(now_ms=LIVE_NOW) == set()  # once


def test_a_late_event_on_a_closed_day_republishes_its_terminal_at_once():
    clock = PartitionClock()
    clock.saw("T1", DAY0 + 3 * DAY_MS, now_ms=LIVE_NOW)
    assert clock.saw("T9", DAY0, now_ms=LIVE_NOW) is True


def test_a_quiet_partition_closes_its_days_by_the_wall_clock():
    clock = PartitionClock()
    clock.saw("T1", DAY0 + 60_000, now_ms=DAY0 + 120_000)
    assert clock.close(now_ms=DAY0 + DAY_MS) == set()  # not an hour past the day's end yet
    assert clock.close(now_ms=DAY0 + DAY_MS + CLOSE_GRACE_MS) == {"T1"}

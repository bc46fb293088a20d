"""Features of a transaction: the card state and terminal counts that training and serving share."""

import math
import statistics
import sys
import time

import numpy as np
import pytest

from core.features import (CARD_STATE_MAX_BYTES, CUSTOMER_FEATURE_NAMES, DAY_MS, FEATURE_NAMES, HOUR_MS,
                           NO_PREVIOUS_SECONDS, TERMINAL_BUCKET_MS, TERMINAL_COUNTS_BYTES, TERMINAL_FEATURE_NAMES,
                           TERMINAL_RING_BUCKETS, CardState, TerminalCounts, calendar_features, feature_matrix,
                           invalid_transaction_reason, is_ordinary_fraud, model_feature_names, model_inputs, terminal_matrix)

T0 = 1_522_540_800_000  # 2018-04-01 00:00 UTC, a Sunday
MINUTE_MS = 60_000


def txn(t_ms, amount=10.0, terminal="T1", customer="C1", **extra):
    return {"transaction_id": f"x{t_ms}", "customer_id": customer, "terminal_id": terminal,
            "amount": amount, "timestamp": t_ms, **extra}


def features_after(history_txns, current):
    state = CardState()
    for t in history_txns:
        state.features_then_add(t)
    return dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(current)))


def at(day, hour=0, minute=0, ms=0):
    """An event time `day` days after T0 (negative: before), at hour:minute UTC."""
    return T0 + day * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS + ms


@pytest.mark.parametrize("timestamp, weekend, night", [
    (T0, 1.0, 1.0),                                # Sunday 00:00
    (T0 + 6 * 3_600_000 + 59 * 60_000, 1.0, 1.0),  # Sunday 06:59
    (T0 + 7 * 3_600_000, 1.0, 0.0),                # Sunday 07:00
    (T0 + DAY_MS + 12 * 3_600_000, 0.0, 0.0),      # Monday noon
    (T0 - DAY_MS + 3_600_000, 1.0, 1.0),           # Saturday 01:00
    (T0 + 5 * DAY_MS + 23 * 3_600_000, 0.0, 0.0),  # Friday 23:00
])
def test_weekend_and_night_follow_the_utc_calendar(timestamp, weekend, night):
    assert calendar_features(timestamp) == (weekend, night)
    f = features_after([], txn(timestamp))
    assert (f["during_weekend"], f["during_night"]) == (weekend, night)


def test_a_first_transaction_sees_only_itself():
    f = features_after([], txn(T0, amount=42.0, channel="ECOM", card_present=False))
    assert f["customer_nb_tx_1d"] == f["customer_nb_tx_7d"] == f["customer_nb_tx_30d"] == 1.0
    assert f["customer_avg_amount_1d"] == f["customer_avg_amount_30d"] == f["amount"] == 42.0
    assert f["seconds_since_previous"] == NO_PREVIOUS_SECONDS
    assert f["amount_zscore_30d"] == 0.0
    assert f["distinct_terminals_1d"] == 1.0
    assert (f["channel_ecom"], f["card_present"]) == (1.0, 0.0)


@pytest.mark.parametrize("earlier, now, in_1d, in_7d, in_30d", [
    (at(40, 12, 0), at(40, 12, 59), True, True, True),          # the same hour
    (at(39, 13, 0), at(40, 12, 59), True, True, True),          # 23h59 before, in hour h - 23
    (at(39, 12, 59), at(40, 12, 59), False, True, True),        # 24h before: hour h - 24
    (at(39, 12, 59), at(40, 12, 0), False, True, True),         # 23h01 before, but in hour h - 24
    (at(34, 0, 0), at(40, 23, 59), False, True, True),          # day d - 6
    (at(33, 23, 59), at(40, 0, 0), False, False, True),         # day d - 7: 6 days and a minute before
    (at(11, 0, 0), at(40, 23, 59), False, False, True),         # day d - 29
    (at(10, 23, 59), at(40, 0, 0), False, False, False),        # day d - 30
])
def test_card_windows_are_the_last_24_utc_hours_and_the_last_7_and_30_utc_days(earlier, now, in_1d, in_7d,
                                                                                  in_30d):
    f = features_after([txn(earlier, amount=100.0)], txn(now, amount=20.0))
    assert (f["customer_nb_tx_1d"], f["customer_nb_tx_7d"], f["customer_nb_tx_30d"]) == (
        1 + in_1d, 1 + in_7d, 1 + in_30d)
    assert f["customer_avg_amount_1d"] == (60.0 if in_1d else 20.0)
    assert f["customer_avg_amount_7d"] == (60.0 if in_7d else 20.0)
    assert f["customer_avg_amount_30d"] == (60.0 if in_30d else 20.0)


def test_windows_keep_counting_as_the_card_goes_on_for_months():
    rng = np.random.default_rng(5)
    times = np.sort(rng.integers(at(0), at(120), 600))
    amounts = np.round(rng.uniform(1, 300, 600), 2)
    state = CardState()
    for i, (t, a) in enumerate(zip(times.tolist(), amounts.tolist())):
        f = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(t, a))))
        hours, days = times[: i + 1] // HOUR_MS, times[: i + 1] // DAY_MS
        for name, inside in (("1d", hours > t // HOUR_MS - 24), ("7d", days > t // DAY_MS - 7),
                             ("30d", days > t // DAY_MS - 30)):
            assert f[f"customer_nb_tx_{name}"] == inside.sum()
            assert f[f"customer_avg_amount_{name}"] == pytest.approx(amounts[: i + 1][inside].mean(), rel=1e-12)


@pytest.mark.parametrize("previous, amount, expected", [
    ([], 50.0, 0.0),
    ([10.0], 50.0, 0.0),                                  # fewer than 2 previous
    ([10.0, 20.0, 30.0], 40.0, 2.0),                      # (40 - 20) / 10
    ([10.0, 20.0, 30.0], 20.0, 0.0),
    ([12.34] * 6, 99.0, 0.0),                             # no spread: no z-score, however far the amount
    ([0.1, 0.2, 0.3, 0.1, 0.2, 0.3], 5.0, (5.0 - 0.2) / statistics.stdev([0.1, 0.2, 0.3] * 2)),
    ([1e6, 1e6 + 2.0, 1e6 + 4.0], 1e6 + 8.0, 3.0),        # large amounts keep their precision
])
def test_amount_zscore_measures_against_the_previous_30_days(previous, amount, expected):
    history = [txn(at(3, 10, i), amount=a) for i, a in enumerate(previous)]
    f = features_after(history, txn(at(3, 12), amount=amount))
    assert f["amount_zscore_30d"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_amount_zscore_forgets_days_that_left_the_30_day_window():
    history = [txn(at(0, 12), amount=1000.0), txn(at(31, 12), amount=10.0), txn(at(32, 12), amount=30.0)]
    f = features_after(history, txn(at(33, 12), amount=40.0))
    assert f["amount_zscore_30d"] == pytest.approx((40.0 - 20.0) / statistics.stdev([10.0, 30.0]))


@pytest.mark.parametrize("history, current, expected", [
    ([], (at(3), 40.0), 1.0),                                          # alone: its own average
    ([(at(1), 10.0)], (at(3), 40.0), 40.0 / 25.0),                     # this one's ratio is the highest
    ([(at(1), 10.0), (at(2), 90.0)], (at(3), 20.0), 90.0 / 50.0),      # day 2's: 90 against (10 + 90) / 2
    ([(at(0), 10.0), (at(1), 90.0)], (at(14, 23), 20.0), 90.0 / 50.0),  # day d - 13 still counts
    ([(at(0), 10.0), (at(1), 90.0)], (at(15), 20.0), 20.0 / 40.0),     # day d - 14 no longer: only its own
])
def test_max_amount_to_avg_is_the_card_s_highest_amount_to_average_of_the_last_14_days(history, current, expected):
    f = features_after([txn(t, amount=a) for t, a in history], txn(current[0], amount=current[1]))
    assert f["max_amount_to_avg_14d"] == pytest.approx(expected)


def test_a_late_event_s_ratio_counts_for_its_own_day_and_reads_the_days_before_it():
    state = CardState()
    for t, a in ((at(1), 10.0), (at(9), 10.0)):
        state.features_then_add(txn(t, amount=a))
    late = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(5), amount=70.0))))
    assert late["max_amount_to_avg_14d"] == pytest.approx(70.0 / 40.0)  # 70 against (10 + 70) / 2
    after = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(10), amount=30.0))))
    assert after["max_amount_to_avg_14d"] == pytest.approx(70.0 / 40.0)
    assert after["amount_to_avg_30d"] == pytest.approx(30.0 / 30.0)


def test_a_card_state_of_the_previous_version_is_read_with_no_ratios_and_goes_on():
    state = CardState()
    for i in range(5):
        state.features_then_add(txn(at(i), amount=10.0 * (i + 1)))
    v3 = state.to_bytes()
    days_end = len(v3) - 12 * 1 - 8 * 30  # one terminal held; the ratios sit before it
    v2 = b"\x02" + v3[1:days_end] + v3[days_end + 8 * 30:]
    old = CardState.from_bytes(v2)
    assert old.to_bytes()[0] == 3 and len(old.to_bytes()) == len(v3)
    f = dict(zip(CUSTOMER_FEATURE_NAMES, old.features_then_add(txn(at(6), amount=15.0))))
    g = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(6), amount=15.0))))
    assert f["max_amount_to_avg_14d"] == pytest.approx(15.0 / 27.5) and g["max_amount_to_avg_14d"] > 1
    assert {k: v for k, v in f.items() if k != "max_amount_to_avg_14d"} == \
        {k: v for k, v in g.items() if k != "max_amount_to_avg_14d"}


@pytest.mark.parametrize("history, now, expected", [
    ([], at(5), NO_PREVIOUS_SECONDS),
    ([at(5)], at(5, 0, 1), 60.0),
    ([at(5), at(5, 0, 1)], at(5, 0, 3), 120.0),           # from the latest
    ([at(5, 0, 0, 500)], at(5, 0, 0, 1750), 1.25),
    ([at(5)], at(34, 23, 59), 29 * 86_400 + 86_340.0),    # within 30 days
    ([at(5)], at(35), NO_PREVIOUS_SECONDS),               # 30 days
    ([at(5)], at(80), NO_PREVIOUS_SECONDS),
    ([at(5)], at(5), 0.0),                                # the same millisecond
    ([at(5, 12)], at(5, 11), 0.0),                        # a late event: never negative
])
def test_seconds_since_previous_is_from_the_latest_earlier_event_and_at_most_30_days(history, now, expected):
    f = features_after([txn(t) for t in history], txn(now))
    assert f["seconds_since_previous"] == expected


@pytest.mark.parametrize("earlier, expected", [
    ([("A", at(3, 12)), ("B", at(3, 13)), ("A", at(3, 14))], 3),         # A counted once, C itself
    ([("C", at(3, 12))], 1),                                             # itself, seen earlier too
    ([("A", at(2, 15, 0, 1))], 2),                                       # 24 h before, less 1 ms
    ([("A", at(2, 15))], 1),                                             # exactly 24 h before
    ([("A", at(2, 14)), ("A", at(3, 1))], 2),                            # last seen inside the day
    ([(f"T{i}", at(3, 14, i)) for i in range(15)], 16),                  # exact up to 16
    ([(f"T{i}", at(3, 14, i)) for i in range(40)], 16),                  # then saturates
    ([(f"T{i}", at(3, 14, i)) for i in range(40)] + [("C", at(3, 14, 50))], 16),
    ([("A", at(3, 1))] + [(f"T{i}", at(3, 14, i)) for i in range(16)], 16),
])
def test_distinct_terminals_of_the_last_24_hours_are_exact_up_to_16(earlier, expected):
    f = features_after([txn(t, terminal=term) for term, t in earlier], txn(at(3, 15), terminal="C"))
    assert f["distinct_terminals_1d"] == expected


def test_terminals_pushed_out_by_16_more_recent_ones_are_those_the_day_no_longer_reads():
    state = CardState()
    for i in range(20):  # T0 at 00:00, ..., T19 at 19:00: only the last 16 are kept
        state.features_then_add(txn(at(3, i), terminal=f"T{i}"))
    f = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(4, 10, 30), terminal="C"))))
    assert f["distinct_terminals_1d"] == 9 + 1  # T11..T19, then C
    f = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(4, 10, 31), terminal="T0"))))
    assert f["distinct_terminals_1d"] == 9 + 2  # T0 was forgotten: it counts again, as new


@pytest.mark.parametrize("history, late, expected_30d, expected_1d", [
    ([at(0, 12), at(2, 12)], at(0, 18), 2, 1),          # its own day and before, not the later day;
                                                        # its hours are no longer held
    ([at(0, 12), at(0, 20)], at(0, 18), 3, 2),          # a later event of its day counts, not of a later hour
    ([at(0, 12), at(0, 18, 30)], at(0, 18), 3, 3),      # and of its own hour
    ([at(0, 12), at(31, 12)], at(0, 18), 1, 1),         # its day left the state: it sees nothing
])
def test_a_late_event_reads_the_buckets_up_to_its_own_hour_and_day(history, late, expected_30d, expected_1d):
    f = features_after([txn(t) for t in history], txn(late))
    assert f["customer_nb_tx_30d"] == expected_30d
    assert f["customer_nb_tx_1d"] == expected_1d


@pytest.mark.parametrize("late, counted_30d, counted_1d", [
    (at(9, 11), True, True),     # in the hours held
    (at(8, 11), True, False),    # in the days held, not the hours
    (at(-20, 23), True, False),  # the oldest day held
    (at(-21, 23), False, False),  # older than the state: counted nowhere
])
def test_a_late_event_is_folded_into_its_buckets_while_they_are_held(late, counted_30d, counted_1d):
    state = CardState()
    state.features_then_add(txn(at(9, 12), amount=10.0))
    state.features_then_add(txn(late, amount=30.0))
    f = dict(zip(CUSTOMER_FEATURE_NAMES, state.features_then_add(txn(at(9, 13), amount=20.0))))
    assert f["customer_nb_tx_30d"] == 2 + counted_30d
    assert f["customer_nb_tx_1d"] == 2 + counted_1d
    assert f["customer_avg_amount_30d"] == (60.0 / 3 if counted_30d else 15.0)
    assert state.last_event_ms == at(9, 13)


def random_card_history(seed, n=300, days=50, late_share=0.1):
    """A card's transactions over `days`, with `late_share` of them arriving up to two days late."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(at(0), at(days), n))
    late = rng.random(n) < late_share
    arrival = times + np.where(late, rng.integers(0, 2 * DAY_MS, n), 0)
    order = np.argsort(arrival, kind="stable")
    amounts = np.round(rng.lognormal(3, 1, n), 2)
    terminals = rng.integers(0, 25, n)
    return [txn(int(times[i]), float(amounts[i]), f"T{terminals[i]}") for i in order]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_card_state_read_back_from_its_bytes_goes_on_exactly_as_the_original(seed):
    events = random_card_history(seed)
    state = CardState()
    for event in events[:200]:
        state.features_then_add(event)
    data = state.to_bytes()
    copy = CardState.from_bytes(data)
    assert copy.to_bytes() == data and len(data) <= CARD_STATE_MAX_BYTES and data[0] == 3
    assert copy.last_event_ms == state.last_event_ms
    for event in events[200:]:
        assert copy.features_then_add(event) == state.features_then_add(event)
    assert copy.to_bytes() == state.to_bytes()


@pytest.mark.parametrize("data", [b"", bytes(CARD_STATE_MAX_BYTES), b"\x01" + CardState().to_bytes()[1:],
                                  CardState().to_bytes()[:-1], CardState().to_bytes() + b"\x00",
                                  b'{"t": [], "a": [], "term": []}'])
def test_bytes_that_are_not_a_card_state_are_refused(data):
    with pytest.raises(ValueError, match="not a card state"):
        CardState.from_bytes(data)


def test_a_card_s_state_stays_within_its_bound_after_100_000_events():
    rng = np.random.default_rng(0)
    busy, quiet = CardState(), CardState()
    for i, t in enumerate(np.sort(rng.integers(at(0), at(29), 100_000)).tolist()):
        busy.features_then_add(txn(t, amount=float(i % 97), terminal=f"T{i % 500}"))
    for i in range(10):
        quiet.features_then_add(txn(at(0, i), amount=5.0, terminal=f"T{i}"))
    assert len(quiet.to_bytes()) < len(busy.to_bytes()) <= CARD_STATE_MAX_BYTES <= 1700
    last = dict(zip(CUSTOMER_FEATURE_NAMES, busy.features_then_add(txn(at(28, 23, 59), amount=1.0))))
    assert last["customer_nb_tx_30d"] == 100_001
    assert last["distinct_terminals_1d"] == 16


def test_an_empty_card_state_has_no_last_event():
    assert CardState().last_event_ms is None
    assert CardState.from_bytes(CardState().to_bytes()).last_event_ms is None


def terminal_row(times_hours, fraud_hours, now_hours):
    counts = TerminalCounts()
    for h in times_hours:
        counts.add(T0 + round(h * HOUR_MS))
    for h in fraud_hours:
        counts.add(T0 + round(h * HOUR_MS), fraud=True)
    return dict(zip(TERMINAL_FEATURE_NAMES, counts.features(T0 + round(now_hours * HOUR_MS))))


# T0 starts a 6-hour bucket. From hour 192 (day 8) to hour 198 the windows end with hour 24 (29 buckets
# back): the 1-day window is day 0, the 7-day one days -6..0, the 30-day one days -29..0.
@pytest.mark.parametrize("times, frauds, now, expected", [
    ([0.0, 23.999], [], 192, {"terminal_nb_tx_1d": 2, "terminal_risk_1d": 0}),
    ([30, 100, 191.9], [30], 192, {"terminal_nb_tx_1d": 0, "terminal_nb_tx_30d": 0, "terminal_risk_30d": 0}),
    ([18.0], [], 197.999, {"terminal_nb_tx_1d": 1}),           # hours apart in one bucket do not matter
    ([24.0], [], 197.999, {"terminal_nb_tx_1d": 0}),           # the next bucket is read from hour 198...
    ([24.0], [], 198.0, {"terminal_nb_tx_1d": 1}),             # ...where the 1-day window moves on 6 hours
    ([0.0], [], 198.0, {"terminal_nb_tx_1d": 0, "terminal_nb_tx_7d": 1}),
    ([-0.001], [], 192, {"terminal_nb_tx_1d": 0, "terminal_nb_tx_7d": 1}),
    ([-144.0], [], 192, {"terminal_nb_tx_7d": 1}),             # hour -144: the 7-day window's first
    ([-144.001], [], 192, {"terminal_nb_tx_7d": 0, "terminal_nb_tx_30d": 1}),
    ([1, 2, 3, 20], [2, 20], 192, {"terminal_nb_tx_1d": 4, "terminal_risk_1d": 0.5}),
    ([-696, -540, -240, 0], [-540, -240], 192, {"terminal_nb_tx_30d": 4, "terminal_risk_30d": 0.5,
                                                 "terminal_nb_tx_7d": 1, "terminal_risk_7d": 0.0}),
    ([-696.0], [-696.0], 192, {"terminal_nb_tx_30d": 1, "terminal_risk_30d": 1.0}),  # the 30-day first
    ([-696.001], [-696.001], 192, {"terminal_nb_tx_30d": 0, "terminal_risk_30d": 0.0}),
    # a fraud label whose transaction is unknown cannot push the risk above 1
    ([12], [12, 12], 192, {"terminal_risk_1d": 1.0}),
    ([], [12], 192, {"terminal_nb_tx_1d": 0, "terminal_risk_1d": 0.0}),
])
def test_terminal_features_count_6_hour_buckets_ending_29_buckets_back(times, frauds, now, expected):
    row = terminal_row(times, frauds, now)
    for name, value in expected.items():
        assert row[name] == value, name


WEEK_MS = 7 * DAY_MS


@pytest.mark.parametrize("into_bucket", [0, 1, HOUR_MS, 6 * HOUR_MS - 1])  # where t falls in its bucket
@pytest.mark.parametrize("age, counted", [
    (6 * DAY_MS + 23 * HOUR_MS, False),
    (WEEK_MS, False),              # exactly 7 days: its bucket is t's 28 back, one the windows do not read
    (WEEK_MS + 6 * HOUR_MS, True),  # 7 days and one bucket: read wherever t falls in its bucket
    (8 * DAY_MS, True),
])
def test_terminal_features_read_no_label_of_a_transaction_7_days_old_or_newer(into_bucket, age, counted):
    t = at(40, 6) + into_bucket
    counts = TerminalCounts()
    counts.add(t - age)
    counts.add(t - age, fraud=True, ordinary=True)
    expected = (1.0, 1.0) * 3 + (1.0, 1.0) if counted else (0.0,) * 8
    assert counts.features(t) == expected


@pytest.mark.parametrize("into_bucket, age, counted", [
    (0, WEEK_MS + 1, True),                          # t at its bucket's start: anything older than 7 days
    (6 * HOUR_MS - 1, WEEK_MS + 6 * HOUR_MS - 1, False),  # t at its bucket's end: older than 7 days and 6 hours
    (6 * HOUR_MS - 1, WEEK_MS + 6 * HOUR_MS, True),
])
def test_terminal_features_read_only_transactions_more_than_7_days_old_at_the_bucket_edges(
        into_bucket, age, counted):
    t = at(40, 6) + into_bucket
    counts = TerminalCounts()
    counts.add(t - age)
    assert counts.features(t)[0] == (1.0 if counted else 0.0)


def test_dropping_the_events_of_the_last_7_days_leaves_the_terminal_features_unchanged():
    rng = np.random.default_rng(11)
    for t in rng.integers(at(40), at(41), 50).tolist():
        everything, older = TerminalCounts(), TerminalCounts()
        times = rng.integers(t - 40 * DAY_MS, t + DAY_MS, 300).tolist()
        frauds = rng.random(300) < 0.3
        for s, fraud in sorted(zip(times, frauds.tolist())):
            for counts in (everything, older) if t - s > WEEK_MS else (everything,):
                counts.add(s)
                if fraud:
                    counts.add(s, fraud=True)
        assert everything.features(t) == older.features(t)
        assert everything.features(t)[4] > 0  # the 30-day window did read something


def test_terminal_counts_forget_buckets_older_than_the_180_they_hold():
    counts = TerminalCounts()
    counts.add(at(0))
    counts.add(at(44, 18))                        # the 180th bucket from day 0's first
    assert counts.features(at(8))[0] == 1.0       # day 0 is still held...
    counts.add(at(45))
    assert counts.features(at(8))[0] == 0.0       # ...and its first bucket no longer: day 45 took it
    counts.add(at(0), fraud=True, ordinary=True)  # a label for a bucket no longer held counts nowhere
    assert counts.features(at(8)) == (0.0,) * 8
    assert counts.last_day == at(45) // DAY_MS


def test_terminal_features_of_a_bucket_are_reused_until_the_next_add():
    counts = TerminalCounts()
    counts.add(at(0))
    first = counts.features(at(8, 0))
    assert counts.features(at(8, 5, 59)) is first
    assert counts.features(at(8, 6)) is not first and counts.features(at(8, 6))[2:] == first[2:]
    counts.add(at(0), fraud=True)
    assert counts.features(at(8, 5, 59)) == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    counts.add(at(0), fraud=True, ordinary=True)
    assert counts.features(at(8, 5, 59)) == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_a_terminal_s_last_day_is_the_day_of_its_latest_bucket():
    counts = TerminalCounts()
    assert counts.last_day is None
    counts.add(at(3, 23, 59))
    counts.add(at(1, 2), fraud=True)
    assert counts.last_day == at(3) // DAY_MS


def test_terminal_counts_read_back_from_their_bytes_are_the_same():
    counts = TerminalCounts()
    for hour in range(0, 50 * 24, 5):
        for _ in range(hour % 4):
            counts.add(at(0, hour))
        if hour % 25 == 0:
            counts.add(at(0, hour), fraud=True, ordinary=hour % 50 == 0)
    data = counts.to_bytes()
    copy = TerminalCounts.from_bytes(data)
    assert len(data) == TERMINAL_COUNTS_BYTES and data[0] == 3 and copy.to_bytes() == data
    assert copy.last_day == counts.last_day == at(49) // DAY_MS
    for hour in range(40 * 24, 60 * 24, 3):
        assert copy.features(at(0, hour)) == counts.features(at(0, hour))
    assert TerminalCounts.from_bytes(TerminalCounts().to_bytes()).last_day is None


def test_terminal_counts_bytes_are_a_version_the_latest_bucket_and_three_rings_of_uint32():
    counts = TerminalCounts()
    counts.add(T0 + 1)  # bucket 70488, the ring's 108th
    counts.add(T0 + 2)
    counts.add(T0 + 3, fraud=True)
    counts.add(T0 + 4, fraud=True, ordinary=True)
    data = counts.to_bytes()
    assert TERMINAL_BUCKET_MS == 21_600_000 and TERMINAL_RING_BUCKETS == 180
    assert TERMINAL_COUNTS_BYTES == 1 + 8 + 3 * 4 * 180 == len(data)
    assert data[:9] == bytes.fromhex("03" "5813010000000000")
    transactions, frauds, ordinary = data[9: 9 + 720], data[9 + 720: 9 + 1440], data[9 + 1440:]
    assert transactions == bytes(4 * 108) + bytes.fromhex("02000000") + bytes(4 * 71)
    assert frauds == bytes(4 * 108) + bytes.fromhex("02000000") + bytes(4 * 71)
    assert ordinary == bytes(4 * 108) + bytes.fromhex("01000000") + bytes(4 * 71)


def test_terminal_counts_written_before_ordinary_frauds_read_with_none():
    counts = TerminalCounts()
    counts.add(at(0))
    counts.add(at(0), fraud=True, ordinary=True)
    version_2 = bytes.fromhex("02") + counts.to_bytes()[1: 9 + 2 * 4 * 180]
    old = TerminalCounts.from_bytes(version_2)
    assert old.features(at(8)) == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    assert counts.features(at(8)) == (1.0,) * 8


@pytest.mark.parametrize("data", [
    b"",
    bytes.fromhex("01") + bytes(8 + 2 * 4 * 45),         # the daily counts of version 1
    bytes.fromhex("01") + bytes(TERMINAL_COUNTS_BYTES - 1),
    bytes.fromhex("02") + bytes(TERMINAL_COUNTS_BYTES - 1),  # version 2 held two rings
    TerminalCounts().to_bytes()[:-4],
    TerminalCounts().to_bytes() + bytes(4),
])
def test_bytes_that_are_not_terminal_counts_are_refused(data):
    with pytest.raises(ValueError, match="not terminal counts"):
        TerminalCounts.from_bytes(data)


def test_a_terminal_s_counts_take_the_same_space_whatever_its_volume():
    busy, quiet = TerminalCounts(), TerminalCounts()
    for i in range(200_000):  # 46 days, one every 20 seconds, one in 50 a fraud
        busy.add(at(0) + i * 20_000)
        if i % 50 == 0:
            busy.add(at(0) + i * 20_000, fraud=True, ordinary=i % 100 == 0)
    quiet.add(at(46))
    for counts in (busy, quiet):
        assert len(counts.to_bytes()) == TERMINAL_COUNTS_BYTES <= 2200
        in_memory = sys.getsizeof(counts) + sum(sys.getsizeof(getattr(counts, name))
                                                for name in ("_transactions", "_frauds", "_ordinary"))
        assert in_memory <= 2500
    assert sys.getsizeof(TerminalCounts.from_bytes(busy.to_bytes())._transactions) == 80 + 4 * 180
    assert busy.features(at(46, 12))[4:6] == (30 * 24 * 180, 0.02)
    assert busy.features(at(46, 12))[6:] == pytest.approx((7 * 24 * 180 / 100, 30 * 24 * 180 / 100), abs=1)


def test_terminal_matrix_keeps_terminals_apart_and_rows_in_the_order_given():
    ts = [T0 + d * DAY_MS for d in (0, 0, 9, 9, 10)]
    ids = ["A", "B", "A", "B", "A"]
    X = terminal_matrix(ids, ts, [1, 0, 0, 0, 0])
    nb7, risk7 = TERMINAL_FEATURE_NAMES.index("terminal_nb_tx_7d"), TERMINAL_FEATURE_NAMES.index("terminal_risk_7d")
    assert X[:, nb7].tolist() == [0, 0, 1, 1, 1]
    assert X[:, risk7].tolist() == [0, 0, 1.0, 0.0, 1.0]


def test_feature_matrix_replays_each_card_separately_in_order():
    txns = [txn(T0, customer="A", amount=10.0), txn(T0 + 1000, customer="B", amount=50.0),
            txn(T0 + 2000, customer="A", amount=30.0)]
    X = feature_matrix(txns, [0, 0, 0])
    assert X.shape == (3, len(FEATURE_NAMES))
    i = FEATURE_NAMES.index("customer_nb_tx_1d")
    assert X[:, i].tolist() == [1.0, 1.0, 2.0]
    j = FEATURE_NAMES.index("customer_avg_amount_1d")
    assert X[2, j] == 20.0


def test_feature_matrix_is_bit_for_bit_what_the_stream_computes_event_by_event():
    from models.simulate import SimulationConfig, simulate, transaction_records

    history = simulate(SimulationConfig(customers=300, terminals=200, days=70, seed=4))
    records, labels = transaction_records(history), history["is_fraud"].to_numpy()
    batch = feature_matrix(records, labels)
    cards: dict[str, CardState] = {}
    terminals: dict[str, TerminalCounts] = {}
    for i, (record, label) in enumerate(zip(records, labels)):
        card = cards.setdefault(record["customer_id"], CardState())
        terminal = terminals.setdefault(record["terminal_id"], TerminalCounts())
        row = card.features_then_add(record) + list(terminal.features(record["timestamp"]))
        terminal.add(record["timestamp"])
        if label:  # the fraud label: in the stream it arrives later, but before any window reads its bucket,
            # ordinary or not by the amount-to-average its verdict carries
            ordinary = is_ordinary_fraud(row[FEATURE_NAMES.index("amount_to_avg_30d")])
            terminal.add(record["timestamp"], fraud=True, ordinary=ordinary)
        assert np.array_equal(np.asarray(row).view(np.int64), batch[i].view(np.int64)), i
    assert batch[:, FEATURE_NAMES.index("terminal_risk_30d")].max() > 0
    ordinary = batch[:, FEATURE_NAMES.index("terminal_ordinary_frauds_30d")]
    assert 0 < ordinary.max() < batch[:, FEATURE_NAMES.index("terminal_nb_tx_30d")].max()


def test_featurises_a_history_in_which_one_card_has_100_000_transactions_and_one_terminal_500_000_within_30_days_in_seconds():
    rng = np.random.default_rng(7)
    n_card, n_terminal, n_other = 100_000, 500_000, 50_000
    start = at(0)
    times = rng.integers(start, start + 30 * DAY_MS, n_card + n_terminal + n_other)
    cards = np.concatenate([np.full(n_card, "C-busy"), rng.integers(0, 20_000, n_terminal + n_other).astype(str)])
    terminals = np.concatenate([rng.integers(0, 1000, n_card).astype(str), np.full(n_terminal, "T-busy"),
                                rng.integers(0, 1000, n_other).astype(str)])
    order = np.argsort(times, kind="stable")
    times, cards, terminals = times[order], cards[order], terminals[order]
    amounts = np.round(rng.uniform(1, 200, len(times)), 2)
    labels = (rng.random(len(times)) < 0.01).astype(int)
    records = [{"customer_id": c, "terminal_id": t, "amount": a, "timestamp": ts}
               for c, t, a, ts in zip(cards.tolist(), terminals.tolist(), amounts.tolist(), times.tolist())]

    started = time.perf_counter()
    X = feature_matrix(records, labels)
    assert time.perf_counter() - started < 60

    card_rows = np.flatnonzero(cards == "C-busy")
    last = X[card_rows[-1]]
    days = times // DAY_MS
    buckets = times // TERMINAL_BUCKET_MS
    assert last[FEATURE_NAMES.index("customer_nb_tx_30d")] == n_card
    assert last[FEATURE_NAMES.index("customer_nb_tx_7d")] == (days[card_rows] > days[card_rows[-1]] - 7).sum()
    assert last[FEATURE_NAMES.index("customer_avg_amount_30d")] == pytest.approx(amounts[card_rows].mean())
    assert last[FEATURE_NAMES.index("distinct_terminals_1d")] == 16
    terminal_rows = np.flatnonzero(terminals == "T-busy")
    final = terminal_rows[-1]
    end = buckets[final] - 29
    window = (buckets[terminal_rows] <= end) & (buckets[terminal_rows] > end - 120)
    assert X[final, FEATURE_NAMES.index("terminal_nb_tx_30d")] == window.sum()
    assert X[final, FEATURE_NAMES.index("terminal_risk_30d")] == labels[terminal_rows][window].sum() / window.sum()
    assert np.isfinite(X).all()


class Bar:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_feature_matrix_reports_its_progress_to_a_callable_or_a_bar():
    records = [txn(T0 + i * 1000, customer=f"C{i % 7}") for i in range(25_000)]
    heard = []
    feature_matrix(records, [0] * len(records), progress=lambda done, total: heard.append((done, total)))
    assert heard == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]
    bar = Bar()
    feature_matrix(records, [0] * len(records), progress=bar)
    assert bar.n == 25_000


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"amount": -0.01}, "field amount: negative"),
    ({"amount": math.nan}, "field amount: not a finite number"),
    ({"amount": math.inf}, "field amount: not a finite number"),
    ({"transaction_id": ""}, "field transaction_id: empty"),
    ({"customer_id": ""}, "field customer_id: empty"),
    ({"timestamp": 0}, "field timestamp: not a positive"),
])
def test_invalid_transactions_are_named_by_field(change, reason):
    result = invalid_transaction_reason({**txn(T0), **change})
    assert (result is None) if reason is None else result.startswith(reason)


@pytest.mark.parametrize("timestamp, valid", [
    (T0, True), (T0 + DAY_MS, True), (T0 + DAY_MS + 1, False), (T0 * 1000, False),  # microseconds
])
def test_an_event_time_more_than_a_day_ahead_is_refused(timestamp, valid):
    result = invalid_transaction_reason(txn(timestamp), now_ms=T0)
    assert (result is None) == valid
    if not valid:
        assert result.startswith("field timestamp: more than a day in the future")


def test_upstream_attributes_follow_our_features_and_are_missing_where_absent():
    txns = [txn(T0, attributes={"device_risk": 0.5, "ip_score": 2.0}), txn(T0 + 1000), txn(T0 + 2000, attributes={"ip_score": 3.0})]
    X = feature_matrix(txns, [0, 0, 0], ["device_risk", "ip_score"])
    assert X.shape == (3, len(FEATURE_NAMES) + 2)
    np.testing.assert_array_equal(X[:, -2:], [[0.5, 2.0], [np.nan, np.nan], [np.nan, 3.0]])
    assert model_feature_names(["device_risk"])[-1] == "attribute_device_risk"


@pytest.mark.parametrize("names, columns, attributes", [
    (FEATURE_NAMES, None, ()),
    (FEATURE_NAMES + ("attribute_a", "attribute_b"), None, ("a", "b")),
    (FEATURE_NAMES[:-1], tuple(range(len(FEATURE_NAMES) - 1)), ()),  # a version trained before a feature was added
    (("amount", "terminal_risk_7d", "attribute_a"), (0, FEATURE_NAMES.index("terminal_risk_7d")), ("a",)),
    (FEATURE_NAMES + ("device_risk",), "refused", None),
    (("amount",) + FEATURE_NAMES, "refused", None),
    (("attribute_a", "amount"), "refused", None),
])
def test_a_model_reads_some_of_our_features_then_attributes(names, columns, attributes):
    if columns == "refused":
        with pytest.raises(ValueError):
            model_inputs(names)
    else:
        assert model_inputs(names) == (columns, attributes)

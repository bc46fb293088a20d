"""Features of a transaction given its card's history: the functions training and serving share."""

import math

import pytest

import numpy as np

from core.features import (CUSTOMER_FEATURE_NAMES, DAY_MS, FEATURE_NAMES, NO_PREVIOUS_SECONDS,
                              TERMINAL_FEATURE_NAMES, attributes_of, calendar_features,
                              customer_features, empty_history, feature_matrix,
                              invalid_transaction_reason, model_feature_names, remember,
                              TERMINAL_KEEP_MS, empty_terminal_history, remember_terminal,
                              terminal_features, terminal_matrix)

T0 = 1_522_540_800_000  # 2018-04-01 00:00 UTC, a Sunday


def txn(t_ms, amount=10.0, terminal="T1", customer="C1", **extra):
    return {"transaction_id": f"x{t_ms}", "customer_id": customer, "terminal_id": terminal,
            "amount": amount, "timestamp": t_ms, **extra}


def features_after(history_txns, current):
    history = empty_history()
    for t in history_txns:
        remember(history, t)
    return dict(zip(CUSTOMER_FEATURE_NAMES, customer_features(history, current)))


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


def test_a_first_transaction_sees_only_itself():
    f = features_after([], txn(T0, amount=42.0))
    assert f["customer_nb_tx_1d"] == f["customer_nb_tx_7d"] == f["customer_nb_tx_30d"] == 1.0
    assert f["customer_avg_amount_1d"] == 42.0
    assert f["seconds_since_previous"] == NO_PREVIOUS_SECONDS
    assert f["amount_zscore_30d"] == 0.0
    assert f["distinct_terminals_1d"] == 1.0


@pytest.mark.parametrize("age_ms, in_1d, in_7d, in_30d", [
    (1_000, True, True, True),
    (DAY_MS - 1, True, True, True),
    (DAY_MS, False, True, True),          # exactly one day old: outside (now - 1d, now]
    (7 * DAY_MS - 1, False, True, True),
    (7 * DAY_MS, False, False, True),
    (30 * DAY_MS - 1, False, False, True),
    (30 * DAY_MS, False, False, False),
])
def test_windows_count_earlier_transactions_strictly_inside_the_trailing_window(age_ms, in_1d, in_7d, in_30d):
    now = T0 + 40 * DAY_MS
    f = features_after([txn(now - age_ms, amount=100.0)], txn(now, amount=20.0))
    assert f["customer_nb_tx_1d"] == 1 + in_1d
    assert f["customer_nb_tx_7d"] == 1 + in_7d
    assert f["customer_nb_tx_30d"] == 1 + in_30d
    assert f["customer_avg_amount_1d"] == (120.0 / 2 if in_1d else 20.0)


def test_seconds_since_previous_and_distinct_terminals():
    history = [txn(T0, terminal="A"), txn(T0 + 60_000, terminal="B"), txn(T0 + 120_000, terminal="A")]
    f = features_after(history, txn(T0 + 180_000, terminal="C"))
    assert f["seconds_since_previous"] == 60.0
    assert f["distinct_terminals_1d"] == 3.0


def test_amount_zscore_measures_against_the_previous_30_days():
    history = [txn(T0 + i * 1000, amount=a) for i, a in enumerate([10.0, 20.0, 30.0])]
    f = features_after(history, txn(T0 + 10_000, amount=40.0))
    assert f["amount_zscore_30d"] == pytest.approx((40.0 - 20.0) / 10.0)


def test_a_late_event_sees_only_what_happened_before_it():
    history = [txn(T0), txn(T0 + 2 * DAY_MS)]
    late = txn(T0 + DAY_MS // 2)
    f = features_after(history, late)
    assert f["customer_nb_tx_30d"] == 2.0  # itself and T0, not the later one
    h = empty_history()
    for t in history + [late]:
        remember(h, t)
    assert h["t"] == sorted(h["t"])


def test_history_forgets_what_left_the_longest_window():
    h = empty_history()
    for i in range(40):
        remember(h, txn(T0 + i * DAY_MS))
    assert len(h["t"]) == 30 and h["t"][0] == T0 + 10 * DAY_MS


def test_feature_matrix_replays_each_card_separately_in_order():
    txns = [txn(T0, customer="A", amount=10.0), txn(T0 + 1000, customer="B", amount=50.0),
            txn(T0 + 2000, customer="A", amount=30.0)]
    X = feature_matrix(txns, [0, 0, 0])
    assert X.shape == (3, len(FEATURE_NAMES))
    i = FEATURE_NAMES.index("customer_nb_tx_1d")
    assert X[:, i].tolist() == [1.0, 1.0, 2.0]
    j = FEATURE_NAMES.index("customer_avg_amount_1d")
    assert X[2, j] == 20.0


def terminal_row(times_days, fraud_days, now_days):
    times = [T0 + int(d * DAY_MS) for d in times_days]
    frauds = [T0 + int(d * DAY_MS) for d in fraud_days]
    return dict(zip(TERMINAL_FEATURE_NAMES, terminal_features(times, frauds, [T0 + int(now_days * DAY_MS)])[0]))


@pytest.mark.parametrize("times, frauds, now, expected", [
    # at now = day 7.5, the windows end at day 0.5 (the 7-day label delay): later ones do not count
    ([1, 2, 7], [1], 7.5, {"terminal_nb_tx_1d": 0, "terminal_nb_tx_30d": 0, "terminal_risk_30d": 0}),
    # the 1-day window is (day -0.5, day 0.5]: closed on the right, open on the left
    ([0.5], [], 7.5, {"terminal_nb_tx_1d": 1, "terminal_risk_1d": 0}),
    ([0.5], [0.5], 7.5, {"terminal_nb_tx_1d": 1, "terminal_risk_1d": 1.0, "terminal_risk_7d": 1.0}),
    ([-0.5], [], 7.5, {"terminal_nb_tx_1d": 0, "terminal_nb_tx_7d": 1}),
    ([-0.49], [], 7.5, {"terminal_nb_tx_1d": 1, "terminal_nb_tx_7d": 1}),
    ([0.5, 0.6, 6.0], [0.6], 7.6, {"terminal_nb_tx_1d": 2, "terminal_risk_1d": 0.5,
                                    "terminal_nb_tx_7d": 2}),  # day 6 is inside the delay
    ([-29, -22.5, -10, 0], [-22.5, -10], 7.5, {"terminal_nb_tx_30d": 4, "terminal_risk_30d": 0.5,
                                                "terminal_nb_tx_7d": 1, "terminal_risk_7d": 0.0}),
    ([-29.5], [-29.5], 7.5, {"terminal_nb_tx_30d": 0, "terminal_risk_30d": 0.0}),
    ([-29.49], [-29.49], 7.5, {"terminal_nb_tx_30d": 1, "terminal_risk_30d": 1.0}),
    # a fraud label whose transaction is unknown cannot push the risk above 1
    ([0.5], [0.5, 0.5], 7.5, {"terminal_risk_1d": 1.0}),
])
def test_terminal_features_count_and_risk_behind_the_label_delay(times, frauds, now, expected):
    row = terminal_row(times, frauds, now)
    for name, value in expected.items():
        assert row[name] == pytest.approx(value), name


def test_a_terminal_history_stays_sorted_and_forgets_what_no_window_reads():
    h = empty_terminal_history()
    for t in (5, 1, 3):
        remember_terminal(h, t)
    remember_terminal(h, 4, fraud=True)
    remember_terminal(h, 2, fraud=True)
    assert h == {"t": [1, 3, 5], "f": [2, 4]}
    kept = TERMINAL_KEEP_MS  # the delay, the longest window, and one more delay for late arrivals
    remember_terminal(h, 3 + kept)
    assert h == {"t": [5, 3 + kept], "f": [4]}
    remember_terminal(h, 4 + kept, fraud=True)
    assert h == {"t": [5, 3 + kept], "f": [4 + kept]}


def test_terminal_matrix_keeps_terminals_apart_and_rows_in_the_order_given():
    ts = [T0 + d * DAY_MS for d in (0, 0, 9, 9, 10)]
    ids = ["A", "B", "A", "B", "A"]
    X = terminal_matrix(ids, ts, [1, 0, 0, 0, 0])
    nb7, risk7 = TERMINAL_FEATURE_NAMES.index("terminal_nb_tx_7d"), TERMINAL_FEATURE_NAMES.index("terminal_risk_7d")
    assert X[:, nb7].tolist() == [0, 0, 1, 1, 1]
    assert X[:, risk7].tolist() == [0, 0, 1.0, 0.0, 1.0]


def test_terminal_matrix_matches_the_stream_s_incremental_history():
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(T0, T0 + 60 * DAY_MS, 400))
    ids = rng.choice(["A", "B", "C"], 400)
    labels = rng.random(400) < 0.2
    batch = terminal_matrix(ids, ts, labels)
    histories = {k: empty_terminal_history() for k in "ABC"}
    for i in range(400):
        h = histories[ids[i]]
        np.testing.assert_array_equal(terminal_features(h["t"], h["f"], [ts[i]])[0], batch[i])
        remember_terminal(h, int(ts[i]))
        if labels[i]:
            remember_terminal(h, int(ts[i]), fraud=True)


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


@pytest.mark.parametrize("names, attributes", [
    (FEATURE_NAMES, ()),
    (FEATURE_NAMES + ("attribute_a", "attribute_b"), ("a", "b")),
    (FEATURE_NAMES[:-1], None),
    (FEATURE_NAMES + ("device_risk",), None),
    (("amount",) + FEATURE_NAMES, None),
])
def test_a_model_s_feature_names_must_be_ours_then_attributes(names, attributes):
    if attributes is None:
        with pytest.raises(ValueError):
            attributes_of(names)
    else:
        assert attributes_of(names) == attributes

"""Prequential validation folds: before the protocol's own training days, one week apart."""

import numpy as np
import pandas as pd
import pytest

from models.evaluate import DAY_MS, Protocol
from models.tune import prequential_folds, tuning_rows

P = Protocol(train_start="2018-07-25", train_days=7, delay_days=7, test_days=7)


def daily_history(first: str, days: int) -> pd.DataFrame:
    start = int(pd.Timestamp(first, tz="UTC").value // 1_000_000)
    return pd.DataFrame({"timestamp": [start + d * DAY_MS + 3_600_000 for d in range(days)],
                         "customer_id": [f"c{d}" for d in range(days)], "is_fraud": [d % 2 for d in range(days)]})


def day_of(history, mask):
    return [pd.Timestamp(t, unit="ms", tz="UTC").strftime("%m-%d") for t in history["timestamp"][mask]]


def test_folds_walk_back_one_week_and_never_touch_the_protocol_days():
    history = daily_history("2018-05-01", 120)
    folds = prequential_folds(history, P, n_folds=2)
    # fold 0 trains 07-11..07-17 and assesses 07-25..07-31; fold 1 one week earlier
    assert day_of(history, folds[0].train) == [f"07-{d}" for d in range(11, 18)]
    assert day_of(history, folds[0].assess)[0] == "07-25"
    assert day_of(history, folds[1].train) == ["07-04", "07-05", "07-06", "07-07", "07-08", "07-09", "07-10"]
    protocol_start = P.start_ms()
    for fold in folds:
        assert history["timestamp"][fold.train].max() < protocol_start
    assert all(history["timestamp"][f.assess].max() < protocol_start + 7 * DAY_MS for f in folds)


def test_a_history_too_short_for_the_folds_is_refused():
    with pytest.raises(ValueError, match="fold 1"):
        prequential_folds(daily_history("2018-07-11", 50), P, n_folds=2)


def test_tuning_reads_the_folds_the_protocol_and_the_feature_lookback_only():
    history = daily_history("2018-04-01", 183)
    rows = tuning_rows(history, P, n_folds=4, lookback_days=30)
    days = day_of(rows, np.ones(len(rows), dtype=bool))
    # earliest fold trains from 07-25 - 14 - 21 = 06-20; minus 30 days of lookback: 05-21
    assert days[0] == "05-21" and days[-1] == "08-14"

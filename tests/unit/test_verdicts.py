"""What a worker keeps from the verdicts and terminal labels it follows (no broker: applied by hand)."""

import time

import pytest

from streams.features import DAY_MS, TERMINAL_FEATURE_NAMES
from streams.verdicts import VerdictFollower

T0 = 1_522_540_800_000


def follower(horizon_seconds=3600.0):
    return VerdictFollower("unused:9092", "verdicts", "labels", None, None, horizon_seconds)


def verdict(tid, terminal, ts, scored_at=None):
    return {"transaction_id": tid, "terminal_id": terminal, "transaction_timestamp": ts, "score": 0.2,
            "decision": "APPROVE", "model_version": "1", "challenger_score": None,
            "challenger_model_version": None, "scored_at": scored_at or int(time.time() * 1000),
            "features": {"amount": 1.0}}


def test_verdicts_and_fraud_labels_make_the_terminal_features():
    f = follower()
    for i, day in enumerate((0.5, 0.6, 0.7)):
        f.apply_verdict(verdict(f"t{i}", "T1", T0 + int(day * DAY_MS)))
    f.apply_label({"transaction_id": "t1", "terminal_id": "T1", "transaction_timestamp": T0 + int(0.6 * DAY_MS),
                   "label": "FRAUD", "reported_at": T0})
    f.apply_label({"transaction_id": "t2", "terminal_id": "T1", "transaction_timestamp": T0 + int(0.7 * DAY_MS),
                   "label": "LEGIT", "reported_at": T0})
    rows = f.terminal_features(["T1", "T2", "T1"], [T0 + 8 * DAY_MS, T0 + 8 * DAY_MS, T0 + 7 * DAY_MS])
    one_day = dict(zip(TERMINAL_FEATURE_NAMES, rows[0]))
    assert one_day["terminal_nb_tx_1d"] == 3 and one_day["terminal_risk_1d"] == pytest.approx(1 / 3)
    assert rows[1].tolist() == [0.0] * 6          # an unknown terminal
    assert rows[2].tolist() == [0.0] * 6          # still inside the label delay
    assert f.verdict("t1").terminal_id == "T1" and f.verdict("nope") is None


def test_pruning_forgets_verdicts_past_the_horizon_and_terminal_events_no_window_reads():
    f = follower(horizon_seconds=60)
    now = int(time.time() * 1000)
    f.apply_verdict(verdict("old", "T1", T0, scored_at=now - 120_000))
    f.apply_verdict(verdict("new", "T2", T0 + 60 * DAY_MS, scored_at=now))
    f.prune()
    assert f.verdict("old") is None and f.verdict("new") is not None
    assert set(f.terminals) == {"T2"}  # T1's only event is 60 days older than the latest
    assert f.status()["verdicts_for_feedback"] == 1 and f.status()["status"] == "loading"

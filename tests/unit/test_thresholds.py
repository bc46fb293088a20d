import numpy as np
import pytest

from models.thresholds import DAY_MS, for_alerts_per_day


def _stream(days=10, per_day=1000, seed=0):
    """`days` days of `per_day` transactions, scores uniform, frauds exactly those scored above 0.99."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    scores = rng.random(n)
    timestamps = np.repeat(np.arange(days) * DAY_MS, per_day) + rng.integers(0, DAY_MS, n)
    return scores, timestamps, scores > 0.99


def test_the_threshold_raises_the_budgeted_alerts_a_day_and_no_more():
    scores, timestamps, labels = _stream()
    budget = for_alerts_per_day(scores, timestamps, 50, labels)
    assert budget.days == 10 and budget.transactions == 10_000
    assert budget.expected_alerts_per_day == 50.0  # the 500 highest of 10,000 distinct scores
    assert (scores >= budget.threshold).sum() == 500
    assert budget.threshold == pytest.approx(0.95, abs=0.01)
    # Every fraud (score > 0.99, about 100 of them) alerts; a fifth of the alerts are frauds.
    assert budget.recall == 1.0
    assert budget.precision == pytest.approx(labels.sum() / 500)


def test_a_tighter_budget_keeps_only_the_riskiest_and_misses_frauds():
    scores, timestamps, labels = _stream(seed=1)
    budget = for_alerts_per_day(scores, timestamps, 5, labels)
    assert (scores >= budget.threshold).sum() == 50 and budget.precision == 1.0
    assert budget.recall == pytest.approx(50 / labels.sum())


def test_ties_at_the_boundary_are_left_out_and_a_budget_over_the_traffic_alerts_everything():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    timestamps = np.zeros(5, dtype=np.int64)
    assert for_alerts_per_day(scores, timestamps, 2).expected_alerts_per_day == 1.0
    everything = for_alerts_per_day(scores, timestamps, 100)
    assert everything.threshold == 0.1 and everything.expected_alerts_per_day == 5.0
    assert everything.precision is None and everything.recall is None


@pytest.mark.parametrize("scores, per_day", [(np.array([]), 10), (np.array([0.5]), 0)])
def test_no_traffic_or_no_budget_is_refused(scores, per_day):
    with pytest.raises(ValueError):
        for_alerts_per_day(scores, np.zeros(len(scores)), per_day)


def test_on_recent_traffic_scores_the_last_days_with_the_columns_the_model_reads():
    import xgboost as xgb

    from core.features import FEATURE_NAMES, feature_matrix
    from models.serving import LoadedModel
    from models.simulate import SimulationConfig, simulate, transaction_records
    from models.thresholds import on_recent_traffic

    history = simulate(SimulationConfig(customers=100, terminals=200, days=20, seed=3))
    names = ("amount", "terminal_risk_7d")  # a version reading two of our features
    X = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy())
    columns = [FEATURE_NAMES.index(n) for n in names]
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(X[:, columns], label=history["is_fraud"].to_numpy(), feature_names=list(names)),
                        num_boost_round=10)
    budget = on_recent_traffic(LoadedModel(booster, "m", "1", "registry"), history, alerts_per_day=20, recent_days=5)
    recent = history["timestamp"].to_numpy() > history["timestamp"].max() - 5 * DAY_MS
    expected = for_alerts_per_day(booster.inplace_predict(X[recent][:, columns]), history["timestamp"].to_numpy()[recent],
                                  20, history["is_fraud"].to_numpy()[recent])
    assert budget.transactions == int(recent.sum()) and budget.expected_alerts_per_day <= 20
    assert budget.threshold == pytest.approx(expected.threshold, abs=1e-6)
    assert budget.precision == pytest.approx(expected.precision) and budget.recall == pytest.approx(expected.recall)

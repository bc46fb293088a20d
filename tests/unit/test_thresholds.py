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

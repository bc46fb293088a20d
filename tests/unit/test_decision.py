"""Scores to decisions and reasons."""

import numpy as np
import pytest

from core.decision import Thresholds, decide, top_reasons


@pytest.mark.parametrize("score, decision", [
    (0.0, "APPROVE"), (0.4999, "APPROVE"), (0.5, "REVIEW"), (0.8999, "REVIEW"), (0.9, "DECLINE"), (1.0, "DECLINE"),
])
def test_thresholds_are_inclusive_lower_bounds(score, decision):
    assert decide(np.array([score]), Thresholds(0.5, 0.9)).tolist() == [decision]


@pytest.mark.parametrize("review, decline", [(0.9, 0.5), (-0.1, 0.5), (0.5, 1.1)])
def test_inconsistent_thresholds_are_refused(review, decline):
    with pytest.raises(ValueError):
        Thresholds(review, decline)


def test_top_reasons_are_the_largest_contributions_in_order_with_their_values():
    names = ("a", "b", "c", "d")
    contributions = np.array([[0.1, -2.0, 0.5, 0.3, 9.0],   # last column is the bias: never a reason
                              [1.0, 2.0, 3.0, 4.0, -1.0]])
    features = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    reasons = top_reasons(contributions, features, names, k=3)
    assert [r["feature"] for r in reasons[0]] == ["c", "d", "a"]  # "b" pushed the score down
    assert [r["value"] for r in reasons[0]] == [30.0, 40.0, 10.0]
    assert [r["feature"] for r in reasons[1]] == ["d", "c", "b"]
    assert reasons[1][0]["contribution"] == 4.0


def test_features_that_do_not_push_the_score_up_are_never_reasons():
    names = ("a", "b", "c", "d")
    contributions = np.array([[0.0, -2.0, 0.5, 0.0, 1.0],   # one positive: one reason
                              [-1.0, -2.0, 0.0, -0.1, 3.0]])  # none positive: no reason
    features = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    reasons = top_reasons(contributions, features, names, k=3)
    assert [r["feature"] for r in reasons[0]] == ["c"]
    assert reasons[1] == []

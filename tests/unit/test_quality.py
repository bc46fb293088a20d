"""Online quality from matured labels: confusion outcomes, precision, recall and AP over a window."""

import pytest

from core.decision import Thresholds
from streams.quality import OnlineQuality, confusion


@pytest.mark.parametrize("score, fraud, threshold, outcome", [
    (0.9, True, 0.5, "tp"), (0.5, True, 0.5, "tp"), (0.49, True, 0.5, "fn"),
    (0.7, False, 0.5, "fp"), (0.1, False, 0.5, "tn"), (0.5, False, 0.5, "fp"),
])
def test_a_labelled_score_is_flagged_from_the_threshold_up(score, fraud, threshold, outcome):
    assert confusion(score, fraud, threshold) == outcome


def test_precision_recall_and_average_precision_match_a_hand_worked_window():
    q = OnlineQuality(Thresholds(review=0.5, decline=0.9), window=10)
    # ranked by score: 0.95 F, 0.8 L, 0.6 F, 0.3 L, 0.2 F
    for score, fraud in [(0.3, False), (0.95, True), (0.6, True), (0.8, False), (0.2, True)]:
        q.observe(score, fraud)
    s = q.summary()
    assert s["labels"] == 5 and s["frauds"] == 3
    assert s["review"]["precision"] == pytest.approx(2 / 3)   # 0.95, 0.8, 0.6 flagged; 2 are fraud
    assert s["review"]["recall"] == pytest.approx(2 / 3)
    assert s["decline"]["precision"] == 1.0 and s["decline"]["recall"] == pytest.approx(1 / 3)
    # AP = sum over frauds of precision at its rank / frauds = (1/1 + 2/3 + 3/5) / 3
    assert s["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_the_window_keeps_only_the_latest_labels_and_empty_figures_are_none():
    q = OnlineQuality(Thresholds(0.5, 0.9), window=2)
    assert q.observe(0.99, True) == {"review": "tp", "decline": "tp"}
    q.observe(0.1, False)
    q.observe(0.2, False)
    s = q.summary()
    assert s["labels"] == 2 and s["frauds"] == 0
    assert s["average_precision"] is None and s["review"]["recall"] is None and s["review"]["precision"] is None

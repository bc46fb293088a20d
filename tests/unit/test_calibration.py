import numpy as np
import pytest

from models.calibration import IDENTITY, Calibration, brier, choose, fit_isotonic, fit_platt, reliability


def _logistic(m):
    return 1.0 / (1.0 + np.exp(-m))


def _overconfident(n=40_000, seed=0):
    """Raw scores whose log-odds are twice too steep and shifted: the true probability is
    sigmoid(0.5 * margin - 1)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 3.0, n)
    labels = (rng.random(n) < _logistic(0.5 * margin - 1.0)).astype(int)
    return _logistic(margin), labels, margin


def test_platt_recovers_a_known_slope_and_intercept():
    raw, labels, _ = _overconfident()
    fitted = fit_platt(raw, labels)
    assert fitted.a == pytest.approx(0.5, abs=0.03) and fitted.b == pytest.approx(-1.0, abs=0.05)


def test_the_chosen_map_beats_the_raw_score_on_the_brier_score_of_unseen_rows():
    raw, labels, _ = _overconfident(seed=1)
    chosen, scores = choose(raw, labels)
    assert chosen.kind in ("platt", "isotonic") and scores[chosen.kind] == min(scores.values())
    assert scores["none"] > scores[chosen.kind]
    unseen_raw, unseen_labels, _ = _overconfident(seed=2)
    assert brier(chosen.probabilities(unseen_raw), unseen_labels) < 0.9 * brier(unseen_raw, unseen_labels)


def test_platt_is_chosen_when_the_truth_is_linear_in_log_odds_and_isotonic_when_it_is_a_step():
    raw, labels, _ = _overconfident(seed=3)
    assert choose(raw, labels)[0].kind == "platt"
    rng = np.random.default_rng(4)
    raw = rng.random(20_000)
    labels = (rng.random(20_000) < np.where(raw < 0.7, 0.02, 0.6)).astype(int)  # a step at 0.7
    chosen = choose(raw, labels)[0]
    assert chosen.kind == "isotonic"
    assert chosen.probabilities(np.array([0.3]))[0] == pytest.approx(0.02, abs=0.01)
    assert chosen.probabilities(np.array([0.9]))[0] == pytest.approx(0.6, abs=0.03)


def test_isotonic_is_non_decreasing_and_clipped_outside_what_it_saw():
    calibration = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    out = calibration.probabilities(np.array([0.0, 0.1, 0.25, 0.4, 1.0]))
    assert np.all(np.diff(out[:4]) > 0), "below 1 the raw ranking is kept"
    assert out[0] == pytest.approx(out[1], abs=1e-8) and out[-1] == out[-2] == 1.0


def test_isotonic_keeps_the_raw_ranking_so_average_precision_does_not_move():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(6)
    raw = rng.random(5000)
    labels = (rng.random(5000) < raw ** 3).astype(int)
    calibration = fit_isotonic(raw, labels)
    assert len(set(calibration.y)) < len(calibration.y) or len(calibration.y) < 5000  # it has flat steps
    assert average_precision_score(labels, calibration.probabilities(raw)) == pytest.approx(
        average_precision_score(labels, raw), abs=1e-12)


def test_platt_contributions_still_add_up_to_the_calibrated_score():
    calibration = Calibration("platt", a=0.5, b=-1.0)
    contributions = np.array([[0.4, -0.2, 1.5, 0.3]])  # three features and the bias
    raw = _logistic(contributions.sum())
    moved = calibration.contributions(contributions.copy())
    assert calibration.from_margin(moved.sum()) == pytest.approx(calibration.probabilities(np.array([raw]))[0])
    assert moved[0, :3] == pytest.approx(0.5 * contributions[0, :3])


def test_too_few_frauds_leave_the_scores_uncalibrated():
    raw = np.linspace(0, 1, 1000)
    labels = np.zeros(1000, dtype=int)
    labels[:5] = 1
    assert choose(raw, labels) == (IDENTITY, {})
    assert IDENTITY.probabilities(np.array([0.3]))[0] == 0.3


def test_a_calibration_survives_its_dict_and_refuses_an_unknown_kind():
    calibration = Calibration("isotonic", x=(0.1, 0.9), y=(0.0, 0.5))
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert Calibration.from_dict(None) == IDENTITY
    with pytest.raises(ValueError):
        Calibration.from_dict({"kind": "magic"})


def test_reliability_bins_hold_the_mean_prediction_and_the_observed_rate():
    predicted, observed, rows = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]))
    assert predicted.tolist() == pytest.approx([0.05, 0.95]) and observed.tolist() == [0.5, 1.0]
    assert rows.tolist() == [2, 2]


def test_scores_that_are_already_probabilities_are_left_as_they_are():
    rng = np.random.default_rng(5)
    raw = rng.random(30_000) * 0.3
    labels = (rng.random(30_000) < raw).astype(int)  # raw is exactly the probability
    chosen, scores = choose(raw, labels)
    assert chosen == IDENTITY and scores["none"] == min(scores.values())

"""What training makes of the history it is given, and the choices it makes on a validation slice."""

import logging

import numpy as np
import pandas as pd
import pytest

from models.params import TrainParams
from models.history import with_entity_ids
from models.train import class_weights, split_by_time, train_model

T0 = 1_522_540_800_000


def history(**columns):
    frame = pd.DataFrame({"transaction_id": ["a", "b", "c"], "customer_id": ["C1", "C2", "C1"],
                          "terminal_id": ["T1", "T1", "T2"], "amount": [1.0, 2.0, 3.0],
                          "timestamp": [T0, T0 + 1000, T0 + 2000], "is_fraud": [0, 1, 0]})
    return frame.drop(columns=[name for name, keep in columns.items() if not keep])


@pytest.mark.parametrize("customer_id, terminal_id, warned", [
    (True, True, []),
    (False, True, ["customer_id", "card features"]),
    (True, False, ["terminal_id", "terminal features"]),
    (False, False, ["customer_id", "card features", "terminal_id", "terminal features"]),
])
def test_a_history_without_card_or_terminal_ids_gets_one_constant_id_and_a_warning(customer_id, terminal_id,
                                                                                    warned, caplog):
    given = history(customer_id=customer_id, terminal_id=terminal_id)
    with caplog.at_level(logging.WARNING, logger="models.history"):
        filled = with_entity_ids(given)
    assert filled["customer_id"].tolist() == (["C1", "C2", "C1"] if customer_id else ["unknown"] * 3)
    assert filled["terminal_id"].tolist() == (["T1", "T1", "T2"] if terminal_id else ["unknown"] * 3)
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for words in warned:
        assert words in text
    assert bool(caplog.records) == bool(warned)
    assert "carry no information" in text or not warned


def test_a_csv_without_entity_ids_loads_and_featurises(tmp_path, caplog):
    from core.features import FEATURE_NAMES, feature_matrix
    from fraud.cli import _load_history
    from models.simulate import transaction_records

    path = tmp_path / "history.csv"
    history(customer_id=False, terminal_id=False).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="models.history"):
        frame = with_entity_ids(_load_history(str(path)))
    X = feature_matrix(transaction_records(frame), frame["is_fraud"].to_numpy())
    assert X[:, FEATURE_NAMES.index("customer_nb_tx_1d")].tolist() == [1.0, 2.0, 3.0]  # one card
    assert len(caplog.records) == 2


def _rare_fraud(n=6000, seed=0):
    """Two informative features and a 2 % fraud rate over 60 days of timestamps."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.02).astype(int)
    X = np.column_stack([rng.normal(y * 1.5, 1.0), rng.normal(y * 0.8, 1.0), rng.normal(0, 1, n)])
    timestamps = np.sort(rng.integers(0, 60 * 86_400_000, n))
    return X, y, timestamps


def test_the_class_weight_candidates_run_from_none_to_the_legit_to_fraud_ratio():
    assert class_weights(np.array([1] * 10 + [0] * 990)) == [1.0, 9.95, 99.0]


def test_training_picks_the_class_weight_with_the_best_validation_precision_and_calibrates_there():
    X, y, timestamps = _rare_fraud()
    trained = train_model(X, y, timestamps, TrainParams(n_estimators=20), ("a", "b", "c"))
    by_weight = trained.validation["average_precision_by_class_weight"]
    assert sorted(by_weight) == class_weights(y[~split_by_time(timestamps, 0.25)])
    assert by_weight[trained.scale_pos_weight] == max(by_weight.values())
    assert trained.validation["validation_rows"] == int(split_by_time(timestamps, 0.25).sum())
    assert trained.calibration.kind in ("platt", "isotonic")
    assert set(trained.validation["brier_by_calibration"]) == {"none", "platt", "isotonic"}
    scores = trained.scores(X)
    assert np.all((scores >= 0) & (scores <= 1))


def test_a_fixed_class_weight_is_the_only_candidate():
    X, y, timestamps = _rare_fraud(seed=1)
    trained = train_model(X, y, timestamps, TrainParams(n_estimators=10, scale_pos_weight=7.0), ("a", "b", "c"))
    assert trained.scale_pos_weight == 7.0 and list(trained.validation["average_precision_by_class_weight"]) == [7.0]


def test_calibrated_scores_average_out_near_the_fraud_rate_where_weighted_raw_scores_do_not():
    X, y, timestamps = _rare_fraud(n=20_000, seed=2)
    trained = train_model(X, y, timestamps, TrainParams(n_estimators=20, scale_pos_weight=49.0), ("a", "b", "c"))
    X_new, y_new, _ = _rare_fraud(n=20_000, seed=3)
    raw = trained.booster.inplace_predict(X_new)
    assert raw.mean() > 5 * y_new.mean()  # a weight of 49 inflates the raw score on purpose
    assert abs(trained.scores(X_new).mean() - y_new.mean()) < 0.3 * y_new.mean()

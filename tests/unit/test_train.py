"""What training makes of the history it is given, before any model is fitted."""

import logging

import pandas as pd
import pytest

from models.train import with_entity_ids

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
    with caplog.at_level(logging.WARNING, logger="models.train"):
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
    with caplog.at_level(logging.WARNING, logger="models.train"):
        frame = with_entity_ids(_load_history(str(path)))
    X = feature_matrix(transaction_records(frame), frame["is_fraud"].to_numpy())
    assert X[:, FEATURE_NAMES.index("customer_nb_tx_1d")].tolist() == [1.0, 2.0, 3.0]  # one card
    assert len(caplog.records) == 2

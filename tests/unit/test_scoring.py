"""Scoring a batch: decoded transactions and state in, verdicts and state changes out (no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from core.decision import Thresholds
from core.features import FEATURE_NAMES, CardState, TerminalCounts
from models.serving import LoadedModel
from streams.rules import Rules
from streams.scoring import score_batch

T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """A small model whose score rises with the amount."""
    rng = np.random.default_rng(0)
    X = rng.random((400, len(FEATURE_NAMES))) * 100
    y = (X[:, FEATURE_NAMES.index("amount")] > 70).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(X, label=y, feature_names=list(FEATURE_NAMES)), num_boost_round=10)
    return LoadedModel(booster, "m", "3", "registry")


def txn(i: int, card: str = "C1", amount: float = 10.0, terminal: str = "T1", at: int = T0) -> dict:
    return {"transaction_id": f"t{i}", "customer_id": card, "terminal_id": terminal, "merchant_id": "M",
            "amount": amount, "timestamp": at + i * 1000, "channel": "POS", "card_present": True,
            "merchant_category": "5411", "attributes": {}}


def test_each_transaction_gets_one_verdict_in_order_naming_the_model_and_its_features(model):
    batch = [txn(0, "C1"), txn(1, "C2", amount=95.0), txn(2, "C3")]
    scored = score_batch(batch, {}, {}, model, None, Rules(), Thresholds(), now_ms=T0)
    assert [v["transaction_id"] for v in scored.verdicts] == ["t0", "t1", "t2"]
    assert {v["model_version"] for v in scored.verdicts} == {"3"}
    assert scored.verdicts[1]["score"] > scored.verdicts[0]["score"]
    assert list(scored.verdicts[0]["features"]) == list(FEATURE_NAMES)
    assert scored.verdicts[1]["features"]["amount"] == 95.0
    assert all(len(v["reasons"]) <= 3 and all(r["contribution"] > 0 for r in v["reasons"]) for v in scored.verdicts)


def test_a_card_s_later_transaction_in_the_batch_sees_the_earlier_one_and_the_state_keeps_both(model):
    cards: dict[str, CardState] = {}
    scored = score_batch([txn(0), txn(1), txn(2, card="C2")], cards, {}, model, None, Rules(), Thresholds(), T0)
    counts = [v["features"]["customer_nb_tx_1d"] for v in scored.verdicts]
    assert counts == [1.0, 2.0, 1.0]
    assert scored.changed_cards == {"C1", "C2"} and set(cards) == {"C1", "C2"}
    again = score_batch([txn(3)], cards, {}, model, None, Rules(), Thresholds(), T0)
    assert again.verdicts[0]["features"]["customer_nb_tx_1d"] == 3.0


def test_a_terminal_s_published_counts_feed_its_features_a_week_and_six_hours_later(model):
    counts = TerminalCounts()
    for k in range(4):
        counts.add(T0 + k, fraud=False)
    counts.add(T0, fraud=True)
    later = txn(0, at=T0 + 7 * DAY + 6 * HOUR)
    scored = score_batch([later], {}, {"T1": counts}, model, None, Rules(), Thresholds(), T0)
    features = scored.verdicts[0]["features"]
    assert features["terminal_nb_tx_1d"] == 4.0 and features["terminal_risk_1d"] == 0.25
    unknown = score_batch([txn(1, terminal="T-NEW")], {}, {"T1": counts}, model, None, Rules(), Thresholds(), T0)
    assert unknown.verdicts[0]["features"]["terminal_nb_tx_30d"] == 0.0


def test_a_broken_rule_declines_whatever_the_score_and_is_named(model):
    rules = Rules(blocked_cards=frozenset({"C9"}), count=1)
    scored = score_batch([txn(0, card="C9"), txn(1)], {}, {}, model, None, rules, Thresholds(), T0)
    assert [v["decision"] for v in scored.verdicts][0] == "DECLINE"
    assert scored.verdicts[0]["rules"] == ["block_card:C9"] and scored.verdicts[1]["rules"] == []


def test_a_challenger_scores_in_shadow_and_decides_nothing(model):
    scored = score_batch([txn(0, amount=99.0)], {}, {}, model, model, Rules(), Thresholds(0.99, 1.0), T0)
    verdict = scored.verdicts[0]
    assert verdict["challenger_model_version"] == "3"
    assert verdict["challenger_score"] == pytest.approx(verdict["score"])
    assert verdict["decision"] == "APPROVE"


def test_a_version_trained_on_fewer_of_our_features_is_served_the_columns_it_reads():
    names = ("terminal_nb_tx_7d", "amount")  # a subset, in its own order
    rng = np.random.default_rng(1)
    X = rng.random((400, 2)) * 100
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(X, label=(X[:, 1] > 70).astype(int), feature_names=list(names)), num_boost_round=5)
    older = LoadedModel(booster, "m", "1", "registry")
    rows = rng.random((6, len(FEATURE_NAMES))) * 100
    matrix = older.matrix(rows, [{}] * 6)
    np.testing.assert_array_equal(matrix, rows[:, [FEATURE_NAMES.index(n) for n in names]])
    scored = score_batch([txn(0, amount=95.0), txn(1, amount=5.0)], {}, {}, older, None, Rules(), Thresholds(), now_ms=T0)
    assert set(scored.verdicts[0]["features"]) == set(names)
    assert scored.verdicts[0]["score"] > scored.verdicts[1]["score"]

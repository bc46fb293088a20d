"""The handbook's evaluation protocol and card precision@k, on cases small enough to check by hand."""

import numpy as np
import pandas as pd

from models.evaluate import (DAY_MS, FRAUD_KINDS, FRESH_TERMINAL, Protocol, card_precision_at_k, evaluation_metrics,
                             fraud_kinds, missed_fraud_cards, over_seeds, split, spread)

P = Protocol(train_start="2018-07-25", train_days=2, delay_days=1, test_days=2, top_k=2)
D0 = P.start_ms()


def frame(rows):
    """rows: (day, card, fraud)"""
    return pd.DataFrame({"timestamp": [D0 + d * DAY_MS + 3_600_000 for d, _, _ in rows],
                         "customer_id": [c for _, c, _ in rows], "is_fraud": [f for _, _, f in rows]})


def test_card_precision_ranks_cards_by_their_best_score_each_day():
    days = np.array([0, 0, 0, 0, 0])
    cards = np.array(["a", "a", "b", "c", "d"])
    labels = np.array([0, 1, 0, 1, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2])
    # a (best 0.9, has a fraud) and b (0.8, no fraud) are the top 2: precision 1/2
    assert card_precision_at_k(days, cards, labels, scores, k=2) == 0.5


def test_card_precision_leaves_out_cards_caught_on_earlier_days():
    days = np.array([0, 0, 1, 1, 1])
    cards = np.array(["a", "b", "a", "b", "c"])
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.9, 0.8, 0.5])
    # day 0: top 2 = a (fraud), b -> 1/2, a detected. day 1: a left out; top 2 = b, c (fraud) -> 1/2
    assert card_precision_at_k(days, cards, labels, scores, k=2) == 0.5


def test_split_trains_on_the_train_days_and_tests_after_the_gap_without_known_compromised_cards():
    history = frame([
        (-1, "x", 0),   # before the train window: in neither
        (0, "a", 1),    # train; a becomes known
        (1, "b", 0),    # train; b is a fraud later, on day 2 (the gap)
        (2, "b", 1),    # gap: in neither, but known from test day 1 on (day 2 = train_days + 1 - 1)
        (3, "a", 0),    # test day 0: a known since training -> removed
        (3, "b", 0),    # test day 0: b not known yet -> kept
        (3, "c", 1),    # kept
        (4, "b", 1),    # test day 1: b now known -> removed
        (4, "c", 0),    # kept (c's fraud on day 3 is not known yet)
    ])
    train, test = split(history, P)
    assert train.tolist() == [False, True, True, False, False, False, False, False, False]
    assert test.tolist() == [False, False, False, False, False, True, True, False, True]


def test_evaluation_metrics_on_a_perfect_ranking():
    history = frame([(3, "a", 0), (3, "b", 1), (4, "c", 0), (4, "d", 1)])
    test = np.ones(4, dtype=bool)
    m = evaluation_metrics(history, test, np.array([0.1, 0.9, 0.2, 0.8]), P)
    assert m["auc_roc"] == 1.0 and m["average_precision"] == 1.0
    assert m["card_precision_at_2"] == 0.5  # one fraud card a day among the top 2
    assert (m["n_test"], m["n_test_frauds"]) == (4, 2)


def test_spread_uses_the_sample_standard_deviation_and_a_t_interval():
    s = spread([1.0, 2.0, 3.0, 4.0])
    # sd = sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3); t(0.975, 3) = 3.182446; half = t * sd / 2
    assert s.mean == 2.5
    assert abs(s.sd - 1.2909944) < 1e-6
    assert abs(s.low - (2.5 - 2.0542603)) < 1e-6 and abs(s.high - (2.5 + 2.0542603)) < 1e-6
    assert s.n == 4


def test_spread_of_ten_equal_values_has_no_width_and_of_one_value_no_interval():
    s = spread([0.7] * 10)
    assert s.sd == 0.0 and abs(s.low - 0.7) < 1e-12 and abs(s.high - 0.7) < 1e-12
    one = spread([0.7])
    assert one.mean == 0.7 and one.sd != one.sd and one.n == 1


def test_over_seeds_spreads_each_metric():
    rows = [{"auc_roc": 0.8, "average_precision": 0.6}, {"auc_roc": 0.9, "average_precision": 0.7}]
    summary = over_seeds(rows, ["auc_roc", "average_precision"])
    assert abs(summary["auc_roc"].mean - 0.85) < 1e-12
    # two values 0.1 apart: sd = 0.1 / sqrt(2); t(0.975, 1) = 12.7062; half = t * sd / sqrt(2) = 0.635310
    assert abs(summary["average_precision"].sd - 0.0707107) < 1e-6
    assert abs(summary["average_precision"].high - (0.65 + 0.6353102)) < 1e-6


def test_a_terminal_s_frauds_count_as_fresh_until_its_first_fraud_is_more_than_7_days_old():
    history = pd.DataFrame({"timestamp": [D0 + d * DAY_MS for d in (0, 3, 7, 8, 8, 8)],
                            "terminal_id": ["T", "T", "T", "T", "U", "V"],
                            "fraud_scenario": [2, 2, 2, 2, 0, 3]})
    assert fraud_kinds(history, P).tolist() == [FRESH_TERMINAL] * 3 + [FRAUD_KINDS[2], "", FRAUD_KINDS[3]]


def test_the_fraud_cards_a_day_s_top_k_leaves_out_are_counted_by_why_they_are_frauds():
    days = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    cards = np.array(["a", "b", "c", "d", "d", "a", "e", "f"])
    labels = np.array([1, 0, 1, 1, 1, 1, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.9, 0.1, 0.5])
    kinds = np.array([FRAUD_KINDS[3], "", FRESH_TERMINAL, FRESH_TERMINAL, FRAUD_KINDS[1], FRAUD_KINDS[3],
                      FRESH_TERMINAL, ""], dtype=object)
    # day 0: top 2 = a (fraud), b; c (fresh terminal) and d (fresh terminal and amount) left out.
    # day 1: a caught before; top 2 = f, e (fraud): nothing left out.
    assert missed_fraud_cards(days, cards, labels, scores, kinds, k=2) == {
        "caught": 2, FRESH_TERMINAL: 1, FRAUD_KINDS[1]: 1}

"""The champion gate for runs registered after training."""

from models.registry import gate
from models.train import promotion


def test_with_no_champion_any_run_is_promoted():
    assert gate({"average_precision": 0.1}, None, None) == (True, "no champion yet")


def test_a_run_compared_with_the_current_champion_is_promoted_only_if_it_beat_it():
    won = {"average_precision": 0.8, "champion_average_precision": 0.7}
    lost = {"average_precision": 0.6, "champion_average_precision": 0.7}
    assert gate(won, "3", "3")[0] is True and "beats champion v3 0.7000" in gate(won, "3", "3")[1]
    assert gate(lost, "3", "3")[0] is False and "does not beat" in gate(lost, "3", "3")[1]


def test_a_run_compared_with_another_champion_or_none_is_not_promoted_and_says_retrain():
    won = {"average_precision": 0.8, "champion_average_precision": 0.7}
    for compared_with in ("2", None):
        promoted, reason = gate(won, compared_with, "3")
        assert not promoted and "v3 is champion now" in reason and "retrain" in reason


def test_a_tie_with_the_champion_does_not_promote():
    assert promotion({"average_precision": 0.7}, "1", {"average_precision": 0.7})[0] is False

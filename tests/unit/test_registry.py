"""The champion gate for runs registered after training, and answers that name no address."""

from models.registry import gate
from models.train import promotion
from ops_api.web import without_addresses


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


def test_addresses_are_taken_out_of_answers_and_times_and_versions_are_left():
    text = ("API request to http://10.0.0.5:5002/api/2.0/x failed; Connect to ipv4#127.0.0.1:9092 failed; "
            "connecting to redis.internal:6379. at 12:30, v3")
    cleaned = without_addresses(text)
    assert "10.0.0.5" not in cleaned and "127.0.0.1" not in cleaned and "redis.internal" not in cleaned
    assert "12:30, v3" in cleaned and cleaned.count("<address>") == 3

"""What answers say about failures: no internal address, no value from a user's file."""

from core.redact import failure, without_addresses
from models.train import TrainingError


def test_addresses_are_taken_out_of_answers_and_times_and_versions_are_left():
    text = ("API request to http://10.0.0.5:5002/api/2.0/x failed; Connect to ipv4#127.0.0.1:9092 failed; "
            "connecting to redis.internal:6379. at 12:30, v3")
    cleaned = without_addresses(text)
    assert "10.0.0.5" not in cleaned and "127.0.0.1" not in cleaned and "redis.internal" not in cleaned
    assert "12:30, v3" in cleaned and cleaned.count("<address>") == 3


def test_a_job_that_read_a_file_fails_without_echoing_its_values_but_our_own_reasons_stay_whole():
    echoed = ValueError("could not convert string to float: 'ACME-SECRET-42'")
    assert "ACME-SECRET-42" not in failure(echoed, read_a_file=True)
    unquoted = ValueError("Unknown datetime string format, unable to parse: ACME-SECRET-42, at position 0")
    assert failure(unquoted, read_a_file=True).startswith("ValueError: the data file could not be used")
    assert "ACME-SECRET-42" in failure(echoed, read_a_file=False)
    ours = TrainingError("history has no 'is_fraud' label column")
    assert failure(ours, read_a_file=True, our_own=(TrainingError,)) == "TrainingError: history has no 'is_fraud' label column"
    assert "127.0.0.1" not in failure(RuntimeError("API request to http://127.0.0.1:5002/x failed"), False)

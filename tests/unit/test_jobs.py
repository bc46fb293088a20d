"""Training requests over HTTP become the command line a job runs."""

import pytest
from pydantic import ValidationError

from ops_api.jobs import TrainRequest, train_command


@pytest.mark.parametrize("body, expected, absent", [
    ({}, ["--customers", "1000"], ["--data", "--examples"]),
    ({"data_path": "/d/h.csv"}, ["--data", "/d/h.csv", "--label-column", "is_fraud"], ["--examples"]),
    ({"data_path": "/d/h.csv", "label_column": "chargeback"}, ["--label-column", "chargeback"], []),
    ({"source": "examples"}, ["--examples"], ["--data"]),
    ({"promote": False}, ["--no-promote"], []),
    ({"alerts_per_day": 40}, ["--alerts-per-day", "40.0"], []),
])
def test_a_train_request_names_its_data_in_the_job_command(body, expected, absent):
    args = train_command(TrainRequest(**body))
    assert args[0] == "train"
    joined = " ".join(args)
    assert " ".join(expected) in joined
    assert not any(a in args for a in absent)


@pytest.mark.parametrize("body", [
    {"source": "file"},
    {"source": "examples", "data_path": "/d/h.csv"},
    {"label_column": ""},
    {"max_depth": 0},
    {"alerts_per_day": 0},
    {"sorce": "examples"},
])
def test_an_inconsistent_train_request_is_refused(body):
    with pytest.raises(ValidationError):
        TrainRequest(**body)

"""The request bodies' fields as their JSON Schema reads a JSON value (ops_api/fields.py)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from ops_api.explain import ExplainRequest
from ops_api.fields import Integer, absent_or, integer
from ops_api.jobs import TrainRequest
from ops_api.predict import Transaction
from ops_api.web import field_errors


class Body(BaseModel):
    model_config = ConfigDict(strict=True)

    count: Integer = 1
    since: integer(ge=0, le=10) | None = None
    name: str = absent_or(min_length=1)


@pytest.mark.parametrize("value", [3, 3.0, 0.0])
def test_an_integer_field_takes_a_number_without_a_fraction(value):
    assert Body.model_validate({"count": value}).count == int(value)
    assert isinstance(Body.model_validate({"count": value}).count, int)


@pytest.mark.parametrize("value", [True, "3", 3.5, float("inf"), float("nan"), None, [3]])
def test_an_integer_field_refuses_booleans_strings_fractions_and_the_rest(value):
    with pytest.raises(ValidationError) as refused:
        Body.model_validate({"count": value})
    assert refused.value.errors()[0]["loc"] == ("count",)


def test_an_optional_integer_keeps_its_bounds_in_the_document_and_in_validation():
    schema = Body.model_json_schema()["properties"]["since"]
    assert {"type": "integer", "minimum": 0, "maximum": 10} in schema["anyOf"] and {"type": "null"} in schema["anyOf"]
    assert Body.model_validate({"since": 4.0}).since == 4 and Body.model_validate({"since": None}).since is None
    with pytest.raises(ValidationError):
        Body.model_validate({"since": 11})


def test_a_field_that_may_be_left_out_refuses_null_and_its_document_gives_no_default():
    assert Body.model_validate({}).name is None
    with pytest.raises(ValidationError):
        Body.model_validate({"name": None})
    assert "default" not in Body.model_json_schema()["properties"]["name"]


def test_explain_takes_exactly_one_of_an_id_or_a_transaction_and_its_document_says_so():
    assert ExplainRequest.model_json_schema()["oneOf"] == [{"required": ["transaction_id"]},
                                                           {"required": ["transaction"]}]
    for body in ({}, {"transaction_id": "t", "transaction": {}}, {"transaction_id": None}):
        with pytest.raises(ValidationError):
            ExplainRequest.model_validate(body)


def test_a_training_request_names_a_file_exactly_when_its_source_is_a_file():
    assert TrainRequest.model_validate({"data_path": "h.csv"}).source == "file"
    for body in ({"source": "file"}, {"source": "examples", "data_path": "h.csv"}, {"data_path": ""}):
        with pytest.raises(ValidationError):
            TrainRequest.model_validate(body)


TRANSACTION = {"transaction_id": "t1", "customer_id": "c1", "terminal_id": "x1", "merchant_id": "m1", "amount": 12.5}


@pytest.mark.parametrize("attributes", [{"k" * 200_000: 1.0}, {"": 1.0}, {"risk": float("nan")},
                                        {"risk": float("inf")}, {"risk": 1e16}, {"risk": "0.5"},
                                        {f"a{i}": 1.0 for i in range(65)}])
def test_a_transaction_s_attributes_refuse_long_or_empty_names_values_that_are_not_finite_and_more_than_64(
        attributes):
    with pytest.raises(ValidationError) as refused:
        Transaction.model_validate({**TRANSACTION, "attributes": attributes})
    message, fields = field_errors(refused.value)
    assert fields[0]["field"].startswith("attributes") and len(message) < 300


def test_a_transaction_s_attributes_take_short_names_and_finite_numbers_and_the_document_says_so():
    assert Transaction.model_validate({**TRANSACTION, "attributes": {"risk": 0.5, "n": 3}}).attributes == {
        "risk": 0.5, "n": 3.0}
    schema = Transaction.model_json_schema()["properties"]["attributes"]
    assert schema["propertyNames"] == {"minLength": 1, "maxLength": 128} and schema["maxProperties"] == 64
    assert schema["additionalProperties"]["type"] == "number"

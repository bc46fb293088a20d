"""The Confluent-framed Avro codec: golden bytes, round trips, schema evolution, clear errors."""

import copy
import struct

import pytest

from schemas.codec import AvroCodec, CodecError, _parse, load_schema


class StubRegistry:
    """Ids to schemas in memory: the codec's logic without a server (integration tests use the real one)."""

    def __init__(self):
        self.schemas = {}

    def register(self, subject, schema, compatibility="BACKWARD"):
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = _parse(schema)
        return schema_id

    def writer_schema(self, schema_id):
        if schema_id not in self.schemas:
            raise CodecError(f"unknown schema id {schema_id}")
        return self.schemas[schema_id]


RECORD = {"transaction_id": "t1", "customer_id": "c", "terminal_id": "x", "merchant_id": "m", "amount": 1.5,
          "timestamp": 1_700_000_000_000}
GOLDEN = bytes.fromhex("0000000001" "047431" "0263" "0278" "026d" "000000000000f83f" "06455552"
                       "80a0abfef962" "0e756e6b6e6f776e" "00" "01" "00" "00")


@pytest.fixture
def codec():
    c = AvroCodec(StubRegistry(), load_schema("transaction"), "transactions-value")
    c.register()
    return c


def test_a_transaction_encodes_to_the_golden_confluent_bytes(codec):
    assert codec.encode(RECORD) == GOLDEN


def test_golden_bytes_decode_with_defaults_filled_and_timestamps_as_epoch_millis(codec):
    decoded = codec.decode(GOLDEN)
    assert decoded == {**RECORD, "currency": "EUR", "merchant_category": "unknown", "channel": "POS",
                       "card_present": True, "country": "", "attributes": {}}


def test_verdicts_and_feedback_round_trip():
    registry = StubRegistry()
    verdicts = AvroCodec(registry, load_schema("verdict"), "v-value")
    verdicts.register()
    verdict = {"transaction_id": "t", "customer_id": "c", "score": 0.25, "decision": "REVIEW",
               "model_name": "m", "model_version": "3",
               "reasons": [{"feature": "amount", "value": 1.0, "contribution": 0.5}], "rules": ["block_card:c"], "challenger_model_version": "4", "challenger_score": 0.5,
               "transaction_timestamp": 1, "scored_at": 2, "latency_ms": 3.5, "terminal_id": "T7",
               "features": {"amount": 12.5, "terminal_risk_7d": 0.25}}
    assert verdicts.decode(verdicts.encode(verdict)) == verdict
    feedback = AvroCodec(registry, load_schema("feedback"), "f-value")
    feedback.register()
    label = {"transaction_id": "t", "label": "FRAUD", "source": "chargeback", "reported_at": 5,
             "customer_id": None, "terminal_id": "T1"}
    assert feedback.decode(feedback.encode(label)) == label


def test_a_record_written_with_an_older_schema_decodes_with_the_new_defaults(codec):
    old = copy.deepcopy(load_schema("transaction"))
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("country", "attributes", "channel")]
    writer = AvroCodec(codec.registry, old, "transactions-value")
    writer.register()
    decoded = codec.decode(writer.encode(RECORD))
    assert decoded["country"] == "" and decoded["attributes"] == {} and decoded["channel"] == "POS"
    assert decoded["amount"] == 1.5


@pytest.mark.parametrize("data, reason", [
    (b"", "empty message"),
    (b"\x00\x00", "shorter than the Confluent header"),
    (b"{\"json\": true}", "not Confluent Avro: magic byte 123"),
    (b"\x00" + struct.pack(">I", 99) + b"\x02a", "unknown schema id 99"),
    (GOLDEN[:-6], "invalid Avro body for schema id 1"),
    (GOLDEN + b"\x00", "1 trailing bytes"),
])
def test_undecodable_messages_raise_a_codec_error_with_the_reason(codec, data, reason):
    with pytest.raises(CodecError, match=reason):
        codec.decode(data)


def test_a_record_missing_a_required_field_cannot_be_encoded(codec):
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode({k: v for k, v in RECORD.items() if k != "amount"})

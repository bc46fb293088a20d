"""A step's records through `decoded`: bad ones to the dead-letter topic, the rest waiting for the
registry when it is away (no Kafka: a recording transaction stands in)."""

from __future__ import annotations

from core.metrics import Metrics
from schemas.codec import CodecError, RegistryUnavailable
from streams.records import decoded


class Record:
    def __init__(self, offset: int, value: bytes):
        self._offset, self._value = offset, value

    def topic(self):
        return "transactions"

    def partition(self):
        return 3

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return b"card"


class Codec:
    """b"ok:<x>" decodes to {"x": x}; b"bad" is not decodable; b"away" needs the absent registry."""

    def decode(self, data: bytes) -> dict:
        if data == b"bad":
            raise CodecError("unknown schema id 99")
        if data == b"away":
            raise RegistryUnavailable("connection refused")
        return {"x": data.split(b":")[1].decode()}


class Transaction:
    def __init__(self):
        self.produced, self.processed_offsets = [], []

    def produce(self, topic, value, key=None, partition=-1, headers=None):
        self.produced.append((topic, value, dict(headers or [])))

    def processed(self, topic, partition, offset):
        self.processed_offsets.append((topic, partition, offset))


def _decode(values: list[bytes]):
    transaction, waits = Transaction(), []
    records = [Record(10 + i, v) for i, v in enumerate(values)]
    out = [(msg.offset(), value) for msg, value in decoded(records, Codec(), transaction, "dlq", Metrics(),
                                                           lambda *at: waits.append(at))]
    return out, transaction, waits


def test_a_record_that_cannot_be_decoded_goes_to_the_dlq_with_its_reason_and_the_rest_go_on():
    out, transaction, waits = _decode([b"ok:a", b"bad", b"ok:b"])
    assert out == [(10, {"x": "a"}), (12, {"x": "b"})]
    [(topic, value, headers)] = transaction.produced
    assert (topic, value) == ("dlq", b"bad")
    assert headers["dlq.reason"] == b"unknown schema id 99"
    assert (headers["dlq.source.topic"], headers["dlq.source.partition"], headers["dlq.source.offset"]) == (
        b"transactions", b"3", b"11")
    assert transaction.processed_offsets == [("transactions", 3, 11)] and waits == []


def test_while_the_registry_is_away_the_partition_waits_at_that_record_and_nothing_after_it_is_read():
    out, transaction, waits = _decode([b"ok:a", b"away", b"ok:b", b"bad"])
    assert out == [(10, {"x": "a"})]
    assert waits == [("transactions", 3, 11)]
    assert transaction.produced == [] and transaction.processed_offsets == []

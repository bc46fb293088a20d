"""What one Kafka transaction holds and the order of its commit, with a recording producer (the
real broker is exercised by tests/integration and tests/resilience)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.checkpoint import Checkpoint, ProducerFenced, Rewind
from streams.state import Store


class RecordingProducer:
    def __init__(self, fail_commit: KafkaError | None = None):
        self.calls: list = []
        self.fail_commit = fail_commit

    def begin_transaction(self):
        self.calls.append(("begin",))

    def produce(self, topic, value, key, partition, headers=None):
        self.calls.append(("produce", topic, key, value, partition))

    def send_offsets_to_transaction(self, positions, metadata, timeout):
        self.calls.append(("offsets", sorted((tp.topic, tp.partition, tp.offset) for tp in positions)))

    def commit_transaction(self, timeout):
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.calls.append(("commit",))

    def abort_transaction(self, timeout):
        self.calls.append(("abort",))


class Group:
    def consumer_group_metadata(self):
        return "generation-7"


def _checkpoint(producer) -> tuple[Checkpoint, Store]:
    store = Store("cards", "transactions", "cards-changelog", encode=lambda v: str(v).encode(), decode=int)
    store.open(0)
    return Checkpoint(producer, Group(), [store], interval=0.1), store


def test_nothing_processed_commits_nothing():
    producer = RecordingProducer()
    checkpoint, _ = _checkpoint(producer)
    assert checkpoint.commit() == {} and producer.calls == []


def test_a_commit_writes_outputs_then_each_changed_key_once_then_the_offsets_after_the_last_processed():
    producer = RecordingProducer()
    checkpoint, store = _checkpoint(producer)
    checkpoint.produce("verdicts", b"v1", b"t1")
    store.partition(0)["card"] = 1
    store.changed(0, ["card"])
    checkpoint.processed("transactions", 0, 41)
    store.partition(0)["card"] = 2
    store.changed(0, ["card"])
    checkpoint.processed("transactions", 0, 42)
    assert checkpoint.commit() == {("transactions", 0): 42}
    assert producer.calls == [
        ("begin",),
        ("produce", "verdicts", b"t1", b"v1", -1),
        ("produce", "cards-changelog", b"card", b"2", 0),
        ("offsets", [("transactions", 0, 43)]),
        ("commit",),
    ]
    assert checkpoint.commit() == {}  # closed: the next write begins a new transaction


@pytest.mark.parametrize("error, raised", [
    (KafkaError(KafkaError._STATE, "transaction aborted by the coordinator", txn_requires_abort=True), Rewind),
    (KafkaError(KafkaError._FENCED, "fenced by a newer producer", fatal=True), ProducerFenced),
])
def test_a_commit_that_fails_asks_for_a_rewind_and_commits_no_offset(error, raised):
    producer = RecordingProducer(fail_commit=error)
    checkpoint, _ = _checkpoint(producer)
    checkpoint.produce("verdicts", b"v", b"k")
    checkpoint.processed("transactions", 0, 5)
    with pytest.raises(raised):
        checkpoint.commit()
    checkpoint.abort()
    assert checkpoint.offsets == {} and ("commit",) not in producer.calls

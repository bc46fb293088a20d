"""What one Kafka transaction holds and the order of its commit, with a recording producer (the
real broker is exercised by tests/integration and tests/resilience)."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.checkpoint import OVERDUE_POLL_SECONDS, Checkpoint, ProducerFenced, Rewind
from streams.state import Store


class RecordingProducer:
    def __init__(self, name: str, calls: list, fail_commit: KafkaError | None = None):
        self.name = name
        self.calls = calls  # shared by both producers: the order across them counts
        self.fail_commit = fail_commit

    def begin_transaction(self):
        self.calls.append((self.name, "begin"))

    def produce(self, topic, value, key, partition, headers=None):
        self.calls.append((self.name, "produce", topic, key, value, partition))

    def produce_batch(self, topic, messages, partition=-1):
        """As confluent-kafka's: every record goes to `partition`, whatever its dict says."""
        for m in messages:
            self.produce(topic, m["value"], m["key"], partition)
        return len(messages)

    def send_offsets_to_transaction(self, positions, metadata, timeout):
        self.calls.append((self.name, "offsets", sorted((tp.topic, tp.partition, tp.offset) for tp in positions)))

    def commit_transaction(self, timeout):
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.calls.append((self.name, "commit"))

    def abort_transaction(self, timeout):
        self.calls.append((self.name, "abort"))


class Group:
    def consumer_group_metadata(self):
        return "generation-7"


def _checkpoint(fail_commit: KafkaError | None = None) -> tuple[Checkpoint, Store, list]:
    calls: list = []
    store = Store("cards", "transactions", "cards-changelog", encode=lambda v: str(v).encode(), decode=int)
    store.open(0)
    producers = [RecordingProducer("a", calls, fail_commit), RecordingProducer("b", calls)]
    return Checkpoint(producers, Group(), [store], interval=0.1), store, calls


def test_each_changed_key_goes_to_the_changelog_partition_of_its_source_partition():
    checkpoint, store, calls = _checkpoint()
    store.open(2)
    for partition, key in ((0, "a"), (2, "b"), (0, "c")):
        store.partition(partition)[key] = 1
        store.changed(partition, [key])
        checkpoint.processed("transactions", partition, 5)
    checkpoint.commit(wait=True)
    written = sorted((c[3], c[5]) for c in calls if c[1] == "produce")
    assert written == [(b"a", 0), (b"b", 2), (b"c", 0)]


def test_nothing_processed_commits_nothing():
    checkpoint, _, calls = _checkpoint()
    checkpoint.commit(wait=True)
    assert calls == [] and checkpoint.commits == 0


def test_a_commit_writes_outputs_then_each_changed_key_once_then_the_offsets_after_the_last_processed():
    checkpoint, store, calls = _checkpoint()
    checkpoint.produce("verdicts", b"v1", b"t1")
    store.partition(0)["card"] = 1
    store.changed(0, ["card"])
    checkpoint.processed("transactions", 0, 41)
    store.partition(0)["card"] = 2
    store.changed(0, ["card"])
    checkpoint.processed("transactions", 0, 42)
    checkpoint.commit(wait=True)
    assert calls == [
        ("a", "begin"),
        ("a", "produce", "verdicts", b"t1", b"v1", -1),
        ("a", "produce", "cards-changelog", b"card", b"2", 0),
        ("a", "offsets", [("transactions", 0, 43)]),
        ("a", "commit"),
    ]
    assert checkpoint.commits == 1


def test_the_next_transaction_goes_to_the_other_producer_and_commits_only_after_the_first():
    checkpoint, _, calls = _checkpoint()
    checkpoint.processed("transactions", 0, 1)
    checkpoint.commit()
    checkpoint.produce("verdicts", b"v2", b"t2")  # while the first one commits
    checkpoint.processed("transactions", 0, 2)
    checkpoint.commit(wait=True)
    first_commit = calls.index(("a", "commit"))
    assert calls.index(("b", "offsets", [("transactions", 0, 3)])) > first_commit
    assert calls[-1] == ("b", "commit") and checkpoint.commits == 2


@pytest.mark.parametrize("error, raised", [
    (KafkaError(KafkaError._STATE, "transaction aborted by the coordinator", txn_requires_abort=True), Rewind),
    (KafkaError(KafkaError._FENCED, "fenced by a newer producer", fatal=True), ProducerFenced),
])
def test_a_commit_that_fails_asks_for_a_rewind_and_commits_no_offset(error, raised):
    checkpoint, _, calls = _checkpoint(fail_commit=error)
    checkpoint.produce("verdicts", b"v", b"k")
    checkpoint.processed("transactions", 0, 5)
    checkpoint.commit()
    checkpoint.produce("verdicts", b"v2", b"k2")  # the next transaction, on the other producer
    with pytest.raises(raised):
        checkpoint.settle()
    checkpoint.abort()  # what the rewind does: the transaction opened after the failed one goes too
    assert checkpoint.offsets == {} and ("a", "commit") not in calls and ("b", "abort") in calls


def test_a_rewind_aborts_the_failed_commit_too_so_that_producer_can_begin_again():
    error = KafkaError(KafkaError._TIMED_OUT, "2 message(s) timed out", txn_requires_abort=True)
    checkpoint, _, calls = _checkpoint(fail_commit=error)
    checkpoint.processed("transactions", 0, 5)
    checkpoint.commit()
    with pytest.raises(Rewind):
        checkpoint.settle()
    checkpoint.abort()
    assert ("a", "abort") in calls


def test_an_unexpected_error_in_the_commit_thread_asks_for_a_rewind_rather_than_passing_for_committed():
    checkpoint, _, _ = _checkpoint()
    checkpoint.producers[0].commit_transaction = lambda timeout: 1 / 0
    checkpoint.processed("transactions", 0, 5)
    checkpoint.commit()
    with pytest.raises(Rewind, match="ZeroDivisionError"):
        checkpoint.settle()
    assert checkpoint.commits == 0 and checkpoint.unfinished == {0}


def test_every_commit_runs_on_the_same_commit_thread():
    checkpoint, _, _ = _checkpoint()
    threads = []
    for producer in checkpoint.producers:
        producer.commit_transaction = lambda timeout: threads.append(threading.get_ident())
    for offset in range(4):
        checkpoint.processed("transactions", 0, offset)
        checkpoint.commit(wait=True)
    checkpoint.close()
    assert len(threads) == 4 and len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_a_begin_that_fails_leaves_its_producer_to_be_aborted():
    checkpoint, _, calls = _checkpoint()

    def refuse():
        raise KafkaException(KafkaError(KafkaError._STATE, "abortable error", txn_requires_abort=True))

    checkpoint.producers[0].begin_transaction = refuse
    with pytest.raises(Rewind):
        checkpoint.processed("transactions", 0, 1)
    checkpoint.abort()
    assert calls == [("a", "abort")]


def test_an_offset_processed_before_a_lower_one_in_the_same_transaction_is_the_one_committed():
    checkpoint, _, calls = _checkpoint()
    checkpoint.processed("transactions", 0, 9)
    checkpoint.processed("transactions", 0, 7)
    checkpoint.commit(wait=True)
    assert ("a", "offsets", [("transactions", 0, 10)]) in calls


def test_a_batch_after_a_pause_is_due_at_once_and_a_busy_stream_commits_once_an_interval():
    checkpoint, _, _ = _checkpoint()  # interval 0.1 s
    assert not checkpoint.due(0.0), "nothing open"
    checkpoint.processed("transactions", 0, 1)
    assert checkpoint.due(0.0), "no commit began within the interval: the batch just processed commits now"
    checkpoint.commit(wait=True)
    began = checkpoint.committed_at
    checkpoint.processed("transactions", 0, 2)
    assert not checkpoint.due(began + 0.05) and checkpoint.seconds_left(began + 0.05) == pytest.approx(0.05)
    assert checkpoint.due(began + 0.101)


def _second_transaction_while_the_first_commits() -> tuple[Checkpoint, threading.Event, float]:
    """A checkpoint (interval 0.1 s) whose first commit is under way until the event is set, with a
    second transaction open; and when the first commit began."""
    checkpoint, _, _ = _checkpoint()
    release = threading.Event()
    checkpoint.producers[0].commit_transaction = lambda timeout: release.wait(5)
    checkpoint.processed("transactions", 0, 1)
    checkpoint.commit()
    began = checkpoint.committed_at
    checkpoint.processed("transactions", 0, 2)
    return checkpoint, release, began


def test_a_commit_still_under_way_makes_the_next_wait_rather_than_stop_the_loop_until_a_second_has_passed():
    checkpoint, release, began = _second_transaction_while_the_first_commits()
    assert not checkpoint.due(began + 0.2), "the commit before has not ended: the loop goes on scoring"
    assert checkpoint.seconds_left(began + 0.2) > 0, "and waits a little for records rather than spinning"
    assert checkpoint.due(began + 1.0), "a second on, the loop waits for it as it would for a broker away"
    release.set()
    checkpoint.settle()
    assert checkpoint.due(began + 0.2), "once it has ended, the next commits at once"
    checkpoint.commit(wait=True)
    checkpoint.close()


def test_a_transaction_a_caller_waits_on_commits_once_the_one_before_has_ended_without_waiting_out_the_interval():
    checkpoint, release, began = _second_transaction_while_the_first_commits()
    assert not checkpoint.due(began + 0.01) and checkpoint.seconds_left(began + 0.01) == pytest.approx(0.09)
    checkpoint.await_commit()
    assert not checkpoint.due(began + 0.01), "commits still go one after the other"
    assert checkpoint.seconds_left(began + 0.01) == OVERDUE_POLL_SECONDS, "the loop looks again shortly"
    release.set()
    checkpoint.settle()
    assert checkpoint.due(began + 0.01), "the one before has ended: no waiting out the interval"
    checkpoint.commit(wait=True)
    checkpoint.processed("transactions", 0, 3)
    assert not checkpoint.due(checkpoint.committed_at + 0.01), "the next transaction waits out the interval again"
    checkpoint.close()

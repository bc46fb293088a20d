"""Replaying a history: transactions in event-time order, each label a fixed event time later."""

import pandas as pd

from streams.produce import DAY_MS, FLUSH_EVERY, history_messages, replay


class PlainCodec:
    """Records as their repr: enough to see what was sent, in which order."""

    def encode(self, record):
        return repr(sorted(record.items())).encode()


def test_labels_follow_their_transactions_after_the_delay_in_event_time_order():
    history = pd.DataFrame({
        "transaction_id": ["t1", "t2", "t3"], "customer_id": ["a", "b", "a"], "terminal_id": ["x", "y", "x"],
        "merchant_id": ["m"] * 3, "amount": [1.0, 2.0, 3.0], "currency": ["EUR"] * 3,
        "timestamp": [0, 5 * DAY_MS, 8 * DAY_MS], "merchant_category": ["5411"] * 3, "channel": ["POS"] * 3,
        "card_present": [True] * 3, "country": ["BE"] * 3, "is_fraud": [0, 1, 0]})
    sent = list(history_messages(history, ("tx", PlainCodec()), ("fb", PlainCodec()), feedback_delay_ms=7 * DAY_MS))
    order = [(topic, key.decode()) for topic, key, _, _ in sent]
    # t1@0, t2@5d, label t1@7d, t3@8d, label t2@12d, label t3@15d
    assert order == [("tx", "a"), ("tx", "b"), ("fb", "t1"), ("tx", "a"), ("fb", "t2"), ("fb", "t3")]
    label_t2 = sent[4][2].decode()
    assert "'FRAUD'" in label_t2 and f"('reported_at', {12 * DAY_MS})" in label_t2
    assert [flag for *_, flag in sent] == [True, True, False, True, False, False]


def test_without_feedback_only_transactions_are_sent_keyed_by_card():
    history = pd.DataFrame({"transaction_id": ["t1"], "customer_id": ["a"], "terminal_id": ["x"],
                            "merchant_id": ["m"], "amount": [1.0], "currency": ["EUR"], "timestamp": [0],
                            "merchant_category": ["5411"], "channel": ["POS"], "card_present": [True],
                            "country": ["BE"], "is_fraud": [1]})
    assert [(t, k) for t, k, _, _ in history_messages(history, ("tx", PlainCodec()))] == [("tx", b"a")]


class CountingProducer:
    """Counts what the replay asks of the producer: records, and the flushes that wait for them."""

    def __init__(self):
        self.produced = 0
        self.flushes = 0

    def produce(self, topic, value=None, key=None):
        self.produced += 1

    def poll(self, timeout):
        return 0

    def flush(self, timeout=None):
        self.flushes += 1
        return 0


def test_an_unpaced_replay_waits_for_its_records_every_so_many_and_a_paced_one_only_at_its_end():
    messages = [("tx", b"k", b"v", True)] * (2 * FLUSH_EVERY + 5)
    unpaced, paced = CountingProducer(), CountingProducer()
    assert replay(unpaced, messages) == len(messages)
    assert replay(paced, messages, rate=1e9) == len(messages)
    assert (unpaced.produced, unpaced.flushes) == (len(messages), 3)
    assert (paced.produced, paced.flushes) == (len(messages), 1)

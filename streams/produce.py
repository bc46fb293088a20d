"""Replay a labelled history to Kafka at a chosen rate, as a payment system and its back office would:
transactions in event-time order, each label following its transaction after a delay of event time."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from confluent_kafka import Producer

from models.simulate import transaction_records
from schemas.codec import AvroCodec

FLUSH_EVERY = 10_000  # an unpaced replay waits for its records every so many (a paced one never stops)
PACE_SECONDS = 0.001  # a paced replay sends what falls due within this in one go
DAY_MS = 86_400_000

Message = tuple[str, bytes, bytes, bool]  # topic, key, value, is_transaction


def producer_for(bootstrap: str, linger_ms: float = 5.0) -> Producer:
    # murmur2 is the Java client's (and aiokafka's) partitioner: keys land where the rest of the
    # Kafka ecosystem, faust included, would put them; librdkafka's default hashes differently.
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "enable.idempotence": True,
                     "compression.type": "lz4", "queue.buffering.max.messages": 500_000,
                     "partitioner": "murmur2_random"})


def transaction_messages(topic: str, codec: AvroCodec, transactions: Iterable[dict]) -> Iterator[Message]:
    for txn in transactions:
        yield topic, txn["customer_id"].encode(), codec.encode(txn), True


def history_messages(history: pd.DataFrame, transactions: tuple[str, AvroCodec],
                     feedback: tuple[str, AvroCodec] | None = None,
                     feedback_delay_ms: int = 7 * DAY_MS) -> Iterator[Message]:
    """Transactions keyed by card; with `feedback`, each one's label `feedback_delay_ms` of event time
    later (reported_at = transaction time + delay), merged in event-time order."""
    records = transaction_records(history)
    if feedback is None:
        yield from transaction_messages(transactions[0], transactions[1], records)
        return
    ts = history["timestamp"].to_numpy()
    n = len(records)
    times = np.concatenate([ts, ts + feedback_delay_ms])
    order = np.lexsort((np.arange(2 * n), times))  # by time; a transaction before a label at the same time
    labels = history["is_fraud"].to_numpy()
    for i in order.tolist():
        if i < n:
            txn = records[i]
            yield transactions[0], txn["customer_id"].encode(), transactions[1].encode(txn), True
        else:
            txn = records[i - n]
            record = {"transaction_id": txn["transaction_id"], "label": "FRAUD" if labels[i - n] else "LEGIT",
                      "source": "simulator", "reported_at": int(times[i]),
                      "customer_id": txn["customer_id"], "terminal_id": txn["terminal_id"]}
            yield feedback[0], txn["transaction_id"].encode(), feedback[1].encode(record), False


def replay(producer: Producer, messages: Iterable[Message], *, rate: float = 0.0,
           on_sent: Callable[[int], None] = lambda n: None) -> int:
    """Produce `messages`, pacing transactions at `rate` per second (0: as fast as possible), a
    millisecond's worth at a time: the producer sleeps at most a thousand times a second, whatever the
    rate. Returns the number of transactions sent. An unpaced replay waits for the broker to have its
    records every FLUSH_EVERY transactions, so a large history is not queued whole in memory; a paced
    one only polls for delivery reports: a flush would stop its pacing until every record in flight
    is acknowledged, and the transactions due meanwhile would then go out as a burst."""
    started = time.monotonic()
    sent = 0
    for topic, key, value, is_transaction in messages:
        if is_transaction and rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > PACE_SECONDS:
                time.sleep(ahead)
        _produce(producer, topic, key, value)
        if not is_transaction:
            continue
        sent += 1
        if sent % 100 == 0:
            producer.poll(0)
            on_sent(100)
        if sent % FLUSH_EVERY == 0 and rate <= 0:
            producer.flush()
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered to Kafka")
    on_sent(sent % 100)
    return sent


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)

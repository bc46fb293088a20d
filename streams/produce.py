"""Replay transactions (and their labels) to Kafka at a chosen rate, as a payment system would."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from confluent_kafka import Producer

from schemas.codec import AvroCodec

FLUSH_EVERY = 10_000


def producer_for(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                     "compression.type": "lz4", "queue.buffering.max.messages": 500_000})


def replay(
    producer: Producer,
    topic: str,
    codec: AvroCodec,
    transactions: Iterable[dict],
    *,
    rate: float = 0.0,
    on_sent: Callable[[int], None] = lambda n: None,
    feedback: tuple[str, AvroCodec] | None = None,
    labels: Iterable[int] | None = None,
) -> int:
    """Produce each transaction keyed by customer_id; `rate` per second (0: as fast as possible).

    With `feedback=(topic, codec)` and `labels`, a Feedback record follows each transaction.
    """
    started = time.monotonic()
    label_iter = iter(labels) if labels is not None else None
    sent = 0
    for txn in transactions:
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        _produce(producer, topic, txn["customer_id"].encode(), codec.encode(txn))
        if feedback is not None and label_iter is not None:
            fraud = next(label_iter)
            record = {"transaction_id": txn["transaction_id"], "label": "FRAUD" if fraud else "LEGIT",
                      "source": "simulator", "reported_at": int(time.time() * 1000),
                      "customer_id": txn["customer_id"], "terminal_id": txn["terminal_id"]}
            _produce(producer, feedback[0], txn["transaction_id"].encode(), feedback[1].encode(record))
        sent += 1
        if sent % 100 == 0:
            producer.poll(0)
            on_sent(100)
        if sent % FLUSH_EVERY == 0:
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

"""The labelled examples the stream accumulates (verdicts joined to their labels), read for training.

Each example holds the feature vector exactly as it was served, so a model trained on them sees what
the stream computed, not a reconstruction.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from schemas.codec import AvroCodec, SchemaRegistry, load_schema
from core.features import ATTRIBUTE_PREFIX, model_feature_names


class NoExamples(Exception):
    """The examples topic holds nothing to train on."""


def read_examples(bootstrap: str, topic: str, registry_url: str, timeout_seconds: float = 60.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(features, labels, transaction timestamps, feature names) of every committed example, the
    latest per transaction. The names are ours, then every upstream attribute any example carries; a
    feature an example lacks is NaN, as XGBoost reads missing values."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    codec = AvroCodec(SchemaRegistry(registry_url), load_schema("labelled_example"), f"{topic}-value")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"examples-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": "read_committed"})
    latest: dict[str, dict] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise NoExamples(f"topic {topic}: {metadata.error}")
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        consumer.assign(partitions)
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_seconds
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout_seconds:.0f} s")
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                    continue
                if msg.value() is not None:
                    example = codec.decode(msg.value())
                    latest[example["transaction_id"]] = example
    finally:
        consumer.close()
    if not latest:
        raise NoExamples(f"topic {topic} holds no labelled examples yet")
    examples = sorted(latest.values(), key=lambda e: e["transaction_timestamp"])
    attributes = sorted({name[len(ATTRIBUTE_PREFIX):] for e in examples for name in e["features"]
                         if name.startswith(ATTRIBUTE_PREFIX)})
    names = model_feature_names(attributes)
    X = np.array([[e["features"].get(name, np.nan) for name in names] for e in examples], dtype=np.float64)
    y = np.array([e["label"] == "FRAUD" for e in examples], dtype=np.int32)
    return X, y, np.array([e["transaction_timestamp"] for e in examples], dtype=np.int64), names

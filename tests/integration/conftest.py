"""Kafka helpers for integration tests, built on confluent-kafka's own Avro serde: what a user runs."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.settings import Settings
from models.simulate import SimulationConfig, simulate, transaction_records
from models.train import TrainParams, train_and_register
from schemas.codec import load_schema
from streams.topics import TERMINAL_TABLE, ensure_topics

pytestmark = pytest.mark.integration


def registry_client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.schema_registry_url})


def produce_transactions(settings: Settings, records: list[dict], schema: dict | None = None,
                         rate: float = 0.0) -> None:
    """Produce with confluent-kafka's AvroSerializer, keyed by customer_id."""
    serializer = AvroSerializer(registry_client(settings), json.dumps(schema or load_schema("transaction")))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    ctx = SerializationContext(settings.transactions_topic, MessageField.VALUE)
    started = time.monotonic()
    for i, record in enumerate(records):
        if rate:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.produce(settings.transactions_topic, key=record["customer_id"].encode(),
                         value=serializer(record, ctx))
        producer.poll(0)
    assert producer.flush(30) == 0


def produce_raw(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in values:
        producer.produce(settings.transactions_topic, key=key, value=value)
    assert producer.flush(30) == 0


def read_committed(settings: Settings, topic: str, expected: int, timeout: float = 90,
                   decode: bool = True) -> list:
    """Every committed message on `topic` from the start, until `expected` arrived and 3 quiet seconds
    passed (to catch duplicates), or until `timeout`.

    A record is counted once per (partition, offset): a consumer may be handed the same offset twice,
    which says nothing about what the topic holds."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    deserialize = AvroDeserializer(registry_client(settings)) if decode else None
    ctx = SerializationContext(topic, MessageField.VALUE)
    out: list = []
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if len(out) >= expected:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 3:
                        break
                continue
            if msg.error() or (msg.partition(), msg.offset()) in seen:
                continue
            seen.add((msg.partition(), msg.offset()))
            quiet_since = None
            if decode:
                record = deserialize(msg.value(), ctx)
                # Where the record sits and what produced it, for diagnostics.
                record["_kafka"] = {"partition": msg.partition(), "offset": msg.offset(),
                                    "headers": {k: v.decode(errors="replace") for k, v in (msg.headers() or [])}}
                out.append(record)
            else:
                out.append(msg)
    finally:
        consumer.close()
    return out


def table_rows(settings: Settings, table: str) -> dict[str, dict]:
    """The latest committed row of every key of a Faust table, from its changelog."""
    topic = f"{settings.app_id}-{table}-changelog"
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    rows, at_end = {}, set()
    try:
        while len(at_end) < len(partitions):
            msg = consumer.poll(10)
            assert msg is not None, f"{topic} could not be read to its end"
            if msg.error():
                at_end.add(msg.partition())
                continue
            rows[json.loads(msg.key())] = None if msg.value() is None else json.loads(msg.value())
    finally:
        consumer.close()
    return rows


def assert_table_rows_count_each_once(settings: Settings, records: list[dict], timeout: float = 60) -> None:
    """Each card's row (customer-history) and each terminal's row (terminal-history) holds the event
    time of each of its transactions exactly once."""
    for table, key in (("customer-history", "customer_id"), (TERMINAL_TABLE, "terminal_id")):
        expected = defaultdict(list)
        for r in records:
            expected[r[key]].append(r["timestamp"])
        expected = {k: sorted(v) for k, v in expected.items()}
        deadline = time.monotonic() + timeout
        while True:
            rows = table_rows(settings, table)
            held = {k: sorted(rows[k]["t"]) if rows.get(k) else [] for k in expected}
            if held == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        wrong = {k: (len(held[k]), len(v)) for k, v in expected.items() if held[k] != v}
        assert not wrong, f"{table}: {len(wrong)} rows differ (held, expected), e.g. {list(wrong.items())[:5]}"


def verdicts_by_id(verdicts: list[dict]) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for v in verdicts:
        grouped[v["transaction_id"]].append(v)
    return grouped


def simulated_transactions(seed: int, count: int, prefix: str) -> list[dict]:
    history = simulate(SimulationConfig(customers=200, terminals=400, days=10, seed=seed)).head(count)
    records = transaction_records(history)
    for r in records:
        r["transaction_id"] = f"{prefix}-{r['transaction_id']}"
    return records


def train_version(settings: Settings, history, promote: bool = True, **params) -> str:
    result = train_and_register(history, tracking_uri=settings.mlflow_uri, model_name=settings.model_name,
                                experiment=settings.experiment, params=TrainParams(**params),
                                promote=promote)
    return result.version


@pytest.fixture
def make_topics():
    def make(settings: Settings) -> None:
        ensure_topics(settings)
    return make

"""Kafka helpers for integration tests, built on confluent-kafka's own Avro serde: what a user runs."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.settings import Settings
from models.simulate import SimulationConfig, simulate, transaction_records
from models.train import TrainParams, train_and_register
from schemas.codec import load_schema
from core.features import (CUSTOMER_FEATURE_NAMES, DAY_MS, TERMINAL_DELAY_DAYS, TERMINAL_FEATURE_NAMES,
                           CardState, TerminalCounts)
from streams.topics import cards_changelog, ensure_topics, terminals_changelog

pytestmark = pytest.mark.integration


def registry_client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.schema_registry_url})


def produce_transactions(settings: Settings, records: list[dict], schema: dict | None = None,
                         rate: float = 0.0) -> None:
    """Produce with confluent-kafka's AvroSerializer, keyed by customer_id. Idempotent, as a payment
    system's producer must be: a request retried while the broker is frozen lands once, where a plain
    producer's can land twice (two input records with one transaction id, each rightly scored)."""
    serializer = AvroSerializer(registry_client(settings), json.dumps(schema or load_schema("transaction")))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True})
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


def store_rows(settings: Settings, changelog: str, decode) -> dict[str, object]:
    """The latest committed value of every key of a store, from its changelog."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    partitions = consumer.list_topics(changelog, timeout=10).topics[changelog].partitions
    consumer.assign([TopicPartition(changelog, p, OFFSET_BEGINNING) for p in partitions])
    rows, at_end = {}, set()
    try:
        while len(at_end) < len(partitions):
            msg = consumer.poll(10)
            assert msg is not None, f"{changelog} could not be read to its end"
            if msg.error():
                at_end.add(msg.partition())
                continue
            rows[msg.key().decode()] = None if msg.value() is None else decode(msg.value())
    finally:
        consumer.close()
    return rows


def card_count(state: CardState) -> int:
    """How many transactions a card's state counts over its last 30 days: its 30-day count as seen
    by one more transaction at its latest event time, less that one."""
    probe = {"timestamp": state.last_event_ms, "amount": 0.0, "terminal_id": "", "channel": "POS"}
    return int(state.features_then_add(probe)[CUSTOMER_FEATURE_NAMES.index("customer_nb_tx_30d")]) - 1


def terminal_count(counts: TerminalCounts) -> int:
    """How many transactions a terminal's counts hold over its last 30 days: the 30-day count a
    transaction at the start of the 8th day after the latest reads (its window ends with that day)."""
    at = (counts.last_day + TERMINAL_DELAY_DAYS + 1) * DAY_MS
    return int(counts.features(at)[TERMINAL_FEATURE_NAMES.index("terminal_nb_tx_30d")])


def assert_each_transaction_counted_once(settings: Settings, records: list[dict], timeout: float = 60) -> None:
    """Each card's state (cards store) and each terminal's counts (terminals store) count each of
    its transactions exactly once (the records span less than 30 days)."""
    checks = ((cards_changelog(settings), CardState.from_bytes, card_count, "customer_id"),
              (terminals_changelog(settings), TerminalCounts.from_bytes, terminal_count, "terminal_id"))
    for changelog, decode, count, key in checks:
        expected = Counter(r[key] for r in records)
        deadline = time.monotonic() + timeout
        while True:
            rows = store_rows(settings, changelog, decode)
            held = {k: count(rows[k]) if rows.get(k) is not None else 0 for k in expected}
            if held == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        wrong = {k: (held[k], n) for k, n in expected.items() if held[k] != n}
        assert not wrong, f"{changelog}: {len(wrong)} keys differ (held, expected), e.g. {list(wrong.items())[:5]}"


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

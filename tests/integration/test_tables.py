"""The table reader (streams/tables.py) against the real broker: partitions its librdkafka client's
metadata cache does not know yet."""

from __future__ import annotations

import time
import uuid
from typing import Callable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from streams.tables import Source, TableReader
from tests.conftest import unique_settings


def _tried(ask: Callable, tries: int) -> tuple[object, list[str]]:
    """`ask`'s answer within `tries` (None if none), and the errors before it."""
    errors = []
    for _ in range(tries):
        try:
            return ask(), errors
        except KafkaException as exc:
            errors.append(str(exc))
            time.sleep(0.2)
    return None, errors


def _add_partitions(admin: AdminClient, topic: str, total: int) -> None:
    admin.create_partitions([NewPartitions(topic, total)])[topic].result(30)
    deadline = time.monotonic() + 30
    while len(admin.list_topics(topic, timeout=10).topics[topic].partitions) < total:  # the broker knows
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_partition_missing_from_the_readers_cached_metadata_is_found_on_the_next_try(services, tmp_path):
    settings = unique_settings(tmp_path)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topic = f"test-tables-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    reader = TableReader({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        first, errors = _tried(lambda: reader.add(Source(topic, 0, apply=lambda msg: None)), tries=25)
        assert first is not None and first.caught_up, errors  # the client now caches one partition
        # librdkafka refreshes a topic's metadata on its own only every few minutes: until then it
        # answers "Unknown partition" for a partition added since, unless the reader asks again.
        _add_partitions(admin, topic, 3)
        added, errors = _tried(lambda: reader.add(Source(topic, 2, apply=lambda msg: None)), tries=2)
        assert added is not None and added.caught_up, errors
        _add_partitions(admin, topic, 4)
        start, errors = _tried(lambda: reader.start_offset_at(topic, 3, timestamp_ms=0), tries=2)
        assert start == 0, errors
    finally:
        reader.close()
        admin.delete_topics([topic])

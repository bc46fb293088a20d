"""The partitions a worker reads but does not consume as a group member: changelogs to restore, and
topics it follows.

One assign-mode consumer (read_committed, never committing) serves them all, polled between batches
from the worker's loop:
- a store partition's changelog, from its start to its end, before the partition's records are
  processed (streams/state.py), then let go;
- the verdicts of a feedback partition this worker holds, from the feedback horizon on, then followed
  (streams/feedback.py);
- the whole terminal snapshot topic (streams/terminals.py) and the rules topic (streams/rules.py),
  read to their end before the first batch, then followed.

"Caught up" means the read reached the partition's end as it was when the read began: a record
of a transaction still open then (a worker that died mid-transaction) is waited for until the
transaction is aborted or committed, so a restore never misses a committed change.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One partition to read: from `start` (an offset, or OFFSET_BEGINNING), each record to `apply`.
    `follow`: keep reading once caught up (otherwise it is let go then)."""

    topic: str
    partition: int
    apply: Callable  # (confluent_kafka.Message) -> None
    start: int = OFFSET_BEGINNING
    follow: bool = False
    end: int = -1  # the partition's high watermark when the read began
    caught_up: bool = False
    assigned: bool = False
    records: int = 0
    waiters: list = field(default_factory=list)  # callables run once caught up

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition


class TableReader:
    def __init__(self, config: dict, metadata_timeout: float = 10.0):
        settings = {**config, "group.id": f"fraud-tables-{uuid.uuid4()}", "enable.auto.commit": False,
                    "isolation.level": "read_committed", "auto.offset.reset": "earliest"}
        # What it follows is not on the scoring path: fetches wait to fill up (fewer of them).
        self.consumer = Consumer({**settings, "enable.partition.eof": True, "fetch.wait.max.ms": 200,
                                  "fetch.min.bytes": 65_536})
        # Where partitions end or begin, asked on a connection of its own: the broker answers one
        # request per connection at a time, and the reading consumer's keeps a fetch waiting.
        self.offsets = Consumer(settings)
        self.timeout = metadata_timeout
        self.sources: dict[tuple[str, int], Source] = {}

    def add(self, source: Source) -> Source:
        """Start reading a partition; raises KafkaException when the broker cannot be asked where it ends."""
        low, high = self._watermarks(source.topic, source.partition)
        source.end = high
        start = source.start
        # Nothing to read yet: the start is at the end, or the partition holds no record.
        source.caught_up = start >= high if start >= 0 else low >= high
        self.sources[source.key] = source
        if source.follow or not source.caught_up:
            self.consumer.incremental_assign([TopicPartition(source.topic, source.partition, start)])
            source.assigned = True
        if source.caught_up:
            self._finish(source)
        return source

    def remove(self, topic: str, partition: int) -> None:
        source = self.sources.pop((topic, partition), None)
        if source is not None:
            self._unassign(source)
            source.waiters.clear()

    def start_offset_at(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset of a partition at or after a time (its end when there is none)."""
        found = self._asked(topic, lambda: self.offsets.offsets_for_times(
            [TopicPartition(topic, partition, timestamp_ms)], timeout=self.timeout))[0]
        if found.offset >= 0:
            return found.offset
        return self._watermarks(topic, partition)[1]

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """Where a partition begins and ends."""
        return self._asked(topic, lambda: self.offsets.get_watermark_offsets(TopicPartition(topic, partition),
                                                                              timeout=self.timeout))

    def _asked(self, topic: str, question: Callable):
        """The broker's answer to `question` about a partition of `topic`. librdkafka answers "Unknown
        partition" from its metadata cache, which it refreshes only every few minutes: after the broker
        stopped answering, a topic's partitions could stay unknown that long (seen for a changelog
        after a frozen broker). So that error refreshes the topic's metadata before it is raised; the
        caller tries again shortly."""
        try:
            return question()
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError._UNKNOWN_PARTITION:
                try:
                    self.offsets.list_topics(topic, timeout=self.timeout)
                except KafkaException as refresh:
                    log.warning("refreshing the metadata of %s: %s", topic, refresh)
            raise

    def poll(self, max_records: int = 10_000, timeout: float = 0.0) -> int:
        """Read what has arrived, up to `max_records`; returns how many records were applied."""
        if not self.sources:
            return 0
        applied = 0
        for msg in self.consumer.consume(max_records, timeout):
            error = msg.error()
            source = self.sources.get((msg.topic(), msg.partition()))
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if source is not None and not source.caught_up and msg.offset() >= source.end:
                        source.caught_up = True
                        self._finish(source)
                elif error.code() != KafkaError._TRANSPORT:  # the broker away: librdkafka reconnects
                    log.warning("table reader: %s", error)
                continue
            if source is None:
                continue  # let go meanwhile
            source.apply(msg)
            source.records += 1
            applied += 1
        return applied

    def catch_up(self, sources: list[Source], stop, timeout: float = 120.0) -> None:
        """Read until every one of `sources` is caught up; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not all(s.caught_up for s in sources):
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                late = [f"{s.topic}[{s.partition}]" for s in sources if not s.caught_up]
                raise TimeoutError(f"not read to their end within {timeout:.0f}s: {', '.join(late)}")
            self.poll(timeout=0.1)

    def _finish(self, source: Source) -> None:
        if not source.follow and self.sources.get(source.key) is source:
            del self.sources[source.key]
            self._unassign(source)
            log.info("%s[%d] read to its end: %d records", source.topic, source.partition, source.records)
        waiters, source.waiters = source.waiters, []
        for waiter in waiters:
            waiter()

    def _unassign(self, source: Source) -> None:
        if source.assigned:
            source.assigned = False
            self.consumer.incremental_unassign([TopicPartition(source.topic, source.partition)])

    def restoring(self) -> int:
        """How many partitions are still being read up to their end."""
        return sum(1 for s in self.sources.values() if not s.caught_up)

    def close(self) -> None:
        self.consumer.close()
        self.offsets.close()

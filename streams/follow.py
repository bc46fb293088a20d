"""A topic every worker reads whole: from the start, then following, in a thread of its own."""

from __future__ import annotations

import logging
import threading
import uuid

log = logging.getLogger(__name__)


class TopicFollower:
    """Reads all partitions of `topics` from their start and keeps following them. `caught_up` is set
    once every partition has been read to its end. Subclasses say what a record does (`on_record`)
    and what to do between polls (`after_poll`)."""

    name = "follower"

    def __init__(self, bootstrap: str, topics: tuple[str, ...], isolation_level: str = "read_uncommitted"):
        self.bootstrap = bootstrap
        self.topics = topics
        self.isolation_level = isolation_level
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def on_record(self, msg) -> None:
        raise NotImplementedError

    def after_poll(self) -> None:
        """Called after every poll, records or not."""

    def _partitions(self, consumer) -> list:
        """Every partition of every topic, once all topics exist; broker away: wait and ask again."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(timeout=5).topics
                if all(topic in metadata and metadata[topic].partitions for topic in self.topics):
                    return [TopicPartition(topic, p, OFFSET_BEGINNING)
                            for topic in self.topics for p in metadata[topic].partitions]
            except Exception as exc:  # what was read stays as it is
                log.warning("%s cannot list topics %s: %s", self.name, self.topics, exc)
            self._stop.wait(2)
        return []

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaError

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.name}-{uuid.uuid4()}",
                             "enable.auto.commit": False, "enable.partition.eof": True,
                             "isolation.level": self.isolation_level})
        try:
            partitions = self._partitions(consumer)
            consumer.assign(partitions)
            at_end: set[tuple[str, int]] = set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.5):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            at_end.add((msg.topic(), msg.partition()))
                            if len(at_end) == len(partitions):
                                self.caught_up.set()
                        continue
                    self.on_record(msg)
                self.after_poll()
        finally:
            consumer.close()

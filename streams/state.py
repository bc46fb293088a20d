"""Keyed state per source partition, kept in memory and backed by a compacted changelog topic.

A store holds one dict per partition of its source topic (`cards`: key customer_id, source
`transactions`; `terminals`: key terminal_id, source `fraud-terminal-events`). Steps read and change
values in place and say which keys they changed (`changed`). At a checkpoint, each changed key is written
once to the changelog partition of the same number, inside the Kafka transaction that commits the
offsets of the records that changed it (streams/checkpoint.py): one changelog record per key per
checkpoint, however many events touched it. A partition new to this worker is restored from its
changelog, read_committed, before any of its records are processed; a partition that leaves, or whose
transaction was aborted, is dropped and restored again when it comes back.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

V = TypeVar("V")


class Store(Generic[V]):
    """One keyed table, partitioned like its source topic."""

    def __init__(self, name: str, source_topic: str, changelog_topic: str,
                 encode: Callable[[V], bytes], decode: Callable[[bytes], V]):
        self.name = name
        self.source_topic = source_topic
        self.changelog_topic = changelog_topic
        self.encode = encode
        self.decode = decode
        self.partitions: dict[int, dict[str, V]] = {}
        self._changed: dict[int, set[str]] = {}
        self._deleted: dict[int, set[str]] = {}

    def partition(self, partition: int) -> dict[str, V]:
        """The live dict of one partition (read and change values in place, then call `changed`)."""
        return self.partitions[partition]

    def changed(self, partition: int, keys) -> None:
        self._changed[partition].update(keys)

    def delete(self, partition: int, key: str) -> None:
        self.partitions[partition].pop(key, None)
        self._changed[partition].discard(key)
        self._deleted[partition].add(key)

    def open(self, partition: int) -> None:
        """Start a partition empty, before its changelog is replayed into it."""
        self.partitions[partition] = {}
        self._changed[partition] = set()
        self._deleted[partition] = set()

    def drop(self, partition: int) -> None:
        """Forget a partition: it left this worker, or what it holds was not committed."""
        self.partitions.pop(partition, None)
        self._changed.pop(partition, None)
        self._deleted.pop(partition, None)

    def apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        """One committed changelog record, replayed while restoring."""
        rows = self.partitions[partition]
        if value is None:
            rows.pop(key.decode(), None)
        else:
            rows[key.decode()] = self.decode(value)

    def pending(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(partition, key, value or None for a deletion) of every change since the last call."""
        for partition, keys in self._changed.items():
            rows = self.partitions[partition]
            for key in keys:
                yield partition, key.encode(), self.encode(rows[key])
            keys.clear()
        for partition, keys in self._deleted.items():
            for key in keys:
                yield partition, key.encode(), None
            keys.clear()

    def forget_pending(self) -> None:
        for keys in (*self._changed.values(), *self._deleted.values()):
            keys.clear()

    def size(self) -> int:
        return sum(len(rows) for rows in self.partitions.values())

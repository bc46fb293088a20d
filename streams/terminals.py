"""Terminal counts: what the terminal features read, kept where the terminal's partition lives, read by
every worker.

A terminal's transactions come from every card partition, so they travel: each scoring batch writes
its (terminal, time) pairs to `fraud-terminal-events`, one record per terminal partition, and the
feedback join writes fraud labels there too (streams/scoring.py, streams/feedback.py). The worker
holding a terminal partition adds them to each terminal's daily counts (`TerminalCounts`, the `terminals`
store, changelog-backed): work proportional to its own partitions.

The terminal features of a transaction on day D read days D-37..D-7 only: labels take a week to
arrive. So every worker needs every terminal's counts, but only for days that are over. A day closes
for a terminal partition an hour (`CLOSE_GRACE_MS`) after its end (by event time or by the wall
clock); then every terminal with events that day is published once to the compacted snapshot topic,
and so is a terminal whose closed day a late event or label changes. Every worker follows the snapshot topic
(`TerminalView`): what it reads grows with the number of terminals, once a day each, not with the
cluster's transaction rate, and a closed day reaches it six days before any feature reads it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from core.features import DAY_MS, TERMINAL_FEATURE_NAMES, TerminalCounts
from core.metrics import Metrics
from schemas.codec import AvroCodec
from streams.checkpoint import Checkpoint
from streams.records import decoded
from streams.state import Store
from streams.tables import Source

log = logging.getLogger(__name__)
CLOSE_GRACE_MS = 3_600_000
KEEP_DAYS = 45  # a terminal with no event for this long is forgotten: no window reads it any more


@dataclass
class PartitionClock:
    """A terminal partition's days: which are closed, and which terminals had events on each day still
    open. A day closes CLOSE_GRACE_MS after its end, by the partition's latest event time or by the
    wall clock, whichever is later: a live stream's days close on time even on a partition that falls
    quiet, and a replayed history's days close as its event time passes them."""

    watermark_ms: int | None = None  # the latest event time seen
    closed_through: int | None = None  # the last closed day
    active: dict[int, set] = field(default_factory=dict)  # open day -> terminal ids

    def saw(self, terminal_id: str, timestamp_ms: int, now_ms: int) -> bool:
        """Note an event; True when it changes a day already closed (its terminal is published again)."""
        if self.watermark_ms is None or timestamp_ms > self.watermark_ms:
            self.watermark_ms = timestamp_ms
        if self.closed_through is None:
            self.closed_through = self.last_closable(now_ms)
        day = timestamp_ms // DAY_MS
        if day <= self.closed_through:
            return True
        self.active.setdefault(day, set()).add(terminal_id)
        return False

    def close(self, now_ms: int) -> set[str]:
        """Close the days passed; the terminals to publish."""
        if self.closed_through is None:
            return set()
        closing = self.last_closable(now_ms)
        out: set[str] = set()
        while self.closed_through < closing:
            self.closed_through += 1
            out |= self.active.pop(self.closed_through, set())
        return out

    def last_closable(self, now_ms: int) -> int:
        latest = now_ms if self.watermark_ms is None else max(self.watermark_ms, now_ms)
        return (latest - CLOSE_GRACE_MS) // DAY_MS - 1


def now_ms() -> int:
    return int(time.time() * 1000)


class TerminalStep:
    """The worker's step for `fraud-terminal-events`."""

    def __init__(self, topic: str, store: Store, codec: AvroCodec, snapshots_topic: str, dlq_topic: str,
                 metrics: Metrics, retry_later=None):
        self.topic = topic
        self.store = store
        self.codec = codec
        self.snapshots_topic = snapshots_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.retry_later = retry_later
        self.clocks: dict[int, PartitionClock] = {}

    def prepare(self, partition: int) -> list[Source]:
        self.store.open(partition)
        apply = self.store.apply
        source = Source(self.store.changelog_topic, partition,
                        lambda msg: apply(partition, msg.key(), msg.value()))
        source.waiters.append(lambda: self._restored(partition))
        return [source]

    def _restored(self, partition: int) -> None:
        """Rebuild the partition's clock from its counts: days that may still be open are treated as
        open (publishing a terminal twice is harmless; missing one is not)."""
        rows = self.store.partitions.get(partition) or {}
        clock = self.clocks[partition] = PartitionClock()
        days = [counts.last_day for counts in rows.values() if counts.last_day is not None]
        if not days:
            return
        latest = max(days)
        clock.watermark_ms = latest * DAY_MS
        clock.closed_through = min(latest - 2, clock.last_closable(now_ms()))
        for terminal_id, counts in rows.items():
            for day in range(clock.closed_through + 1, (counts.last_day or latest) + 1):
                clock.active.setdefault(day, set()).add(terminal_id)

    def release(self, partition: int) -> None:
        self.store.drop(partition)
        self.clocks.pop(partition, None)

    def process(self, batches: dict[int, list], checkpoint: Checkpoint) -> None:
        for partition, records in batches.items():
            self._count(partition, records, checkpoint)

    def _count(self, partition: int, records: list, checkpoint: Checkpoint) -> None:
        rows = self.store.partition(partition)
        clock = self.clocks.setdefault(partition, PartitionClock())
        now = now_ms()
        changed: set[str] = set()
        publish: set[str] = set()
        n_transactions = n_frauds = 0
        for msg, events in decoded(records, self.codec, checkpoint, self.dlq_topic, self.metrics, self.retry_later):
            for fraud, items in ((False, events["transactions"]), (True, events["frauds"])):
                for item in items:
                    terminal_id, at = item["terminal_id"], item["transaction_timestamp"]
                    counts = rows.get(terminal_id)
                    if counts is None:
                        counts = rows[terminal_id] = TerminalCounts()
                    counts.add(at, fraud, fraud and item.get("ordinary", False))  # absent: written before it
                    changed.add(terminal_id)
                    if clock.saw(terminal_id, at, now):
                        publish.add(terminal_id)
            n_transactions += len(events["transactions"])
            n_frauds += len(events["frauds"])
            checkpoint.processed(self.topic, partition, msg.offset())
        self.store.changed(partition, changed)
        self._publish(partition, publish, now, checkpoint)
        self.metrics.terminal_events.labels("transaction").inc(n_transactions)
        self.metrics.terminal_events.labels("fraud_label").inc(n_frauds)

    def tick(self, checkpoint: Checkpoint) -> None:
        """Close the days the wall clock has passed on partitions with no new event."""
        now = now_ms()
        for partition, clock in list(self.clocks.items()):
            if clock.closed_through is not None and clock.last_closable(now) > clock.closed_through:
                self._publish(partition, set(), now, checkpoint)

    def _publish(self, partition: int, publish: set[str], now: int, checkpoint: Checkpoint) -> None:
        rows = self.store.partition(partition)
        clock = self.clocks[partition]
        closed = clock.close(now)
        publish |= closed
        if closed:
            self._forget_idle(partition, rows, clock, checkpoint)
        for terminal_id in publish:
            counts = rows.get(terminal_id)
            if counts is not None:
                checkpoint.produce(self.snapshots_topic, counts.to_bytes(), terminal_id.encode(), partition)
        self.metrics.terminal_updates.inc(len(publish))

    def _forget_idle(self, partition: int, rows: dict, clock: PartitionClock, checkpoint: Checkpoint) -> None:
        """Terminals with no event in the KEEP_DAYS before the partition's latest event time: deleted
        from the store and the snapshots (by event time, so a replayed history keeps what it needs)."""
        if clock.watermark_ms is None:
            return
        horizon = clock.watermark_ms // DAY_MS - KEEP_DAYS
        for terminal_id in [t for t, counts in rows.items() if (counts.last_day or horizon - 1) < horizon]:
            self.store.delete(partition, terminal_id)
            checkpoint.produce(self.snapshots_topic, None, terminal_id.encode(), partition)


class TerminalView:
    """Every terminal's counts as last published: what the scoring step reads."""

    def __init__(self, snapshots_topic: str, partitions: int):
        self.topic = snapshots_topic
        self.terminals: dict[str, TerminalCounts] = {}
        self.undecodable = 0
        self.sources = [Source(snapshots_topic, p, self.apply, follow=True) for p in range(partitions)]

    @property
    def caught_up(self) -> bool:
        return all(source.caught_up for source in self.sources)

    def apply(self, msg) -> None:
        key = msg.key()
        if key is None:
            return
        terminal_id = key.decode("utf-8", "replace")
        if msg.value() is None:
            self.terminals.pop(terminal_id, None)
            return
        try:
            self.terminals[terminal_id] = TerminalCounts.from_bytes(msg.value())
        except ValueError as exc:
            self.undecodable += 1
            log.warning("terminal snapshot for %s skipped: %s", terminal_id, exc)

    def describe(self, terminal_id: str, at_ms: int) -> dict:
        """The terminal's known counts and its features for a transaction at `at_ms`."""
        counts = self.terminals.get(terminal_id)
        features = counts.features(at_ms) if counts is not None else (0.0,) * len(TERMINAL_FEATURE_NAMES)
        return {"terminal_id": terminal_id, "at": at_ms, "known": counts is not None,
                "last_day": counts.last_day if counts is not None else None,
                "features": dict(zip(TERMINAL_FEATURE_NAMES, features))}

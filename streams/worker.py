"""The worker's loop: take a batch, hand each partition's records to its step, commit on time.

It runs in a thread of its own; the Faust app around it (fraud/worker.py) serves the ops API and
runs the timers. One pass of the loop:
  1. read what arrived on the followed topics (rules, terminal snapshots, the verdicts of the
     feedback partitions held) and on the changelogs being restored (streams/tables.py);
  2. take a batch from the group consumer: whatever has arrived, up to FRAUD_BATCH_MAX records,
     waiting only while nothing has (and never past the next commit);
  3. give each partition's records, in offset order, to the step of its topic: scoring
     (streams/scoring.py), the feedback join (streams/feedback.py) or the terminal counts
     (streams/terminals.py); each writes its outputs into the open transaction;
  4. commit the transaction once the last commit began FRAUD_COMMIT_INTERVAL_SECONDS ago and has
     ended, or, when a caller waits on one of its records (header AWAITED), once the commit before
     it has ended (streams/checkpoint.py `due`).

At start it waits for its dependencies (topics and schemas, the model, the transactional producer,
the followed topics read to their end) and retries while any is unreachable: the API answers
meanwhile, live but not ready, with the reason. A group consumer left without the group's
coordinator is replaced (`Worker._rejoin_if_stuck`).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from core.metrics import Metrics
from core.settings import Settings
from streams.checkpoint import (OP_TIMEOUT, Checkpoint, Partitions, Rewind, Step, call_transactional,
                                consumer_config, failure_of, producer_config)
from streams.state import Store
from streams.tables import Source, TableReader
from streams.topics import AWAITED

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0
LAG_EVERY_SECONDS = 2.0
TICK_SECONDS = 1.0
STATS_EVERY_MS = 5000  # how often librdkafka reports the group consumer's state
REJOIN_AFTER_SECONDS = 30.0  # a group consumer without its coordinator this long is replaced


@dataclass
class WorkerStatus:
    """What the loop tells the ops API (written by the loop's thread, read by the API's)."""

    phase: str = "starting"  # starting, running, stopping, stopped
    waiting_for: str = ""  # the dependency not reachable yet, and why
    followed_caught_up: bool = False
    assigned: list = field(default_factory=list)  # (topic, partition) held
    preparing: list = field(default_factory=list)  # (topic, partition) whose state is being read
    lag: dict = field(default_factory=dict)  # transactions partition -> records behind
    commits: int = 0
    rewinds: int = 0


def group_state(stats_json: str, now: float) -> tuple[str, float]:
    """The group consumer's state in librdkafka's statistics ("up" once it knows the group's
    coordinator) and since when, on the clock of `now` (stateage is in milliseconds)."""
    cgrp = json.loads(stats_json).get("cgrp") or {}
    return cgrp.get("state", "unknown"), now - cgrp.get("stateage", 0) / 1000


def awaited(headers: list | None) -> bool:
    """Whether a record's headers say a caller waits for its outputs (the predict API's transactions)."""
    return bool(headers) and any(name == AWAITED for name, _ in headers)


def quiet_garbage_collector() -> None:
    """Keep the cycle collector off the loop's path. Every batch makes thousands of short-lived dicts
    and lists, which reference counting frees; at CPython's default thresholds the collector still
    runs every 700 allocations and walks the young objects each time (a sixth of the loop's CPU at
    moderate load). And every new card and terminal state is a young object it would walk again and
    again, in pauses of tens of milliseconds. So it runs rarely, and at each commit whatever has lived
    that long is frozen out of its walks (`gc.freeze`): the state holds no cycles, and frozen objects
    are still freed by reference counting."""
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


class Worker:
    def __init__(self, settings: Settings, steps: list[Step], stores: list[Store], followed: list[Source],
                 metrics: Metrics, prepare: Callable[[], None], status: WorkerStatus | None = None):
        self.settings = settings
        self.steps = {step.topic: step for step in steps}
        self.stores = stores
        self.followed = followed
        self.metrics = metrics
        self.prepare = prepare  # topics, schemas, model: raises while a dependency is unreachable
        self.status = status or WorkerStatus()
        kafka = settings.kafka_bootstrap
        self.transactional_id = f"{settings.app_id}-{settings.worker_id}"
        self.tables = TableReader({"bootstrap.servers": kafka})
        self.consumer: Consumer | None = None
        self.checkpoint: Checkpoint | None = None
        self.partitions: Partitions | None = None
        self._lag_at = 0.0
        self._tick_at = 0.0
        self._asked: list[tuple[Callable, Future]] = []
        self._group: tuple[str, float] | None = None  # the group consumer's state, since when
        self._asked_lock = threading.Lock()

    # What the steps ask of the loop (bound before the loop starts).

    def retry_later(self, topic: str, partition: int, offset: int) -> None:
        self.partitions.retry_later(topic, partition, offset)

    def start_offset_at(self, topic: str, partition: int, timestamp_ms: int) -> int:
        return self.tables.start_offset_at(topic, partition, timestamp_ms)

    def ask(self, question: Callable[[], object]) -> Future:
        """Run `question` in the loop's thread between two batches, where the state may be read
        (the API's what-if scores); its answer, or its exception, in the future."""
        future: Future = Future()
        with self._asked_lock:
            self._asked.append((question, future))
        return future

    def ready_to_read(self, topic: str, partition: int) -> bool:
        """Whether this worker holds the partition with its state read to the end (loop thread only)."""
        a = self.partitions.assignment if self.partitions is not None else None
        return a is not None and (topic, partition) in a.held and (topic, partition) not in a.preparing

    def _answer_asked(self) -> None:
        with self._asked_lock:
            asked, self._asked = self._asked, []
        for question, future in asked:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(question())
                except Exception as exc:  # noqa: BLE001 - the asker gets it
                    future.set_exception(exc)

    # The loop.

    def run(self, stop: threading.Event) -> None:
        try:
            if not self._start(stop):
                return
            self.status.phase = "running"
            while not stop.is_set():
                try:
                    self._once()
                    self.status.waiting_for = ""
                except KafkaException as exc:  # the broker away or refusing: back to what was committed
                    log.warning("kafka: %s; rewinding, then going on in %.0fs", exc, RETRY_SECONDS)
                    self.status.waiting_for = f"kafka: {exc}"
                    self.partitions.rewind(failure_of(exc, "loop"))
                    stop.wait(RETRY_SECONDS)
        finally:
            self.status.phase = "stopping"
            self._finish()
            self.status.phase = "stopped"

    def _start(self, stop: threading.Event) -> bool:
        """Wait for every dependency, then join the group. False when stopped before."""
        quiet_garbage_collector()
        producers: list[Producer] = []
        while not stop.is_set():
            try:
                self.prepare()
                while len(producers) < 2:
                    producers.append(self._new_producer(len(producers)))
                sources = [s for s in self.followed]
                for source in sources:
                    if source.key not in self.tables.sources:
                        self.tables.add(source)
                self.tables.catch_up(sources, stop, timeout=120)
                break
            except Exception as exc:  # noqa: BLE001 - every dependency fails its own way; all wait
                self.status.waiting_for = f"{type(exc).__name__}: {exc}"
                log.error("not ready, retrying in %.0fs: %s", RETRY_SECONDS, self.status.waiting_for)
                stop.wait(RETRY_SECONDS)
        if stop.is_set():
            return False
        self.status.waiting_for = ""
        self.status.followed_caught_up = True
        s = self.settings
        self.consumer = self._new_consumer()
        self.checkpoint = Checkpoint(producers, self.consumer, self.stores, s.commit_interval_seconds,
                                     on_commit=self.metrics.commit_seconds.observe)
        self.partitions = Partitions(self.consumer, self.checkpoint, self.tables, self.steps, self._new_producer)
        self.partitions.on_change = self._report_assignment
        self._subscribe()
        log.info("worker %s consuming %s", s.worker_id, ", ".join(sorted(self.steps)))
        return True

    def _new_consumer(self) -> Consumer:
        s = self.settings
        config = consumer_config(s.kafka_bootstrap, s.app_id, s.session_timeout_ms, int(s.batch_within_seconds * 1000))
        return Consumer({**self._debugged(config), "statistics.interval.ms": STATS_EVERY_MS, "stats_cb": self._on_stats})

    def _debugged(self, config: dict) -> dict:
        """A client's config with FRAUD_KAFKA_DEBUG's librdkafka debug contexts (logged to stderr)."""
        return {**config, "debug": self.settings.kafka_debug} if self.settings.kafka_debug else config

    def _subscribe(self) -> None:
        p = self.partitions
        self.consumer.subscribe(sorted(self.steps), on_assign=p.on_assign, on_revoke=p.on_revoke,
                                on_lost=p.on_lost)

    def _on_stats(self, stats_json: str) -> None:
        self._group = group_state(stats_json, time.monotonic())

    def _rejoin_if_stuck(self, now: float) -> None:
        """Replace a group consumer that has been without the group's coordinator for
        REJOIN_AFTER_SECONDS. After the broker stopped answering for longer than the session, librdkafka
        (2.16) can stay for good in its coordinator query ("no broker available for coordinator
        query" in its cgrp debug log), never joining the group again, once the broker is back: the
        group stays empty and nothing is scored. A new consumer joins at once; whatever this worker
        still held is given up first, as when partitions are lost."""
        if self._group is None or self._group[0] == "up" or now - self._group[1] < REJOIN_AFTER_SECONDS:
            return
        log.warning("the group consumer has been in state %s for %.0fs: replacing it", self._group[0],
                    now - self._group[1])
        self._group = None
        self.consumer = self._new_consumer()
        self.partitions.replace_consumer(self.consumer)
        self._subscribe()

    def _new_producer(self, index: int) -> Producer:
        s = self.settings
        producer = Producer(self._debugged(producer_config(s.kafka_bootstrap, f"{self.transactional_id}-{index}",
                                                           s.transaction_timeout_ms,
                                                           linger_ms=1000 * s.commit_interval_seconds)))
        # Fences this worker's previous incarnation and aborts what it left open.
        call_transactional(producer.init_transactions, OP_TIMEOUT)
        return producer

    def _once(self) -> None:
        now = time.monotonic()
        if self._asked:
            self._answer_asked()
        self.partitions.run_timers(now)
        restoring = self.tables.restoring()
        if self.tables.sources:
            self.tables.poll(max_records=50_000 if restoring else 10_000)
        timeout = 0.005 if restoring else min(self.checkpoint.seconds_left(now), 0.1)
        records = self._take(timeout)
        if records:
            self._process(records)
        if self.checkpoint.due(time.monotonic()):
            self._commit()
        else:
            self._settle()
        for producer in self.checkpoint.producers:
            producer.poll(0)
        if now - self._tick_at > TICK_SECONDS:
            self._tick_at = now
            self._tick()
            self._rejoin_if_stuck(now)
        if now - self._lag_at > LAG_EVERY_SECONDS:
            self._lag_at = now
            self._measure_lag()

    def _take(self, timeout: float) -> list:
        """What has arrived, up to batch_max records; waits up to `timeout` only while nothing has."""
        batch_max = self.settings.batch_max
        records = self.consumer.consume(batch_max, 0)
        if not records:
            first = self.consumer.poll(timeout)
            if first is None:
                return []
            records = [first]
        if len(records) < batch_max:
            records += self.consumer.consume(batch_max - len(records), 0)
        return records

    def _process(self, records: list) -> None:
        """Each topic's records, by partition in offset order, to the topic's step."""
        batches: dict[str, dict[int, list]] = {}
        ready = self.partitions.assignment
        for msg in records:
            error = msg.error()
            if error is not None:
                if error.code() not in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
                    log.warning("consumer: %s", error)
                continue
            key = (msg.topic(), msg.partition())
            if key not in ready.held or key in ready.preparing:
                continue  # handed over after it left or was paused: it is read again from its committed offset
            batches.setdefault(key[0], {}).setdefault(key[1], []).append(msg)
            if awaited(msg.headers()):
                self.checkpoint.await_commit()
        for topic, partitions in batches.items():
            try:
                self.steps[topic].process(partitions, self.checkpoint)
            except Rewind as exc:
                self.partitions.rewind(exc)
                return

    def _tick(self) -> None:
        for step in self.steps.values():
            try:
                step.tick(self.checkpoint)
            except Rewind as exc:
                self.partitions.rewind(exc)
                return

    def _commit(self, wait: bool = False) -> None:
        try:
            self.checkpoint.commit(wait)
        except Rewind as exc:
            self.partitions.rewind(exc)
            self.status.rewinds = self.partitions.rewinds
        self.status.commits = self.checkpoint.commits
        gc.freeze()

    def _settle(self) -> None:
        """A commit that ended in failure is rewound now rather than at the next commit."""
        try:
            self.checkpoint.settle(block=False)
        except Rewind as exc:
            self.partitions.rewind(exc)
            self.status.rewinds = self.partitions.rewinds

    def _measure_lag(self) -> None:
        """Records behind the end of each transactions partition held (from the consumer's cached
        watermarks: no request to the broker)."""
        topic = self.settings.transactions_topic
        held = [TopicPartition(t, p) for t, p in self.partitions.assignment.held if t == topic]
        lag = {}
        for tp in self.consumer.position(held) if held else []:
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lag[tp.partition] = max(0, high - tp.offset)
        for partition in set(self.status.lag) - set(lag):
            self.metrics.lag.remove(str(partition))
        for partition, behind in lag.items():
            self.metrics.lag.labels(str(partition)).set(behind)
        self.status.lag = lag
        for store in self.stores:
            self.metrics.state_keys.labels(store.name).set(store.size())

    def _report_assignment(self) -> None:
        a = self.partitions.assignment
        self.status.assigned = sorted(a.held)
        self.status.preparing = sorted(a.preparing)

    def _finish(self) -> None:
        """Commit what is open and leave the group (its partitions move to the others at once)."""
        if self.consumer is not None:
            try:
                self._commit(wait=True)
                self.consumer.close()  # revokes everything first: nothing left open to commit
            except Exception as exc:  # noqa: BLE001 - stopping: the next owner redoes what is uncommitted
                log.warning("stopping: %s", exc)
        if self.checkpoint is not None:
            self.checkpoint.close()
            for producer in self.checkpoint.producers:
                producer.flush(10)
        self.tables.close()

"""Exactly-once: what one Kafka transaction holds, when it commits, and what happens when it cannot.

A worker has one consumer in the group (read_committed, offsets never auto-committed) and two
transactional producers that take turns (`Checkpoint`). Everything the worker writes — verdicts, dead
letters, terminal events, labelled examples, terminal snapshots and its stores' changelog records —
goes into the open transaction, and so do the offsets of the records whose processing wrote it. The
transaction commits after a batch once the last commit began `interval` seconds ago or more
(FRAUD_COMMIT_INTERVAL_SECONDS) and has ended: a busy stream commits once an interval, a light one's
batch in the pass that processed it, and a commit slower than the interval delays the next one
rather than the scoring. A transaction holding a record a caller waits on (header AWAITED in
streams/topics.py, sent by the predict API) commits as soon as the commit before it has ended. A
commit goes in these steps, the last two in a thread while the next batches go into the other
producer's transaction:

  1. each store writes one changelog record per key changed since the last commit;
  2. the offsets processed (last offset + 1 per partition) join the transaction, with the consumer's
     group metadata: the broker refuses them from a worker that is no longer in the group's current
     generation (KIP-447), so a worker that lost its partitions cannot commit for them;
  3. commit_transaction, which first waits until the broker has every record of the transaction.

Either all of a transaction is visible to read_committed consumers — its outputs, its state changes,
its offsets — or none of it is. When a commit or a write fails in a way that aborts the transaction
(the broker away longer than the transaction timeout, say), the worker rewinds rather than stops:
every partition it holds goes back to its committed offset and its state to the committed changelog,
and the records are processed again (`Rewind`). Producers that the broker has fenced (another worker
now holds the transactional id) are replaced before the rewind.

Partitions come and go with the group. The range assignor gives each worker an even share of every
input topic (what a worker does is then proportional to its share of the traffic). Before
partitions leave, the open transaction is committed, so the next owner starts exactly where this
worker stopped. A partition that arrives is paused until what its step needs is read — its store's
changelog, or the verdicts the feedback join needs (streams/tables.py) — then resumed at the
group's committed offset. A rebalance takes every partition away and hands out the new assignment;
a partition this worker gets back keeps its state, since nobody else held it in between and its
offsets were committed on the way out. A partition lost without notice (this worker missed the
group's session) aborts the transaction and rewinds the rest.

Records within a partition are handed over in offset order once each. Offsets between two records
that hold none (transaction markers: every topic written under exactly-once has one after each
transaction) are simply stepped over: the committed offset is the last processed one plus one.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.state import Store
from streams.tables import Source, TableReader

log = logging.getLogger(__name__)

RETRIES = 5  # attempts of a transactional call that fails with a retriable error
OP_TIMEOUT = 30.0  # seconds for one transactional call
RETRY_DELAY = 0.1  # seconds before a partition set back by `retry_later` is read again
OVERDUE_POLL_SECONDS = 0.002  # the loop's wait for records while a due commit waits for the one before
COMMIT_WAIT_AFTER_SECONDS = 1.0  # past this since the last commit began, the loop waits for it to end


class Rewind(Exception):
    """The open transaction was aborted: go back to the committed offsets and state."""


class Step(Protocol):
    """What the worker does with one input topic's records (streams/scoring.py, feedback.py,
    terminals.py)."""

    topic: str

    def prepare(self, partition: int) -> list[Source]:
        """What must be read before the partition's records can be processed (its state)."""

    def release(self, partition: int) -> None:
        """Forget the partition's state: it left, or is rewound."""

    def process(self, batches: dict[int, list[Message]], checkpoint: "Checkpoint") -> None:
        """Process each partition's records in offset order; call `checkpoint.processed` with the
        last one done of each partition."""

    def tick(self, checkpoint: "Checkpoint") -> None:
        """Called about every second: work due by the clock rather than by a record."""


def consumer_config(bootstrap: str, group_id: str, session_timeout_ms: int = 10_000,
                    batch_wait_ms: int = 200, batch_bytes: int = 4096) -> dict:
    """The group consumer. A fetch returns once `batch_bytes` have arrived (a few dozen transactions)
    or `batch_wait_ms` has passed: a light stream is then taken a batch at a time rather than a
    record at a time, which costs the worker and the broker a request, and the worker a pass of its
    loop, per batch instead of per record. Each pass that wakes the worker from idle costs far more
    than the same work done back to back (benchmarks/wake_cost.py), so at moderate load the wait is
    what keeps a worker cheap: with a wait long enough for `batch_bytes` to fill, a worker wakes in
    proportion to its own traffic, and three workers sharing a stream cost what one does
    (benchmarks/scale_out.py). A busy stream fills `batch_bytes` in milliseconds and is taken at once."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(1000, session_timeout_ms // 5),
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": batch_wait_ms,
        "fetch.min.bytes": batch_bytes,
    }


def producer_config(bootstrap: str, transactional_id: str, transaction_timeout_ms: int = 10_000,
                    linger_ms: float = 100.0) -> dict:
    """The worker's transactional producer. Its records are visible to read_committed consumers only
    once their transaction commits, and a commit sends whatever is still queued at once: so records
    linger up to a commit interval (`linger_ms`), and a light transaction goes out in one request at
    its commit rather than a request per batch; a busy one fills whole batches and sends them as it
    goes. Delivery reports come only for failures (a failed record fails the commit anyway)."""
    return {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": transaction_timeout_ms,
        "message.timeout.ms": transaction_timeout_ms,
        "linger.ms": linger_ms,
        "delivery.report.only.error": True,
        # Keyed records land where the Java client (and faust, and Kafka Streams) would put them, so
        # a verdict keyed by transaction id shares its partition number with that transaction's feedback.
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
    }


class Checkpoint:
    """The open Kafka transaction: outputs, offsets processed, and the stores whose changes it takes.

    Two transactional producers take turns. A commit hands the open transaction to the commit thread
    (one, kept for the worker's life: starting a thread per commit would stop the loop each time until
    the new thread ran) and the batches after it go to the other producer, so the loop does not stop
    for the broker's round trips. Commits still happen one after the other, in order: a commit begins
    only once the one before it has ended, and one that failed is raised to the loop (`settle`), which
    rewinds, aborting the transaction opened after it too.
    """

    def __init__(self, producers: list[Producer], consumer: Consumer, stores: list[Store], interval: float,
                 on_commit: Callable[[float], None] = lambda seconds: None):
        self.producers = producers
        self.consumer = consumer
        self.stores = stores
        self.interval = interval
        self.on_commit = on_commit
        self.current = 0  # the producer the open transaction is on
        self.offsets: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset processed
        self.begun_at: float | None = None  # when the open transaction began (monotonic); None: none open
        self.committed_at = float("-inf")  # when the last commit was handed to its thread (monotonic)
        self.awaited = False  # the open transaction holds a record a caller waits on (`await_commit`)
        # Producers whose last transaction was begun and not committed: `abort` aborts each of them,
        # or a producer left with a failed commit (or a failed begin) would refuse every later begin.
        self.unfinished: set[int] = set()
        self.commits = 0
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._committing: Future | None = None  # the commit under way: its failure, or None

    @property
    def producer(self) -> Producer:
        return self.producers[self.current]

    def begin(self) -> None:
        if self.begun_at is None:
            self.unfinished.add(self.current)
            try:
                call_transactional(self.producer.begin_transaction)
            except KafkaException as exc:
                raise failure_of(exc, "begin") from exc
            self.begun_at = time.monotonic()

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int = -1,
                headers: list | None = None) -> None:
        """Add one record to the transaction."""
        self.begin()
        while True:
            try:
                self.producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise failure_of(exc, "produce") from exc

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """A record's outputs are all in the transaction: its offset may be committed with them. Within a
        transaction a partition's offset only moves forward."""
        self.begin()
        key = (topic, partition)
        if offset > self.offsets.get(key, -1):
            self.offsets[key] = offset

    def await_commit(self) -> None:
        """A caller waits for an output of the open transaction (a synchronous decision, the
        predict API): commit it as soon as the commit before it has ended, without waiting out
        the interval. A commit then costs its round trips to the broker, not a wait of up to an
        interval on top."""
        self.begin()
        self.awaited = True

    def due(self, now: float) -> bool:
        """Something is open, the last commit began at least an interval ago and has ended. A light
        stream's batch, arriving after a pause, is then committed in the same pass that processed it
        (one wake-up, and its verdicts visible at once); a busy stream commits once an interval. While
        a commit takes longer than the interval (a busy broker), the loop goes on scoring into the
        open transaction rather than waiting for it: the next commit begins once it has ended, or,
        past COMMIT_WAIT_AFTER_SECONDS (a broker away), the loop waits for it, so that an open
        transaction holds at most about a second of records."""
        since = now - self.committed_at
        if self.begun_at is None or (since < self.interval and not self.awaited):
            return False
        return not self._commit_under_way() or since >= COMMIT_WAIT_AFTER_SECONDS

    def seconds_left(self, now: float) -> float:
        """How long the loop may wait for records before a commit is due (a little while one is
        overdue but the one before it has not ended)."""
        if self.begun_at is None:
            return self.interval
        left = 0.0 if self.awaited else self.committed_at + self.interval - now
        return max(left, OVERDUE_POLL_SECONDS if self._commit_under_way() else 0.0)

    def _commit_under_way(self) -> bool:
        return self._committing is not None and not self._committing.done()

    def commit(self, wait: bool = False) -> None:
        """Steps 1-3 above: the changelog records and the offsets join the open transaction here,
        then a thread commits it. With `wait`, return once it is committed. Raises Rewind when this
        commit (with `wait`) or the one before it failed."""
        self.settle()
        if self.begun_at is None:
            return
        # Step 1's records are made here, from the state as it is now; the thread writes them.
        changelogs: dict[tuple[str, int], list[dict]] = {}  # (topic, partition) -> records
        for store in self.stores:
            for partition, key, value in store.pending():
                changelogs.setdefault((store.changelog_topic, partition), []).append({"key": key, "value": value})
        positions = [TopicPartition(t, p, o + 1) for (t, p), o in self.offsets.items()]
        try:
            metadata = self.consumer.consumer_group_metadata() if positions else None
        except KafkaException as exc:
            raise failure_of(exc, "commit") from exc
        self._committing = self._committer.submit(self._commit, self.current, changelogs, positions, metadata)
        self.offsets, self.begun_at, self.awaited = {}, None, False
        self.committed_at = time.monotonic()
        self.current = 1 - self.current
        if wait:
            self.settle()

    def _commit(self, index: int, changelogs: dict, positions: list[TopicPartition], metadata) -> Rewind | None:
        """In the commit thread: steps 1-3 on producer `index`; the failure, or None once committed."""
        producer = self.producers[index]
        started = time.perf_counter()
        try:
            # Step 1, one call per partition: produce_batch places every record of a call in the
            # partition given to it (a record's own "partition" is not used).
            for (topic, partition), messages in changelogs.items():
                if producer.produce_batch(topic, messages, partition=partition) != len(messages):
                    return Rewind(f"{topic}: changelog records not queued")
            if positions:  # step 2
                call_transactional(producer.send_offsets_to_transaction, positions, metadata, OP_TIMEOUT)
            call_transactional(producer.commit_transaction, OP_TIMEOUT)  # step 3
        except BufferError as exc:
            return Rewind(f"changelog records not queued: {exc}")
        except KafkaException as exc:
            return failure_of(exc, "commit")
        except Exception as exc:  # noqa: BLE001 - not committed, whatever the reason: the loop rewinds
            log.exception("commit failed")
            return Rewind(f"commit: {type(exc).__name__}: {exc}")
        self.unfinished.discard(index)
        self.commits += 1
        self.on_commit(time.perf_counter() - started)
        return None

    def settle(self, block: bool = True) -> None:
        """Wait for the commit under way (without `block`: only if it has ended); raise its failure."""
        committing = self._committing
        if committing is None or (not block and not committing.done()):
            return
        self._committing = None
        failure = committing.result()
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Stop the commit thread (after `commit(wait=True)`: nothing is under way)."""
        self._committer.shutdown(wait=True)

    def forget_open(self) -> None:
        """Forget what the open transaction holds here (its offsets, its stores' changes, whether a
        caller waits on it); its producer still has to abort it."""
        self.offsets.clear()
        for store in self.stores:
            store.forget_pending()
        self.begun_at, self.awaited = None, False

    def abort(self) -> None:
        """Drop the open transaction (outputs and offsets), once the commit under way has ended."""
        fenced = None
        try:
            self.settle()
        except ProducerFenced as exc:
            fenced = exc
        except Rewind:
            pass  # its producer is in `unfinished`: aborted below; the caller rewinds to what was committed
        self.forget_open()
        for index in sorted(self.unfinished):  # the open one, and one whose commit or begin failed
            self.unfinished.discard(index)
            try:
                self.producers[index].abort_transaction(OP_TIMEOUT)
            except KafkaException as exc:
                # Fenced, or stuck (an abort that does not end once the broker is back): a new
                # producer with the same transactional id fences it, and the broker aborts what it left.
                fenced = ProducerFenced(f"abort: {exc}")
        if fenced is not None:
            raise fenced


def call_transactional(fn: Callable, *args):
    """A transactional call, retried while librdkafka says the error is retriable."""
    for attempt in range(RETRIES):
        try:
            return fn(*args)
        except KafkaException as exc:
            error = exc.args[0]
            if not (isinstance(error, KafkaError) and error.retriable()) or attempt == RETRIES - 1:
                raise
            log.warning("%s: %s; retrying", getattr(fn, "__name__", "kafka call"), error)
            time.sleep(min(2.0, 0.2 * 2 ** attempt))


class ProducerFenced(Rewind):
    """The producer can no longer be used (fenced, or a fatal error): replace it, then rewind."""


def failure_of(exc: KafkaException, what: str) -> Rewind:
    """The Rewind a librdkafka error calls for: ProducerFenced when the producer is done for."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError) and error.fatal():
        return ProducerFenced(f"{what}: {error}")
    return Rewind(f"{what}: {exc}")


@dataclass
class Assignment:
    """The group partitions this worker holds, and which of them wait for their state."""

    held: set = field(default_factory=set)  # (topic, partition)
    preparing: dict = field(default_factory=dict)  # (topic, partition) -> sources still being read
    sources: dict = field(default_factory=dict)  # (topic, partition) -> every source read for it


class Partitions:
    """The rebalance side of exactly-once: commit before partitions leave, restore before they are
    processed, rewind when a transaction is lost."""

    def __init__(self, consumer: Consumer, checkpoint: Checkpoint, tables: TableReader,
                 steps: dict[str, Step], new_producer: Callable[[int], Producer]):
        self.consumer = consumer
        self.checkpoint = checkpoint
        self.tables = tables
        self.steps = steps
        self.new_producer = new_producer
        self.assignment = Assignment()
        self.parked: set[tuple[str, int]] = set()  # revoked in a rebalance, state kept until it ends
        self.waiting: dict[tuple[str, int], float] = {}  # set back by retry_later: when to read again
        self.deferred: dict[tuple[str, int], tuple[float, Callable[[], None]]] = {}  # broker away: retry
        self.rewinds = 0
        self.pending_rewind: tuple[float, Exception] | None = None  # (when to try again, why)
        self.on_change: Callable[[], None] = lambda: None

    def retry_later(self, topic: str, partition: int, offset: int, delay: float = RETRY_DELAY) -> None:
        """Read a partition again from `offset` in `delay` seconds; what was fetched after it is
        dropped and fetched again. For a record that cannot be processed yet (its schema registry
        away, its verdict not yet known)."""
        self.consumer.pause([TopicPartition(topic, partition)])
        self.consumer.seek(TopicPartition(topic, partition, offset))
        self.waiting[(topic, partition)] = time.monotonic() + delay

    def run_timers(self, now: float) -> None:
        if self.pending_rewind is not None and self.pending_rewind[0] <= now:
            self.rewind(self.pending_rewind[1])
            return
        for key, (when, action) in list(self.deferred.items()):
            if when <= now:
                del self.deferred[key]
                if key in self.assignment.held:
                    action()
        for key, when in list(self.waiting.items()):
            if when <= now:
                del self.waiting[key]
                if key in self.assignment.held and key not in self.assignment.preparing:
                    self.consumer.resume([TopicPartition(*key)])

    # Group callbacks: librdkafka runs them inside consumer.poll/consume, between two batches.

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        kept = self.parked & {(tp.topic, tp.partition) for tp in partitions}
        self._release([TopicPartition(t, p) for t, p in self.parked - kept])
        self.parked = set()
        arriving = [tp for tp in partitions if (tp.topic, tp.partition) not in kept]
        consumer.pause(arriving)
        self.assignment.held |= kept
        for tp in arriving:  # all of them not ready until each one is
            self.assignment.preparing[(tp.topic, tp.partition)] = []
        for tp in arriving:
            self._prepare(tp.topic, tp.partition, seek=False)
        log.info("assigned %s (%d kept with their state)", _names(partitions), len(kept))
        self.on_change()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.checkpoint.commit(wait=True)  # the next owner starts where this worker stopped
        except Rewind as exc:
            log.warning("commit before revoking %s failed (%s): rewinding", _names(partitions), exc)
            self._release(partitions)
            self.rewind(exc)
            return
        # Kept until the new assignment is known: a partition handed back keeps its state.
        ready = {(tp.topic, tp.partition) for tp in partitions} - set(self.assignment.preparing)
        self._release([tp for tp in partitions if (tp.topic, tp.partition) not in ready])
        self.parked = ready
        self.assignment.held -= ready
        self.waiting = {k: v for k, v in self.waiting.items() if k not in ready}
        log.info("revoked %s", _names(partitions))
        self.on_change()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (the group moved on without this worker): aborting the open transaction",
                    _names(partitions))
        self._release(partitions)
        self.rewind(Rewind("partitions lost"))

    def replace_consumer(self, new: Consumer) -> None:
        """Give up whatever is held, as when partitions are lost, close the group consumer and go on
        with `new` (subscribed by the caller, which then owns it). For a consumer that can no longer
        join the group (streams/worker.py `_rejoin_if_stuck`)."""
        old = self.consumer
        self.on_lost(old, [TopicPartition(t, p) for t, p in sorted(self.assignment.held)])
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 - it is dropped either way
            log.warning("closing the replaced consumer: %s", exc)
        self.parked.clear()  # revoked while closing, but given up above: not kept with its state
        self.consumer = self.checkpoint.consumer = new

    # Rewinding.

    def rewind(self, reason: Exception) -> None:
        """Abort the open transaction; every held partition goes back to its committed offset and
        state. When the broker cannot be reached to do so, it is tried again a second later."""
        self.rewinds += 1
        self.pending_rewind = None
        log.warning("rewinding to the last committed transaction: %s", reason)
        try:
            try:
                if not isinstance(reason, ProducerFenced):
                    self.checkpoint.abort()
            except ProducerFenced:
                reason = ProducerFenced(str(reason))
            if isinstance(reason, ProducerFenced):
                self._replace_producer()
            held = sorted(self.assignment.held)
            self.waiting.clear()
            self.deferred.clear()
            self.consumer.pause([TopicPartition(t, p) for t, p in held])
            for topic, partition in held:
                self._forget_sources((topic, partition))
                self.steps[topic].release(partition)
            for topic, partition in held:
                self._prepare(topic, partition, seek=True)
        except KafkaException as exc:
            log.warning("rewind not finished (%s); trying again", exc)
            self.pending_rewind = (time.monotonic() + 1.0, reason)
        self.on_change()

    def _replace_producer(self) -> None:
        """Both producers, fresh: the one the broker fenced cannot be used again, and the other's open
        transaction is aborted by the new one's init_transactions (same transactional id)."""
        checkpoint = self.checkpoint
        try:
            checkpoint.settle()
        except Rewind:
            pass
        checkpoint.forget_open()
        checkpoint.unfinished.clear()
        for i, producer in enumerate(checkpoint.producers):
            try:
                producer.purge()
            except Exception:  # noqa: BLE001 - a fenced producer refuses everything; it is dropped anyway
                pass
            checkpoint.producers[i] = self.new_producer(i)

    # One partition's life.

    def _prepare(self, topic: str, partition: int, seek: bool) -> None:
        """Read what the partition's step needs, then resume it (seek: at the committed offset)."""
        key = (topic, partition)
        self.assignment.held.add(key)
        self.assignment.preparing[key] = []

        def ready(source: Source) -> Callable[[], None]:
            def done() -> None:
                pending = self.assignment.preparing.get(key)
                if pending is None or source not in pending:
                    return
                pending.remove(source)
                if not pending:
                    self._resume(topic, partition, seek)
            return done

        try:
            sources = self.steps[topic].prepare(partition)
            self.assignment.preparing[key] = list(sources)
            self.assignment.sources[key] = list(sources)
            for source in sources:
                source.waiters.append(ready(source))
                self.tables.add(source)
        except KafkaException as exc:  # the broker cannot say where the partition ends: later
            log.warning("cannot read what %s[%d] needs yet (%s); trying again", topic, partition, exc)
            self._forget_sources(key)
            self.steps[topic].release(partition)
            self.deferred[key] = (time.monotonic() + 1.0, lambda: self._prepare(topic, partition, seek))
            return
        if not sources:
            self._resume(topic, partition, seek)

    def _resume(self, topic: str, partition: int, seek: bool) -> None:
        key = (topic, partition)
        if key not in self.assignment.held:
            self.assignment.preparing.pop(key, None)
            return
        tp = TopicPartition(topic, partition)
        if seek:  # back to the committed offset (none: the beginning)
            try:
                committed = self.consumer.committed([tp], timeout=OP_TIMEOUT)[0].offset
            except KafkaException as exc:
                log.warning("cannot ask the committed offset of %s[%d] (%s); trying again", topic, partition, exc)
                self.assignment.preparing[key] = []
                self.deferred[key] = (time.monotonic() + 1.0, lambda: self._resume(topic, partition, seek))
                return
            self.consumer.seek(TopicPartition(topic, partition, committed if committed >= 0 else OFFSET_BEGINNING))
        self.assignment.preparing.pop(key, None)
        if key not in self.waiting:
            self.consumer.resume([tp])
        log.info("%s[%d] ready", topic, partition)
        self.on_change()

    def _release(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assignment.held.discard(key)
            self.waiting.pop(key, None)
            self.deferred.pop(key, None)
            self._forget_sources(key)
            step = self.steps.get(tp.topic)
            if step is not None:
                step.release(tp.partition)
            self.checkpoint.offsets.pop(key, None)

    def _forget_sources(self, key: tuple[str, int]) -> None:
        """Stop reading what a partition needed (a restore under way, a followed partition)."""
        self.assignment.preparing.pop(key, None)
        for source in self.assignment.sources.pop(key, []):
            self.tables.remove(source.topic, source.partition)

    def ready(self) -> list[tuple[str, int]]:
        return sorted(k for k in self.assignment.held if k not in self.assignment.preparing)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"

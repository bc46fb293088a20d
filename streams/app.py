"""The Faust app: transactions in, verdicts out, one micro-batch at a time.

bytes -> decode -> features (card history in a changelog-backed table keyed by card; terminal history
from the table keyed by terminal) -> score -> decide -> encode -> `fraud-verdicts`; anything that
cannot be scored goes to the DLQ with its reason. Under exactly-once, every verdict and dead letter is
produced in the Kafka transaction of the partition its transaction came from, the same transaction
that commits that partition's offsets.

A terminal's transactions come from every card partition, so its history has an agent of its own:
each batch's transactions are also sent, one record per terminal partition, to
`fraud-terminal-transactions`, and each fraud label to `fraud-terminal-labels`; the worker holding a
terminal's partition of both adds them to the terminal's row of the `terminal-history` table. Every worker reads all rows through the
table's changelog (streams/verdicts.py).

`faust -A streams.app worker` runs the module-level `app`; `fraud worker` does the same with the ops
API alongside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import dataclass, field

import faust
import numpy as np
from confluent_kafka import KafkaException
from faust.streams import _current_event
from faust.types import TP

from core.settings import Settings
from models.serving import LoadedModel, ModelHandle, ModelSource, ModelUnavailable
from schemas.codec import AvroCodec, CodecError, RegistryUnavailable, SchemaRegistry, load_schema
from core.decision import Thresholds, decide, top_reasons
from core.features import (N_CUSTOMER_FEATURES, N_FEATURES, customer_features, empty_history,
                              empty_terminal_history, invalid_transaction_reason, remember,
                              remember_terminal)
from core.metrics import Metrics
from streams.progress import DUPLICATE, PROCESS, REREAD, RESEEK_SECONDS, PartitionProgress
from streams.quality import OnlineQuality
from streams.rules import RulesFollower, apply_rules
from streams.topics import TERMINAL_CHANGELOG_CONFIG, TERMINAL_TABLE, terminal_changelog, terminal_partition
from streams.verdicts import VerdictFollower

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0
EXIT_BATCH_FAILED = 70


class NotCaughtUp(Exception):
    """A topic every worker follows (rules, verdicts, terminal labels) could not be read to its end."""


@dataclass
class Runtime:
    """Everything the agents and the ops API share in one worker process."""

    settings: Settings
    metrics: Metrics
    registry: SchemaRegistry
    models: ModelHandle
    model_source: ModelSource
    challenger: ModelHandle
    rules: RulesFollower
    transactions: AvroCodec = field(init=False)
    verdicts: AvroCodec = field(init=False)
    feedback: AvroCodec = field(init=False)
    terminal_labels: AvroCodec = field(init=False)
    terminal_transactions: AvroCodec = field(init=False)
    examples: AvroCodec = field(init=False)
    follower: VerdictFollower = field(init=False)
    quality: dict = field(init=False)
    last_offsets: dict = field(default_factory=dict)
    progress: PartitionProgress = field(default_factory=PartitionProgress)
    lag: dict = field(default_factory=dict)
    model_error: str = ""
    _ready: bool = False
    _readying: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held while a batch is processed and acknowledged, and by every offset commit: a Kafka
    # transaction then holds all of a batch's verdicts, dead letters and state changes together with
    # its offsets, or none of them.
    batch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def drain(self, timeout: float = 30.0) -> None:
        """Let the batch in hand finish, so its verdicts and state join its transaction."""
        try:
            await asyncio.wait_for(self.batch_lock.acquire(), timeout)
            self.batch_lock.release()
        except asyncio.TimeoutError:
            log.error("batch still running after %.0fs of shutdown; its messages will be redelivered", timeout)

    def __post_init__(self):
        s = self.settings
        self.transactions = AvroCodec(self.registry, load_schema("transaction"), f"{s.transactions_topic}-value")
        self.verdicts = AvroCodec(self.registry, load_schema("verdict"), f"{s.verdicts_topic}-value")
        self.feedback = AvroCodec(self.registry, load_schema("feedback"), f"{s.feedback_topic}-value")
        self.terminal_labels = AvroCodec(self.registry, load_schema("terminal_label"),
                                         f"{s.terminal_labels_topic}-value")
        self.terminal_transactions = AvroCodec(self.registry, load_schema("terminal_transaction"),
                                               f"{s.terminal_transactions_topic}-value")
        self.examples = AvroCodec(self.registry, load_schema("labelled_example"), f"{s.examples_topic}-value")
        self.follower = VerdictFollower(s.kafka_bootstrap, s.verdicts_topic, terminal_changelog(s),
                                        s.feedback_horizon_days * 86_400)
        thresholds = Thresholds(s.review_threshold, s.decline_threshold)
        self.quality = {model: OnlineQuality(thresholds, s.quality_window) for model in ("champion", "challenger")}

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        return cls(
            settings=settings,
            metrics=Metrics(),
            registry=SchemaRegistry(settings.schema_registry_url),
            models=ModelHandle(),
            model_source=ModelSource(settings.mlflow_uri, settings.model_name, settings.model_alias,
                                     settings.model_cache_dir, settings.xgb_threads),
            rules=RulesFollower(settings.kafka_bootstrap, settings.rules_topic),
            challenger=ModelHandle(),
        )

    async def ensure_ready(self) -> None:
        """Create topics, register our schemas, load the model and read the rules, retrying until done."""
        loop = asyncio.get_running_loop()
        async with self._readying:  # both agents wait on the one load
            await self._become_ready(loop)

    async def _become_ready(self, loop) -> None:
        from streams.topics import ensure_topics

        while not self._ready:
            try:
                await loop.run_in_executor(None, ensure_topics, self.settings)
                for codec in (self.transactions, self.verdicts, self.feedback, self.terminal_labels,
                              self.terminal_transactions, self.examples):
                    if codec.schema_id is None:
                        await loop.run_in_executor(None, codec.register)
                if self.models.current is None:
                    self.install(await loop.run_in_executor(None, self.model_source.load_at_start))
                # No verdict before the rules in force and the terminals' histories are known: a
                # blocked card stays blocked, and terminal risks hold, across restarts and deploys.
                self.rules.start()
                if not await loop.run_in_executor(None, self.rules.caught_up.wait, 30):
                    raise NotCaughtUp(f"rules topic {self.settings.rules_topic} not read within 30 s")
                self.follower.start()
                if not await loop.run_in_executor(None, self.follower.caught_up.wait, 120):
                    raise NotCaughtUp("verdicts and terminal table changelog not read within 120 s")
                self._ready = True
            except (RegistryUnavailable, ModelUnavailable, CodecError, NotCaughtUp, KafkaException) as exc:
                self.model_error = str(exc)
                log.error("not ready, retrying in %.0fs: %s", RETRY_SECONDS, exc)
                await asyncio.sleep(RETRY_SECONDS)

    def install(self, model: LoadedModel) -> None:
        self.models.swap(model)
        self.model_error = ""
        self.metrics.model_swaps.inc()
        self.metrics.model_version.labels(model.name).set(float(model.version))

    async def follow_alias(self) -> None:
        """Follow the serving and challenger aliases. MLflow being down changes nothing."""
        await self.follow_champion()
        await self.follow_challenger()

    async def follow_champion(self) -> None:
        """Swap to the version the serving alias points at, if it moved."""
        loop = asyncio.get_running_loop()
        current = self.models.current
        try:
            version, run_id = await loop.run_in_executor(None, self.model_source.alias_version)
            self.model_error = ""
            if current is not None and current.version == version:
                if current.source == "cache":  # the registry is back: say so in health
                    self.models.swap(LoadedModel(current.booster, current.name, version, "registry", run_id))
                return
            self.install(await loop.run_in_executor(None, self.model_source.load_version, version, run_id))
        except Exception as exc:
            self.model_error = f"cannot follow {self.settings.model_name}@{self.settings.model_alias}: {exc}"
            log.warning(self.model_error)

    async def follow_challenger(self) -> None:
        """Shadow-score with the challenger alias's version while it exists; stop when it is gone."""
        loop = asyncio.get_running_loop()
        current = self.challenger.current
        try:
            found = await loop.run_in_executor(
                None, self.model_source.optional_alias_version, self.settings.challenger_alias)
            if found is None:
                if current is not None:
                    self.challenger.clear()
                return
            version, run_id = found
            if current is None or current.version != version:
                self.challenger.swap(await loop.run_in_executor(
                    None, lambda: self.model_source.load_version(version, run_id, remember=False)))
        except Exception as exc:
            log.warning("cannot follow %s@%s: %s", self.settings.model_name, self.settings.challenger_alias, exc)


def _transactional_id(app: faust.App, tp: TP) -> str:
    # The id faust's TransactionManager gives the producer of a source partition.
    return f"{app.conf.id}-{app.assignor.group_for_topic(tp.topic)}-{tp.partition}"


class ScorerApp(faust.App):
    runtime: Runtime
    source_topics: frozenset = frozenset()  # the topics the agents consume
    in_flight: list  # deliveries of the records sent since the last commit

    def guard_commits(self) -> None:
        """Keep every transaction's verdicts and offsets in step (once per process).

        faust reads the offsets to commit before its commit waits for anything, forgets the
        acknowledged offsets of partitions being revoked before it commits, acknowledges records
        it handed to a batch whether or not they were processed, and its count of acknowledged
        offsets can lag behind the records processed. So every commit runs between batches and
        commits the offsets processed by then, by the worker's own count (streams/progress.py); a
        rebalance first commits what has been processed, and partitions this worker no longer
        holds lose their progress.
        """
        consumer = self.consumer
        if getattr(consumer, "guarded_by_batches", False):
            return
        lock, revoke, assign = self.runtime.batch_lock, consumer.on_partitions_revoked, consumer.on_partitions_assigned
        progress = self.runtime.progress

        async def commit_between_batches(topics=None, start_new_transaction: bool = True) -> bool:
            async with lock:
                await self.delivered()  # no offsets past a record the broker did not take
                offsets = offsets_processed(topics)
                if not offsets:
                    return False
                committed = await consumer._commit_offsets(offsets, start_new_transaction=start_new_transaction)
                forget_acknowledged(offsets)
                return committed

        def offsets_processed(topics) -> dict:
            # From our own progress, not faust's acknowledged offsets: a transaction then commits
            # exactly the offsets of the records whose output it holds, table writes included. faust's
            # count can lag behind over the holes transaction markers leave, and a partition
            # transaction that commits another partition's offsets then holds table writes of
            # records it does not commit, which would be applied twice after a crash.
            assigned, committed = consumer.assignment(), consumer._committed_offset
            return {tp: offset for tp, offset in progress.next_offsets().items()
                    if tp in assigned and tp.topic in self.source_topics
                    and (topics is None or tp in topics or tp.topic in topics)
                    and (committed.get(tp) is None or offset > committed[tp])}

        def forget_acknowledged(offsets) -> None:
            # faust's own bookkeeping, which its commits would have trimmed.
            for tp, offset in offsets.items():
                acked, index = consumer._acked[tp], consumer._acked_index[tp]
                acked[:] = [o for o in acked if o >= offset]
                index.difference_update([o for o in index if o < offset])
                consumer._gap[tp].chop(0, offset)

        async def commit_then_revoke(revoked) -> None:
            if revoked:
                await commit_between_batches()
            await revoke(revoked)

        async def forget_partitions_gone(assigned, generation_id: int = 0) -> None:
            progress.keep_only(assigned)  # another worker may hold the others meanwhile
            await assign(assigned, generation_id)

        consumer.commit = commit_between_batches
        consumer.on_partitions_revoked = commit_then_revoke
        consumer.on_partitions_assigned = forget_partitions_gone
        consumer.guarded_by_batches = True

    async def delivered(self) -> None:
        """Wait for every record sent since the last commit; if one failed, exit rather than commit
        offsets past it: the open transactions are aborted and their records redelivered."""
        futures = list(self.in_flight)
        self.in_flight.clear()
        try:
            await asyncio.gather(*futures)
        except Exception:
            log.exception("a record was not delivered; exiting so that its batch is redelivered")
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)

    async def on_start(self) -> None:
        await super().on_start()
        if self.in_transaction:
            self.guard_commits()

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        self.runtime.progress.rebalance_started()  # faust may drop records until it ends

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.runtime.progress.rebalance_ended(time.monotonic())

    async def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of `tp`, asked of the broker (None: never committed)."""
        from aiokafka import TopicPartition

        thread = self.consumer._thread
        return await thread.call_thread(thread._ensure_consumer().committed, TopicPartition(tp.topic, tp.partition))

    async def on_stop(self) -> None:
        # faust commits and ends the partition transactions as it stops its consumer: finish the
        # batch in hand first.
        await self.runtime.drain()
        await super().on_stop()


def create_app(settings: Settings, runtime: Runtime | None = None) -> faust.App:
    runtime = runtime or Runtime.from_settings(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = ScorerApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        processing_guarantee="exactly_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        autodiscover=False,
        datadir=str(settings.state_dir / settings.app_id),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_seconds,
        producer_linger_ms=2,
        table_standby_replicas=0,
    )
    app.runtime = runtime
    app.source_topics = frozenset({settings.transactions_topic, settings.feedback_topic,
                                   settings.terminal_transactions_topic, settings.terminal_labels_topic})
    metrics = runtime.metrics
    thresholds = Thresholds(settings.review_threshold, settings.decline_threshold)
    worker = settings.worker_id.encode()

    transactions = app.topic(settings.transactions_topic, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")
    feedback = app.topic(settings.feedback_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
    terminal_events = app.topic(settings.terminal_transactions_topic, settings.terminal_labels_topic,
                                key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    histories = app.Table("customer-history", default=None, partitions=settings.partitions)
    terminals = app.Table(TERMINAL_TABLE, default=None, partitions=settings.partitions,
                          extra_topic_configs=TERMINAL_CHANGELOG_CONFIG)
    assert terminals.changelog_topic.get_topic_name() == terminal_changelog(settings)

    app.in_flight = []

    async def publish(topic: str, key, value: bytes, headers, source: TP, partition: int | None = None):
        tid = _transactional_id(app, source) if app.in_transaction else None
        delivery = await app.producer.send(topic, key, value, partition, None, headers, transactional_id=tid)
        app.in_flight.append(delivery)
        return delivery

    async def decode(codec: AvroCodec, data: bytes) -> dict:
        """Decode; while the registry is unreachable for a schema id not seen yet, wait and retry:
        an outage is not the message's fault, so it is neither dead-lettered nor skipped."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                schema_id = codec.schema_id_of(data)
                if schema_id is not None and not codec.registry.knows(schema_id):
                    await loop.run_in_executor(None, codec.registry.writer_schema, schema_id)
                return codec.decode(data)
            except RegistryUnavailable as exc:
                log.error("schema registry unavailable, message waits: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def dead_letter(event, reason: str):
        msg = event.message
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.source.topic", msg.topic.encode()),
            ("dlq.source.partition", str(msg.partition).encode()),
            ("dlq.source.offset", str(msg.offset).encode()),
            ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
        ]
        metrics.dead_letters.labels(msg.topic).inc()
        log.warning("DLQ %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
        return await publish(settings.dlq_topic, msg.key, msg.value, headers, msg.tp)

    async def in_batches(stream, work) -> None:
        """Micro-batches of the stream, each done and acknowledged under the batch lock."""
        await runtime.ensure_ready()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_seconds):
            async with runtime.batch_lock:
                await crash_unless_done(work(events))
                await settle(stream, events)

    @app.agent(transactions)
    async def score_transactions(stream):
        await in_batches(stream, score_batch)

    async def crash_unless_done(work) -> None:
        # If a batch cannot be finished, faust would still acknowledge its events when the agent
        # dies, and commit offsets with no verdict. Exit instead: the partitions' open transactions
        # are aborted and the whole batch is redelivered to the next worker.
        try:
            await work
        except asyncio.CancelledError:
            log.error("batch cancelled part-way; exiting so that it is redelivered, not acknowledged")
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)
        except Exception:
            log.exception("batch failed; exiting so that it is redelivered, not acknowledged")
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)

    async def settle(stream, events) -> None:
        # Table changelog writes wait in faust's buffer: put them in the transactions now, then
        # acknowledge, all before a commit can run (take_events' own later ack is then a no-op).
        while app.producer.buffer.size:
            await app.producer.buffer.flush()
        for event in events:
            await stream.ack(event)

    async def first_delivery(event) -> bool:
        """Whether to process this record now (see streams/progress.py)."""
        tp, offset = event.message.tp, event.message.offset
        if not runtime.progress.knows(tp):
            runtime.progress.start(tp, await app.committed_offset(tp))
        decision = runtime.progress.decide(tp, offset, time.monotonic())
        if decision == PROCESS:
            return True
        if decision == DUPLICATE:
            metrics.redelivered.labels(tp.topic).inc()
            log.info("%s[%d]@%d handed over again; already processed", tp.topic, tp.partition, offset)
        elif decision == REREAD:
            first = runtime.progress.first_missing(tp)
            metrics.rereads.labels(tp.topic).inc()
            log.warning("%s[%d]@%d follows a hole from %d: reading the partition again from there",
                        tp.topic, tp.partition, offset, first)
            await app.consumer.seek(tp, first)
        return False

    def processed(event) -> None:
        runtime.progress.processed(event.message.tp, event.message.offset, event.message.time_in)

    async def score_batch(events):
        metrics.consumed.inc(len(events))
        started = time.perf_counter()
        model = runtime.models.current  # one version for the whole batch
        accepted, txns = [], []
        rows = np.empty((len(events), N_FEATURES), dtype=np.float64)
        for event in events:
            if not await first_delivery(event):
                continue
            processed(event)
            try:
                txn = await decode(runtime.transactions, event.value)
                reason = invalid_transaction_reason(txn, now_ms=int(time.time() * 1000))
            except CodecError as exc:
                reason = str(exc)
            if reason:
                await dead_letter(event, reason)
                continue
            _current_event.set(weakref.ref(event))  # table writes go to this event's partition
            key = txn["customer_id"]
            history = histories.get(key) or empty_history()
            rows[len(txns), :N_CUSTOMER_FEATURES] = customer_features(history, txn)
            histories[key] = remember(history, txn)
            accepted.append(event)
            txns.append(txn)
        if txns:
            rows[: len(txns), N_CUSTOMER_FEATURES:] = runtime.follower.terminal_features(
                [t["terminal_id"] for t in txns], [t["timestamp"] for t in txns])
            await publish_verdicts(model, accepted, txns, rows[: len(txns)], started)
        for event in events:
            runtime.last_offsets[event.message.tp] = event.message.offset

    async def publish_verdicts(model: LoadedModel, events, txns, ours: np.ndarray, started: float):
        rows = model.matrix(ours, txns)  # plus the upstream attributes the model reads
        scores = model.scores(rows)
        decisions, fired = apply_rules(runtime.rules.rules, txns, decide(scores, thresholds))
        challenger = runtime.challenger.current
        shadow = [None] * len(txns)
        if challenger is not None:
            shadow = challenger.scores(challenger.matrix(ours, txns))
            agrees = int((decide(shadow, thresholds) == decide(scores, thresholds)).sum())
            metrics.challenger_agreement.labels("yes").inc(agrees)
            metrics.challenger_agreement.labels("no").inc(len(txns) - agrees)
            metrics.challenger_scored.labels(challenger.version).inc(len(txns))
            shadow = shadow.tolist()
        names = model.feature_names
        reasons = top_reasons(model.contributions(rows, exact=settings.exact_reasons), rows, names)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_size.observe(len(txns))
        now_ms = int(time.time() * 1000)
        seen: dict[tuple, list] = {}  # (source partition, terminal partition) -> transactions
        for event, txn, score, decision, why, broken, shadow_score, row in zip(
                events, txns, scores.tolist(), decisions, reasons, fired, shadow, rows.tolist()):
            latency_ms = max(0.0, now_ms - event.message.timestamp * 1000.0)
            verdict = {
                "transaction_id": txn["transaction_id"],
                "customer_id": txn["customer_id"],
                "score": score,
                "decision": decision,
                "model_name": model.name,
                "model_version": model.version,
                "reasons": why,
                "rules": broken,
                "challenger_model_version": challenger.version if challenger else None,
                "challenger_score": shadow_score,
                "transaction_timestamp": txn["timestamp"],
                "scored_at": now_ms,
                "latency_ms": latency_ms,
                "terminal_id": txn["terminal_id"],
                "features": dict(zip(names, row)),
            }
            source = event.message
            await publish(settings.verdicts_topic, txn["transaction_id"].encode(), runtime.verdicts.encode(verdict),
                          [("source.topic", source.topic.encode()), ("source.partition", b"%d" % source.partition),
                           ("source.offset", b"%d" % source.offset), ("scored.by", worker)], source.tp)
            at = (source.tp, terminal_partition(txn["terminal_id"], settings.partitions))
            seen.setdefault(at, []).append({"transaction_id": txn["transaction_id"], "terminal_id": txn["terminal_id"],
                                            "transaction_timestamp": txn["timestamp"]})
            metrics.decisions.labels(decision).inc()
            for rule in broken:
                metrics.rules_fired.labels(rule.split(":", 1)[0]).inc()
            metrics.latency.observe(latency_ms)
        metrics.scored.labels(model.version).inc(len(txns))
        for (source, partition), transactions in seen.items():  # one record each, in the source's transaction
            await publish(settings.terminal_transactions_topic, None,
                          runtime.terminal_transactions.encode({"transactions": transactions}), None, source, partition)

    @app.agent(terminal_events)
    async def track_terminals(stream):
        await in_batches(stream, update_terminals)

    async def update_terminals(events) -> None:
        """Add a batch's scored transactions and fraud labels to their terminals' table rows, one
        write per terminal. Every event of a terminal comes from its partition (`terminal_partition`),
        the partition its row's changelog record goes to."""
        changed: dict[str, tuple[dict, object]] = {}
        for event in events:
            if not await first_delivery(event):
                continue
            processed(event)
            labelled = event.message.topic == settings.terminal_labels_topic
            try:
                record = await decode(runtime.terminal_labels if labelled else runtime.terminal_transactions,
                                      event.value)
            except CodecError as exc:
                await dead_letter(event, str(exc))
                continue
            if labelled and record["label"] != "FRAUD":
                continue
            seen = [record] if labelled else record["transactions"]
            for item in seen:
                terminal_id = item["terminal_id"]
                if terminal_id in changed:
                    history = changed[terminal_id][0]
                else:
                    _current_event.set(weakref.ref(event))
                    history = terminals.get(terminal_id) or empty_terminal_history()
                changed[terminal_id] = (remember_terminal(history, item["transaction_timestamp"], labelled), event)
            metrics.terminal_events.labels("fraud_label" if labelled else "transaction").inc(len(seen))
        for terminal_id, (history, event) in changed.items():
            _current_event.set(weakref.ref(event))
            terminals[terminal_id] = history
        metrics.terminal_updates.inc(len(changed))

    @app.agent(feedback)
    async def record_feedback(stream):
        await runtime.ensure_ready()
        async for event in stream.events():
            if not await first_delivery(event):
                await stream.ack(event)
                continue
            try:
                label = await decode(runtime.feedback, event.value)
            except CodecError as exc:
                label = str(exc)
            else:  # a label may overtake its verdict: give the verdict a moment to be committed
                await wait_for_verdict(label["transaction_id"])
            async with runtime.batch_lock:
                await crash_unless_done(record_label(event, label))
                await settle(stream, [event])

    async def wait_for_verdict(transaction_id: str) -> None:
        deadline = time.monotonic() + settings.feedback_match_wait_seconds
        while runtime.follower.verdict(transaction_id) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def record_label(event, label: dict | str) -> None:
        """Join a label to its verdict: online quality of the models that scored it, the labelled
        example, and the terminal label (frauds only) that feeds the terminal's risk. Undecodable
        feedback, and a label with no known verdict, go to the DLQ."""
        processed(event)
        if isinstance(label, str):
            await dead_letter(event, label)
            return
        metrics.feedback.labels(label["label"], label["source"]).inc()
        known = runtime.follower.verdict(label["transaction_id"])
        if known is None:
            metrics.feedback_unmatched.inc()
            await dead_letter(event, f"field transaction_id: no verdict known for {label['transaction_id']!r}"
                                     f" within the feedback horizon")
            return
        verdict = await decode(runtime.verdicts, known)  # as written: the codec errors are our own
        fraud = label["label"] == "FRAUD"
        tid, at, terminal_id = verdict["transaction_id"], verdict["transaction_timestamp"], verdict.get("terminal_id")
        delay_seconds = (label["reported_at"] - at) / 1000
        metrics.feedback_matched.labels(label["label"]).inc()
        metrics.label_delay.observe(max(0.0, delay_seconds))
        if delay_seconds > settings.feedback_horizon_days * 86_400:
            metrics.feedback_late.inc()
        for model, score in (("champion", verdict["score"]), ("challenger", verdict.get("challenger_score"))):
            if score is None:
                continue
            for threshold, outcome in runtime.quality[model].observe(score, fraud).items():
                metrics.confusion.labels(model, threshold, outcome).inc()
        example = {"transaction_id": tid, "transaction_timestamp": at,
                   "label": label["label"], "source": label["source"], "reported_at": label["reported_at"],
                   "model_version": verdict["model_version"], "score": verdict["score"],
                   "features": verdict.get("features") or {}}
        await publish(settings.examples_topic, tid.encode(), runtime.examples.encode(example), None, event.message.tp)
        if fraud and terminal_id:
            record = {"transaction_id": tid, "terminal_id": terminal_id, "transaction_timestamp": at,
                      "label": label["label"], "reported_at": label["reported_at"]}
            await publish(settings.terminal_labels_topic, terminal_id.encode(), runtime.terminal_labels.encode(record),
                          None, event.message.tp, terminal_partition(terminal_id, settings.partitions))

    @app.task
    async def stop_followers_on_shutdown():
        try:
            await asyncio.Event().wait()
        finally:
            runtime.rules.stop()
            runtime.follower.stop()

    @app.timer(interval=RESEEK_SECONDS / 2)
    async def retry_rereads():
        # A re-read whose first record has not come back: the fetcher overtook the seek.
        assigned = app.consumer.assignment()
        for tp, offset in runtime.progress.overdue_rereads(time.monotonic()).items():
            if tp in assigned:
                log.warning("%s[%d]: re-read from %d not delivered yet; seeking again", tp.topic, tp.partition, offset)
                await app.consumer.seek(tp, offset)

    @app.timer(interval=5.0)
    async def export_online_quality():
        for model, quality in runtime.quality.items():
            if quality.labels:
                metrics.record_quality(model, quality.summary())

    @app.task
    async def serve_ops_api():
        from ops_api.app import StreamView, create_api, serve

        def assigned() -> list[int]:
            try:
                return sorted(tp.partition for tp in app.consumer.assignment()
                              if tp.topic == settings.transactions_topic)
            except Exception:  # consumer not started yet
                return []

        view = StreamView(assigned=assigned, lag=lambda: dict(runtime.lag),
                          model=lambda: runtime.models.current, model_error=lambda: runtime.model_error,
                          rules=lambda: runtime.rules, challenger=lambda: runtime.challenger.current,
                          caught_up=lambda: runtime.rules.caught_up.is_set() and runtime.follower.caught_up.is_set(),
                          terminal=runtime.follower.describe_terminal, verdicts=runtime.follower.status,
                          quality=lambda: {model: q.summary() for model, q in runtime.quality.items()})
        if settings.api_port:
            await serve(create_api(settings, metrics, view), settings.api_host, settings.api_port)

    @app.timer(interval=settings.model_poll_seconds)
    async def follow_model_alias():
        if runtime._ready:
            await runtime.follow_alias()

    @app.timer(interval=2.0)
    async def measure_lag():
        assigned = {tp for tp in app.consumer.assignment() if tp.topic == settings.transactions_topic}
        lag = {}
        for tp in assigned:
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                continue
            done = runtime.last_offsets.get(tp)
            position = done + 1 if done is not None else (app.consumer._committed_offset.get(tp) or 0)
            lag[tp.partition] = max(0, highwater - position)
            metrics.lag.labels(str(tp.partition)).set(lag[tp.partition])
        for partition in set(runtime.lag) - set(lag):  # revoked in a rebalance
            metrics.lag.remove(str(partition))
        for tp in set(runtime.last_offsets) - assigned:
            del runtime.last_offsets[tp]
        runtime.lag = lag

    return app


app = create_app(Settings())

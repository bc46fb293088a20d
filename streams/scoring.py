"""Scoring: a partition's transactions in, their verdicts out.

For each batch (the records of every `transactions` partition that arrived together):
  bytes -> decode and validate (a record that cannot be scored goes to the DLQ with its reason)
        -> features: the card's state (this partition's `cards` store), the terminal's daily counts
           (the snapshots every worker follows, streams/terminals.py)
        -> score the whole batch, all partitions at once, with one walk of the model's trees (and
           the challenger's, in shadow)
        -> decide (thresholds, then the hard rules) and explain (top reasons, one call per batch)
        -> encode -> `fraud-verdicts`, keyed by transaction id
  and the batch's (terminal, time) pairs go to `fraud-terminal-events`, one record per terminal
  partition, for the terminal counts. All of it joins the worker's open transaction with the records'
  offsets (streams/checkpoint.py).

`score_batch` is the pure part (`feature_rows`, then `verdicts_for`): decoded transactions and state
in, verdicts and state changes out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, MutableMapping, Sequence

import numpy as np

from core.decision import Thresholds, decide, top_reasons
from core.drift import DriftWatch
from core.features import (CUSTOMER_FEATURE_NAMES, HISTORY_MS, N_FEATURES, CardState, TerminalCounts,
                           invalid_transaction_reason)
from core.metrics import Metrics, observe_all
from models.serving import LoadedModel, ModelHandle
from schemas.codec import AvroCodec
from schemas.verdict_writer import VerdictWriter
from streams.checkpoint import Checkpoint
from streams.records import dead_letter, decoded
from streams.rules import Rules, apply_rules
from streams.state import Store
from streams.tables import Source
from streams.topics import partition_of, terminal_partition

N_CARD = len(CUSTOMER_FEATURE_NAMES)
SWEEP_SECONDS = 3600.0
NO_TERMINAL = (0.0,) * (N_FEATURES - N_CARD)


@dataclass
class Scored:
    """A batch's verdicts (one dict per transaction, in order) and the cards whose state changed."""

    verdicts: list[dict]
    changed_cards: set[str]


def score_batch(transactions: Sequence[Mapping], cards: MutableMapping[str, CardState],
                terminals: Mapping[str, TerminalCounts], model: LoadedModel, challenger: LoadedModel | None,
                rules: Rules, thresholds: Thresholds, now_ms: int, exact_reasons: bool = False) -> Scored:
    """Verdicts for valid, decoded transactions, in order; each one's card state is read, then
    extended with it (so a card's later transaction in the batch sees the earlier one)."""
    rows, changed = feature_rows(transactions, cards, terminals)
    return Scored(verdicts_for(transactions, rows, model, challenger, rules, thresholds, now_ms, exact_reasons),
                  changed)


def feature_rows(transactions: Sequence[Mapping], cards: MutableMapping[str, CardState],
                 terminals: Mapping[str, TerminalCounts]) -> tuple[np.ndarray, set[str]]:
    """FEATURE_NAMES of each transaction, and the cards whose state they extended."""
    rows = np.empty((len(transactions), N_FEATURES), dtype=np.float64)
    changed = set()
    for i, txn in enumerate(transactions):
        key = txn["customer_id"]
        state = cards.get(key)
        if state is None:
            state = cards[key] = CardState()
        card = state.features_then_add(txn)
        counts = terminals.get(txn["terminal_id"])
        rows[i] = (*card, *(counts.features(txn["timestamp"]) if counts is not None else NO_TERMINAL))
        changed.add(key)
    return rows, changed


def verdicts_for(transactions: Sequence[Mapping], rows: np.ndarray, model: LoadedModel,
                 challenger: LoadedModel | None, rules: Rules, thresholds: Thresholds, now_ms: int,
                 exact_reasons: bool = False) -> list[dict]:
    """Score, decide and explain a batch with one model walk; one verdict dict per transaction."""
    matrix = model.matrix(rows, transactions)  # plus the upstream attributes the model reads
    scores, contributions = model.explain(matrix, exact=exact_reasons)
    decisions, fired = apply_rules(rules, transactions, decide(scores, thresholds))
    shadow: list = [None] * len(transactions)
    if challenger is not None:
        shadow = challenger.scores(challenger.matrix(rows, transactions)).tolist()
    names = model.feature_names
    reasons = top_reasons(contributions, matrix, names)
    verdicts = []
    for txn, score, decision, why, broken, shadow_score, row in zip(
            transactions, scores.tolist(), decisions.tolist(), reasons, fired, shadow, matrix.tolist()):
        verdicts.append({
            "transaction_id": txn["transaction_id"],
            "customer_id": txn["customer_id"],
            "score": score,
            "decision": decision,
            "model_name": model.name,
            "model_version": model.version,
            "reasons": why,
            "rules": broken,
            "challenger_model_version": challenger.version if challenger is not None else None,
            "challenger_score": shadow_score,
            "transaction_timestamp": txn["timestamp"],
            "scored_at": now_ms,
            "latency_ms": 0.0,
            "terminal_id": txn["terminal_id"],
            "features": dict(zip(names, row)),
        })
    return verdicts


class ScoringStep:
    """The worker's step for the `transactions` topic."""

    def __init__(self, topic: str, cards: Store, terminals: Mapping[str, TerminalCounts],
                 codecs: Mapping[str, AvroCodec], models: ModelHandle, challenger: ModelHandle, rules,
                 thresholds: Thresholds, metrics: Metrics, topics: Mapping[str, str], partitions: int,
                 worker_id: str, exact_reasons: bool = False, retry_later=None, drift: DriftWatch | None = None):
        self.topic = topic
        self.cards = cards
        self.terminals = terminals
        self.codecs = codecs
        self.models = models
        self.challenger = challenger
        self.rules = rules
        self.thresholds = thresholds
        self.metrics = metrics
        self.topics = topics  # role -> topic name: verdicts, dlq, terminal_events
        self.n_partitions = partitions
        self.worker = worker_id.encode()
        self.exact_reasons = exact_reasons
        self.retry_later = retry_later  # (topic, partition, offset) -> None: read again from there later
        self.drift = drift or DriftWatch()
        self.latest: dict[int, int] = {}  # partition -> latest event time scored
        self.writers: dict[tuple, object] = {}
        self.swept_at = time.monotonic()

    def prepare(self, partition: int) -> list[Source]:
        self.cards.open(partition)
        self.latest.pop(partition, None)
        return [Source(self.cards.changelog_topic, partition, self._restore(partition))]

    def _restore(self, partition: int):
        apply = self.cards.apply
        return lambda msg: apply(partition, msg.key(), msg.value())

    def release(self, partition: int) -> None:
        self.cards.drop(partition)
        self.latest.pop(partition, None)

    def tick(self, checkpoint: Checkpoint) -> None:
        """Each second, the drift of the inputs scored (core/drift.py) to the metrics. About once an
        hour, forget the cards with no transaction in the 30 days before their partition's latest one:
        no window reads them any more (deleted from the changelog too)."""
        report = self.drift.report(time.time())
        if report is not None:
            self.metrics.record_drift(report)
        if time.monotonic() - self.swept_at < SWEEP_SECONDS:
            return
        self.swept_at = time.monotonic()
        for partition, latest in self.latest.items():
            cards = self.cards.partition(partition)
            for key in [k for k, state in cards.items() if (state.last_event_ms or 0) < latest - HISTORY_MS]:
                self.cards.delete(partition, key)

    def what_if(self, txn: Mapping, now_ms: int) -> dict | None:
        """The verdict a valid, decoded `txn` would get now from its card's and terminal's current
        state, changing neither (the card's state is read from a copy); None before a model is loaded.
        Call it from the loop's thread, for a card whose partition this worker holds."""
        model = self.models.current
        if model is None:
            return None
        state = self.cards.partition(partition_of(txn["customer_id"], self.n_partitions)).get(txn["customer_id"])
        copy = {} if state is None else {txn["customer_id"]: CardState.from_bytes(state.to_bytes())}
        rows, _ = feature_rows([txn], copy, self.terminals)
        [verdict] = verdicts_for([txn], rows, model, self.challenger.current, self.rules.rules, self.thresholds,
                                 now_ms, self.exact_reasons)
        return verdict

    def process(self, batches: dict[int, list], checkpoint: Checkpoint) -> None:
        """Every partition's records of one batch, scored together: one model walk for all of them."""
        model = self.models.current
        if model is None:  # not ready: nothing is processed, the records come again
            for partition, records in batches.items():
                self.retry_later(self.topic, partition, records[0].offset())
            return
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        codec = self.codecs["transactions"]
        accepted, transactions, row_blocks, done = [], [], [], {}
        for partition, records in batches.items():
            self.metrics.consumed.inc(len(records))
            valid_records, valid = [], []
            for msg, txn in decoded(records, codec, checkpoint, self.topics["dlq"], self.metrics, self.retry_later):
                reason = invalid_transaction_reason(txn, now_ms=now_ms)
                if reason:
                    dead_letter(checkpoint, self.topics["dlq"], msg, reason, self.metrics)
                else:
                    valid_records.append(msg)
                    valid.append(txn)
                done[partition] = msg.offset()
            if valid:
                rows, changed = feature_rows(valid, self.cards.partition(partition), self.terminals)
                self.cards.changed(partition, changed)
                latest = max(txn["timestamp"] for txn in valid)
                if latest > self.latest.get(partition, 0):
                    self.latest[partition] = latest
                accepted += valid_records
                transactions += valid
                row_blocks.append(rows)
        if transactions:
            rows = row_blocks[0] if len(row_blocks) == 1 else np.vstack(row_blocks)
            verdicts = verdicts_for(transactions, rows, model, self.challenger.current, self.rules.rules,
                                    self.thresholds, now_ms, self.exact_reasons)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(transactions))
            self.drift.add(model.version, model.reference, model.matrix(rows, transactions),
                           np.fromiter((v["score"] for v in verdicts), np.float64, len(verdicts)))
            self._publish(model, accepted, transactions, verdicts, checkpoint, now_ms)
        for partition, offset in done.items():
            checkpoint.processed(self.topic, partition, offset)

    def _publish(self, model: LoadedModel, records: list, transactions: list, verdicts: list[dict],
                 checkpoint: Checkpoint, now_ms: int) -> None:
        """The verdicts, each keyed by its transaction id and naming its source record, and the
        batch's (terminal, time) pairs, one record per terminal partition."""
        write = self._writer(model)
        topic, worker, source_topic = self.topics["verdicts"], self.worker, self.topic.encode()
        latencies = np.empty(len(verdicts))
        by_terminal_partition: dict[int, list] = {}
        for i, (msg, verdict, txn) in enumerate(zip(records, verdicts, transactions)):
            verdict["latency_ms"] = latencies[i] = max(0.0, float(now_ms - msg.timestamp()[1]))
            checkpoint.produce(topic, write(verdict), verdict["transaction_id"].encode(), headers=[
                ("source.topic", source_topic), ("source.partition", b"%d" % msg.partition()),
                ("source.offset", b"%d" % msg.offset()), ("scored.by", worker)])
            by_terminal_partition.setdefault(terminal_partition(txn["terminal_id"], self.n_partitions), []).append(
                {"terminal_id": txn["terminal_id"], "transaction_timestamp": txn["timestamp"]})
        events = self.codecs["terminal_events"].encode
        for terminal_part, items in by_terminal_partition.items():
            checkpoint.produce(self.topics["terminal_events"], events({"transactions": items, "frauds": []}),
                               partition=terminal_part)
        observe_all(self.metrics.latency, latencies)
        self._count(model, verdicts)

    def _writer(self, model: LoadedModel):
        """The verdict writer for this model's feature names (one per model version held)."""
        key = (self.codecs["verdicts"].schema_id, model.feature_names)
        writer = self.writers.get(key)
        if writer is None:
            writer = self.writers[key] = VerdictWriter(*key).write
        return writer

    def _count(self, model: LoadedModel, verdicts: list[dict]) -> None:
        m = self.metrics
        m.scored.labels(model.version).inc(len(verdicts))
        decisions: dict[str, int] = {}
        for verdict in verdicts:
            decisions[verdict["decision"]] = decisions.get(verdict["decision"], 0) + 1
            for rule in verdict["rules"]:
                m.rules_fired.labels(rule.split(":", 1)[0]).inc()
        for decision, n in decisions.items():
            m.decisions.labels(decision).inc(n)
        challenger = self.challenger.current
        if challenger is not None and verdicts:
            scores = np.array([v["score"] for v in verdicts])
            shadow = np.array([v["challenger_score"] for v in verdicts])
            agrees = int((decide(shadow, self.thresholds) == decide(scores, self.thresholds)).sum())
            m.challenger_agreement.labels("yes").inc(agrees)
            m.challenger_agreement.labels("no").inc(len(verdicts) - agrees)
            m.challenger_scored.labels(challenger.version).inc(len(verdicts))


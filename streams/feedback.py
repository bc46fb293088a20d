"""The feedback join: a label (chargeback, analyst decision) meets the verdict it judges.

Labels on `fraud-feedback` and verdicts on `fraud-verdicts` are both keyed by transaction id with the
same partitioner, so the label of a transaction lands on the partition number its verdict did. The
worker holding feedback partition f therefore reads verdicts partition f only (from the feedback
horizon on, then following it: streams/tables.py): its work and memory grow with its own partitions,
not with the cluster's traffic.

A matched label:
- updates the online quality of the champion and of the challenger that scored it (streams/quality.py);
- writes a labelled example (`fraud-labelled-examples`, compacted by transaction id): the features as
  they were served, for training;
- for a fraud, a terminal fraud event (`fraud-terminal-events`, by terminal partition; whether it was
  ordinary for its card, from the verdict's `amount_to_avg_30d`) that the
  terminal's counts add from then on (streams/terminals.py).
A label may overtake its verdict (both written moments apart): a label younger than
FRAUD_FEEDBACK_MATCH_WAIT_SECONDS whose verdict is not known yet is read again shortly after; an
older one with no known verdict, or an undecodable record, goes to the DLQ.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Callable, Mapping

from core.features import is_ordinary_fraud
from core.metrics import Metrics
from schemas.codec import AvroCodec
from streams.checkpoint import Checkpoint
from streams.quality import OnlineQuality
from streams.records import dead_letter, decoded
from streams.tables import Source
from streams.topics import terminal_partition

PRUNE_EVERY_SECONDS = 60.0


class VerdictsByTransaction:
    """The verdicts of one partition written within the horizon, by transaction id, as written.

    Values are the records' bytes and times sit in an array beside them, in the order written: no
    container per verdict for the cycle collector to walk (thousands a second arrive)."""

    def __init__(self, horizon_ms: float):
        self.horizon_ms = horizon_ms
        self.rows: OrderedDict[str, bytes] = OrderedDict()
        self.written: deque[int] = deque()  # epoch ms, in the order of `rows`
        self.pruned_at = time.monotonic()

    def remember(self, transaction_id: str, written_at_ms: int, value: bytes) -> None:
        if transaction_id not in self.rows:  # under exactly-once a transaction has one verdict
            self.rows[transaction_id] = value
            self.written.append(written_at_ms)

    def get(self, transaction_id: str) -> bytes | None:
        return self.rows.get(transaction_id)

    def prune(self, now_ms: int) -> None:
        expired = now_ms - self.horizon_ms
        while self.written and self.written[0] < expired:
            self.written.popleft()
            self.rows.popitem(last=False)


class FeedbackStep:
    """The worker's step for the `fraud-feedback` topic."""

    def __init__(self, topic: str, verdicts_topic: str, codecs: Mapping[str, AvroCodec],
                 quality: Mapping[str, OnlineQuality], metrics: Metrics, topics: Mapping[str, str],
                 partitions: int, horizon_days: float, match_wait_seconds: float,
                 start_offset_at: Callable[[str, int, int], int], retry_later=None):
        self.topic = topic
        self.verdicts_topic = verdicts_topic
        self.codecs = codecs
        self.quality = quality
        self.metrics = metrics
        self.topics = topics  # role -> topic name: examples, dlq, terminal_events
        self.n_partitions = partitions
        self.horizon_ms = horizon_days * 86_400_000
        self.match_wait_ms = match_wait_seconds * 1000
        self.start_offset_at = start_offset_at  # (topic, partition, epoch ms) -> offset
        self.retry_later = retry_later
        self.verdicts: dict[int, VerdictsByTransaction] = {}

    def prepare(self, partition: int) -> list[Source]:
        held = self.verdicts[partition] = VerdictsByTransaction(self.horizon_ms)
        start = self.start_offset_at(self.verdicts_topic, partition, int(time.time() * 1000 - self.horizon_ms))

        def remember(msg) -> None:
            if msg.key() is not None and msg.value() is not None:
                held.remember(msg.key().decode("utf-8", "replace"), msg.timestamp()[1], msg.value())
        return [Source(self.verdicts_topic, partition, remember, start=start, follow=True)]

    def release(self, partition: int) -> None:
        self.verdicts.pop(partition, None)

    def held(self) -> int:
        return sum(len(v.rows) for v in self.verdicts.values())

    def process(self, batches: dict[int, list], checkpoint: Checkpoint) -> None:
        frauds: dict[int, list] = {}  # terminal partition -> fraud events, one record each
        for partition, records in batches.items():
            self._join_partition(partition, records, checkpoint, frauds)
        encode = self.codecs["terminal_events"].encode
        for terminal_part, items in frauds.items():
            checkpoint.produce(self.topics["terminal_events"], encode({"transactions": [], "frauds": items}),
                               partition=terminal_part)

    def _join_partition(self, partition: int, records: list, checkpoint: Checkpoint, frauds: dict) -> None:
        verdicts = self.verdicts[partition]
        now_ms = int(time.time() * 1000)
        for msg, label in decoded(records, self.codecs["feedback"], checkpoint, self.topics["dlq"], self.metrics,
                                  self.retry_later):
            known = verdicts.get(label["transaction_id"])
            if known is None and now_ms - msg.timestamp()[1] < self.match_wait_ms:
                self.retry_later(self.topic, partition, msg.offset())  # its verdict may be on its way
                break
            self.metrics.feedback.labels(label["label"], label["source"]).inc()
            if known is None:
                self.metrics.feedback_unmatched.inc()
                dead_letter(checkpoint, self.topics["dlq"], msg,
                            f"field transaction_id: no verdict known for {label['transaction_id']!r}"
                            f" within the feedback horizon", self.metrics)
            else:
                fraud = self._join(label, self.codecs["verdicts"].decode(known), checkpoint)
                if fraud is not None:
                    frauds.setdefault(terminal_partition(fraud["terminal_id"], self.n_partitions), []).append(fraud)
            checkpoint.processed(self.topic, partition, msg.offset())

    def tick(self, checkpoint: Checkpoint) -> None:
        """Forget verdicts written before the horizon, about once a minute."""
        for verdicts in self.verdicts.values():
            if time.monotonic() - verdicts.pruned_at > PRUNE_EVERY_SECONDS:
                verdicts.prune(int(time.time() * 1000))
                verdicts.pruned_at = time.monotonic()

    def _join(self, label: dict, verdict: dict, checkpoint: Checkpoint) -> dict | None:
        """Quality, example; returns the terminal fraud event of a fraud label (None otherwise)."""
        m = self.metrics
        fraud = label["label"] == "FRAUD"
        tid, at, terminal_id = verdict["transaction_id"], verdict["transaction_timestamp"], verdict.get("terminal_id")
        delay_seconds = (label["reported_at"] - at) / 1000
        m.feedback_matched.labels(label["label"]).inc()
        m.label_delay.observe(max(0.0, delay_seconds))
        if delay_seconds > self.horizon_ms / 1000:
            m.feedback_late.inc()
        for model, score in (("champion", verdict["score"]), ("challenger", verdict.get("challenger_score"))):
            if score is None:
                continue
            for threshold, outcome in self.quality[model].observe(score, fraud).items():
                m.confusion.labels(model, threshold, outcome).inc()
        example = {"transaction_id": tid, "transaction_timestamp": at,
                   "label": label["label"], "source": label["source"], "reported_at": label["reported_at"],
                   "model_version": verdict["model_version"], "score": verdict["score"],
                   "features": verdict.get("features") or {}}
        checkpoint.produce(self.topics["examples"], self.codecs["examples"].encode(example), tid.encode())
        if fraud and terminal_id:
            return {"transaction_id": tid, "terminal_id": terminal_id, "transaction_timestamp": at,
                    "reported_at": label["reported_at"],
                    "ordinary": is_ordinary_fraud(example["features"].get("amount_to_avg_30d"))}
        return None

"""The scorer's Prometheus metrics, on a registry of their own that the ops API exposes."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
BATCH_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


def observe_all(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for each of `values` (a batch's latencies, say), with one counter update
    per bucket rather than per value: the same bucket counts and sum. prometheus_client keeps a
    histogram's bucket counters non-cumulative (an observation counts in the first bucket whose bound
    holds it), in `_buckets` next to `_upper_bounds`; a unit test checks this against `observe`."""
    if len(values) == 0:
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, n in zip(histogram._buckets, counts.tolist()):
        if n:
            bucket.inc(n)
    histogram._sum.inc(float(np.sum(values)))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("fraud_transactions_consumed", "Transaction messages read", registry=r)
        self.scored = Counter("fraud_transactions_scored", "Transactions scored", ["model_version"], registry=r)
        self.decisions = Counter("fraud_decisions", "Verdicts by decision", ["decision"], registry=r)
        self.rules_fired = Counter("fraud_rules_fired", "Rules broken, by rule type", ["rule"], registry=r)
        self.redelivered = Counter("fraud_redelivered", "Records handed to the stream again, skipped",
                                   ["topic"], registry=r)
        self.rereads = Counter("fraud_partition_rereads", "Partitions read again from a hole in their offsets",
                               ["topic"], registry=r)
        self.dead_letters = Counter("fraud_dead_letters", "Messages sent to the DLQ", ["topic"], registry=r)
        self.feedback = Counter("fraud_feedback_labels", "Feedback labels recorded", ["label", "source"], registry=r)
        self.latency = Histogram(
            "fraud_end_to_end_latency_ms", "Produce time of a transaction to its verdict being sent",
            buckets=LATENCY_BUCKETS_MS, registry=r)
        self.batch_seconds = Histogram(
            "fraud_batch_scoring_seconds", "Features + model + decisions for one micro-batch",
            buckets=BATCH_BUCKETS_S, registry=r)
        self.commit_seconds = Histogram(
            "fraud_commit_seconds", "One transaction commit: changelogs, offsets, commit_transaction",
            buckets=BATCH_BUCKETS_S, registry=r)
        self.batch_size = Histogram(
            "fraud_batch_size", "Transactions per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=r)
        self.terminal_updates = Counter(
            "fraud_terminal_updates", "Terminal snapshots published (a day closed, or a late event changed one)",
            registry=r)
        self.terminal_events = Counter(
            "fraud_terminal_events", "Scored transactions and fraud labels added to terminal counts", ["kind"],
            registry=r)
        self.lag = Gauge("fraud_consumer_lag", "Messages behind the end of the partition", ["partition"], registry=r)
        self.state_keys = Gauge("fraud_state_keys", "Keys held in a store (cards, terminals) by this worker",
                                ["store"], registry=r)
        self.model_version = Gauge("fraud_model_version", "Version of the live model", ["model"], registry=r)
        self.challenger_scored = Counter("fraud_challenger_scored", "Transactions scored in shadow",
                                         ["model_version"], registry=r)
        self.challenger_agreement = Counter(
            "fraud_challenger_decisions", "Shadow decisions against the champion's", ["agrees"], registry=r)
        self.feedback_matched = Counter("fraud_feedback_matched", "Labels joined to their verdict",
                                        ["label"], registry=r)
        self.feedback_unmatched = Counter(
            "fraud_feedback_unmatched", "Labels for which no verdict is known (sent to the DLQ)", registry=r)
        self.feedback_late = Counter(
            "fraud_feedback_late", "Labels matched after the feedback horizon had passed", registry=r)
        self.label_delay = Histogram(
            "fraud_label_delay_seconds", "Transaction event time to the label's report time",
            buckets=(3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400),
            registry=r)
        self.confusion = Counter("fraud_online_confusion", "Matured labels by outcome at each threshold",
                                 ["model", "threshold", "outcome"], registry=r)
        self.precision = Gauge("fraud_online_precision", "Precision at the threshold over the quality window",
                               ["model", "threshold"], registry=r)
        self.recall = Gauge("fraud_online_recall", "Recall at the threshold over the quality window",
                            ["model", "threshold"], registry=r)
        self.average_precision = Gauge("fraud_online_average_precision",
                                       "Average precision over the quality window", ["model"], registry=r)
        self.model_swaps = Counter("fraud_model_swaps", "Live model replacements", registry=r)
        self.training_jobs = Counter("fraud_training_jobs", "Training jobs started", registry=r)
        self.drift_psi = Gauge("fraud_drift_psi", "Population stability index of a model input (or the score) "
                               "over the drift window, against the model version's training reference",
                               ["input"], registry=r)
        self.drift_missing = Gauge("fraud_drift_missing_share", "Share of the drift window's transactions "
                                   "missing a model input", ["input"], registry=r)
        self.drift_transactions = Gauge("fraud_drift_window_transactions",
                                        "Transactions in the drift window", registry=r)

    def record_quality(self, model: str, summary: dict) -> None:
        """Export an OnlineQuality summary; figures with nothing to count are left out."""
        if summary["average_precision"] is not None:
            self.average_precision.labels(model).set(summary["average_precision"])
        for threshold in ("review", "decline"):
            for name, gauge in (("precision", self.precision), ("recall", self.recall)):
                if summary[threshold][name] is not None:
                    gauge.labels(model, threshold).set(summary[threshold][name])

    def record_drift(self, report: dict) -> None:
        """Export a drift report (core/drift.py); a figure with nothing to count is left out."""
        self.drift_transactions.set(report["transactions"])
        for name, figures in report["inputs"].items():
            if figures["psi"] == figures["psi"]:  # not nan
                self.drift_psi.labels(name).set(figures["psi"])
                self.drift_missing.labels(name).set(figures["missing_share"])

    def summary(self) -> dict:
        """The counters as plain JSON numbers, for /metrics."""
        out: dict = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                key = f"{sample.name}{{{labels}}}" if labels else sample.name
                out[key] = sample.value
        return out

"""The JSON view of the Prometheus metrics, and observing a batch at once."""

import numpy as np

from core.metrics import Metrics, observe_all


def test_summary_names_each_series_with_its_labels_and_leaves_out_buckets():
    m = Metrics()
    m.consumed.inc(3)
    m.feedback.labels("FRAUD", "chargeback").inc(2)
    m.latency.observe(12.0)
    summary = m.summary()
    assert summary["fraud_transactions_consumed_total"] == 3
    assert summary["fraud_feedback_labels_total{label=FRAUD,source=chargeback}"] == 2
    assert summary["fraud_end_to_end_latency_ms_count"] == 1
    assert not any("_bucket" in k or "_created" in k for k in summary)


def test_observing_a_batch_at_once_counts_each_bucket_and_the_sum_as_observing_each_value_does():
    values = [0.0, 1.0, 1.5, 2.0, 7.0, 50.0, 50.5, 29_999.0, 30_000.0, 45_000.0, 3.25]
    one_by_one, batched = Metrics(), Metrics()
    for value in values:
        one_by_one.latency.observe(value)
    observe_all(batched.latency, np.array(values))
    observe_all(batched.latency, np.array([]))
    assert _samples(batched) == _samples(one_by_one)
    assert _samples(batched)["fraud_end_to_end_latency_ms_bucket", (("le", "2.0"),)] == 4


def _samples(metrics: Metrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() if family.name == "fraud_end_to_end_latency_ms"
            for s in family.samples if not s.name.endswith("_created")}

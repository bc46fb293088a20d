"""The JSON view of the Prometheus metrics."""

from core.metrics import Metrics


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

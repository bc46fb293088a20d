"""Train/serve parity: a history replayed through the running stream gets, transaction by
transaction, the feature vector training computes from the same history."""

from __future__ import annotations

import numpy as np
import pytest

from models.simulate import transaction_records
from schemas.codec import AvroCodec, SchemaRegistry, load_schema
from streams.features import FEATURE_NAMES, feature_matrix
from streams.produce import DAY_MS, history_messages, producer_for, replay
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess, unique_settings
from tests.integration.conftest import read_committed, train_version

pytestmark = pytest.mark.integration


def test_replaying_a_history_through_the_stream_gives_the_features_training_computes(
        services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    train_version(settings, small_history, n_estimators=10)
    ensure_topics(settings)
    cards = sorted(small_history["customer_id"].unique())[:40]
    history = small_history[small_history["customer_id"].isin(cards)].reset_index(drop=True)
    history["transaction_id"] = "parity-" + history["transaction_id"].astype(str)
    assert len(history) > 3000 and history["is_fraud"].sum() > 100

    registry = SchemaRegistry(settings.schema_registry_url)
    codecs = {}
    for topic, schema in ((settings.transactions_topic, "transaction"), (settings.feedback_topic, "feedback")):
        codecs[topic] = AvroCodec(registry, load_schema(schema), f"{topic}-value")
        codecs[topic].register()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        # Labels a day after their transaction; the terminal features read labels 7 days old, so at
        # 150 transactions a second (about 3 s per 7 days of this history) each is in long before it
        # counts.
        messages = history_messages(history, (settings.transactions_topic, codecs[settings.transactions_topic]),
                                    (settings.feedback_topic, codecs[settings.feedback_topic]),
                                    feedback_delay_ms=DAY_MS)
        replay(producer_for(settings.kafka_bootstrap), messages, rate=150)
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(history), timeout=120)
        status, health = worker.get("/metrics")
    finally:
        worker.stop()

    served = {v["transaction_id"]: v["features"] for v in verdicts}
    assert len(served) == len(verdicts) == len(history)
    expected = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy())
    stream = np.array([[served[tid][name] for name in FEATURE_NAMES] for tid in history["transaction_id"]])
    terminal_risk = FEATURE_NAMES.index("terminal_risk_30d")
    assert (expected[:, terminal_risk] > 0).sum() > 100, "the history must exercise the terminal risks"
    mismatched = ~np.isclose(stream, expected, rtol=1e-9, atol=1e-9)
    rows, cols = np.nonzero(mismatched)
    assert not mismatched.any(), (
        f"{len(set(rows))} of {len(history)} transactions differ, e.g. " + "; ".join(
            f"{history['transaction_id'][r]} {FEATURE_NAMES[c]}: stream {stream[r, c]} batch {expected[r, c]}"
            for r, c in list(zip(rows, cols))[:5]))
    assert health["fraud_feedback_unmatched_total"] == 0

"""Train/serve parity: a history replayed through the running stream gets, transaction by
transaction, the feature vector training computes from the same history, upstream attributes included."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from models.simulate import transaction_records
from schemas.codec import AvroCodec, SchemaRegistry, load_schema
from core.features import feature_matrix, model_feature_names
from streams.produce import DAY_MS, history_messages, producer_for, replay
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess, settings_env, unique_settings
from tests.integration.conftest import read_committed, train_version

pytestmark = pytest.mark.integration


def test_a_replayed_history_gets_the_features_training_computes_and_its_labelled_examples_train_a_model(
        services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    # An upstream attribute on some transactions: the model reads it, missing where it is absent.
    with_attributes = small_history.copy()
    rng = np.random.default_rng(0)
    with_attributes["attributes"] = [{"device_risk": float(x)} if x < 0.7 else {} for x in rng.random(len(small_history))]
    train_version(settings, with_attributes, n_estimators=10)
    ensure_topics(settings)
    cards = sorted(with_attributes["customer_id"].unique())[:40]
    history = with_attributes[with_attributes["customer_id"].isin(cards)].reset_index(drop=True)
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
        # Labels a day after their transaction; the terminal features read labels and counts 7 days
        # old, so at 100 transactions a second (about 4.5 s per 7 days of this history) each is in
        # long before it counts. A replay this much faster than real time still needs that slack:
        # a terminal's count reaches the scorer through two committed topics (once in 3,167 at 150/s
        # on a loaded machine, one count had not).
        messages = history_messages(history, (settings.transactions_topic, codecs[settings.transactions_topic]),
                                    (settings.feedback_topic, codecs[settings.feedback_topic]),
                                    feedback_delay_ms=DAY_MS)
        replay(producer_for(settings.kafka_bootstrap), messages, rate=100)
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(history), timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every label joined
            status, health = worker.get("/metrics")
            if sum(v for k, v in health.items() if k.startswith("fraud_feedback_matched_total")) == len(history):
                break
            time.sleep(0.5)
    finally:
        worker.stop()

    served = {v["transaction_id"]: v["features"] for v in verdicts}
    assert len(served) == len(verdicts) == len(history)
    names = model_feature_names(["device_risk"])
    expected = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy(), ["device_risk"])
    stream = np.array([[served[tid][name] for name in names] for tid in history["transaction_id"]])
    assert np.isnan(stream[:, -1]).sum() == np.isnan(expected[:, -1]).sum() > 0
    terminal_risk = names.index("terminal_risk_30d")
    assert (expected[:, terminal_risk] > 0).sum() > 100, "the history must exercise the terminal risks"
    ordinary = names.index("terminal_ordinary_frauds_30d")
    assert (expected[:, ordinary] > 0).sum() > 100, "the history must exercise the ordinary frauds"
    mismatched = ~np.isclose(stream, expected, rtol=1e-9, atol=1e-9, equal_nan=True)
    rows, cols = np.nonzero(mismatched)
    assert not mismatched.any(), (
        f"{len(set(rows))} of {len(history)} transactions differ, e.g. " + "; ".join(
            f"{history['transaction_id'][r]} {names[c]}: stream {stream[r, c]} batch {expected[r, c]}"
            for r, c in list(zip(rows, cols))[:5]))
    assert health["fraud_feedback_unmatched_total"] == 0

    # The labelled examples the join wrote train the next model, with the features as served.
    done = subprocess.run([sys.executable, "-m", "fraud", "train", "--examples", "--no-promote"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["metrics"]["n_train"] + summary["metrics"]["n_test"] == len(history)
    run = MlflowClient(settings.mlflow_uri).get_run(summary["run_id"])
    assert run.data.params["features"] == ",".join(names) and run.data.tags["data"] == "labelled-examples"

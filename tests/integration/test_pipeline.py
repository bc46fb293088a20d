"""One real worker, real Kafka, registry, Redis and MLflow: transactions in, verdicts and dead letters out."""

from __future__ import annotations

import json
import math
import struct
import time

import numpy as np
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from schemas.codec import load_schema
from tests.conftest import WorkerProcess, free_port, unique_settings
from tests.integration.conftest import (produce_raw, produce_transactions, read_committed,
                                        simulated_transactions, train_version, verdicts_by_id)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(services, small_history, tmp_path_factory):
    """A registered champion and a running worker on topics of this module's own."""
    tmp = tmp_path_factory.mktemp("pipeline")
    settings = unique_settings(tmp)
    version = train_version(settings, small_history, n_estimators=30)
    from streams.topics import ensure_topics

    ensure_topics(settings)
    # An older, compatible version of the Transaction schema is registered first: records written
    # with it must still be decoded and scored once the worker registers the current one.
    old_schema = _older_transaction_schema()
    produce_transactions(settings, [_old_record(i) for i in range(20)], schema=old_schema)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    worker.wait_ready()
    yield settings, worker, version
    worker.stop()


def _older_transaction_schema() -> dict:
    schema = load_schema("transaction")
    kept = {"transaction_id", "customer_id", "terminal_id", "merchant_id", "amount", "timestamp"}
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] in kept]}


def _old_record(i: int) -> dict:
    return {"transaction_id": f"old-{i}", "customer_id": f"OLD{i % 3}", "terminal_id": "T1",
            "merchant_id": "M1", "amount": 10.0 + i, "timestamp": 1_700_000_000_000 + i * 60_000}


def test_every_transaction_gets_exactly_one_verdict_naming_a_registered_version(stack):
    settings, worker, version = stack
    records = simulated_transactions(seed=11, count=1500, prefix="exact")
    produce_transactions(settings, records)

    verdicts = [v for v in read_committed(settings, settings.verdicts_topic, expected=1520)
                if v["transaction_id"].startswith("exact-")]
    by_id = verdicts_by_id(verdicts)

    assert set(by_id) == {r["transaction_id"] for r in records}
    assert all(len(v) == 1 for v in by_id.values()), "a transaction got more than one verdict"
    registered = {mv.version for mv in MlflowClient(settings.mlflow_uri).search_model_versions(
        f"name='{settings.model_name}'")}
    for verdict in verdicts:
        assert verdict["model_name"] == settings.model_name
        assert verdict["model_version"] in registered
        assert 0.0 <= verdict["score"] <= 1.0
        assert verdict["decision"] in ("APPROVE", "REVIEW", "DECLINE")
        assert len(verdict["reasons"]) <= 3 and all(r["contribution"] > 0 for r in verdict["reasons"])
        assert verdict["latency_ms"] >= 0
        headers = verdict["_kafka"]["headers"]
        assert headers["source.topic"] == settings.transactions_topic and int(headers["source.offset"]) >= 0
        assert headers["scored.by"] == settings.worker_id


def test_records_written_with_an_older_schema_version_are_scored(stack):
    settings, worker, version = stack
    verdicts = [v for v in read_committed(settings, settings.verdicts_topic, expected=20)
                if v["transaction_id"].startswith("old-")]
    assert sorted(v["transaction_id"] for v in verdicts) == sorted(f"old-{i}" for i in range(20))


def test_malformed_messages_go_to_the_dlq_and_the_good_ones_around_them_are_scored(stack):
    settings, worker, version = stack
    good = simulated_transactions(seed=12, count=60, prefix="dlq-good")
    produce_transactions(settings, good[:20])
    bad_amount = {**good[0], "transaction_id": "dlq-bad-negative", "amount": -5.0}
    nan_amount = {**good[1], "transaction_id": "dlq-bad-nan", "amount": math.nan}
    produce_transactions(settings, [bad_amount, nan_amount])
    produce_raw(settings, [
        (b"C1", b"this is not avro"),
        (b"C1", b"\x00" + struct.pack(">I", 987654) + b"\x02ab"),  # unknown schema id
        (b"C1", b""),
    ])
    produce_transactions(settings, good[20:])

    dead = read_committed(settings, settings.dlq_topic, expected=5, decode=False)
    reasons = sorted(dict(m.headers())["dlq.reason"].decode() for m in dead)
    assert len(dead) == 5, reasons
    assert any("amount: negative" in r for r in reasons)
    assert any("amount: not a finite number" in r for r in reasons)
    assert any("magic byte" in r for r in reasons)
    assert any("unknown schema id 987654" in r for r in reasons)
    assert any("empty message" in r for r in reasons)
    assert {dict(m.headers())["dlq.source.topic"].decode() for m in dead} == {settings.transactions_topic}
    assert b"this is not avro" in {m.value() for m in dead}, "the original bytes are kept"

    verdicts = [v for v in read_committed(settings, settings.verdicts_topic, expected=1)
                if v["transaction_id"].startswith("dlq-")]
    assert sorted(v["transaction_id"] for v in verdicts) == sorted(r["transaction_id"] for r in good)


def test_ops_api_reports_the_running_worker(stack):
    settings, worker, version = stack
    deadline = time.monotonic() + 15  # the stack's first transactions reach the terminal snapshots
    while worker.get("/health")[1]["components"]["verdicts"]["terminals"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    status, health = worker.get("/health")
    assert status == 200, health
    components = health["components"]
    for name in ("kafka", "schema_registry", "redis", "mlflow"):
        assert components[name]["status"] == "ok", (name, components[name])
    assert components["model"]["version"] == version
    assert components["model"]["source"] == "registry"
    held = [f"{topic}[{p}]" for topic in sorted((settings.feedback_topic, settings.terminal_events_topic,
                                                 settings.transactions_topic)) for p in range(3)]
    assert components["stream"]["assigned_partitions"] == held
    assert components["verdicts"]["status"] == "ok" and components["verdicts"]["terminals"] > 0

    assert worker.get("/health/live")[0] == 200
    assert worker.get("/health/ready") == (200, {"status": "ready", "assigned_partitions": held})

    import urllib.request
    deadline = time.monotonic() + 10  # the lag is measured every 2 s
    while True:
        with urllib.request.urlopen(worker.base + "/metrics/prometheus") as resp:
            text = resp.read().decode()
        if "fraud_consumer_lag{" in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    scored = [line for line in text.splitlines() if line.startswith("fraud_transactions_scored_total{")]
    assert scored and float(scored[0].rsplit(" ", 1)[1]) > 0
    assert "fraud_end_to_end_latency_ms_bucket" in text
    assert "fraud_batch_scoring_seconds_bucket" in text
    assert "fraud_consumer_lag{" in text

    status, info = worker.get("/info")
    assert status == 200 and info["model"]["live_version"] == version
    status, summary = worker.get("/metrics")
    assert status == 200 and summary["fraud_transactions_consumed_total"] > 0


def test_bad_training_requests_get_a_json_error_naming_the_field(stack):
    settings, worker, version = stack
    def post(body: bytes):
        return worker.post("/api/v1/training/train", body)

    status, body = post(json.dumps({"days": 2}).encode())
    assert status == 422 and body["error"]["fields"][0]["field"] == "days"
    status, body = post(json.dumps({"n_estimatorz": 5}).encode())
    assert status == 422 and body["error"]["fields"][0]["field"] == "n_estimatorz"
    status, body = post(b"{not json")
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = worker.get("/api/v1/training/jobs/does-not-exist")
    assert status == 404 and "does-not-exist" in body["error"]["message"]
    status, body = worker.get("/api/v1/training/jobs?limit=zero")
    assert status == 400 and "limit" in body["error"]["message"]


def test_feedback_joins_its_verdict_and_changes_terminal_risk_online_metrics_and_examples(stack):
    settings, worker, version = stack

    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from tests.integration.conftest import registry_client

    day, t0 = 86_400_000, 1_710_000_000_000
    base = simulated_transactions(seed=12, count=1, prefix="fb")[0]
    scored = [{**base, "transaction_id": f"fb-{i}", "customer_id": f"FB-CARD-{i}", "terminal_id": "T-FB",
               "timestamp": t0 + i * 60_000} for i in range(3)]
    produce_transactions(settings, scored)
    _wait_for_verdicts(settings, "fb-", 3)  # the join needs the verdicts first

    serialize = AvroSerializer(registry_client(settings), json.dumps(load_schema("feedback")))
    ctx = SerializationContext(settings.feedback_topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    labels = [("fb-0", "FRAUD", "chargeback"), ("fb-2", "FRAUD", "chargeback"), ("fb-never-scored", "FRAUD", "chargeback")]
    # An analyst's label through the API: the same record on the same topic, keyed the same way.
    status, sent = worker.post("/api/v1/fraud/feedback", {"transaction_id": "fb-1", "label": "LEGIT",
                                                          "reported_at": t0 + 7 * day})
    assert status == 202 and sent["topic"] == settings.feedback_topic and sent["offset"] >= 0, sent
    for tid, label, source in labels:
        producer.produce(settings.feedback_topic, key=tid.encode(), value=serialize(
            {"transaction_id": tid, "label": label, "source": source, "reported_at": t0 + 7 * day,
             "customer_id": None, "terminal_id": None}, ctx))
    producer.produce(settings.feedback_topic, key=b"fb-bad", value=b"\x00\x00\x00\x00")
    assert producer.flush(30) == 0

    # Unmatched and malformed feedback are dead-lettered with their reason, not dropped.
    deadline = time.monotonic() + 30
    dead = []
    while len(dead) < 2 and time.monotonic() < deadline:
        dead = [m for m in read_committed(settings, settings.dlq_topic, expected=2, timeout=5, decode=False)
                if dict(m.headers())["dlq.source.topic"].decode() == settings.feedback_topic]
    reasons = sorted(dict(m.headers())["dlq.reason"].decode() for m in dead)
    assert len(dead) == 2, reasons
    assert any("shorter than the Confluent header" in r for r in reasons), reasons
    assert any(r.startswith("field transaction_id: no verdict known for 'fb-never-scored'") for r in reasons)

    # The two frauds now count in the terminal's risk, for transactions more than 7 days later.
    a_week_on = t0 + 7 * day + 6 * 3_600_000  # past the 6-hour bucket of t0, 7 days on
    while time.monotonic() < deadline:
        terminal = worker.get(f"/api/v1/terminals/T-FB?at={a_week_on}")[1]
        if terminal["features"]["terminal_risk_1d"] > 0.5:
            break
        time.sleep(0.3)
    assert terminal["features"]["terminal_nb_tx_1d"] == 3, terminal
    assert terminal["features"]["terminal_risk_1d"] == pytest.approx(2 / 3)
    assert worker.get(f"/api/v1/terminals/T-FB?at={t0 + 6 * day}")[1]["features"]["terminal_nb_tx_30d"] == 0
    later = {**base, "transaction_id": "fb-later", "customer_id": "FB-CARD-9", "terminal_id": "T-FB",
             "timestamp": a_week_on}
    produce_transactions(settings, [later])
    verdict = _wait_for_verdicts(settings, "fb-later", 1)[0]
    assert verdict["features"]["terminal_risk_1d"] == pytest.approx(2 / 3)
    assert verdict["features"]["terminal_nb_tx_7d"] == 3

    # Online metrics from the matched labels.
    summary = worker.get("/metrics")[1]
    assert summary["fraud_feedback_matched_total{label=FRAUD}"] == 2
    assert summary["fraud_feedback_matched_total{label=LEGIT}"] == 1
    assert summary["fraud_feedback_unmatched_total"] == 1
    outcomes = {k: v for k, v in summary.items()
                if k.startswith("fraud_online_confusion_total{model=champion,outcome=") and "threshold=review" in k}
    assert sum(outcomes.values()) == 3
    assert summary["fraud_label_delay_seconds_count"] == 3
    quality = worker.get("/api/v1/fraud/metrics")[1]
    assert quality["champion"]["labels"] == 3 and quality["champion"]["frauds"] == 2
    served = worker.get("/api/v1/fraud/status")[1]
    assert served["model"]["champion"]["version"] == version and served["model"]["challenger"] is None
    assert served["thresholds"] == {"review": settings.review_threshold, "decline": settings.decline_threshold}
    assert len(served["stream"]["assigned_partitions"]) == 3 * settings.partitions and served["stream"]["caught_up"]
    assert worker.get("/api/v1/terminals/T-FB?at=soon")[0] == 400

    # Each matched label became a labelled example carrying the features that were served.
    from models.examples import read_examples

    X, y, timestamps, names = read_examples(settings.kafka_bootstrap, settings.examples_topic,
                                     settings.schema_registry_url)
    assert sorted(y.tolist()) == [0, 1, 1] and timestamps.tolist() == [t["timestamp"] for t in scored]
    assert not np.isnan(X).any()


def _wait_for_verdicts(settings, prefix: str, count: int, timeout: float = 30) -> list[dict]:

    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while len(found) < count and time.monotonic() < deadline:
        found = [v for v in read_committed(settings, settings.verdicts_topic, expected=1, timeout=5)
                 if v["transaction_id"].startswith(prefix)]
    assert len(found) == count, f"{len(found)} verdicts for {prefix}*, expected {count}"
    return found


def test_rules_changed_on_the_control_topic_apply_without_a_restart_and_are_named_in_verdicts(stack):
    settings, worker, version = stack
    import subprocess
    import sys

    from tests.conftest import settings_env

    def fraud_rules(*args):
        done = subprocess.run([sys.executable, "-m", "fraud", "rules", *args], env=settings_env(settings),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def rules_in_force(count):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if worker.get("/health")[1]["components"]["rules"]["rules"] == count:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker did not reach {count} rules")

    def verdict_of(txn):
        produce_transactions(settings, [txn])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [v for v in read_committed(settings, settings.verdicts_topic, expected=1, timeout=5)
                     if v["transaction_id"] == txn["transaction_id"]]
            if found:
                return found[0]
        raise AssertionError(f"no verdict for {txn['transaction_id']}")

    assert "set block_card:RULE-CARD" in fraud_rules("block-card", "RULE-CARD")
    fraud_rules("ceiling", "7995", "100")
    rules_in_force(2)
    base = simulated_transactions(seed=13, count=1, prefix="rules")[0]
    blocked = verdict_of({**base, "transaction_id": "rules-blocked", "customer_id": "RULE-CARD"})
    assert blocked["decision"] == "DECLINE" and blocked["rules"] == ["block_card:RULE-CARD"]
    casino = verdict_of({**base, "transaction_id": "rules-casino", "merchant_category": "7995", "amount": 150.0})
    assert casino["decision"] == "DECLINE" and casino["rules"] == ["amount_ceiling:7995>100"]
    other = verdict_of({**base, "transaction_id": "rules-other", "customer_id": "ANOTHER-CARD"})
    assert other["rules"] == []

    fraud_rules("remove", "block_card:RULE-CARD")
    rules_in_force(1)
    assert "block_card:RULE-CARD" not in fraud_rules("list")
    again = verdict_of({**base, "transaction_id": "rules-unblocked", "customer_id": "RULE-CARD"})
    assert again["rules"] == []


def test_predict_answers_with_the_verdict_the_stream_wrote_once_and_a_retry_gets_the_same_one(stack):
    settings, worker, version = stack
    txn = {"transaction_id": "sync-1", "customer_id": "SYNC-CARD", "terminal_id": "T-SYNC", "merchant_id": "M1",
           "amount": 42.5, "channel": "ECOM", "card_present": False}
    status, verdict = worker.post("/api/v1/fraud/predict", txn)
    assert status == 200, verdict
    assert verdict["transaction_id"] == "sync-1" and verdict["model_version"] == version
    assert verdict["decision"] in ("APPROVE", "REVIEW", "DECLINE") and 0 <= verdict["score"] <= 1
    status, again = worker.post("/api/v1/fraud/predict", txn)
    assert status == 200 and again == verdict, "a retry returns the verdict already given"
    [on_topic] = _wait_for_verdicts(settings, "sync-1", 1)
    assert on_topic["score"] == verdict["score"] and on_topic["decision"] == verdict["decision"]

    status, other_card = worker.post("/api/v1/fraud/predict", {**txn, "customer_id": "ANOTHER-CARD"})
    assert status == 409 and other_card["error"]["fields"][0]["field"] == "transaction_id"
    status, negative = worker.post("/api/v1/fraud/predict", {**txn, "transaction_id": "sync-neg", "amount": -1})
    assert status == 422 and negative["error"]["fields"][0]["field"] == "amount"
    status, missing = worker.post("/api/v1/fraud/predict", {"transaction_id": "sync-none", "amount": 1})
    assert status == 422 and {f["field"] for f in missing["error"]["fields"]} >= {"customer_id", "terminal_id"}
    in_two_days = int(time.time() * 1000) + 2 * 86_400_000
    status, future = worker.post("/api/v1/fraud/predict", {**txn, "transaction_id": "sync-late", "timestamp": in_two_days})
    assert status == 422 and future["error"]["fields"][0]["field"] == "timestamp", future
    assert _wait_for_verdicts(settings, "sync-", 1) == [on_topic], "nothing else was sent"


def test_predict_past_its_timeout_is_a_504_naming_the_transaction_whose_verdict_still_lands_once(stack):
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from core.metrics import Metrics
    from ops_api.app import create_api
    from tests.conftest import bearer

    settings, worker, version = stack
    impatient = settings.model_copy(update={"predict_timeout_seconds": 0.001})
    txn = {"transaction_id": "late-1", "customer_id": "LATE-CARD", "terminal_id": "T-LATE", "merchant_id": "M1",
           "amount": 7.0}

    async def call():
        async with TestClient(TestServer(create_api(impatient, Metrics()))) as client:
            resp = await client.post("/api/v1/fraud/predict", json=txn, headers=bearer(settings, "analyst"))
            return resp.status, await resp.json()

    status, body = asyncio.run(call())
    assert status == 504 and "late-1" in body["error"]["message"] and body["error"]["transaction_id"] == "late-1"
    [landed] = _wait_for_verdicts(settings, "late-1", 1)
    # Another replica, patient enough, finds the verdict of the transaction sent before.
    status, verdict = worker.post("/api/v1/fraud/predict", txn)
    assert status == 200, verdict
    assert verdict["score"] == landed["score"] and verdict["scored_at"] == round(landed["scored_at"].timestamp() * 1000)
    assert _wait_for_verdicts(settings, "late-1", 1) == [landed], "the retry sent nothing"


def test_predict_takes_over_a_claim_whose_request_died_before_sending_and_sends_it_once(stack):
    import redis

    settings, worker, version = stack
    txn = {"transaction_id": "orphan-1", "customer_id": "ORPHAN-CARD", "terminal_id": "T-O", "merchant_id": "M1",
           "amount": 3.0}
    key = f"fraud:{settings.app_id}:predict:orphan-1"
    stale = {"state": "claimed", "at": int(time.time() * 1000) - 60_000, "customer_id": "ORPHAN-CARD"}
    redis.Redis.from_url(settings.redis_url).set(key, json.dumps(stale), ex=600)
    status, verdict = worker.post("/api/v1/fraud/predict", txn)
    assert status == 200 and verdict["transaction_id"] == "orphan-1", verdict
    assert len(_wait_for_verdicts(settings, "orphan-1", 1)) == 1


def test_a_batch_gets_one_answer_per_transaction_in_order_and_each_transaction_one_verdict(stack):
    settings, worker, version = stack
    txns = [{"transaction_id": f"batch-{i}", "customer_id": f"BATCH-CARD-{i % 2}", "terminal_id": "T-B",
             "merchant_id": "M1", "amount": 10.0 + i} for i in range(3)]
    bad = {**txns[0], "transaction_id": "batch-bad", "amount": -5}
    status, body = worker.post("/api/v1/fraud/predict/batch", {"transactions": [*txns, bad, txns[0]]})
    assert status == 200, body
    results = body["results"]
    assert [r["status"] for r in results] == [200, 200, 200, 422, 200], results
    assert [r["verdict"]["transaction_id"] for r in results[:3]] == ["batch-0", "batch-1", "batch-2"]
    assert results[3]["error"]["fields"][0]["field"] == "amount"
    assert results[4]["verdict"] == results[0]["verdict"], "the same transaction twice is decided once"
    status, again = worker.post("/api/v1/fraud/predict/batch", {"transactions": txns})
    assert [r["verdict"] for r in again["results"]] == [r["verdict"] for r in results[:3]]
    assert all(r["replayed"] for r in again["results"])
    assert worker.post("/api/v1/fraud/predict/batch", {"transactions": [txns[0]] * 1001})[0] == 422
    assert sorted(v["transaction_id"] for v in _wait_for_verdicts(settings, "batch-", 3)) == [
        "batch-0", "batch-1", "batch-2"]


def _registered_booster(settings, version: str) -> xgb.Booster:
    import mlflow.artifacts
    import mlflow.xgboost

    uri = MlflowClient(tracking_uri=settings.mlflow_uri).get_model_version_download_uri(settings.model_name, version)
    model = mlflow.xgboost.load_model(mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                                          tracking_uri=settings.mlflow_uri))
    return model.get_booster() if hasattr(model, "get_booster") else model


def test_explain_gives_each_feature_s_exact_contribution_to_a_scored_transaction_and_a_waterfall_png(stack):
    import urllib.request

    from tests.conftest import bearer

    settings, worker, version = stack
    txn = {"transaction_id": "why-1", "customer_id": "WHY-CARD", "terminal_id": "T-WHY", "merchant_id": "M1",
           "amount": 950.0, "channel": "ECOM", "card_present": False}
    status, verdict = worker.post("/api/v1/fraud/predict", txn)
    assert status == 200, verdict
    status, why = worker.post("/api/v1/fraud/explain", {"transaction_id": "why-1"})
    assert status == 200, why
    assert why["model_version"] == version and why["method"] == "TreeSHAP (exact)"
    assert why["score_from_contributions"] == pytest.approx(verdict["score"], abs=1e-4)
    assert {c["feature"] for c in why["contributions"]} == set(verdict["features"])
    # Exact TreeSHAP adds up to the margin XGBoost itself gives the verdict's features, with the
    # version as MLflow stores it.
    booster = _registered_booster(settings, version)
    row = np.array([[math.nan if verdict["features"][n] is None else verdict["features"][n]
                     for n in booster.feature_names]], dtype=np.float32)
    margin = float(booster.predict(xgb.DMatrix(row, feature_names=booster.feature_names), output_margin=True)[0])
    assert why["base_value"] + sum(c["contribution"] for c in why["contributions"]) == pytest.approx(margin, abs=1e-4)
    margins = [abs(c["contribution"]) for c in why["contributions"]]
    assert margins == sorted(margins, reverse=True)

    # A transaction scored from the stream, not through predict: found on its verdict partition.
    produce_transactions(settings, [{**simulated_transactions(seed=13, count=1, prefix="why")[0],
                                     "transaction_id": "why-stream"}])
    streamed = _wait_for_verdicts(settings, "why-stream", 1)[0]
    status, why_streamed = worker.post("/api/v1/fraud/explain", {"transaction_id": "why-stream"})
    assert status == 200 and why_streamed["score"] == streamed["score"], why_streamed

    req = urllib.request.Request(worker.base + "/api/v1/fraud/explain", method="POST",
                                 data=json.dumps({"transaction_id": "why-1"}).encode(),
                                 headers={"Content-Type": "application/json", "Accept": "image/png", **bearer(settings)})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "image/png" and resp.read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert worker.post("/api/v1/fraud/explain", {"transaction_id": "never-scored"})[0] == 404

    # A transaction not scored yet, explained as it would be scored now (nothing written).
    status, what_if = worker.post("/api/v1/fraud/explain", {"transaction": {**txn, "transaction_id": "why-2"}})
    assert status == 200 and what_if["what_if"] and what_if["transaction_id"] == "why-2", what_if
    assert what_if["score_from_contributions"] == pytest.approx(what_if["score"], abs=1e-4)
    both = worker.post("/api/v1/fraud/explain", {"transaction_id": "why-1", "transaction": txn})
    assert both[0] == 422 and "not both" in both[1]["error"]["message"]
    assert worker.post("/api/v1/fraud/explain", {"transaction": {**txn, "amount": -1}})[0] == 422


def test_a_what_if_score_reads_the_card_s_state_without_changing_it_or_writing_a_verdict(stack):
    settings, worker, version = stack
    at = int(time.time() * 1000)
    first = {"transaction_id": "whatif-0", "customer_id": "WHATIF-CARD", "terminal_id": "T-W", "merchant_id": "M1",
             "amount": 20.0, "timestamp": at - 60_000}
    probe = {**first, "transaction_id": "whatif-probe", "amount": 800.0, "timestamp": at}
    status, before = worker.post("/api/v1/fraud/score", probe)
    assert status == 200 and before["what_if"] and before["features"]["customer_nb_tx_1d"] == 1, before
    assert worker.post("/api/v1/fraud/score", probe)[1]["score"] == before["score"], "the first changed nothing"
    assert worker.post("/api/v1/fraud/predict", first)[0] == 200
    status, after = worker.post("/api/v1/fraud/score", probe)
    assert status == 200 and after["features"]["customer_nb_tx_1d"] == 2, "it sees the card's state as it is now"
    status, decided = worker.post("/api/v1/fraud/predict", probe)
    assert decided["score"] == after["score"] and decided["features"] == after["features"]
    assert [v["transaction_id"] for v in _wait_for_verdicts(settings, "whatif-", 2)] == ["whatif-0", "whatif-probe"]
    assert worker.post("/api/v1/fraud/score", {**probe, "amount": -1})[0] == 422


def test_an_api_without_a_stream_forwards_what_if_scores_to_the_worker_holding_the_card(stack, tmp_path):
    settings, worker, version = stack
    api = WorkerProcess(settings.model_copy(update={"api_port": free_port(), "worker_id": f"{settings.worker_id}-api"}),
                        tmp_path / "api.log", command="api").start()
    nobody = WorkerProcess(settings.model_copy(update={"api_port": free_port(), "worker_id": f"{settings.worker_id}-api2",
                                                      "transactions_topic": f"{settings.transactions_topic}-unheld"}),
                           tmp_path / "api2.log", command="api").start()
    try:
        api.wait_ready()
        nobody.wait_ready()
        at = int(time.time() * 1000)
        probe = {"transaction_id": "fwd-probe", "customer_id": "FWD-CARD", "terminal_id": "T-F", "merchant_id": "M1",
                 "amount": 640.0, "timestamp": at}
        deadline = time.monotonic() + 30
        while (answer := api.post("/api/v1/fraud/score", probe))[0] == 421:  # until the worker's heartbeat is in
            assert time.monotonic() < deadline, answer
            time.sleep(0.5)
        status, forwarded = answer
        assert status == 200 and forwarded["what_if"], forwarded
        direct = worker.post("/api/v1/fraud/score", probe)[1]
        same = ("score", "decision", "reasons", "features", "model_version")
        assert {k: forwarded[k] for k in same} == {k: direct[k] for k in same}, "the worker's own answer"
        status, why = api.post("/api/v1/fraud/explain", {"transaction": probe})
        assert status == 200 and why["what_if"], why
        assert why["score_from_contributions"] == pytest.approx(forwarded["score"], abs=1e-4)
        assert api.post("/api/v1/fraud/score", {**probe, "amount": -1})[0] == 422
        status, refused = nobody.post("/api/v1/fraud/score", probe)
        assert status == 421 and "no live worker announces it" in refused["error"]["message"], refused
    finally:
        api.stop()
        nobody.stop()


def test_the_worker_s_log_holds_no_secret_and_no_token(stack):
    import urllib.request

    from tests.conftest import bearer

    settings, worker, version = stack
    headers = bearer(settings)
    token = headers["Authorization"].split()[1]
    for path in ("/status", "/api/v1/training/jobs/no-such-job"):  # an answer, and a refusal
        try:
            urllib.request.urlopen(urllib.request.Request(worker.base + path, headers=headers), timeout=10).read()
        except urllib.error.HTTPError:
            pass
    log = worker.log_path.read_text(errors="replace")
    assert "fraud.api.access" in log and "/api/v1/training/jobs/no-such-job" in log
    assert settings.jwt_secret not in log
    assert token not in log and token.split(".")[2] not in log

"""The worker across changes: a new champion mid-stream, a restart mid-stream, a training job over HTTP,
and a start with MLflow unreachable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.settings import ROOT
from schemas.codec import load_schema
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess, bearer, free_port, settings_env, unique_settings
from tests.integration.conftest import (assert_each_transaction_counted_once, produce_raw, produce_transactions,
                                        read_committed, registry_client, simulated_transactions, train_version,
                                        verdicts_by_id)

pytestmark = pytest.mark.integration


def assert_one_verdict_each(records: list[dict], verdicts: list[dict]) -> None:
    by_id = verdicts_by_id(verdicts)
    missing = {r["transaction_id"] for r in records} - set(by_id)
    duplicated = {k: len(v) for k, v in by_id.items() if len(v) > 1}
    assert not missing, f"{len(missing)} transactions without a verdict, e.g. {sorted(missing)[:5]}"
    assert not duplicated, f"{len(duplicated)} transactions with several verdicts, e.g. " + "; ".join(
        f"{k}: {[(str(v['scored_at']), v.get('_kafka')) for v in by_id[k]]}" for k in sorted(duplicated)[:5])
    assert len(verdicts) == len(records)


def _wait_for_model_version(worker: WorkerProcess, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, health = worker.get("/health")
        if health["components"]["model"].get("version") == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"worker did not swap to v{version}:\n{worker.log_tail()}")


def test_moving_the_alias_mid_stream_switches_later_verdicts_with_none_lost(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    first = train_version(settings, small_history, n_estimators=20)
    second = train_version(settings, small_history, promote=False, n_estimators=40, max_depth=4)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        records = simulated_transactions(seed=21, count=2400, prefix="alias")
        producing = threading.Thread(target=produce_transactions, args=(settings, records), kwargs={"rate": 400})
        producing.start()
        time.sleep(2)
        client = MlflowClient(settings.mlflow_uri)
        client.set_registered_model_alias(settings.model_name, "champion", second)
        _wait_for_model_version(worker, second)
        producing.join()

        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(records))
    finally:
        worker.stop()
    by_id = verdicts_by_id(verdicts)
    assert set(by_id) == {r["transaction_id"] for r in records}
    assert all(len(v) == 1 for v in by_id.values()), "a transaction got more than one verdict"
    versions = {v["model_version"] for v in verdicts}
    assert versions == {first, second}, versions
    last_old = max(v["scored_at"] for v in verdicts if v["model_version"] == first)
    first_new = min(v["scored_at"] for v in verdicts if v["model_version"] == second)
    assert last_old <= first_new, "the old version scored after the new one went live"


def restart_mid_stream(small_history, tmp_path, stop_signal: int) -> None:
    """Stop the worker with `stop_signal` while transactions stream in, start another, and check
    that every transaction has exactly one committed verdict and is counted once in its card's and
    its terminal's table rows."""
    settings = unique_settings(tmp_path)
    train_version(settings, small_history, n_estimators=20)
    ensure_topics(settings)
    records = simulated_transactions(seed=22, count=3000, prefix="restart")
    worker = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        worker.wait_ready()
        producing = threading.Thread(target=produce_transactions, args=(settings, records), kwargs={"rate": 500})
        producing.start()
        time.sleep(2.5)
        code = worker.stop(stop_signal)
        if stop_signal == signal.SIGTERM:
            assert code == 0, worker.log_tail()
        worker = WorkerProcess(settings, tmp_path / "worker-2.log").start()
        worker.wait_ready()
        producing.join()
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(records), timeout=120)
        assert_one_verdict_each(records, verdicts)
        assert_each_transaction_counted_once(settings, records)
    finally:
        worker.stop()


def test_a_worker_restarted_mid_stream_leaves_one_verdict_per_transaction_and_counts_it_once_in_its_card_and_terminal_rows(
        services, small_history, tmp_path):
    restart_mid_stream(small_history, tmp_path, signal.SIGTERM)


def test_a_restarted_worker_restores_the_terminal_counts_and_extends_them(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    train_version(settings, small_history, n_estimators=5)
    ensure_topics(settings)
    day, t0 = 86_400_000, 1_710_000_000_000
    base = simulated_transactions(seed=21, count=1, prefix="tr")[0]
    at_terminal = [{**base, "transaction_id": f"tr-{i}", "customer_id": f"TR-CARD-{i}", "terminal_id": "T-RESTART",
                    "timestamp": t0 + i * 60_000} for i in range(3)]
    for run, (records, known) in enumerate(((at_terminal[:2], 2), (at_terminal[2:], 3))):
        worker = WorkerProcess(settings, tmp_path / f"worker-{run}.log").start()
        try:
            worker.wait_ready()
            produce_transactions(settings, records)
            deadline = time.monotonic() + 30
            # If the restarted worker had not restored the counts, the third transaction would start
            # them again from itself alone.
            at = t0 + 7 * day + 6 * 3_600_000  # past the 6-hour bucket of t0, 7 days on
            while (terminal := worker.get(f"/api/v1/terminals/T-RESTART?at={at}")[1])["features"]["terminal_nb_tx_1d"] != known:
                assert time.monotonic() < deadline, (terminal, worker.log_tail())
                time.sleep(0.3)
        finally:
            worker.stop()


def test_a_training_job_started_over_http_registers_a_new_version(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    first = train_version(settings, small_history, n_estimators=10)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        status, job = worker.post("/api/v1/training/train", {"customers": 300, "terminals": 600, "days": 30,
                                                             "seed": 3, "n_estimators": 60})
        assert status == 202 and job["status"] == "queued"

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status, job = worker.get(f"/api/v1/training/jobs/{job['job_id']}")
            assert status == 200
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert job["status"] == "succeeded", job
        status, listing = worker.get("/api/v1/training/jobs")
        assert job["job_id"] in [j["job_id"] for j in listing["jobs"]]
    finally:
        worker.stop()
    new_version = job["result"]["version"]
    versions = {mv.version for mv in MlflowClient(settings.mlflow_uri).search_model_versions(
        f"name='{settings.model_name}'")}
    assert versions == {first, new_version} and new_version != first
    run = MlflowClient(settings.mlflow_uri).get_run(job["result"]["run_id"])
    assert run.data.tags["job_id"] == job["job_id"]
    assert "auc_roc" in run.data.metrics and "average_precision" in run.data.metrics


def test_a_worker_starts_on_its_cached_model_when_mlflow_is_unreachable(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    version = train_version(settings, small_history, n_estimators=10)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    worker.wait_ready()
    worker.stop()

    offline = settings.model_copy(update={"mlflow_uri": "http://127.0.0.1:9"})  # nothing listens there
    worker = WorkerProcess(offline, tmp_path / "worker-2.log").start()
    try:
        worker.wait_ready()
        status, health = worker.get("/health")
        model = health["components"]["model"]
        assert (model["version"], model["source"], model["status"]) == (version, "cache", "degraded")
        assert health["components"]["mlflow"]["status"] == "down"
        assert health["status"] == "degraded"
        records = simulated_transactions(seed=23, count=50, prefix="offline")
        produce_transactions(offline, records)
        verdicts = read_committed(offline, offline.verdicts_topic, expected=50)
    finally:
        worker.stop()
    assert {v["transaction_id"] for v in verdicts} == {r["transaction_id"] for r in records}
    assert {v["model_version"] for v in verdicts} == {version}


def _stop_registry() -> None:
    pid_file = ROOT / ".services" / "run" / "registry.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("schema registry did not stop")


def test_messages_with_a_new_schema_wait_out_a_registry_outage_and_are_scored_after_it(
        services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    train_version(settings, small_history, n_estimators=10)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        # A newer compatible Transaction schema, registered while the registry is up but never seen
        # by the worker: decoding its messages needs the registry.
        newer = load_schema("transaction")
        newer = {**newer, "fields": newer["fields"] + [{"name": "note", "type": "string", "default": ""}]}
        serialize = AvroSerializer(registry_client(settings), json.dumps(newer))
        ctx = SerializationContext(settings.transactions_topic, MessageField.VALUE)
        records = simulated_transactions(seed=25, count=20, prefix="outage")
        payloads = [(r["customer_id"].encode(), serialize({**r, "note": "n"}, ctx)) for r in records]

        _stop_registry()
        try:
            produce_raw(settings, payloads)
            time.sleep(5)
            dead = read_committed(settings, settings.dlq_topic, expected=1, timeout=5, decode=False)
            assert dead == [], "an outage is not the message's fault"
        finally:
            subprocess.run([str(ROOT / "scripts" / "services"), "up"], check=True, capture_output=True)
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(records), timeout=90)
    finally:
        worker.stop()
    assert sorted(v["transaction_id"] for v in verdicts) == sorted(r["transaction_id"] for r in records)


def test_a_tuning_job_started_over_http_reports_the_best_parameters_and_logs_the_trials(services, tmp_path):
    settings = unique_settings(tmp_path)
    api = subprocess.Popen([sys.executable, "-m", "fraud", "api"], env=settings_env(settings),
                           stdout=open(tmp_path / "api.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/health/live", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
                time.sleep(0.5)
        body = json.dumps({"trials": 2, "folds": 2, "customers": 300, "terminals": 600}).encode()
        req = urllib.request.Request(base + "/api/v1/training/hyperparameter-tuning", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **bearer(settings)})
        with urllib.request.urlopen(req) as resp:
            job = json.loads(resp.read())
        assert resp.status == 202 and job["kind"] == "tuning"
        deadline = time.monotonic() + 240
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(1)
            with urllib.request.urlopen(urllib.request.Request(f"{base}/api/v1/training/jobs/{job['job_id']}",
                                                               headers=bearer(settings))) as resp:
                job = json.loads(resp.read())
        assert job["status"] == "succeeded", job
    finally:
        api.terminate()
        api.wait(30)
    result = job["result"]
    assert set(result["best_params"]) >= {"n_estimators", "max_depth", "learning_rate", "tree_method"}
    assert 0 < result["validation_average_precision"] <= 1
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(result["run_id"])
    assert run.data.tags["job_id"] == job["job_id"]
    assert run.data.params["trials"] == "2"
    assert [a.path for a in client.list_artifacts(result["run_id"])] == ["trials.csv"]


def test_a_challenger_is_scored_in_shadow_and_promoted_with_one_call(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    champion = train_version(settings, small_history, n_estimators=20)
    challenger = train_version(settings, small_history, promote=False, n_estimators=40, max_depth=3)
    ensure_topics(settings)
    client = MlflowClient(settings.mlflow_uri)
    client.set_registered_model_alias(settings.model_name, "challenger", challenger)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 30
        while worker.get("/health")[1]["components"]["model"].get("challenger_version") != challenger:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        before = simulated_transactions(seed=26, count=200, prefix="shadow")
        produce_transactions(settings, before)
        shadowed = read_committed(settings, settings.verdicts_topic, expected=len(before))
        assert {(v["model_version"], v["challenger_model_version"]) for v in shadowed} == {(champion, challenger)}
        assert all(0 <= v["challenger_score"] <= 1 for v in shadowed)
        assert any(v["challenger_score"] != v["score"] for v in shadowed), "the challenger is another model"
        status, summary = worker.get("/metrics")
        assert summary[f"fraud_challenger_scored_total{{model_version={challenger}}}"] == len(before)

        status, body = worker.post("/api/v1/models/promote", {})
        assert status == 200, body
        assert (body["version"], body["previous_version"]) == (challenger, champion)
        _wait_for_model_version(worker, challenger)
        deadline = time.monotonic() + 30
        while "challenger_version" in worker.get("/health")[1]["components"]["model"]:
            assert time.monotonic() < deadline, "the challenger alias should be gone once promoted"
            time.sleep(0.5)
        after = simulated_transactions(seed=27, count=100, prefix="promoted")
        produce_transactions(settings, after)
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(before) + len(after))

        assert worker.post("/api/v1/models/promote", {})[0] == 409
        status, body = worker.post("/api/v1/models/promote", {"version": "99"})
        assert status == 404 and "field version" in body["error"]["message"]
        status, body = worker.post("/api/v1/models/promote", {"verzion": "1"})
        assert status == 422 and "verzion" in body["error"]["message"]
    finally:
        worker.stop()
    promoted = [v for v in verdicts if v["transaction_id"].startswith("promoted-")]
    assert len(promoted) == len(after)
    assert {(v["model_version"], v["challenger_model_version"]) for v in promoted} == {(challenger, None)}


class DelayedPort:
    """A TCP port that refuses connections until `open()`, then forwards them to `target`: a broker
    that is unreachable for a while, then comes back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.listener: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


def test_a_worker_started_while_the_broker_is_unreachable_waits_then_becomes_ready_by_itself(
        services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    train_version(settings, small_history, n_estimators=5)
    broker = DelayedPort(("127.0.0.1", 9092))
    away = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{broker.port}"})
    worker = WorkerProcess(away, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 60
        while True:  # alive, not ready, and saying why
            try:
                live, (ready, body) = worker.get("/health/live")[0], worker.get("/health/ready")
            except OSError:
                live, ready, body = None, None, None
            if live == 200 and ready == 503 and any("kafka" in r.lower() for r in body["reasons"]):
                break
            assert worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, (live, ready, body, worker.log_tail())
            time.sleep(0.5)
        time.sleep(5)
        assert worker.proc.poll() is None, "the worker gave up while the broker was away"
        broker.open()
        worker.wait_ready(timeout=120)
        records = simulated_transactions(seed=25, count=100, prefix="late-broker")
        produce_transactions(settings, records)
        verdicts = read_committed(settings, settings.verdicts_topic, expected=100)
        assert_one_verdict_each(records, verdicts)
    finally:
        worker.stop()
        broker.close()

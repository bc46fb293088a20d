"""The fraud and model endpoints against the real broker, registry and MLflow: labels onto the feedback
topic, experiments and their runs, registering a run's model through the champion gate."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import xgboost as xgb
from aiohttp.test_utils import TestClient, TestServer
from mlflow import MlflowClient

from core.metrics import Metrics
from ops_api.app import create_api
from streams.topics import ensure_topics
from tests.conftest import bearer, unique_settings
from tests.integration.conftest import read_committed, train_version


def _calls(settings, requests: list[tuple[str, str, dict | None, str]]) -> list[tuple[int, dict]]:
    """(status, JSON body) of each (method, path, JSON body, role)."""

    async def run():
        out = []
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            for method, path, body, role in requests:
                resp = await client.request(method, path, json=body, headers=bearer(settings, role))
                out.append((resp.status, await resp.json()))
        return out

    return asyncio.run(run())


def test_a_label_sent_to_the_api_is_on_the_feedback_topic_in_avro_keyed_by_its_transaction(services, tmp_path):
    settings = unique_settings(tmp_path)
    ensure_topics(settings)
    label = {"transaction_id": "api-label-1", "label": "FRAUD", "source": "chargeback",
             "reported_at": 1_710_000_000_000, "terminal_id": "T-9"}
    [(status, sent)] = _calls(settings, [("POST", "/api/v1/fraud/feedback", label, "analyst")])
    assert status == 202, sent
    [record] = read_committed(settings, settings.feedback_topic, expected=1, timeout=30)
    where = record.pop("_kafka")
    reported_at = record.pop("reported_at")  # decoded as its logical type, a datetime
    assert int(reported_at.timestamp() * 1000) == label["reported_at"]
    assert record == {**{k: v for k, v in label.items() if k != "reported_at"}, "customer_id": None}
    assert (where["partition"], where["offset"]) == (sent["partition"], sent["offset"])
    # Labels are keyed like the verdicts they judge: the same key lands on the same partition number.
    [(_, again)] = _calls(settings, [("POST", "/api/v1/fraud/feedback",
                                      {"transaction_id": "api-label-1", "label": "LEGIT"}, "admin")])
    assert again["partition"] == sent["partition"] and again["offset"] > sent["offset"]


def test_a_label_with_a_wrong_field_gets_422_naming_it_and_nothing_reaches_the_topic(services, tmp_path):
    settings = unique_settings(tmp_path)
    ensure_topics(settings)
    results = _calls(settings, [
        ("POST", "/api/v1/fraud/feedback", {"transaction_id": "t", "label": "MAYBE"}, "analyst"),
        ("POST", "/api/v1/fraud/feedback", {"transaction_id": "", "label": "FRAUD"}, "analyst"),
        ("POST", "/api/v1/fraud/feedback", {"transaction_id": "t", "label": "FRAUD", "reported_at": -1}, "analyst"),
        ("POST", "/api/v1/fraud/feedback", {"transaction_id": "t", "label": "FRAUD", "score": 0.9}, "analyst"),
        ("POST", "/api/v1/fraud/feedback", {"label": "FRAUD"}, "analyst"),
    ])
    assert [status for status, _ in results] == [422] * 5, results
    fields = [body["error"]["fields"][0]["field"] for _, body in results]
    assert fields == ["label", "transaction_id", "reported_at", "score", "transaction_id"]
    assert read_committed(settings, settings.feedback_topic, expected=0, timeout=10) == []


def _run_with_model(settings, metrics: dict, tags: dict, with_model: bool = True) -> str:
    """A finished MLflow run of a small model, not registered: what a notebook or another trainer leaves."""
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment(settings.experiment)
    rng = np.random.default_rng(0)
    X = rng.random((200, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, (X[:, 0] > 0.7).astype(int)), 3)
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_metrics(metrics)
        if with_model:
            mlflow.xgboost.log_model(booster, name="model", model_format="ubj")
    return run.info.run_id


def test_a_finished_run_is_registered_and_promoted_only_through_the_gate_it_passes(services, tmp_path, small_history):
    settings = unique_settings(tmp_path, experiment=f"tests-registry-{uuid.uuid4().hex[:6]}")
    champion = train_version(settings, small_history, n_estimators=10)
    better = _run_with_model(settings, {"average_precision": 0.99, "champion_average_precision": 0.5},
                             {"champion_version": champion})
    stale = _run_with_model(settings, {"average_precision": 0.99, "champion_average_precision": 0.5},
                            {"champion_version": "999"})
    plain = _run_with_model(settings, {"average_precision": 0.1}, {})
    no_model = _run_with_model(settings, {"average_precision": 0.99}, {}, with_model=False)
    trained_run = MlflowClient(settings.mlflow_uri).get_model_version(settings.model_name, champion).run_id
    register = "/api/v1/training/models/register"
    results = _calls(settings, [
        ("POST", register, {"run_id": stale, "through_gate": True}, "ml-engineer"),
        ("POST", register, {"run_id": plain}, "ml-engineer"),
        ("POST", register, {"run_id": better, "through_gate": True}, "ml-engineer"),
        ("POST", register, {"run_id": better}, "ml-engineer"),
        ("POST", register, {"run_id": trained_run}, "ml-engineer"),
        ("POST", register, {"run_id": no_model}, "ml-engineer"),
        ("POST", register, {"run_id": "f" * 32}, "ml-engineer"),
        ("POST", register, {"run_id": "../../etc"}, "ml-engineer"),
        ("GET", "/api/v1/training/experiments?runs=3", None, "viewer"),
        ("GET", "/api/v1/training/experiments?runs=0", None, "viewer"),
    ])
    (s_stale, stale_body), (s_plain, plain_body), (s_better, better_body) = results[:3]
    assert s_stale == 201 and not stale_body["promoted"] and "retrain" in stale_body["reason"], stale_body
    assert s_plain == 201 and not plain_body["promoted"], plain_body
    assert s_better == 201 and better_body["promoted"] and better_body["champion_before"] == champion, better_body
    assert "beats champion" in better_body["reason"]
    client = MlflowClient(settings.mlflow_uri)
    assert client.get_model_version_by_alias(settings.model_name, settings.model_alias).version == better_body["version"]
    assert len({stale_body["version"], plain_body["version"], better_body["version"], champion}) == 4
    statuses = [status for status, _ in results[3:8]]
    assert statuses == [409, 409, 409, 404, 422], results[3:8]
    assert "logged no model" in results[5][1]["error"]["message"]
    assert f"version {better_body['version']}" in results[3][1]["error"]["message"]
    assert results[7][1]["error"]["fields"][0]["field"] == "run_id"

    status, listed = results[8]
    assert status == 200
    [ours] = [e for e in listed["experiments"] if e["name"] == settings.experiment]
    assert [r["run_id"] for r in ours["runs"]] == [no_model, plain, stale], "the 3 most recent, newest first"
    assert ours["runs"][2]["metrics"]["average_precision"] == 0.99 and ours["runs"][2]["champion_version"] == "999"
    assert results[9][0] == 400 and "runs" in results[9][1]["error"]["message"]


def test_mlflow_down_is_a_503_that_names_no_address(services, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as `fraud api` sets them: fail fast
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = unique_settings(tmp_path, mlflow_uri="http://127.0.0.1:1")
    results = _calls(settings, [
        ("GET", "/api/v1/training/experiments", None, "viewer"),
        ("POST", "/api/v1/training/models/register", {"run_id": "a" * 32}, "ml-engineer"),
        ("POST", "/api/v1/models/promote", {"version": "1"}, "ml-engineer"),
    ])
    assert [status for status, _ in results] == [503, 503, 503], results
    for _, body in results:
        assert "127.0.0.1" not in body["error"]["message"] and ":1" not in body["error"]["message"]


def test_a_registered_version_carries_the_calibration_its_run_chose_and_is_served_with_it(services, tmp_path,
                                                                                          small_history):
    from models.calibration import Calibration
    from models.serving import ModelSource

    settings = unique_settings(tmp_path)
    version = train_version(settings, small_history, n_estimators=20)
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(client.get_model_version(settings.model_name, version).run_id)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"calibration_curve.png", "calibration.json", "held_out_quality.png"} <= logged
    kind = run.data.params["calibration"]
    assert kind in ("none", "platt", "isotonic")
    weights = [k for k in run.data.metrics if k.startswith("validation_average_precision_weight_")]
    assert len(weights) == 3 and float(run.data.params["chosen_scale_pos_weight"]) == run.data.metrics["scale_pos_weight"]
    assert {"validation_brier_cv_none", "validation_brier_cv_platt", "validation_brier_cv_isotonic"} <= set(run.data.metrics)
    assert run.data.metrics["validation_brier_cv_" + kind] == min(
        run.data.metrics[f"validation_brier_cv_{k}"] for k in ("none", "platt", "isotonic"))
    assert 0 < run.data.metrics["brier_score"] < 0.25

    # A version trained with a heavy class weight needs its calibration: served scores are its map
    # of the booster's raw scores, not the raw scores.
    weighted = train_version(settings, small_history, promote=False, n_estimators=20, scale_pos_weight=30.0)
    weighted_run = client.get_model_version(settings.model_name, weighted).run_id
    stored = Calibration.from_dict(json.loads(Path(client.download_artifacts(
        weighted_run, "calibration.json", str(tmp_path))).read_text()))
    assert stored.kind in ("platt", "isotonic")
    model = ModelSource(settings.mlflow_uri, settings.model_name, "champion", tmp_path / "cache").load_version(weighted)
    assert model.calibration == stored
    rows = np.random.default_rng(0).normal(0, 1, (50, len(model.feature_names))).astype(np.float32)
    raw = model.booster.inplace_predict(rows)
    assert np.allclose(model.scores(rows), stored.probabilities(raw), atol=1e-5)
    assert not np.allclose(model.scores(rows), raw, atol=1e-3)
    weighted_metrics = client.get_run(weighted_run).data.metrics
    assert weighted_metrics["brier_score"] < weighted_metrics["brier_score_uncalibrated"]

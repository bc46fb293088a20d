"""The answers /openapi.json describes field by field: what the handlers answer, in each of their
branches (a worker and an API without a stream, a model from the registry, from the cache or none,
Redis or MLflow down, nothing counted yet), validates against the document's schema for it. The
handlers are called as they are, on the worker's own stream view, with fakes only where a service
would answer (Kafka's metadata, Redis, MLflow, the schema registry)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from types import SimpleNamespace

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from core.decision import Thresholds
from core.drift import DriftWatch, reference_of
from core.features import DAY_MS, TerminalCounts
from core.metrics import Metrics
from core.settings import Settings
from fraud.worker import Scorer
from models.serving import ModelHandle
from models.train import CHAMPION_VERSION_TAG
from ops_api import app as api, fraud, openapi, registry
from ops_api.jobs import TrainingJobs
from ops_api.web import ADMIN, HTTP, JOBS, LIMITS, METRICS, MODEL_SOURCE, REDIS, SETTINGS, VERSION
from streams.quality import OnlineQuality
from streams.rules import RulesTable
from streams.terminals import TerminalView
from streams.worker import WorkerStatus

NOW_MS = int(time.time() * 1000)
CHAMPION = SimpleNamespace(name="fraud-xgb", version="3", source="registry", run_id="0f3a", reference=None)
CHALLENGER = SimpleNamespace(name="fraud-xgb", version="4", source="registry", run_id="", reference=None)
CACHED = SimpleNamespace(name="fraud-xgb", version="3", source="cache", run_id="0f3a", reference=None)


class Redis:
    """Redis as the API uses it: ping, the workers' heartbeats (set, scan_iter, mget), the jobs running."""

    def __init__(self):
        self.values: dict[str, str] = {}

    async def ping(self):
        return True

    async def set(self, key, value, ex=None):
        self.values[key] = value

    async def scan_iter(self, match, count=None):
        for key in list(self.values):
            if fnmatch.fnmatch(key, match):
                yield key

    async def mget(self, keys):
        return [self.values.get(key) for key in keys]

    def register_script(self, script):  # the job limit's slot claim
        async def claim(keys, args):
            return 1
        return claim

    async def zcount(self, key, low, high):  # the jobs running
        return 0


class RedisDown:
    def register_script(self, script):
        return None

    async def zcount(self, key, low, high):
        raise aioredis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    async def ping(self):
        raise aioredis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    async def scan_iter(self, match, count=None):
        raise aioredis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
        yield


class Unreachable:
    """The HTTP session the schema registry and MLflow are checked with, neither of them up."""

    def get(self, url):
        raise aiohttp.ClientConnectionError(f"Cannot connect to host {url}")


KAFKA = SimpleNamespace(list_topics=lambda timeout: SimpleNamespace(brokers={1: None, 2: None, 3: None}))


class Mlflow:
    """MLflow's client as the experiments endpoint calls it, with its own entities."""

    def search_experiments(self, max_results, order_by):
        from mlflow.entities import Experiment

        return [Experiment("2", "fraud-tuning", "", "active", creation_time=NOW_MS),
                Experiment("0", "Default", "", "active", creation_time=None)]  # older than MLflow 1.29

    def search_runs(self, experiment_ids, max_results, order_by):
        from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

        if experiment_ids != ["2"]:
            return []
        finished = Run(RunInfo("a1", "2", "ci", "FINISHED", NOW_MS - 60_000, NOW_MS, "active", run_name="tuned"),
                       RunData([Metric("average_precision", 0.81, NOW_MS, 0), Metric("auc", 0.97, NOW_MS, 0)],
                               [Param("max_depth", "6")], [RunTag(CHAMPION_VERSION_TAG, "3")]))
        running = Run(RunInfo("b2", "2", "ci", "RUNNING", NOW_MS, None, "active", run_name="trial-7"), RunData())
        return [running, finished]


def drift_watch() -> DriftWatch:
    """A drift window on a reference of two inputs, one of which the live rows always miss."""
    rng = np.random.default_rng(0)
    watch = DriftWatch(window_seconds=900.0)
    reference = reference_of(rng.normal(size=(200, 2)), rng.random(200), ("amount_zscore", "attribute_risk"))
    live = rng.normal(size=(50, 2))
    live[:, 1] = np.nan
    watch.add("3", reference, live, rng.random(50))
    watch.report(time.time())
    return watch


def worker_stream(model=CHAMPION, challenger=CHALLENGER, model_error="", drift=None, waiting_for=""):
    """The worker's StreamView (fraud/worker.py), over its real rules, terminal snapshots and quality."""
    settings = Settings(auth="disabled")
    status = WorkerStatus(phase="running", waiting_for=waiting_for, followed_caught_up=True, lag={0: 12, 1: 0},
                          assigned=[(settings.transactions_topic, 0), (settings.transactions_topic, 1)],
                          preparing=[(settings.transactions_topic, 1)])
    rules = RulesTable(settings.rules_topic)
    rules.apply(b"block-1", json.dumps({"type": "block_card", "value": "C-9"}).encode())
    rules.apply(None, b"{}")  # no key: counted as invalid
    terminals = TerminalView("fraud-terminal-snapshots", 2)
    counts = terminals.terminals["T-1"] = TerminalCounts()
    for days_ago in (9, 10, 20):
        counts.add(NOW_MS - days_ago * DAY_MS, fraud=days_ago == 10)
    quality = {"champion": OnlineQuality(Thresholds(0.5, 0.9)), "challenger": OnlineQuality(Thresholds(0.5, 0.9))}
    for score, is_fraud in ((0.95, True), (0.6, False), (0.2, True), (0.1, False)):
        quality["champion"].observe(score, is_fraud)
    quality["challenger"].observe(0.3, False)  # no fraud yet, nothing flagged: its figures are null
    watch = drift or DriftWatch()
    scorer = SimpleNamespace(
        settings=settings, status=status, models=ModelHandle(model), challenger=ModelHandle(challenger),
        model_follower=SimpleNamespace(error=model_error), rules=rules, terminals=terminals,
        feedback=SimpleNamespace(held=lambda: 7), quality=quality, what_if=lambda txn: None,
        worker=SimpleNamespace(steps={settings.transactions_topic: SimpleNamespace(drift=watch)}))
    return Scorer.stream_view(scorer)


def an_api(stream=None, redis=None, **settings):
    app = api.create_api(Settings(**{"auth": "disabled", **settings}), Metrics(), stream)
    app[REDIS] = redis if redis is not None else Redis()
    app[ADMIN], app[HTTP] = KAFKA, Unreachable()
    app[JOBS] = TrainingJobs(app[REDIS], max_running=2)
    app[MODEL_SOURCE] = SimpleNamespace(client=Mlflow())
    return app


async def answer(app, handler, path, **match_info):
    response = await handler(make_mocked_request("GET", path, app=app, match_info=match_info))
    return response.status, json.loads(response.body)


def check(app, path, body, status="200"):
    """`body` against the document's schema for GET `path` answering `status`."""
    document = openapi.document(app[openapi.ROUTES], app[SETTINGS], VERSION)
    schema = document["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]
    assert "$ref" in schema, f"GET {path} {status} is not described field by field"
    Draft202012Validator({**schema, "components": document["components"]}).validate(body)


async def heartbeats_of(stream, redis: Redis) -> None:
    """One heartbeat of a worker with `stream` in `redis`, as its API writes it."""
    beating = asyncio.create_task(api._heartbeat(an_api(stream, redis)))
    while not redis.values:
        await asyncio.sleep(0.01)
    beating.cancel()


def test_the_document_is_valid_openapi_3_1_and_every_schema_in_it_valid_json_schema():
    document = openapi.document(an_api()[openapi.ROUTES], Settings(auth="disabled"), VERSION)
    validate(document)
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_json_answer_but_the_document_itself_has_a_schema_of_its_own():
    document = openapi.document(an_api()[openapi.ROUTES], Settings(auth="disabled"), VERSION)
    bare = [f"{method.upper()} {path}" for path, operations in document["paths"].items()
            for method, operation in operations.items() for response in operation["responses"].values()
            if response.get("content", {}).get("application/json", {}).get("schema") == {"type": "object"}]
    assert bare == ["GET /openapi.json"]


async def test_a_worker_health_body_with_auth_and_degraded_rate_limits_matches_its_schema():
    app = an_api(worker_stream(), auth="jwt", jwt_secret="s3cret")
    app[LIMITS].degraded = "redis unavailable: ConnectionError"
    status, body = await answer(app, api.health, "/health")
    assert status == 200 and body["status"] == "degraded"  # the schema registry and MLflow are down
    assert {"rules", "verdicts", "rate_limits"} <= set(body["components"])
    assert body["components"]["kafka"]["brokers"] == 3 and "error" in body["components"]["mlflow"]
    check(app, "/health", body)


async def test_a_worker_health_body_on_the_cached_model_matches_its_schema():
    app = an_api(worker_stream(model=CACHED, challenger=None, model_error="MLflow at http://mlflow:5000 down"))
    status, body = await answer(app, api.health, "/health")
    assert status == 200 and body["components"]["model"]["status"] == "degraded"
    assert {"note", "warning"} <= set(body["components"]["model"])
    assert body["components"]["rate_limits"]["status"] == "ok"  # without auth, addresses are still limited
    check(app, "/health", body)


async def test_a_worker_health_body_without_a_model_is_a_503_that_matches_its_schema():
    app = an_api(worker_stream(model=None, challenger=None, model_error="no version has alias champion"))
    status, body = await answer(app, api.health, "/health")
    assert status == 503 and body["status"] == "down"
    check(app, "/health", body, "503")


async def test_an_api_health_body_with_the_workers_heartbeats_matches_its_schema():
    redis = Redis()
    await heartbeats_of(worker_stream(), redis)
    app = an_api(redis=redis)
    status, body = await answer(app, api.health, "/health")
    assert status == 200 and body["components"]["model"] == {"status": "not in this process"}
    assert len(body["components"]["stream"]["workers"]) == 1
    check(app, "/health", body)


async def test_an_api_health_body_with_redis_down_matches_its_schema():
    app = an_api(redis=RedisDown())
    status, body = await answer(app, api.health, "/health")
    assert status == 200 and body["components"]["stream"]["status"] == "down"
    assert body["components"]["redis"]["status"] == "down"
    check(app, "/health", body)


async def test_a_worker_status_body_matches_its_schema():
    app = an_api(worker_stream(waiting_for="the schema registry at http://registry:8081: refused"))
    status, body = await answer(app, api.status, "/status")
    assert status == 200 and body["role"] == "worker" and body["stream"]["waiting_for"]
    assert body["dependencies"] == {"kafka": True, "schema_registry": False, "redis": True, "mlflow": False}
    check(app, "/status", body)


async def test_a_worker_status_body_with_redis_down_says_the_jobs_running_are_unknown_and_matches_its_schema():
    app = an_api(worker_stream(), redis=RedisDown())
    status, body = await answer(app, api.status, "/status")
    assert status == 200 and body["jobs"] == {"running": None, "max_concurrent": 2}
    check(app, "/status", body)


async def test_an_api_status_body_with_the_workers_heartbeats_matches_its_schema():
    redis = Redis()
    await heartbeats_of(worker_stream(model=None, challenger=None), redis)
    app = an_api(redis=redis, auth="jwt", jwt_secret="s3cret")
    status, body = await answer(app, api.status, "/status")
    assert status == 200 and body["role"] == "api" and body["stream"]["workers"][0]["model_version"] is None
    check(app, "/status", body)


async def test_a_dependencies_body_with_some_down_matches_its_schema():
    app = an_api()
    status, body = await answer(app, api.status_dependencies, "/status/dependencies")
    assert status == 200 and body["dependencies"]["kafka"]["last_error"] is None
    assert body["dependencies"]["mlflow"]["last_error"]["error"].startswith("ClientConnectionError")
    check(app, "/status/dependencies", body)


@pytest.mark.parametrize("stream", [None, worker_stream()], ids=["api", "worker"])
async def test_an_info_body_of_an_api_and_of_a_worker_matches_its_schema(stream):
    app = an_api(stream)
    status, body = await answer(app, api.info, "/info")
    assert status == 200 and (body["model"]["live_version"] is None) == (stream is None)
    check(app, "/info", body)


async def test_a_metrics_body_after_some_scoring_matches_its_schema():
    app = an_api()
    metrics = app[METRICS]
    metrics.scored.labels("3").inc(10)
    metrics.latency.observe(12.5)
    metrics.lag.labels("0").set(4)
    metrics.record_quality("champion", OnlineQuality(Thresholds()).summary())
    metrics.record_drift(drift_watch().latest)
    status, body = await answer(app, api.metrics_json, "/metrics")
    assert status == 200 and body["fraud_transactions_scored_total{model_version=3}"] == 10.0
    check(app, "/metrics", body)


@pytest.mark.parametrize("terminal_id", ["T-1", "T-unknown"])
async def test_a_terminal_body_known_or_not_matches_its_schema(terminal_id):
    app = an_api(worker_stream())
    status, body = await answer(app, api.terminal, f"/api/v1/terminals/{terminal_id}?at={NOW_MS}",
                                terminal_id=terminal_id)
    assert status == 200 and body["known"] == (terminal_id == "T-1") and body["at"] == NOW_MS
    check(app, "/api/v1/terminals/{terminal_id}", body)


async def test_an_online_quality_body_with_empty_figures_matches_its_schema():
    app = an_api(worker_stream())
    status, body = await answer(app, fraud.quality, "/api/v1/fraud/metrics")
    assert status == 200 and body["challenger"]["average_precision"] is None
    assert body["champion"]["review"]["precision"] == 0.5
    check(app, "/api/v1/fraud/metrics", body)


@pytest.mark.parametrize("model, challenger, model_error", [
    (CHAMPION, CHALLENGER, ""), (CACHED, None, "MLflow unreachable"), (None, None, "loading")],
    ids=["champion-and-challenger", "cached", "no-model"])
async def test_a_fraud_status_body_with_or_without_models_matches_its_schema(model, challenger, model_error):
    app = an_api(worker_stream(model, challenger, model_error))
    status, body = await answer(app, fraud.status, "/api/v1/fraud/status")
    assert status == 200 and (body["model"]["champion"] is None) == (model is None)
    check(app, "/api/v1/fraud/status", body)


async def test_a_drift_body_with_an_input_never_seen_matches_its_schema():
    app = an_api(worker_stream(drift=drift_watch()))
    status, body = await answer(app, fraud.drift, "/api/v1/fraud/drift")
    assert status == 200 and body["transactions"] == 50
    assert body["inputs"]["attribute_risk"]["psi"] is None and body["inputs"]["attribute_risk"]["missing_share"] == 1
    check(app, "/api/v1/fraud/drift", body)


async def test_a_drift_body_of_an_emptied_window_matches_its_schema():
    watch = drift_watch()
    watch.report(time.time() + 3600)  # the window has moved past every row
    app = an_api(worker_stream(drift=watch))
    status, body = await answer(app, fraud.drift, "/api/v1/fraud/drift")
    assert status == 200 and body["transactions"] == 0 and body["inputs"]["score"]["missing_share"] is None
    check(app, "/api/v1/fraud/drift", body)


async def test_an_experiments_body_with_running_finished_and_no_runs_matches_its_schema():
    app = an_api()
    status, body = await answer(app, registry.experiments, "/api/v1/training/experiments?runs=5")
    assert status == 200 and [e["created_at"] for e in body["experiments"]] == [NOW_MS, None]
    assert body["experiments"][0]["runs"][0]["ended_at"] is None
    check(app, "/api/v1/training/experiments", body)

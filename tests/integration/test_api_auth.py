"""Who may call what: every route of the API against every kind of caller, on the real Redis, Kafka,
registry and MLflow; and requests that try to make the server read files outside FRAUD_DATA_DIR."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from mlflow import MlflowClient

from core.metrics import Metrics
from ops_api.app import create_api
from ops_api.auth import mint
from ops_api.jobs import JOB_INDEX
from ops_api.predict import CLAIM_KEY
from tests.conftest import unique_settings
from tests.integration.conftest import train_version

# A body per POST route: `valid` would change something (start a job, move an alias) if it got
# through; `invalid` is refused by validation (or names nothing that exists), so a caller who is
# let through changes nothing either.
BODIES = {
    "/api/v1/training/train": ({"customers": 300, "terminals": 600, "days": 30}, {"n_estimators": 0}),
    "/api/v1/training/hyperparameter-tuning": ({"trials": 1, "folds": 1}, {"trials": 0}),
    "/api/v1/models/promote": ({"version": "1"}, {"verzion": "1"}),
    "/api/v1/training/models/register": ({"run_id": "0" * 32, "through_gate": True}, {"run_idd": "1"}),
    "/api/v1/fraud/predict": ({"transaction_id": "t-1", "customer_id": "C", "terminal_id": "T", "merchant_id": "M",
                               "amount": 1.0}, {"transaction_id": "t-1", "amount": -1}),
    "/api/v1/fraud/predict/batch": ({"transactions": [{"transaction_id": "t-2", "customer_id": "C", "terminal_id": "T",
                                                     "merchant_id": "M", "amount": 1.0}]}, {"transactions": []}),
    "/api/v1/fraud/score": ({"transaction_id": "t-3", "customer_id": "C", "terminal_id": "T", "merchant_id": "M",
                             "amount": 1.0}, {"transaction_id": "t-3", "amount": -1}),
    "/api/v1/fraud/explain": ({"transaction_id": "t-1"}, {"transaction_id": ""}),
    "/api/v1/fraud/feedback": ({"transaction_id": "t-1", "label": "FRAUD"}, {"transaction_id": "t-1", "label": "MAYBE"}),
}
PATHS = {"{job_id}": "no-such-job", "{terminal_id}": "T-1", "{asset}": "swagger-ui.css"}
# Who may do what, as the README states it (not read from the code under test).
ROLE_NAMES = ("viewer", "analyst", "ml-engineer", "admin")
MAY_CHANGE_MODELS = {"ml-engineer", "admin"}
MAY_LABEL = {"analyst", "admin"}
LABELLING = {"/api/v1/fraud/feedback", "/api/v1/fraud/predict", "/api/v1/fraud/predict/batch",
             "/api/v1/fraud/explain", "/api/v1/fraud/score"}


def _routes(app) -> list[tuple[str, str, str]]:
    """(method, route, concrete path) of every route but HEAD and OPTIONS (CORS preflights, answered by
    aiohttp-cors before any handler: tests/integration/test_api_requests.py)."""
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = route.resource.canonical
        for name, value in PATHS.items():
            path = path.replace(name, value)
        out.append((route.method, route.resource.canonical, path))
    return out


def _callers(settings) -> dict[str, dict]:
    now = int(time.time())
    other = settings.model_copy(update={"jwt_secret": "not-the-secret"})
    callers = {
        "no token": {},
        "not a bearer token": {"Authorization": f"Basic {mint(settings, 'admin', 60)}"},
        "malformed token": {"Authorization": "Bearer not.a.jwt"},
        "wrong signature": {"Authorization": f"Bearer {mint(other, 'admin', 60)}"},
        "expired token": {"Authorization": "Bearer " + jwt.encode({"role": "admin", "exp": now - 10},
                                                                  settings.jwt_secret)},
        "unknown role": {"Authorization": "Bearer " + jwt.encode({"role": "root", "exp": now + 60},
                                                                 settings.jwt_secret)},
    }
    for role in ROLE_NAMES:
        callers[role] = {"Authorization": f"Bearer {mint(settings, role, 60)}"}
    return callers


def _traces(settings) -> dict:
    """What a request let through by mistake would leave: jobs in Redis' index of every job, predict
    claims of the BODIES' transactions, records on the transactions and feedback topics, the model's
    registered versions and aliases."""
    from confluent_kafka import Consumer, TopicPartition

    store = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    claims = [key for key in (CLAIM_KEY.format(settings.app_id, t) for t in ("t-1", "t-2", "t-3")) if store.exists(key)]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "matrix-traces"})
    records = {}
    for topic in (settings.transactions_topic, settings.feedback_topic):
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions or {}
        records[topic] = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                             for p in partitions)
    consumer.close()
    mlflow = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    versions = sorted(v.version for v in mlflow.search_model_versions(f"name='{settings.model_name}'"))
    return {"jobs": set(store.zrange(JOB_INDEX, 0, -1)), "claims": claims, "records": records,
            "versions": versions, "aliases": mlflow.get_registered_model(settings.model_name).aliases}


async def _matrix(settings, bodies: dict) -> list[tuple]:
    app = create_api(settings, Metrics())
    routes = _routes(app)
    async with TestClient(TestServer(app)) as client:
        seen = []
        for caller, headers in _callers(settings).items():
            for method, route, path in routes:
                open_path = {path, route} & set(settings.auth_open_paths.split(","))
                allowed = caller in ROLE_NAMES and (
                    caller in MAY_LABEL if route in LABELLING else method == "GET" or caller in MAY_CHANGE_MODELS)
                valid, invalid = bodies.get(route, (None, None))
                body = invalid if allowed else valid  # a refused caller sends what would change things
                resp = await client.request(method, path, headers=headers, json=body)
                seen.append((caller, method, path, resp.status, open_path, allowed,
                             resp.headers.get("WWW-Authenticate", ""), await resp.text()))
    return seen


def test_every_route_answers_401_403_or_serves_as_the_caller_s_token_and_role_allow(services, small_history,
                                                                                   tmp_path):
    settings = unique_settings(tmp_path)
    # A version with no alias, and the run it came from: a refused promote or register of them
    # would move the champion alias or add a version.
    version = train_version(settings, small_history, promote=False, n_estimators=5)
    run_id = MlflowClient(tracking_uri=settings.mlflow_uri).get_model_version(settings.model_name, version).run_id
    bodies = {**BODIES, "/api/v1/models/promote": ({"version": version}, BODIES["/api/v1/models/promote"][1]),
              "/api/v1/training/models/register": ({"run_id": run_id, "through_gate": False},
                                                   BODIES["/api/v1/training/models/register"][1])}
    before = _traces(settings)
    assert before["versions"] == [version] and before["aliases"] == {}
    seen = asyncio.run(_matrix(settings, bodies))
    after = _traces(settings)
    assert {path for _, _, path, *_ in seen} >= {"/health", "/api/v1/training/train", "/api/v1/models/promote"}
    for caller, method, path, status, open_path, allowed, challenge, text in seen:
        where = f"{caller}: {method} {path} -> {status} {text[:200]}"
        if open_path:
            assert status not in (401, 403), where
        elif caller not in ROLE_NAMES:
            assert status == 401, where
            assert challenge.startswith('Bearer realm="fraud-scorer"'), where
        elif allowed:
            assert status not in (401, 403) and status < 500, where
        else:
            assert status == 403, where
            assert "needs one of" in text, where
    assert after["jobs"] == before["jobs"], "a refused request started a job"
    assert (after["versions"], after["aliases"]) == ([version], {}), "a refused request changed the registry"
    assert after["claims"] == [] and set(after["records"].values()) <= {0}, f"a refused request sent something: {after}"


def test_the_open_paths_are_served_without_a_token_and_health_says_how_callers_are_checked(services, tmp_path):
    settings = unique_settings(tmp_path)

    async def calls():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            live = (await client.get("/health/live")).status
            scrape = (await client.get("/metrics/prometheus")).status
            health = await (await client.get("/health", headers={"Authorization": f"Bearer {mint(settings, 'viewer', 60)}"})).json()
        async with TestClient(TestServer(create_api(settings.model_copy(update={"auth": "disabled"}), Metrics()))) as client:
            disabled = await (await client.get("/health")).json()
        return live, scrape, health, disabled

    live, scrape, health, disabled = asyncio.run(calls())
    assert (live, scrape) == (200, 200)
    assert health["auth"]["mode"] == "jwt" and health["auth"]["algorithm"] == "HS256"
    assert disabled["auth"]["mode"] == "disabled"


@pytest.mark.parametrize("data_path, expected, reason", [
    ("/etc/hostname", 404, "inside the data directory"),
    ("../../../../etc/hostname", 404, "inside the data directory"),
    ("history\x00.csv", 422, "NUL byte"),
    ("missing.csv", 404, "no file 'missing.csv'"),
    ("x" * 5000, 422, "at most 1024 characters"),
])
def test_no_request_makes_the_server_read_a_file_outside_the_data_directory(services, tmp_path, data_path, expected,
                                                                           reason):
    settings = unique_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    hostname = open("/etc/hostname").read().strip()

    async def call():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            headers = {"Authorization": f"Bearer {mint(settings, 'ml-engineer', 60)}"}
            resp = await client.post("/api/v1/training/train", json={"data_path": data_path}, headers=headers)
            return resp.status, await resp.text()

    status, text = asyncio.run(call())
    assert status == expected and "data_path" in text and reason in text, text
    assert len(hostname) < 6 or hostname not in text

"""The ops side-API (aiohttp): health, status, metrics, info and training jobs here; synchronous and
what-if decisions in ops_api/predict.py, explanations in ops_api/explain.py, labels and online
quality in ops_api/fraud.py, the model registry's endpoints in ops_api/registry.py, the OpenAPI
description in ops_api/openapi.py; who may call what in ops_api/auth.py and how often in
ops_api/limits.py. `create_api` puts them together.

It runs inside the worker process (`fraud worker`), where it sees the live stream and model, and on its
own (`fraud api`), where stream status comes from the workers' heartbeats in Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp
import aiohttp_cors
import redis.asyncio as aioredis
from aiohttp import web
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from core.logs import REQUEST_ID
from core.redact import without_addresses
from core.settings import Settings
from core.metrics import Metrics
from ops_api.auth import ANALYSE, READ, TRAIN, auth_from, authorize
from ops_api import explain, fraud, openapi, predict, registry
from ops_api.fraud import EPOCH_MS_MAX
from ops_api.jobs import FINAL, TrainingJobs, TrainRequest, TuneRequest
from ops_api.limits import RateLimits
from ops_api.web import (VERSION, ADMIN, AUTH, DEPENDENCIES, HEARTBEAT_KEY, HTTP, JOBS, LIMITS, METRICS, MODEL_SOURCE,
                         REDIS, SETTINGS, STARTED_AT, STREAM, error, field_errors, json_object, query_integer,
                         workers as known_workers)

log = logging.getLogger(__name__)
access = logging.getLogger("fraud.api.access")
HEARTBEAT_SECONDS = 5.0
CHECK_TIMEOUT = 3.0
DEPENDENCY_CHECK_SECONDS = 5.0
PREDICT = "predict"  # the rate-limit class of synchronous decisions (they need ANALYSE)


@dataclass
class StreamView:
    """What the worker tells the API about its stream; absent when the API runs on its own."""

    assigned: Callable[[], list[str]]  # the partitions this worker holds, as topic[partition]
    lag: Callable[[], dict]
    model: Callable[[], Any]
    model_error: Callable[[], str]
    rules: Callable[[], Any]
    challenger: Callable[[], Any]
    caught_up: Callable[[], bool]  # the followed topics and the held partitions' state read to their end
    terminal: Callable[[str, int], dict]  # a terminal's counts and features at an event time
    verdicts: Callable[[], dict]  # what the worker follows: terminal snapshots, verdicts for the feedback join
    quality: Callable[[], dict]  # online quality per model, from matured labels
    score: Callable[[dict], Any] = lambda txn: None  # a what-if verdict (a concurrent Future), or None: card not held
    waiting_for: Callable[[], str] = lambda: ""  # a dependency the worker cannot reach yet, and why
    drift: Callable[[], dict | None] = lambda: None  # the latest drift report (core/drift.py), None before one


REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


@web.middleware
async def request_ids(request: web.Request, handler):
    """Each request gets an id (the caller's `X-Request-ID` when it is a sane one): in every log event
    while it is served, in the `X-Request-ID` response header, and in one access event at its end."""
    given = request.headers.get("X-Request-ID", "")
    request_id = given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
        response.headers["X-Request-ID"] = request_id
        access.info("%s %s %d", request.method, request.path, response.status,
                    extra={"method": request.method, "path": request.path, "status": response.status,
                           "duration_ms": round(1000 * (time.perf_counter() - started), 1)})
        return response
    finally:
        REQUEST_ID.reset(token)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ValidationError as exc:
        message, fields = field_errors(exc)
        return error(422, "invalid request: " + message, fields=fields)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason)
        for name, value in exc.headers.items():  # what the status calls for: Allow on a 405, ...
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        log.warning("redis: %s", exc)
        return error(503, "Redis unavailable: retry later")
    except Exception as exc:  # the API must answer, whatever broke
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, f"{type(exc).__name__}: {without_addresses(str(exc))}")


async def _timed(name: str, check: Awaitable[dict]) -> tuple[str, dict]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check, CHECK_TIMEOUT)
    except Exception as exc:
        reason = without_addresses(str(exc))
        result = {"status": "down", "error": f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return name, result


async def _check_kafka(app: web.Application) -> dict:
    md = await asyncio.get_running_loop().run_in_executor(None, lambda: app[ADMIN].list_topics(timeout=2))
    return {"status": "ok", "brokers": len(md.brokers)}


async def _check_registry(app: web.Application) -> dict:
    url = app[SETTINGS].schema_registry_url.rstrip("/") + "/subjects"
    async with app[HTTP].get(url) as resp:
        resp.raise_for_status()
        return {"status": "ok", "subjects": len(await resp.json())}


async def _check_redis(app: web.Application) -> dict:
    await app[REDIS].ping()
    return {"status": "ok"}


async def _check_mlflow(app: web.Application) -> dict:
    async with app[HTTP].get(app[SETTINGS].mlflow_uri.rstrip("/") + "/health") as resp:
        resp.raise_for_status()
        return {"status": "ok"}


async def _check_dependencies(app: web.Application) -> dict[str, dict]:
    """Kafka, the schema registry, Redis and MLflow, checked at once: name -> status and latency."""
    return dict(await asyncio.gather(
        _timed("kafka", _check_kafka(app)), _timed("schema_registry", _check_registry(app)),
        _timed("redis", _check_redis(app)), _timed("mlflow", _check_mlflow(app))))


def _model_status(stream: StreamView | None) -> dict:
    if stream is None:
        return {"status": "not in this process"}
    model = stream.model()
    if model is None:
        return {"status": "down", "error": without_addresses(stream.model_error()) or "not loaded yet"}
    status = {"status": "ok" if model.source == "registry" else "degraded", "name": model.name,
              "version": model.version, "source": model.source}
    if model.source == "cache":
        status["note"] = "serving the locally cached model: MLflow was unreachable"
    if stream.model_error():
        status["warning"] = without_addresses(stream.model_error())
    challenger = stream.challenger()
    if challenger is not None:
        status["challenger_version"] = challenger.version
    return status


async def health(request: web.Request) -> web.Response:
    """Each dependency, the model, the rules, the stream: ok, degraded or down (503 when no model)."""
    app = request.app
    stream: StreamView | None = app[STREAM]
    components = await _check_dependencies(app)
    components["model"] = _model_status(stream)
    if stream is not None:
        follower = stream.rules()
        components["rules"] = {"status": "ok" if follower.source.caught_up else "loading",
                               "topic": follower.topic, "rules": follower.rules.count,
                               "invalid_records": follower.invalid}
        components["verdicts"] = stream.verdicts()
        lag = stream.lag()
        components["stream"] = {"status": "ok" if stream.assigned() else "waiting for partitions",
                                "assigned_partitions": stream.assigned(), "consumer_lag": lag,
                                "total_lag": sum(lag.values())}
    else:
        _, workers = await _timed("workers", _worker_summary(app))
        components["stream"] = workers
    components["rate_limits"] = app[LIMITS].describe()  # by token and address, or by address without auth
    states = {c.get("status") for c in components.values()} - {"loading"}
    overall = "down" if components["model"].get("status") == "down" else (
        "ok" if states <= {"ok", "not in this process"} else "degraded")
    body = {"status": overall, "components": components, "auth": app[AUTH].describe(), "time": time.time()}
    return web.json_response(body, status=503 if overall == "down" else 200)


async def _worker_summary(app: web.Application) -> dict:
    workers = await known_workers(app)
    return {"status": "ok" if workers else "no live workers", "workers": workers}


async def live(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    """200 once the worker can score (dependencies, model, partitions, state read); 503 with the reasons."""
    stream: StreamView | None = request.app[STREAM]
    if stream is None:
        return web.json_response({"status": "ready", "role": "api"})
    reasons = []
    if stream.waiting_for():
        reasons.append("waiting for " + without_addresses(stream.waiting_for()))
    if stream.model() is None:
        reasons.append("model not loaded: " + without_addresses(stream.model_error() or "loading"))
    if not stream.assigned():
        reasons.append("no partitions assigned")
    if not stream.caught_up():
        reasons.append("rules, terminal snapshots and the state of the partitions held not yet read to their end")
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "assigned_partitions": stream.assigned()})


async def prometheus(request: web.Request) -> web.Response:
    """Prometheus text exposition of every metric."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_json(request: web.Request) -> web.Response:
    """The same metrics as JSON."""
    return web.json_response(request.app[METRICS].summary())


async def terminal(request: web.Request) -> web.Response:
    """GET /api/v1/terminals/{terminal_id}?at=<epoch ms>: what the terminal features see."""
    stream: StreamView | None = request.app[STREAM]
    if stream is None:
        return error(404, "terminal state lives in the workers: ask a worker's API")
    at_ms = query_integer(request, "at", int(time.time() * 1000), 0, EPOCH_MS_MAX)
    return web.json_response(stream.terminal(request.match_info["terminal_id"], at_ms))


class Dependencies:
    """The last check of each dependency (up or down, latency, the last error seen and when),
    refreshed at most every DEPENDENCY_CHECK_SECONDS whoever asks: polling /status costs the
    dependencies one round of checks per interval, however many pollers there are."""

    def __init__(self):
        self.checked_at = 0.0  # monotonic
        self.at = 0.0  # wall clock of the last round
        self.results: dict[str, dict] = {}
        self.last_error: dict[str, dict] = {}
        self._lock = asyncio.Lock()

    async def get(self, app: web.Application) -> dict:
        async with self._lock:
            if time.monotonic() - self.checked_at >= DEPENDENCY_CHECK_SECONDS:
                results = await _check_dependencies(app)
                self.at = time.time()
                for name, result in results.items():
                    result["up"] = result["status"] == "ok"
                    if not result["up"]:
                        self.last_error[name] = {"error": result.get("error", result["status"]), "at": self.at}
                    result["last_error"] = self.last_error.get(name)
                self.results, self.checked_at = results, time.monotonic()
            return {"checked_at": self.at, "dependencies": self.results}


async def status_dependencies(request: web.Request) -> web.Response:
    """Kafka, registry, Redis, MLflow: up or down, latency, last error; checked at most every 5 s."""
    return web.json_response(await request.app[DEPENDENCIES].get(request.app))


async def status(request: web.Request) -> web.Response:
    """The service in detail: what it runs, its model, its stream or its workers, its jobs, and
    whether each dependency was up at the last check."""
    app, s = request.app, request.app[SETTINGS]
    stream: StreamView | None = app[STREAM]
    checked = await app[DEPENDENCIES].get(app)
    if stream is not None:
        lag = stream.lag()
        stream_status = {"assigned_partitions": stream.assigned(), "consumer_lag": lag,
                         "total_lag": sum(lag.values()), "caught_up": stream.caught_up(),
                         "waiting_for": without_addresses(stream.waiting_for()) or None}
    else:
        stream_status = (await _worker_summary(app))
    jobs = app[JOBS]
    try:
        running = await jobs.running()
    except (aioredis.ConnectionError, aioredis.TimeoutError):
        running = None  # Redis cannot say; the dependencies below say it is down
    return web.json_response({
        "service": "fraud-scorer", "version": VERSION, "role": "worker" if stream else "api",
        "worker_id": s.worker_id, "started_at": app[STARTED_AT],
        "uptime_seconds": round(time.time() - app[STARTED_AT], 1), "auth": app[AUTH].describe(),
        "model": _model_status(stream), "stream": stream_status,
        "jobs": {"running": running, "max_concurrent": jobs.max_running},
        "dependencies": {name: result["up"] for name, result in checked["dependencies"].items()},
        "dependencies_checked_at": checked["checked_at"],
    })


async def info(request: web.Request) -> web.Response:
    """Version, topics, model name and live version, thresholds, batch settings."""
    s: Settings = request.app[SETTINGS]
    stream: StreamView | None = request.app[STREAM]
    model = stream.model() if stream else None
    return web.json_response({
        "service": "fraud-scorer", "version": VERSION, "role": "worker" if stream else "api",
        "worker_id": s.worker_id,
        "topics": {"transactions": s.transactions_topic, "verdicts": s.verdicts_topic,
                   "feedback": s.feedback_topic, "dead_letters": s.dlq_topic},
        "model": {"name": s.model_name, "alias": s.model_alias,
                  "live_version": model.version if model else None},
        "thresholds": {"review": s.review_threshold, "decline": s.decline_threshold},
        "rules": {"topic": s.rules_topic, "in_force": stream.rules().rules.count if stream else None},
        "batch": {"max": s.batch_max, "within_seconds": s.batch_within_seconds},
    })


def _confined(request: web.Request, body):
    """The request with its `data_path` resolved inside FRAUD_DATA_DIR, or the error saying why not: 422
    for a NUL byte, 404 when it names no file inside that directory. Nothing outside it is ever opened
    on a request's behalf."""
    if not body.data_path:
        return body
    data_dir = request.app[SETTINGS].data_dir.resolve()
    given = body.data_path
    if "\x00" in given:
        return error(422, "field data_path: contains a NUL byte",
                     fields=[{"field": "data_path", "message": "NUL byte"}])
    path = (data_dir / given).resolve()  # an absolute `given` stays absolute
    if not path.is_relative_to(data_dir):
        return error(404, "field data_path: must name a file inside the data directory (FRAUD_DATA_DIR), "
                          "relative to it", fields=[{"field": "data_path", "message": "outside the data directory"}])
    if not path.is_file():
        return error(404, f"field data_path: no file {given!r} in the data directory",
                     fields=[{"field": "data_path", "message": "no such file"}])
    return body.model_copy(update={"data_path": str(path)})


async def _start_job(request: web.Request, kind: type[TrainRequest] | type[TuneRequest]) -> web.Response:
    """Validate the body as `kind`, confine its data_path, start it within the deployment's job limit
    (FRAUD_MAX_CONCURRENT_JOBS, shared by its replicas): 202, or 429 with Retry-After."""
    body = _confined(request, kind.model_validate(await json_object(request)))
    if isinstance(body, web.Response):
        return body
    jobs = request.app[JOBS]
    job = await jobs.start(body)
    if job is None:
        response = error(429, f"{jobs.max_running} jobs are running, the most this deployment runs at once: "
                              f"retry when one has ended")
        response.headers["Retry-After"] = "30"
        return response
    request.app[METRICS].training_jobs.inc()
    return web.json_response(job, status=202)


async def start_training(request: web.Request) -> web.Response:
    """Start a training job; 202 with the job."""
    return await _start_job(request, TrainRequest)


async def start_tuning(request: web.Request) -> web.Response:
    """Start a hyperparameter tuning job; 202 with the job."""
    return await _start_job(request, TuneRequest)


async def get_job(request: web.Request) -> web.Response:
    """A job's state, progress, result or error."""
    job = await request.app[JOBS].get(request.match_info["job_id"])
    if job is None:
        return error(404, f"no training job {request.match_info['job_id']}")
    return web.json_response(job)


async def cancel_job(request: web.Request) -> web.Response:
    """Stop a queued or running job: 200 with it, cancelled; 409 when it has already ended."""
    job_id = request.match_info["job_id"]
    job = await request.app[JOBS].get(job_id)
    if job is None:
        return error(404, f"no training job {job_id}")
    if job["status"] in FINAL:
        return error(409, f"job {job_id} has already ended: {job['status']}", job=job)
    return web.json_response(await request.app[JOBS].cancel(job_id))


async def list_jobs(request: web.Request) -> web.Response:
    """Recent training and tuning jobs, newest first."""
    limit = query_integer(request, "limit", 50, 1, 500)
    return web.json_response({"jobs": await request.app[JOBS].list(limit)})


def _own_model_source(settings: Settings):
    """A standalone API's model source (models/serving.py), for explain, register and experiments."""
    from models.serving import ModelSource

    return ModelSource(settings.mlflow_uri, settings.model_name, settings.model_alias, settings.model_cache_dir)


def create_api(settings: Settings, metrics: Metrics, stream: StreamView | None = None,
               model_source=None) -> web.Application:
    """The API; AuthNotConfigured when there is no key to check tokens with and auth is not disabled.
    A worker passes its stream and its model source (models/serving.py `ModelSource`); a standalone API
    builds a model source of its own."""
    auth = auth_from(settings)
    permissions: dict[tuple[str, str], str] = {}
    limit_classes: dict[tuple[str, str], str] = {}
    limits = RateLimits(settings.redis_url, {READ: settings.rate_limit_read, ANALYSE: settings.rate_limit_analyse,
                                             TRAIN: settings.rate_limit_train, PREDICT: settings.rate_limit_predict},
                        namespace=settings.app_id)
    app = web.Application(middlewares=[request_ids, json_errors, authorize(auth, permissions, limits, limit_classes)],
                          client_max_size=settings.api_max_body_bytes)
    app[SETTINGS] = settings
    app[AUTH] = auth
    app[LIMITS] = limits
    app[DEPENDENCIES] = Dependencies()
    app[STARTED_AT] = time.time()
    app[METRICS] = metrics
    app[STREAM] = stream

    async def resources(app: web.Application):
        # Blocking: a burst of requests waits (up to 2 s) for a free connection instead of failing.
        app[REDIS] = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=64, timeout=2, decode_responses=True,
            socket_timeout=2, socket_connect_timeout=2))
        app[JOBS] = TrainingJobs(app[REDIS], env=dict(os.environ), max_running=settings.max_concurrent_jobs,
                                 app_id=settings.app_id)
        app[ADMIN] = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT))
        app[MODEL_SOURCE] = model_source if model_source is not None else _own_model_source(settings)
        deliveries = fraud.Deliveries(settings.kafka_bootstrap)
        app[fraud.FEEDBACK] = fraud.FeedbackTopic(settings, deliveries)
        app[predict.PREDICTOR] = predict.Predictor(settings, deliveries)
        app[explain.MODELS] = {}
        heartbeat = asyncio.create_task(_heartbeat(app)) if stream else None
        yield
        if heartbeat:
            heartbeat.cancel()
        app[predict.PREDICTOR].close()
        await asyncio.get_running_loop().run_in_executor(None, deliveries.close)
        await app[JOBS].close()
        await app[HTTP].close()
        await app[REDIS].aclose()

    app.cleanup_ctx.append(resources)
    routes = [
        ("GET", "/health", health, READ),
        ("GET", "/health/live", live, READ),
        ("GET", "/health/ready", ready, READ),
        ("GET", "/metrics/prometheus", prometheus, READ),
        ("GET", "/metrics", metrics_json, READ),
        ("GET", "/info", info, READ),
        ("GET", "/status", status, READ),
        ("GET", "/status/dependencies", status_dependencies, READ),
        ("POST", "/api/v1/training/train", start_training, TRAIN),
        ("POST", "/api/v1/training/hyperparameter-tuning", start_tuning, TRAIN),
        ("GET", "/api/v1/training/jobs", list_jobs, READ),
        ("POST", "/api/v1/models/promote", registry.promote, TRAIN),
        ("POST", "/api/v1/training/models/register", registry.register, TRAIN),
        ("GET", "/api/v1/training/experiments", registry.experiments, READ),
        ("GET", "/api/v1/training/jobs/{job_id}", get_job, READ),
        ("POST", "/api/v1/training/jobs/{job_id}/cancel", cancel_job, TRAIN),
        ("GET", "/api/v1/terminals/{terminal_id}", terminal, READ),
        ("POST", "/api/v1/fraud/predict", predict.predict, ANALYSE, PREDICT),
        ("POST", "/api/v1/fraud/predict/batch", predict.predict_batch, ANALYSE, PREDICT),
        ("POST", "/api/v1/fraud/score", predict.score, ANALYSE, PREDICT),
        ("POST", "/api/v1/fraud/explain", explain.explain, ANALYSE),
        ("POST", "/api/v1/fraud/feedback", fraud.feedback, ANALYSE),
        ("GET", "/api/v1/fraud/metrics", fraud.quality, READ),
        ("GET", "/api/v1/fraud/status", fraud.status, READ),
        ("GET", "/api/v1/fraud/drift", fraud.drift, READ),
        ("GET", "/openapi.json", openapi.openapi_json, READ),
        ("GET", "/docs", openapi.docs, READ),
        ("GET", "/docs/{asset}", openapi.docs_asset, READ),
    ]
    app[openapi.ROUTES] = routes
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    cors = aiohttp_cors.setup(app, defaults={origin: aiohttp_cors.ResourceOptions(
        allow_headers=("Authorization", "Content-Type"), expose_headers=("Retry-After",), max_age=600)
        for origin in origins})
    for method, path, handler, need, *limit_class in routes:
        cors.add(app.router.add_route(method, path, handler))
        permissions[(method, path)] = need
        if limit_class:
            limit_classes[(method, path)] = limit_class[0]
    return app


def advertised_url(settings: Settings) -> str:
    """Where other API replicas reach this one."""
    if settings.api_advertised_url:
        return settings.api_advertised_url.rstrip("/")
    host = settings.api_host if settings.api_host not in ("0.0.0.0", "::", "") else socket.gethostname()
    return f"http://{host}:{settings.api_port}"


async def _heartbeat(app: web.Application) -> None:
    """The worker's status in Redis, for API replicas that run without a stream."""
    settings, stream = app[SETTINGS], app[STREAM]
    while True:
        model = stream.model()
        beat = {"worker_id": settings.worker_id, "pid": os.getpid(), "at": time.time(),
                "api_url": advertised_url(settings), "assigned_partitions": stream.assigned(),
                "total_lag": sum(stream.lag().values()),
                "model_version": model.version if model else None}
        try:
            await app[REDIS].set(HEARTBEAT_KEY.format(settings.worker_id), json.dumps(beat),
                                 ex=int(HEARTBEAT_SECONDS * 3))
        except Exception as exc:  # Redis down: the stream goes on, health says so
            log.warning("heartbeat to redis failed: %s", exc)
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def serve(api: web.Application, host: str, port: int) -> None:
    """Run the API until cancelled."""
    runner = web.AppRunner(api, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("ops API on http://%s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

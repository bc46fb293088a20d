"""The API described: an OpenAPI 3.1 document built from the routes themselves (path, method, the
role each needs, the handler's docstring) and the pydantic models that validate their bodies, served
at GET /openapi.json, and a plain HTML page of it at GET /docs."""

from __future__ import annotations

import functools
import html
import inspect
from pathlib import Path
from typing import get_args

from aiohttp import web
from pydantic import BaseModel

from core.features import TERMINAL_FEATURE_NAMES
from core.settings import Settings
from ops_api import explain, fraud, predict, registry
from ops_api.auth import ROLES
from ops_api.fraud import EPOCH_MS_MAX
from ops_api.jobs import JobStatus, TrainRequest, TuneRequest
from ops_api.web import SETTINGS, VERSION, error
from schemas.codec import load_schema

ROUTES = web.AppKey("routes", list)

# The pydantic model each body is validated with, by route.
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/api/v1/training/train"): TrainRequest,
    ("POST", "/api/v1/training/hyperparameter-tuning"): TuneRequest,
    ("POST", "/api/v1/models/promote"): registry.PromoteRequest,
    ("POST", "/api/v1/training/models/register"): registry.RegisterRequest,
    ("POST", "/api/v1/fraud/predict"): predict.Transaction,
    ("POST", "/api/v1/fraud/predict/batch"): predict.Batch,
    ("POST", "/api/v1/fraud/score"): predict.Transaction,
    ("POST", "/api/v1/fraud/feedback"): fraud.Label,
    ("POST", "/api/v1/fraud/explain"): explain.ExplainRequest,
}
QUERIES: dict[tuple[str, str], list[dict]] = {
    ("GET", "/api/v1/training/jobs"): [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
    ("GET", "/api/v1/training/experiments"): [
        {"name": "runs", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}],
    ("GET", "/api/v1/terminals/{terminal_id}"): [
        {"name": "at", "in": "query", "description": "a transaction's time, epoch ms; now when absent",
         "schema": {"type": "integer", "minimum": 0, "maximum": EPOCH_MS_MAX}}],
}
SUCCESS = {("POST", "/api/v1/training/train"): "202", ("POST", "/api/v1/training/hyperparameter-tuning"): "202",
           ("POST", "/api/v1/fraud/feedback"): "202", ("POST", "/api/v1/training/models/register"): "201"}
# What a route answers beyond ERRORS, and why.
IN_THE_WORKERS = "this API runs without a worker: ask a worker's API"
NO_FILE = "data_path names no file inside the data directory (FRAUD_DATA_DIR)"
MORE_ERRORS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/api/v1/training/train"): {"404": NO_FILE},
    ("POST", "/api/v1/training/hyperparameter-tuning"): {"404": NO_FILE},
    ("GET", "/api/v1/training/jobs/{job_id}"): {"404": "no such job"},
    ("POST", "/api/v1/training/jobs/{job_id}/cancel"): {"404": "no such job", "409": "the job has already ended"},
    ("GET", "/api/v1/terminals/{terminal_id}"): {"404": IN_THE_WORKERS},
    ("POST", "/api/v1/models/promote"): {"404": "no such version", "409": "nothing to promote",
                                         "502": "MLflow refused the request"},
    ("POST", "/api/v1/training/models/register"): {"404": "no such run",
                                                   "409": "the run has not finished, logged no model (or, through the gate, no average_precision), or is registered already",
                                                   "502": "MLflow refused the request"},
    ("GET", "/api/v1/training/experiments"): {"502": "MLflow refused the request"},
    ("POST", "/api/v1/fraud/predict"): {"409": "the transaction id was already sent for another card",
                                        "504": "sent, and will be scored, but no verdict yet: retry the same request"},
    ("POST", "/api/v1/fraud/score"): {"421": "no worker holds the card's partition yet: retry once the group settled"},
    ("POST", "/api/v1/fraud/explain"): {"404": "no verdict for that transaction id",
                                        "409": "scored by another model, or by a version no longer in the registry",
                                        "502": "MLflow refused the request",
                                        "421": "no worker holds the card's partition yet: retry once the group settled"},
    ("POST", "/api/v1/fraud/feedback"): {"502": "the schema registry refused the feedback schema"},
    ("GET", "/api/v1/fraud/metrics"): {"404": IN_THE_WORKERS},
    ("GET", "/api/v1/fraud/status"): {"404": IN_THE_WORKERS},
    ("GET", "/api/v1/fraud/drift"): {"404": IN_THE_WORKERS},
    ("GET", "/docs/{asset}"): {"404": "not one of the page's assets"},
}
# Routes that answer something other than a JSON object, by media type.
MEDIA = {("GET", "/docs"): "text/html", ("GET", "/metrics/prometheus"): "text/plain",
         ("GET", "/docs/{asset}"): "text/javascript"}
# Routes that may also answer in another media type, on the caller's Accept.
MORE_MEDIA = {("POST", "/api/v1/fraud/explain"): "image/png", ("GET", "/docs/{asset}"): "text/css"}
# The schema of a route's success body, by its name in `_answers()`; a route not here answers "a JSON object".
ANSWERED = {("POST", "/api/v1/fraud/predict"): "Verdict", ("POST", "/api/v1/fraud/score"): "WhatIfVerdict",
            ("POST", "/api/v1/fraud/predict/batch"): "BatchAnswers", ("POST", "/api/v1/fraud/explain"): "Explanation",
            ("POST", "/api/v1/fraud/feedback"): "LabelSent",
            ("POST", "/api/v1/training/train"): "Job", ("POST", "/api/v1/training/hyperparameter-tuning"): "Job",
            ("GET", "/api/v1/training/jobs/{job_id}"): "Job", ("POST", "/api/v1/training/jobs/{job_id}/cancel"): "Job",
            ("GET", "/api/v1/training/jobs"): "Jobs", ("POST", "/api/v1/models/promote"): "Promoted",
            ("POST", "/api/v1/training/models/register"): "Registered", ("GET", "/health/live"): "Alive",
            ("GET", "/health/ready"): "Ready", ("GET", "/health"): "Health", ("GET", "/status"): "Status",
            ("GET", "/status/dependencies"): "CheckedDependencies", ("GET", "/info"): "Info",
            ("GET", "/metrics"): "Metrics", ("GET", "/api/v1/terminals/{terminal_id}"): "Terminal",
            ("GET", "/api/v1/fraud/metrics"): "OnlineQuality", ("GET", "/api/v1/fraud/status"): "ScoringStatus",
            ("GET", "/api/v1/fraud/drift"): "Drift", ("GET", "/api/v1/training/experiments"): "Experiments"}
# Routes whose 503 carries their usual body (what is down, or why not ready), not an Error.
# (why, the body's schema).
UNHEALTHY = {("GET", "/health"): ("no model is loaded: the model component says why",
                               {"$ref": "#/components/schemas/Health"}),
             ("GET", "/health/ready"): ("not ready: the body says why", {"$ref": "#/components/schemas/NotReady"})}
ERRORS = {"400": "the body does not parse, or a query parameter is out of range",
          "401": "no valid bearer token", "403": "the token's role may not do this",
          "413": "the body is over the size limit", "415": "the body is not application/json",
          "422": "a field is invalid: `fields` names it", "429": "over a rate limit: retry after `Retry-After`",
          "503": "a dependency is unavailable: retry"}
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                   "fields": {"type": "array", "items": {"type": "object", "properties": {
                       "field": {"type": "string"}, "message": {"type": "string"}}}}}}}}


def avro_to_json_schema(avro) -> dict:
    """The JSON Schema of a value of this Avro type as the API writes it in JSON (a timestamp-millis
    as its epoch milliseconds, a map as an object): every field of a record is present."""
    if isinstance(avro, list):  # a union
        return {"anyOf": [avro_to_json_schema(branch) for branch in avro]}
    if isinstance(avro, str):
        return {"null": {"type": "null"}, "string": {"type": "string"}, "boolean": {"type": "boolean"},
                "int": {"type": "integer"}, "long": {"type": "integer"}, "float": {"type": "number"},
                "double": {"type": "number"}}[avro]
    kind = avro["type"]
    if kind == "record":
        return {"type": "object", "description": avro.get("doc", avro["name"]),
                "required": [f["name"] for f in avro["fields"]],
                "properties": {f["name"]: {**avro_to_json_schema(f["type"]), **({"description": f["doc"]} if "doc" in f else {})}
                               for f in avro["fields"]}}
    if kind == "enum":
        return {"type": "string", "enum": list(avro["symbols"])}
    if kind == "array":
        return {"type": "array", "items": avro_to_json_schema(avro["items"])}
    if kind == "map":
        return {"type": "object", "additionalProperties": avro_to_json_schema(avro["values"])}
    return avro_to_json_schema(kind)  # a primitive with a logical type


# JSON schema pieces the answers share.
_ref = "#/components/schemas/{}".format
_number, _integer, _string, _boolean = {"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
_epoch_seconds = {"type": "number", "description": "epoch seconds"}
_partitions = {"type": "array", "items": _string, "description": "the partitions held, as topic[partition]"}
_lag = {"type": "object", "description": "records behind the end, by transactions partition",
        "additionalProperties": {"type": "integer", "minimum": 0}}
# A worker's stream (partitions, lag), as /health and /status show it.
_held = {"assigned_partitions": _partitions, "consumer_lag": _lag, "total_lag": {"type": "integer", "minimum": 0}}
_workers = {"type": "array", "items": {"$ref": _ref("Heartbeat")}, "description": "the live workers' heartbeats"}
_figure = {"type": ["number", "null"], "description": "null with nothing to count"}


@functools.cache
def _answers() -> dict[str, dict]:
    """The success bodies of ANSWERED's routes (the verdict's from its Avro schema), NotReady, and the parts
    they share; built once."""
    return {**_scoring_answers(), **_training_answers(), **_health_answers(), **_status_answers(),
            **_quality_answers()}


def _scoring_answers() -> dict[str, dict]:
    """The answers of predict, score, batch, explain and feedback."""
    contribution = {"type": "object", "required": ["feature", "value", "contribution"], "properties": {
        "feature": {"type": "string"}, "value": {"type": ["number", "null"], "description": "null when missing"},
        "contribution": {"type": "number", "description": "log-odds"}}}
    return {
        "Verdict": avro_to_json_schema(load_schema("verdict")),
        "WhatIfVerdict": {"allOf": [{"$ref": _ref("Verdict")}, {"type": "object", "required": ["what_if"],
                                                                 "properties": {"what_if": {"const": True}}}]},
        "BatchAnswers": {"type": "object", "required": ["results"], "properties": {"results": {
            "type": "array", "description": "one answer per transaction, in order", "items": {"anyOf": [
                {"type": "object", "required": ["status", "verdict", "replayed"], "properties": {
                    "status": {"const": 200}, "verdict": {"$ref": _ref("Verdict")},
                    "replayed": {"type": "boolean", "description": "the verdict of an earlier request"}}},
                {"type": "object", "required": ["status", "error"], "properties": {
                    "status": {"type": "integer"}, "error": ERROR_SCHEMA["properties"]["error"]}}]}}}},
        "Explanation": {"type": "object", "required": [
            "transaction_id", "score", "decision", "model_name", "model_version", "method", "base_value",
            "contributions", "score_from_contributions"], "properties": {
            "transaction_id": {"type": "string"}, "score": {"type": "number"},
            "decision": {"type": "string", "enum": ["APPROVE", "REVIEW", "DECLINE"]},
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "method": {"type": "string"},
            "base_value": {"type": "number", "description": "log-odds before any feature"},
            "contributions": {"type": "array", "items": contribution, "description": "largest first"},
            "calibration": {"type": ["string", "null"]},
            "score_from_contributions": {"type": "number", "description": "the score the contributions add up to"},
            "what_if": {"const": True}}},
        "LabelSent": {"type": "object", "required": ["transaction_id", "label", "topic", "partition", "offset"],
                      "properties": {"transaction_id": {"type": "string"}, "label": {"enum": ["FRAUD", "LEGIT"]},
                                     "topic": {"type": "string"}, "partition": {"type": "integer"},
                                     "offset": {"type": "integer"}}},
    }


def _training_answers() -> dict[str, dict]:
    """The answers of training jobs, the registry and the experiments."""
    return {
        "Job": {"type": "object", "required": ["job_id", "kind", "status", "progress", "message", "request",
                                               "created_at", "updated_at", "result", "error"], "properties": {
            "job_id": {"type": "string"}, "kind": {"enum": ["training", "tuning"]},
            "status": {"enum": list(get_args(JobStatus))},
            "progress": {"type": "number", "minimum": 0, "maximum": 1}, "message": {"type": ["string", "null"]},
            "request": {"type": "object", "description": "the request the job was started with"},
            "created_at": {"type": "number", "description": "epoch seconds"}, "updated_at": {"type": "number"},
            "result": {"type": ["object", "null"], "description": "once succeeded: the version, or the best parameters"},
            "error": {"type": ["string", "null"], "description": "once failed: why"}}},
        "Jobs": {"type": "object", "required": ["jobs"], "properties": {
            "jobs": {"type": "array", "items": {"$ref": _ref("Job")}, "description": "newest first"}}},
        "Promoted": {"type": "object", "required": ["model", "alias", "version", "previous_version"], "properties": {
            "model": {"type": "string"}, "alias": {"type": "string"}, "version": {"type": "string"},
            "previous_version": {"type": ["string", "null"]}}},
        "Registered": {"type": "object", "required": ["model", "version", "run_id", "promoted", "alias",
                                                      "champion_before", "reason"], "properties": {
            "model": {"type": "string"}, "version": {"type": "string"}, "run_id": {"type": "string"},
            "promoted": {"type": "boolean"}, "alias": {"type": ["string", "null"]},
            "champion_before": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]}}},
        "Experiments": {"type": "object", "required": ["experiments"], "properties": {"experiments": {
            "type": "array", "description": "newest first", "items": {
                "type": "object", "required": ["experiment_id", "name", "created_at", "runs"], "properties": {
                    "experiment_id": _string, "name": _string,
                    "created_at": {"type": ["integer", "null"], "description": "epoch ms; null when MLflow has none"},
                    "runs": {"type": "array", "items": {"$ref": _ref("Run")}, "description": "newest first"}}}}}},
        "Run": {"type": "object", "required": ["run_id", "run_name", "status", "started_at", "ended_at", "metrics",
                                               "params", "champion_version"], "properties": {
            "run_id": _string, "run_name": {"type": ["string", "null"]},
            "status": {"type": "string", "description": "RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"},
            "started_at": {"type": "integer", "description": "epoch ms"},
            "ended_at": {"type": ["integer", "null"], "description": "epoch ms; null while it runs"},
            "metrics": {"type": "object", "additionalProperties": _number, "description": "each one's latest value"},
            "params": {"type": "object", "additionalProperties": _string},
            "champion_version": {"type": ["string", "null"],
                                 "description": "the champion its training was compared with"}}},
    }


def _health_answers() -> dict[str, dict]:
    """The answers of the health routes and what they are made of."""
    return {
        "Alive": {"type": "object", "required": ["status"], "properties": {"status": {"const": "alive"}}},
        "Ready": {"type": "object", "required": ["status"], "properties": {
            "status": {"const": "ready"}, "role": {"const": "api", "description": "an API without a stream"},
            "assigned_partitions": {"type": "array", "items": {"type": "string"}}}},
        "NotReady": {"type": "object", "required": ["status", "reasons"], "properties": {
            "status": {"const": "not ready"}, "reasons": {"type": "array", "items": {"type": "string"}}}},
        # GET /health (200, and 503 when no model is loaded): every component has a status.
        "Health": {"type": "object", "required": ["status", "components", "auth", "time"], "properties": {
            "status": {"enum": ["ok", "degraded", "down"], "description": "down (503) when no model is loaded"},
            "components": {"type": "object", "required": ["kafka", "schema_registry", "redis", "mlflow", "model",
                                                          "stream"], "properties": {
                "kafka": {"$ref": _ref("DependencyCheck")}, "schema_registry": {"$ref": _ref("DependencyCheck")},
                "redis": {"$ref": _ref("DependencyCheck")}, "mlflow": {"$ref": _ref("DependencyCheck")},
                "model": {"$ref": _ref("ModelStatus")},
                "rules": {"type": "object", "description": "a worker's rules",
                          "required": ["status", "topic", "rules", "invalid_records"], "properties": {
                              "status": {"enum": ["ok", "loading"]}, "topic": _string,
                              "rules": {"type": "integer", "description": "in force"},
                              "invalid_records": {"type": "integer", "description": "rule records ignored"}}},
                "verdicts": {"type": "object", "description": "what a worker follows",
                             "required": ["status", "terminals", "verdicts_for_feedback", "undecodable_records",
                                          "preparing"], "properties": {
                                 "status": {"enum": ["ok", "loading"]},
                                 "terminals": {"type": "integer", "description": "terminal snapshots held"},
                                 "verdicts_for_feedback": {"type": "integer",
                                                           "description": "verdicts held for the feedback join"},
                                 "undecodable_records": {"type": "integer",
                                                         "description": "terminal snapshots that did not decode"},
                                 "preparing": {"type": "array", "items": _string,
                                               "description": "partitions whose state is being read"}}},
                "stream": {"anyOf": [
                    {"type": "object", "description": "a worker's partitions and lag",
                     "required": ["status", *_held], "properties": {
                         "status": {"enum": ["ok", "waiting for partitions"]}, **_held}},
                    {"type": "object", "description": "an API without a stream: the workers, from Redis",
                     "required": ["status", "latency_ms"], "properties": {
                         "status": {"enum": ["ok", "no live workers", "down"]}, "workers": _workers,
                         "error": {"type": "string", "description": "when down: why"}, "latency_ms": _number}}]},
                "rate_limits": {"type": "object", "description": "with auth enabled",
                                "required": ["status", "counted", "limits"], "properties": {
                                    "status": {"enum": ["ok", "degraded"]}, "counted": _string,
                                    "reason": {"type": "string", "description": "when degraded: why"},
                                    "limits": {"type": "object", "additionalProperties": _string,
                                               "description": "by class of work, such as 600 per 1 minute"}}}}},
            "auth": {"$ref": _ref("Auth")}, "time": _epoch_seconds}},
        "DependencyCheck": {"type": "object", "required": ["status", "latency_ms"], "properties": {
            "status": {"enum": ["ok", "down"]}, "error": {"type": "string", "description": "when down: why"},
            "latency_ms": _number, "brokers": {"type": "integer", "description": "Kafka's, when ok"},
            "subjects": {"type": "integer", "description": "the schema registry's, when ok"}}},
        "ModelStatus": {"type": "object", "required": ["status"], "properties": {
            "status": {"enum": ["ok", "degraded", "down", "not in this process"],
                       "description": "degraded: served from the local cache; not in this process: an API "
                                      "without a stream"},
            "name": _string, "version": _string, "source": {"enum": ["registry", "cache"]},
            "error": {"type": "string", "description": "when down: why"}, "note": _string, "warning": _string,
            "challenger_version": {"type": "string", "description": "when a challenger is scored in shadow"}}},
        "Auth": {"type": "object", "required": ["mode"], "properties": {
            "mode": {"enum": ["jwt", "disabled"]}, "algorithm": _string,
            "open_paths": {"type": "array", "items": _string}, "warning": _string}},
        "Heartbeat": {"type": "object", "required": ["worker_id", "pid", "at", "api_url", "assigned_partitions",
                                                     "total_lag", "model_version"], "properties": {
            "worker_id": _string, "pid": _integer, "at": _epoch_seconds, "api_url": _string,
            "assigned_partitions": _partitions, "total_lag": _integer, "model_version": {"type": ["string", "null"]}}},
    }


def _status_answers() -> dict[str, dict]:
    """The answers of status, dependencies, service info and metrics."""
    return {
        # GET /status: the worker's stream, or (an API without one) the workers' heartbeats.
        "Status": {"type": "object", "required": ["service", "version", "role", "worker_id", "started_at",
                                                  "uptime_seconds", "auth", "model", "stream", "jobs",
                                                  "dependencies", "dependencies_checked_at"], "properties": {
            "service": _string, "version": _string, "role": {"enum": ["worker", "api"]}, "worker_id": _string,
            "started_at": _epoch_seconds, "uptime_seconds": _number, "auth": {"$ref": _ref("Auth")},
            "model": {"$ref": _ref("ModelStatus")},
            "stream": {"anyOf": [
                {"type": "object", "description": "a worker's partitions and lag",
                 "required": [*_held, "caught_up", "waiting_for"], "properties": {
                     **_held, "caught_up": {"type": "boolean", "description": "followed topics and state read"},
                     "waiting_for": {"type": ["string", "null"], "description": "a dependency not reachable yet"}}},
                {"type": "object", "description": "an API without a stream: the workers, from Redis",
                 "required": ["status", "workers"], "properties": {
                     "status": {"enum": ["ok", "no live workers"]}, "workers": _workers}}]},
            "jobs": {"type": "object", "required": ["running", "max_concurrent"],
                     "description": "the deployment's: its replicas share the limit", "properties": {
                         "running": {"type": ["integer", "null"], "description": "null when Redis cannot say"},
                         "max_concurrent": _integer}},
            "dependencies": {"type": "object", "additionalProperties": _boolean,
                             "description": "up at the last check, by name"},
            "dependencies_checked_at": {"type": "number", "description": "epoch seconds; 0 before a check"}}},
        "CheckedDependencies": {"type": "object", "required": ["checked_at", "dependencies"], "properties": {
            "checked_at": {"type": "number", "description": "epoch seconds; 0 before a check"},
            "dependencies": {"type": "object", "description": "by name: kafka, schema_registry, redis, mlflow",
                             "additionalProperties": {"allOf": [{"$ref": _ref("DependencyCheck")}, {
                                 "type": "object", "required": ["up", "last_error"], "properties": {
                                     "up": _boolean, "last_error": {
                                         "type": ["object", "null"], "description": "the last failed check",
                                         "required": ["error", "at"],
                                         "properties": {"error": _string, "at": _epoch_seconds}}}}]}}}},
        "Info": {"type": "object", "required": ["service", "version", "role", "worker_id", "topics", "model",
                                                "thresholds", "rules", "batch"], "properties": {
            "service": _string, "version": _string, "role": {"enum": ["worker", "api"]}, "worker_id": _string,
            "topics": {"type": "object", "required": ["transactions", "verdicts", "feedback", "dead_letters"],
                       "additionalProperties": _string},
            "model": {"type": "object", "required": ["name", "alias", "live_version"], "properties": {
                "name": _string, "alias": _string,
                "live_version": {"type": ["string", "null"], "description": "null without a stream or a model"}}},
            "thresholds": {"$ref": _ref("Thresholds")},
            "rules": {"type": "object", "required": ["topic", "in_force"], "properties": {
                "topic": _string, "in_force": {"type": ["integer", "null"], "description": "null without a stream"}}},
            "batch": {"type": "object", "required": ["max", "within_seconds"],
                      "properties": {"max": _integer, "within_seconds": _number}}}},
        "Thresholds": {"type": "object", "required": ["review", "decline"], "properties": {
            "review": _number, "decline": _number}},
        "Metrics": {"type": "object", "additionalProperties": _number,
                    "description": "each sample by name{label=value,...}: counters' _total, histograms' _count "
                                   "and _sum, gauges"},
    }


def _quality_answers() -> dict[str, dict]:
    """The answers of terminals, online quality, the scoring status and drift."""
    return {
        "Terminal": {"type": "object", "required": ["terminal_id", "at", "known", "last_day", "features"],
                     "properties": {
            "terminal_id": _string, "at": {"type": "integer", "description": "epoch ms"},
            "known": {"type": "boolean", "description": "whether this worker holds the terminal's counts"},
            "last_day": {"type": ["integer", "null"], "description": "UTC day (epoch ms // 1 day) of the latest"},
            "features": {"type": "object", "required": list(TERMINAL_FEATURE_NAMES),
                         "properties": {name: _number for name in TERMINAL_FEATURE_NAMES},
                         "description": "all 0 for a terminal not known"}}},
        "OnlineQuality": {"type": "object", "required": ["champion", "challenger"],
                          "additionalProperties": {"$ref": _ref("ModelQuality")},
                          "description": "by model, over the quality window of matured labels"},
        "ModelQuality": {"type": "object", "required": ["labels", "frauds", "average_precision", "review", "decline"],
                         "properties": {
            "labels": _integer, "frauds": _integer, "average_precision": _figure,
            **{name: {"type": "object", "required": ["threshold", "precision", "recall"], "properties": {
                "threshold": _number, "precision": _figure, "recall": _figure}} for name in ("review", "decline")}}},
        "ScoringStatus": {"type": "object", "required": ["model", "thresholds", "rules", "stream"], "properties": {
            "model": {"type": "object", "required": ["name", "champion", "challenger", "error"], "properties": {
                "name": _string,
                "champion": {"anyOf": [{"$ref": _ref("ServedVersion")}, {"type": "null"}]},
                "challenger": {"anyOf": [{"$ref": _ref("ServedVersion")}, {"type": "null"}]},
                "error": {"type": ["string", "null"], "description": "the last failure to load or follow one"}}},
            "thresholds": {"$ref": _ref("Thresholds")},
            "rules": {"type": "object", "required": ["topic", "in_force", "caught_up", "invalid_records"],
                      "properties": {"topic": _string, "in_force": _integer, "caught_up": _boolean,
                                     "invalid_records": _integer}},
            "stream": {"type": "object", "required": [*_held, "caught_up"],
                       "properties": {**_held, "caught_up": _boolean}}}},
        "ServedVersion": {"type": "object", "required": ["alias", "version", "run_id", "source"], "properties": {
            "alias": _string, "version": _string, "run_id": {"type": ["string", "null"]},
            "source": {"enum": ["registry", "cache"]}}},
        "Drift": {"type": "object", "required": ["model_version", "window_seconds", "transactions", "inputs",
                                                 "model_name", "alert_psi"], "properties": {
            "model_version": _string, "window_seconds": _number,
            "transactions": {"type": "integer", "description": "scored in the window"},
            "inputs": {"type": "object", "description": "by model input, and the score",
                       "additionalProperties": {"type": "object", "required": [
                           "psi", "missing_share", "reference_missing_share"], "properties": {
                           "psi": _figure, "missing_share": _figure, "reference_missing_share": _number}}},
            "model_name": _string,
            "alert_psi": {"type": "number", "description": "the alert's threshold, over 15 minutes"}}},
    }


def document(routes: list[tuple], settings: Settings, version: str) -> dict:
    """The OpenAPI 3.1 document of `routes` ((method, path, handler, permission, ...))."""
    schemas: dict[str, dict] = {"Error": ERROR_SCHEMA, **_answers()}
    paths: dict[str, dict] = {}
    open_paths = {p for p in settings.auth_open_paths.split(",") if p}
    for method, path, handler, need, *_ in routes:
        summary, _, description = (inspect.getdoc(handler) or "").partition("\n")
        roles = sorted(role for role, can in ROLES.items() if need in can)
        operation: dict = {"operationId": _operation_id(method, path), "summary": summary.strip() or f"{method} {path}",
                           "tags": [_tag(path)], "responses": {}}
        if description.strip():
            operation["description"] = description.strip()
        if path in open_paths or settings.auth == "disabled":
            operation["security"] = []
        else:
            operation["x-roles"] = roles
            operation["description"] = (operation.get("description", "") + f"\n\nRoles: {', '.join(roles)}.").strip()
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _path_parameters(path)] + QUERIES.get((method, path), [])
        if parameters:
            operation["parameters"] = parameters
        model = BODIES.get((method, path))
        if model is not None:
            operation["requestBody"] = {"required": _body_required(model), "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{_add_schema(model, schemas)}"}}}}
        media = MEDIA.get((method, path))
        answer = ANSWERED.get((method, path))
        content = ({media: {"schema": {"type": "string"}}} if media else {"application/json": {"schema": (
            {"$ref": f"#/components/schemas/{answer}"} if answer else {"type": "object"})}})
        if (method, path) in MORE_MEDIA:
            content[MORE_MEDIA[(method, path)]] = {"schema": {"type": "string", "format": "binary"}}
        operation["responses"][SUCCESS.get((method, path), "200")] = {"description": "done", "content": content}
        for status, why in {**ERRORS, **MORE_ERRORS.get((method, path), {})}.items():
            if status in ("413", "415", "422") and model is None:
                continue
            if status in ("401", "403", "429") and "security" in operation:
                continue
            operation["responses"][status] = {"description": why, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
        if (method, path) in UNHEALTHY:
            why, body = UNHEALTHY[(method, path)]
            operation["responses"]["503"] = {"description": why, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "fraud-scorer", "version": version,
                 "description": "Real-time fraud scoring on Kafka: synchronous decisions, labels, models, "
                                "training and the service's health."},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace("-", "_").replace(".", "_") for p in path.split("/") if p]
    return "_".join([method.lower(), *words])


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    return parts[2] if len(parts) > 2 and parts[0] == "api" else parts[0]


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _body_required(model: type[BaseModel]) -> bool:
    """A body with no field required may be left out (it reads as {}), unless it must hold one of several."""
    return any(f.is_required() for f in model.model_fields.values()) or "oneOf" in model.model_json_schema()


def _add_schema(model: type[BaseModel], schemas: dict) -> str:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = schema
    return model.__name__


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(document(request.app[ROUTES], request.app[SETTINGS], VERSION))


# The interactive page is Swagger UI (5.x, which reads OpenAPI 3.1), its script and style served from
# the swagger-ui-py package; without script the page still lists every endpoint.
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


@functools.cache
def _asset(name: str) -> bytes:
    import swagger_ui

    return (Path(swagger_ui.__file__).parent / "static" / name).read_bytes()


async def docs_asset(request: web.Request) -> web.Response:
    """The docs page's script or style."""
    name = request.match_info["asset"]
    if name not in DOCS_ASSETS:
        return error(404, f"no asset {name!r}: the docs page uses {', '.join(DOCS_ASSETS)}")
    return web.Response(body=_asset(name), content_type=DOCS_ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})


async def docs(request: web.Request) -> web.Response:
    """This API's endpoints as an interactive page (Swagger UI: try a request with your token), and as a
    table: what each does, who may call it, what its body holds, what it may answer."""
    spec = document(request.app[ROUTES], request.app[SETTINGS], VERSION)
    rows = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            model = body.get("$ref", "").rsplit("/", 1)[-1]
            fields = ", ".join(spec["components"]["schemas"].get(model, {}).get("properties", {})) if model else ""
            rows.append(f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td>"
                        f"<td>{html.escape(', '.join(op.get('x-roles', ['open'])))}</td>"
                        f"<td>{html.escape(fields)}</td>"
                        f"<td>{html.escape(', '.join(op['responses']))}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>fraud-scorer API</title>"
            f"<link rel='stylesheet' href='/docs/swagger-ui.css'>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;"
            f"text-align:left;vertical-align:top}}</style></head><body><h1>fraud-scorer API {html.escape(VERSION)}</h1>"
            f"<p>The machine-readable description: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1). "
            f"Send <code>Authorization: Bearer &lt;JWT&gt;</code> (<code>fraud token --role R</code>; "
            f"<em>Authorize</em> below).</p><div id='swagger-ui'></div>"
            f"<script src='/docs/swagger-ui-bundle.js'></script>"
            f"<script>if (window.SwaggerUIBundle) {{ SwaggerUIBundle({{url: '/openapi.json', dom_id: '#swagger-ui', "
            f"persistAuthorization: true}}); document.getElementById('endpoints').open = false; }}</script>"
            f"<details id='endpoints' open><summary>Every endpoint</summary><table><tr><th>endpoint</th>"
            f"<th>what</th><th>roles</th><th>body fields</th><th>answers</th></tr>{''.join(rows)}</table></details>"
            f"</body></html>")
    return web.Response(text=page, content_type="text/html")

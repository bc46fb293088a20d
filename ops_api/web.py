"""What every handler of the API uses: the application's keys, the error shape, the JSON body reader."""

from __future__ import annotations

import json

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from core.metrics import Metrics
from core.settings import Settings
from ops_api.auth import Auth
from ops_api.jobs import TrainingJobs
from ops_api.limits import RateLimits

VERSION = "0.1.0"
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
REDIS = web.AppKey("redis", aioredis.Redis)
JOBS = web.AppKey("jobs", TrainingJobs)
STREAM = web.AppKey("stream", object)
ADMIN = web.AppKey("admin", AdminClient)
HTTP = web.AppKey("http", aiohttp.ClientSession)
MODEL_SOURCE = web.AppKey("model_source", object)
DEPENDENCIES = web.AppKey("dependencies", object)
STARTED_AT = web.AppKey("started_at", float)
AUTH = web.AppKey("auth", Auth)
LIMITS = web.AppKey("limits", RateLimits)
HEARTBEAT_KEY = "fraud:workers:{}"  # a worker's status in Redis (ops_api/app.py `_heartbeat`), by worker id


async def workers(app: web.Application) -> list[dict]:
    """Every worker's last heartbeat (assigned partitions, API address, lag, model version)."""
    keys = [k async for k in app[REDIS].scan_iter(match=HEARTBEAT_KEY.format("*"), count=100)]
    raws = await app[REDIS].mget(keys) if keys else []
    return [json.loads(r) for r in raws if r]


def error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message, **extra}}, status=status)


def field_errors(exc: ValidationError) -> tuple[str, list[dict]]:
    """A pydantic refusal as one message and a list of {field, message}, each field its dotted path (a
    part longer than 64 characters, an over-long key, cut to its first 32 and an ellipsis)."""
    fields = [{"field": ".".join(_part(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields), fields


def _part(part) -> str:
    text = str(part)
    return text if len(text) <= 64 else text[:32] + "…"


def query_integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter `name` as an integer from `low` to `high` (`default` when absent); 400 otherwise,
    whatever its length."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise web.HTTPBadRequest(reason=f"query parameter {name}: an integer from {low} to {high}")
    return int(raw)


async def json_object(request: web.Request) -> dict:
    """The body as a JSON object: 415 unless it is sent as application/json, 413 past the size limit,
    400 when it does not parse (numbers of more digits than Python reads, nesting past its stack)."""
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            reason=f"the body must be sent as application/json, not {request.content_type or 'untyped'}")
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(
            max_size=request.app[SETTINGS].api_max_body_bytes, actual_size=request.content_length or 0,
            reason=f"the body is over {request.app[SETTINGS].api_max_body_bytes} bytes") from None
    except RecursionError:
        raise web.HTTPBadRequest(reason="body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints past 4,300 digits
        raise web.HTTPBadRequest(reason=f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body

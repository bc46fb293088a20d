"""The model endpoints: experiments and their runs, registering a run's model, promoting a version.
MLflow calls run in the default executor; MLflow unreachable is a 503 that names no address."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from core.settings import Settings
from models.registry import RegistryRefused, experiments as list_experiments, register_run
from ops_api.web import MODEL_SOURCE, SETTINGS, error, json_object, query_integer

log = logging.getLogger(__name__)


def mlflow_failed(exc: Exception) -> web.Response:
    """The answer for an MLflow error the request could not avoid; details go to the log only."""
    log.warning("mlflow: %s", exc)
    # "API request to ...": MLflow's wording when the server cannot be reached.
    if "API request to" in str(exc) or isinstance(exc, (ConnectionError, TimeoutError)):
        return error(503, "MLflow unavailable: retry later")
    return error(502, f"MLflow refused the request ({getattr(exc, 'error_code', type(exc).__name__)})")


async def _call(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))


async def experiments(request: web.Request) -> web.Response:
    """GET /api/v1/training/experiments?runs=N: MLflow experiments, newest first, each with its N
    (default 10, at most 100) most recent runs and their metrics and parameters."""
    runs = query_integer(request, "runs", 10, 1, 100)
    try:
        found = await _call(list_experiments, request.app[MODEL_SOURCE].client, runs)
    except Exception as exc:  # noqa: BLE001 - every MLflow failure is answered, none crashes the API
        return mlflow_failed(exc)
    return web.json_response({"experiments": found})


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    run_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    through_gate: bool = Field(default=False, description="promote it if it passes the champion gate")


async def register(request: web.Request) -> web.Response:
    """POST /api/v1/training/models/register: a finished run's model as a new version; 201."""
    body = RegisterRequest.model_validate(await json_object(request))
    s: Settings = request.app[SETTINGS]
    try:
        done = await _call(register_run, request.app[MODEL_SOURCE].client, s.model_name, s.model_alias,
                           body.run_id, body.through_gate)
    except RegistryRefused as exc:
        return error(exc.status, str(exc), **({"field": exc.field} if exc.field else {}))
    except Exception as exc:  # noqa: BLE001
        return mlflow_failed(exc)
    return web.json_response({"model": s.model_name, "version": done.version, "run_id": body.run_id,
                              "promoted": done.promoted, "alias": s.model_alias if done.promoted else None,
                              "champion_before": done.champion_before, "reason": done.reason}, status=201)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A version number as a string or a number, as MLflow and its users write it.
    version: Annotated[str | None, WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": "^[0-9]{1,9}$"}, {"type": "integer", "minimum": 0, "maximum": 999_999_999},
        {"type": "null"}]})] = Field(default=None, description="a registered version; the challenger's when absent",
                                     examples=["3"])

    @field_validator("version", mode="before")
    @classmethod
    def _a_version_number(cls, value):
        if value is None:
            return None
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        if isinstance(value, bool) or not (text.isascii() and text.isdecimal()) or len(text) > 9:
            raise ValueError('a model version number, such as "3"')
        return text


async def promote(request: web.Request) -> web.Response:
    """POST /api/v1/models/promote: point the serving alias at a version, the challenger's by default,
    or `version`."""
    from mlflow.exceptions import MlflowException

    settings: Settings = request.app[SETTINGS]
    version = PromoteRequest.model_validate(await json_object(request)).version
    source = request.app[MODEL_SOURCE]
    try:
        if version is None:
            found = await _call(source.optional_alias_version, settings.challenger_alias)
            if found is None:
                return error(409, f"nothing to promote: {settings.model_name} has no "
                                  f"@{settings.challenger_alias}; give field version")
            version = found[0]
        previous = await _call(source.promote, str(version), settings.challenger_alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return error(404, f"field version: {settings.model_name} has no version {version}")
        return mlflow_failed(exc)
    return web.json_response({"model": settings.model_name, "alias": settings.model_alias,
                              "version": str(version), "previous_version": previous})

"""POST /api/v1/fraud/explain: why a scored transaction got its score. Its verdict (kept by predict in
Redis, or found on the verdict partition its id hashes to) holds the feature values scored and the
model version; that version's exact TreeSHAP contributions are computed from them (models/explain.py).
A transaction body instead is explained as it would be scored now: its what-if verdict (predict.py
`what_if`, from the card's state in the worker holding it) gives the values. JSON by default; a
waterfall plot with `Accept: image/png`."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, model_validator

from core.logs import TRANSACTION_ID
from core.settings import Settings
from models.explain import explanation, waterfall_png
from ops_api.fields import Integer, absent_or
from ops_api.predict import CLAIM_KEY, PREDICTOR, Transaction, find_verdict_since, what_if
from ops_api.registry import mlflow_failed
from ops_api.web import MODEL_SOURCE, REDIS, SETTINGS, error, json_object
from streams.topics import partition_of

LOOK_BACK_MS = 86_400_000  # how far back the verdict is looked for, unless `scored_after` says

MODELS = web.AppKey("explain_models", dict)  # version -> LoadedModel, loaded once each


class ExplainRequest(BaseModel):
    """Either a scored transaction's id, or a transaction to explain as it would be scored now."""

    # Exactly one of the two is given (absent, not null: a field sent as null is refused).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "oneOf": [{"required": ["transaction_id"]}, {"required": ["transaction"]}]})

    transaction_id: str = absent_or(min_length=1, max_length=128)
    scored_after: Integer = absent_or(ge=0, le=253_402_300_799_999,
                                      description="epoch ms the verdict was written after; a day ago when absent")
    transaction: Transaction = absent_or(description="explained from the card's state now")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.transaction_id is None) == (self.transaction is None):
            raise ValueError("give transaction_id (a scored transaction) or transaction (one to score now), not both")
        return self


async def explain(request: web.Request) -> web.Response:
    """Every feature's exact TreeSHAP contribution to a scored transaction's score; PNG on Accept: image/png."""
    body = ExplainRequest.model_validate(await json_object(request))
    s: Settings = request.app[SETTINGS]
    if body.transaction is not None:
        answer = await what_if(request.app, body.transaction, request.headers)
        if answer.status != 200:
            return answer.response()
        verdict = answer.body
    else:
        TRANSACTION_ID.set(body.transaction_id)
        verdict = await _verdict(request.app, body.transaction_id, body.scored_after)
        if verdict is None:
            return error(404, f"no verdict for transaction {body.transaction_id} on {s.verdicts_topic} in the "
                              f"time looked at: give scored_after", field="transaction_id")
    transaction_id = verdict["transaction_id"]
    if verdict["model_name"] != s.model_name:
        return error(409, f"transaction {transaction_id} was scored by {verdict['model_name']}, "
                          f"not {s.model_name}")
    try:
        model = await _model(request.app, verdict["model_version"])
    except Exception as exc:  # noqa: BLE001 - MLflow's answer, whatever it is, is the caller's
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return error(409, f"transaction {transaction_id} was scored by {s.model_name} version "
                              f"{verdict['model_version']}, no longer in the registry")
        return mlflow_failed(exc)
    explained = await asyncio.get_running_loop().run_in_executor(None, explanation, model, verdict["features"])
    explained = {"transaction_id": transaction_id, "score": verdict["score"], "decision": verdict["decision"],
                 **explained, **({"what_if": True} if body.transaction is not None else {})}
    if "image/png" in request.headers.get("Accept", ""):
        png = await asyncio.get_running_loop().run_in_executor(
            None, waterfall_png, explained, f"transaction {transaction_id}")
        return web.Response(body=png, content_type="image/png")
    return web.json_response(explained)


async def _verdict(app: web.Application, transaction_id: str, scored_after: int | None) -> dict | None:
    s: Settings = app[SETTINGS]
    try:
        claim = await app[REDIS].get(CLAIM_KEY.format(s.app_id, transaction_id))
    except Exception:  # noqa: BLE001 - Redis down: the topic has it too
        claim = None
    if claim and "verdict" in json.loads(claim):
        return json.loads(claim)["verdict"]
    since = scored_after if scored_after is not None else int(time.time() * 1000) - LOOK_BACK_MS
    raw = await asyncio.get_running_loop().run_in_executor(
        None, find_verdict_since, s, partition_of(transaction_id, s.partitions), since, transaction_id)
    return None if raw is None else app[PREDICTOR].verdicts.decode(raw)


async def _model(app: web.Application, version: str):
    models = app[MODELS]
    if version not in models:
        source = app[MODEL_SOURCE]
        models[version] = await asyncio.get_running_loop().run_in_executor(
            None, lambda: source.load_version(version, remember=False))
    return models[version]

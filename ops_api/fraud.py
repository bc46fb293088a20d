"""The fraud endpoints a risk team calls: labels onto the feedback topic, online quality per model,
and what the scorer serves (model versions, thresholds, rules, lag).

A label sent here is the record a back office would produce to `fraud-feedback` itself: validated
field by field (422 naming the field), Avro-encoded with the topic's registered schema, keyed by
transaction id like every label (so it meets its verdict's partition, streams/feedback.py), and
answered only once the broker has it (acks=all, idempotent producer): 202 with where it landed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Literal

from aiohttp import web
from confluent_kafka import KafkaException, Producer
from pydantic import BaseModel, ConfigDict, Field

from core.logs import TRANSACTION_ID
from core.redact import without_addresses
from core.settings import Settings
from ops_api.fields import integer
from ops_api.web import SETTINGS, STREAM, error, json_object
from schemas.codec import AvroCodec, CodecError, RegistryUnavailable, SchemaRegistry, load_schema

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT = 10.0  # seconds a record may take to reach the broker before the request fails
EPOCH_MS_MAX = 253_402_300_799_999  # 9999-12-31
DRIFT_ALERT_PSI = 0.2  # the documented alert: above this for 15 minutes


class DeliveryFailed(Exception):
    """The broker did not take the record; str(exc) says why, without addresses."""


class Deliveries:
    """One idempotent producer for the API's requests, polled by a thread of its own; `send` resolves
    once the broker has the record (acks=all) and says where it is."""

    def __init__(self, bootstrap: str, timeout: float = DELIVERY_TIMEOUT):
        # murmur2: the Java client's partitioner, so a key lands where every other producer puts it.
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 2, "partitioner": "murmur2_random",
                                  "delivery.timeout.ms": int(timeout * 1000)})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="api-deliveries", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(1.0)  # returns at once when a delivery report arrives

    async def send(self, topic: str, key: bytes, value: bytes, headers: list | None = None) -> tuple[int, int]:
        """(partition, offset) of the record once the broker has it; DeliveryFailed otherwise."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def delivered(err, msg) -> None:
            result = (err, None) if err is not None else (None, (msg.partition(), msg.offset()))
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        try:
            self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            raise DeliveryFailed(f"not queued: {exc}") from exc
        err, where = await done
        if err is not None:
            raise DeliveryFailed(err.str())
        return where

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.producer.flush(5)


class Label(BaseModel):
    """A label for a scored transaction, as the feedback topic's schema (schemas/feedback.avsc) holds it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    transaction_id: str = Field(min_length=1, max_length=128)
    label: Literal["FRAUD", "LEGIT"]
    source: str = Field(default="analyst", min_length=1, max_length=64,
                        description="chargeback, analyst, customer, ...")
    reported_at: integer(ge=0, le=EPOCH_MS_MAX) | None = Field(default=None,
                                                                description="epoch milliseconds; now when absent")
    customer_id: str | None = Field(default=None, max_length=128)
    terminal_id: str | None = Field(default=None, max_length=128)

    def record(self, now_ms: int) -> dict:
        return {**self.model_dump(), "reported_at": self.reported_at if self.reported_at is not None else now_ms}


class FeedbackTopic:
    """The feedback topic's codec (its schema registered on first use) and the API's producer."""

    def __init__(self, settings: Settings, deliveries: Deliveries):
        self.topic = settings.feedback_topic
        self.codec = AvroCodec(SchemaRegistry(settings.schema_registry_url), load_schema("feedback"),
                               f"{settings.feedback_topic}-value")
        self.deliveries = deliveries
        self._registering = asyncio.Lock()

    async def send(self, label: Label) -> dict:
        async with self._registering:
            if self.codec.schema_id is None:
                await asyncio.get_running_loop().run_in_executor(None, self.codec.register)
        value = self.codec.encode(label.record(int(time.time() * 1000)))
        partition, offset = await self.deliveries.send(self.topic, label.transaction_id.encode(), value)
        return {"transaction_id": label.transaction_id, "label": label.label,
                "topic": self.topic, "partition": partition, "offset": offset}


FEEDBACK = web.AppKey("feedback", FeedbackTopic)


async def feedback(request: web.Request) -> web.Response:
    """POST /api/v1/fraud/feedback: a label onto the feedback topic; 202 once the broker has it."""
    label = Label.model_validate(await json_object(request))
    TRANSACTION_ID.set(label.transaction_id)
    try:
        landed = await request.app[FEEDBACK].send(label)
    except RegistryUnavailable:
        return error(503, "schema registry unavailable: the label was not sent; retry")
    except CodecError as exc:
        return error(502, f"the registry refused the feedback schema: {exc}")
    except DeliveryFailed as exc:
        log.warning("feedback for %s not delivered: %s", label.transaction_id, exc)
        return error(503, f"Kafka did not take the label ({without_addresses(str(exc))}): it was not sent; retry")
    return web.json_response(landed, status=202)


async def quality(request: web.Request) -> web.Response:
    """GET /api/v1/fraud/metrics: precision, recall and average precision of each model (champion,
    challenger) from matured labels."""
    stream = request.app[STREAM]
    if stream is None:
        return error(404, "online quality lives in the workers: ask a worker's API")
    return web.json_response(stream.quality())


async def status(request: web.Request) -> web.Response:
    """GET /api/v1/fraud/status: the model versions served, the decision thresholds, the rules in
    force, and how far behind the stream this worker is."""
    stream = request.app[STREAM]
    if stream is None:
        return error(404, "the scoring state lives in the workers: ask a worker's API")
    s: Settings = request.app[SETTINGS]
    champion, challenger, follower = stream.model(), stream.challenger(), stream.rules()
    lag = stream.lag()
    return web.json_response({
        "model": {"name": s.model_name,
                  "champion": _version(champion, s.model_alias),
                  "challenger": _version(challenger, s.challenger_alias),
                  "error": without_addresses(stream.model_error()) or None},
        "thresholds": {"review": s.review_threshold, "decline": s.decline_threshold},
        "rules": {"topic": follower.topic, "in_force": follower.rules.count, "caught_up": follower.source.caught_up,
                  "invalid_records": follower.invalid},
        "stream": {"assigned_partitions": stream.assigned(), "consumer_lag": {str(p): n for p, n in lag.items()},
                   "total_lag": sum(lag.values()), "caught_up": stream.caught_up()},
    })


async def drift(request: web.Request) -> web.Response:
    """GET /api/v1/fraud/drift: per model input and for the score, the population stability index of
    what this worker scored over its drift window against the training reference of the version
    served, and the share missing (null where nothing was counted)."""
    stream = request.app[STREAM]
    if stream is None:
        return error(404, "drift is watched in the workers: ask a worker's API")
    report = stream.drift()
    if report is None:
        model = stream.model()
        why = ("no model loaded yet" if model is None else
               f"model v{model.version} has no drift reference stored with it" if model.reference is None else
               "nothing scored yet")
        return error(503, f"no drift report: {why}")
    nan_free = {name: {k: (None if v != v else v) for k, v in figures.items()}
                for name, figures in report["inputs"].items()}
    s: Settings = request.app[SETTINGS]
    return web.json_response({**report, "inputs": nan_free, "model_name": s.model_name, "alert_psi": DRIFT_ALERT_PSI})


def _version(model, alias: str) -> dict | None:
    if model is None:
        return None
    return {"alias": alias, "version": model.version, "run_id": model.run_id or None, "source": model.source}

"""A payment system's synchronous decision: POST /api/v1/fraud/predict (and /predict/batch, up to
1,000 transactions decided at once, each as below).

The transaction goes through the stream like any other, and the answer is its verdict as the topic
holds it:
  1. the body is validated as the Transaction schema and by the stream's own rule
     (core/features.py `invalid_transaction_reason`): 422 naming the field, nothing sent;
  2. the transaction id is claimed in Redis (SET NX, kept FRAUD_PREDICT_IDEMPOTENCY_SECONDS): a
     retry, on any API replica, never produces the transaction again;
  3. the verdict partition is followed from its current end (`VerdictWaiter`), then the transaction
     is produced to `transactions`, keyed by card, and the claim is marked sent;
  4. the worker owning the card scores it and commits its verdict, keyed by transaction id, in a
     Kafka transaction, at once rather than at the next commit interval (the record carries the
     AWAITED header); the waiter, reading committed records only, sees it and the request gets it.
If the verdict is not visible within FRAUD_PREDICT_TIMEOUT_SECONDS: 504 naming the transaction,
which is on the topic and will be scored. A retry of a claimed transaction returns the verdict once
it is known (from Redis, or found on the verdict partition from the claim's time on), and waits for
it otherwise; a claim never marked sent and older than CLAIM_STALE_MS (its claimer died before
sending) is taken over, once, by the retry that finds it (Redis WATCH). With Redis down no claim
can be made, so predict answers 503 rather than risk a second verdict; the stream itself goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Literal, Mapping

import aiohttp
from aiohttp import web
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.features import invalid_transaction_reason
from core.logs import TRANSACTION_ID
from core.redact import without_addresses
from core.settings import Settings
from ops_api.fields import integer
from ops_api.fraud import EPOCH_MS_MAX, Deliveries, DeliveryFailed
from ops_api.auth import LIMITED
from ops_api.web import HTTP, LIMITS, REDIS, SETTINGS, STREAM, field_errors, json_object, workers
from schemas.codec import AvroCodec, RegistryUnavailable, SchemaRegistry, load_schema
from streams.topics import AWAITED, partition_of

log = logging.getLogger(__name__)
CLAIM_KEY = "fraud:{}:predict:{}"  # app id, transaction id
CLAIM_STALE_MS = 30_000  # a claim never marked sent this old has lost its claimer (delivery gives up at 10 s)
IDLE_PARTITION_SECONDS = 60.0  # a verdict partition nobody waits on this long is let go
BATCH_MAX = 1000  # transactions in one POST /api/v1/fraud/predict/batch
FORWARDED = "X-Fraud-Forwarded"  # a what-if sent on by an API replica to the worker holding the card
AttributeName = Annotated[str, Field(min_length=1, max_length=128)]
AttributeValue = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]


class Transaction(BaseModel):
    """The Transaction schema (schemas/transaction.avsc) as a request body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    transaction_id: str = Field(min_length=1, max_length=128)
    customer_id: str = Field(min_length=1, max_length=128, description="the card")
    terminal_id: str = Field(min_length=1, max_length=128)
    merchant_id: str = Field(min_length=1, max_length=128)
    amount: float = Field(ge=0, allow_inf_nan=False, le=1e15)
    currency: str = Field(default="EUR", min_length=1, max_length=8)
    timestamp: integer(gt=0, le=EPOCH_MS_MAX) | None = Field(
        default=None, description="event time, epoch ms; now when absent, at most a day past the server's clock")
    merchant_category: str = Field(default="unknown", max_length=64)
    channel: Literal["POS", "ECOM", "ATM", "MOTO", "OTHER"] = "POS"
    card_present: bool = True
    country: str = Field(default="", max_length=8)
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=64, description="upstream numeric attributes the model may read; "
        "an attribute absent is missing to the model")

    def record(self, now_ms: int) -> dict:
        return {**self.model_dump(), "timestamp": self.timestamp if self.timestamp is not None else now_ms}


class VerdictWaiter:
    """Follows the verdict partitions someone waits on (read_committed, from their end when first
    asked) and hands each awaited verdict to its request. Only those partitions are read, by key,
    and a partition nobody has waited on for IDLE_PARTITION_SECONDS is let go."""

    def __init__(self, settings: Settings):
        self.topic = settings.verdicts_topic
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "fraud-api-predict",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
        self.waiting: dict[bytes, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = defaultdict(list)
        self.used_at: dict[int, float] = {}
        self.assigned: set[int] = set()  # written by the waiter's thread only
        self.requests: list = []  # (partition, loop, future) to assign, from the event loop's thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._asked = threading.Event()  # set when a partition is asked for: an idle waiter sleeps until then
        self._thread = threading.Thread(target=self._run, name="api-verdicts", daemon=True)
        self._thread.start()

    async def follow(self, partition: int) -> None:
        """Return once `partition` is read from an offset no later than its end now."""
        with self._lock:
            if partition in self.assigned:
                self.used_at[partition] = time.monotonic()
                return
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        with self._lock:
            self.requests.append((partition, loop, ready))
        self._asked.set()
        await ready

    def expect(self, transaction_id: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self.waiting[transaction_id.encode()].append((loop, future))
        return future

    def forget(self, transaction_id: str, future: asyncio.Future) -> None:
        with self._lock:
            entries = self.waiting.get(transaction_id.encode(), [])
            entries[:] = [e for e in entries if e[1] is not future]
            if not entries:
                self.waiting.pop(transaction_id.encode(), None)

    def _run(self) -> None:
        assigned = self.assigned
        while not self._stop.is_set():
            with self._lock:
                requests, self.requests = self.requests, []
            for partition, loop, ready in requests:
                try:
                    if partition not in assigned:
                        tp = TopicPartition(self.topic, partition)
                        _, high = self.consumer.get_watermark_offsets(tp, timeout=5)
                        self.consumer.incremental_assign([TopicPartition(self.topic, partition, high)])
                    with self._lock:
                        assigned.add(partition)
                        self.used_at[partition] = time.monotonic()
                    loop.call_soon_threadsafe(_resolve, ready, None)
                except Exception as exc:  # noqa: BLE001 - the request gets the reason
                    loop.call_soon_threadsafe(_fail, ready, exc)
            if not assigned:
                self._asked.wait(1.0)
                self._asked.clear()
                continue
            first = self.consumer.poll(0.02)  # returns as soon as a record is there
            for msg in [first, *self.consumer.consume(500, 0)] if first is not None else ():
                if msg.error() is not None:
                    continue
                with self._lock:
                    entries = self.waiting.pop(msg.key(), None)
                for loop, future in entries or ():
                    loop.call_soon_threadsafe(_resolve, future, msg.value())
            with self._lock:
                idle = [p for p in assigned if time.monotonic() - self.used_at.get(p, 0) > IDLE_PARTITION_SECONDS]
                assigned.difference_update(idle)
            if idle:
                self.consumer.incremental_unassign([TopicPartition(self.topic, p) for p in idle])

    def close(self) -> None:
        self._stop.set()
        self._asked.set()
        self._thread.join(2)
        self.consumer.close()


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def find_verdict_since(settings: Settings, partition: int, since_ms: int, transaction_id: str) -> bytes | None:
    """The verdict of `transaction_id` on its partition, written from `since_ms` to the partition's end
    now (a retry's look back, for a verdict that may have landed before anyone followed the partition)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "fraud-api-predict",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        _, until = consumer.get_watermark_offsets(TopicPartition(settings.verdicts_topic, partition), timeout=5)
        [start] = consumer.offsets_for_times([TopicPartition(settings.verdicts_topic, partition, since_ms)], timeout=5)
        if start.offset in (OFFSET_END, -1) or start.offset >= until:
            return None
        consumer.assign([start])
        key = transaction_id.encode()
        while True:
            first = consumer.poll(1.0)  # returns on the first record; consume(n, t) would wait out t
            if first is None:
                return None
            for msg in [first, *consumer.consume(1000, 0)]:
                if msg.error() is None and msg.key() == key:
                    return msg.value()
                if msg.error() is None and msg.offset() >= until - 1:
                    return None
    finally:
        consumer.close()


class Predictor:
    """What predict needs: the transactions codec, the verdicts codec, the producer, the waiter."""

    def __init__(self, settings: Settings, deliveries: Deliveries):
        registry = SchemaRegistry(settings.schema_registry_url)
        self.settings = settings
        self.transactions = AvroCodec(registry, load_schema("transaction"), f"{settings.transactions_topic}-value")
        self.verdicts = AvroCodec(registry, load_schema("verdict"), f"{settings.verdicts_topic}-value")
        self.deliveries = deliveries
        self.waiter = VerdictWaiter(settings)
        self._registering = asyncio.Lock()

    async def codec_ready(self) -> None:
        async with self._registering:
            if self.transactions.schema_id is None:
                await asyncio.get_running_loop().run_in_executor(None, self.transactions.register)

    def close(self) -> None:
        self.waiter.close()


PREDICTOR = web.AppKey("predictor", Predictor)


@dataclass
class Answer:
    """One transaction's answer: a verdict (200) or an error, with the headers that go with it."""

    status: int
    body: dict
    headers: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, status: int, message: str, **extra) -> "Answer":
        return cls(status, {"error": {"status": status, "message": message, **extra}})

    def response(self) -> web.Response:
        response = web.json_response(self.body, status=self.status)
        response.headers.update(self.headers)
        return response


async def predict(request: web.Request) -> web.Response:
    """POST /api/v1/fraud/predict: one transaction, its verdict."""
    txn = Transaction.model_validate(await json_object(request))
    return (await decide(request.app, txn)).response()


async def score(request: web.Request) -> web.Response:
    """What-if: the verdict a transaction would get now, from its card's and terminal's current state.
    Nothing changes and nothing is written; served by the worker holding the card's partition."""
    txn = Transaction.model_validate(await json_object(request))
    return (await what_if(request.app, txn, request.headers)).response()


def _checked(txn: Transaction, now_ms: int) -> tuple[dict, Answer | None]:
    """The transaction's record, and the 422 the stream's own rule gives it, if any; its id goes
    into the log context."""
    TRANSACTION_ID.set(txn.transaction_id)
    record = txn.record(now_ms)
    reason = invalid_transaction_reason(record, now_ms=now_ms)
    if not reason:
        return record, None
    field_name = reason.split(":")[0].removeprefix("field ")
    return record, Answer.failed(422, reason, fields=[{"field": field_name, "message": reason}])


async def what_if(app: web.Application, txn: Transaction, headers: Mapping[str, str]) -> Answer:
    """The what-if verdict of a validated transaction (with its features), or why there is none. An
    API that runs no worker, or whose worker does not hold the card, asks the worker that does (from
    the workers' heartbeats in Redis) with the caller's own token; a forwarded request is not
    forwarded again."""
    s: Settings = app[SETTINGS]
    now_ms = int(time.time() * 1000)
    record, refused = _checked(txn, now_ms)
    if refused is not None:
        return refused
    stream = app[STREAM]
    asked = stream.score(record) if stream is not None else None
    partition = partition_of(txn.customer_id, s.partitions)
    if asked is None:
        if FORWARDED not in headers:
            forwarded = await _forwarded(app, txn, partition, headers)
            if forwarded is not None:
                return forwarded
        where = "this API runs no worker" if stream is None else "this worker does not hold it (or is still reading it)"
        return Answer.failed(421, f"card {txn.customer_id} is on {s.transactions_topic} partition {partition}, "
                                  f"{where} and no live worker announces it: retry once the group has settled",
                             partition=partition)
    try:
        verdict = await asyncio.wait_for(asyncio.wrap_future(asked), s.predict_timeout_seconds)
    except asyncio.TimeoutError:
        return Answer.failed(503, f"the worker's loop did not answer within {s.predict_timeout_seconds:g}s")
    if verdict is None:
        return Answer.failed(503, "no model loaded yet, or the card's partition left this worker: retry")
    return Answer(200, {**verdict, "what_if": True})


async def _forwarded(app: web.Application, txn: Transaction, partition: int,
                     headers: Mapping[str, str]) -> Answer | None:
    """The answer of the worker whose heartbeat lists the card's partition; None when none does (or
    Redis is away)."""
    s: Settings = app[SETTINGS]
    held = f"{s.transactions_topic}[{partition}]"
    try:
        urls = [w["api_url"] for w in await workers(app)
                if held in w.get("assigned_partitions", []) and w.get("api_url")]
    except Exception as exc:  # noqa: BLE001 - Redis away: nobody to ask
        log.warning("workers' heartbeats unreadable: %s", exc)
        return None
    if not urls:
        return None
    forward = {FORWARDED: "1", **({"Authorization": headers["Authorization"]} if "Authorization" in headers else {})}
    try:
        async with app[HTTP].post(f"{urls[0]}/api/v1/fraud/score", json=txn.model_dump(exclude_none=True),
                                  headers=forward,
                                  timeout=aiohttp.ClientTimeout(total=s.predict_timeout_seconds + 1)) as response:
            body = await response.json()
            return Answer(response.status, body, {"Retry-After": response.headers["Retry-After"]}
                          if "Retry-After" in response.headers else {})
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return Answer.failed(503, f"the worker holding partition {partition} did not answer: {type(exc).__name__}",
                             partition=partition)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    transactions: list[dict] = Field(min_length=1, max_length=BATCH_MAX)


async def predict_batch(request: web.Request) -> web.Response:
    """POST /api/v1/fraud/predict/batch: up to BATCH_MAX transactions, decided at once; one answer
    each, in order, with its own status (a transaction that fails validation does not stop the others)."""
    batch = Batch.model_validate(await json_object(request))
    if LIMITED in request and len(batch.transactions) > 1:  # the request counted one: each item counts
        refusal = await request.app[LIMITS].hit(*request[LIMITED], cost=len(batch.transactions) - 1)
        if refusal is not None:
            response = Answer.failed(429, f"a batch of {len(batch.transactions)} is over the rate limit of "
                                          f"{refusal['X-RateLimit-Limit']} transactions per window").response()
            response.headers.update(refusal)
            return response
    answers: list[Answer | None] = [None] * len(batch.transactions)
    valid: list[tuple[int, Transaction]] = []
    for i, item in enumerate(batch.transactions):
        try:
            valid.append((i, Transaction.model_validate(item)))
        except ValidationError as exc:
            message, fields = field_errors(exc)
            answers[i] = Answer.failed(422, "invalid transaction: " + message, fields=fields)
    decided = await asyncio.gather(*(decide(request.app, txn) for _, txn in valid))
    for (i, _), answer in zip(valid, decided):
        answers[i] = answer
    return web.json_response({"results": [
        {"status": a.status, **({"verdict": a.body} if a.status == 200 else a.body),
         **({"replayed": a.headers.get("Idempotent-Replayed") == "true"} if a.status == 200 else {})}
        for a in answers]})


async def decide(app: web.Application, txn: Transaction) -> Answer:
    """Claim, send, wait: the steps of the module docstring for one validated transaction."""
    s: Settings = app[SETTINGS]
    now_ms = int(time.time() * 1000)
    record, refused = _checked(txn, now_ms)
    if refused is not None:
        return refused
    predictor: Predictor = app[PREDICTOR]
    redis = app[REDIS]
    timing = Timing()
    key = CLAIM_KEY.format(s.app_id, txn.transaction_id)
    partition = partition_of(txn.transaction_id, s.partitions)  # where the worker's verdict lands
    claim = {"state": "claimed", "at": now_ms, "customer_id": txn.customer_id}
    try:
        claimed = await redis.set(key, json.dumps(claim), nx=True, ex=s.predict_idempotency_seconds)
        earlier_raw = None if claimed else await redis.get(key)
        earlier = json.loads(earlier_raw) if earlier_raw else None
        timing.mark("claim")
    except Exception as exc:  # noqa: BLE001 - no claim, no send: a retry could score it twice
        log.warning("predict %s: redis: %s", txn.transaction_id, exc)
        return Answer.failed(503, f"transaction {txn.transaction_id} not sent: the idempotency store (Redis) "
                                  f"is unavailable; retry")
    if earlier is not None and earlier.get("customer_id") != txn.customer_id:
        return Answer.failed(409, f"transaction_id {txn.transaction_id} was already sent for another card",
                             fields=[{"field": "transaction_id", "message": "already used"}])
    try:
        await predictor.codec_ready()
        expected = predictor.waiter.expect(txn.transaction_id)
        try:
            await predictor.waiter.follow(partition)
            if earlier is not None and "verdict" in earlier:
                return _answer(earlier["verdict"], replayed=True, timing=timing)
            if earlier is not None:  # claimed by an earlier request: its verdict may be on the topic already
                found = await asyncio.get_running_loop().run_in_executor(
                    None, find_verdict_since, s, partition, earlier["at"] - 1000, txn.transaction_id)
                if found is not None:
                    _resolve(expected, found)
                elif not earlier.get("sent") and now_ms - earlier["at"] > CLAIM_STALE_MS:
                    # Claimed, never sent, and long enough ago that the claimer is gone: send it here.
                    if await _take_over(redis, key, earlier_raw, claim, s.predict_idempotency_seconds):
                        earlier = None
            if earlier is None:
                value = predictor.transactions.encode(record)
                await predictor.deliveries.send(s.transactions_topic, txn.customer_id.encode(), value,
                                                headers=[(AWAITED, b"1")])
                timing.mark("send")
                await _mark_sent(redis, key, claim)
            raw = await asyncio.wait_for(asyncio.shield(expected), s.predict_timeout_seconds)
            timing.mark("verdict")
        finally:
            predictor.waiter.forget(txn.transaction_id, expected)
    except asyncio.TimeoutError:
        return Answer.failed(504, f"transaction {txn.transaction_id} was sent and will be scored, but its verdict "
                                  f"was not visible within {s.predict_timeout_seconds:g}s: retry with the same "
                                  f"transaction_id to get it", transaction_id=txn.transaction_id)
    except RegistryUnavailable:
        return await _unsent(redis, key, earlier, txn, "the schema registry is unavailable")
    except DeliveryFailed as exc:
        log.warning("predict %s: not delivered: %s", txn.transaction_id, exc)
        return await _unsent(redis, key, earlier, txn, f"Kafka did not take it ({without_addresses(str(exc))})")
    verdict = predictor.verdicts.decode(raw)
    try:
        await redis.set(key, json.dumps({**claim, "sent": True, "verdict": verdict}), ex=s.predict_idempotency_seconds)
    except Exception as exc:  # noqa: BLE001 - a retry then finds it on the topic instead
        log.warning("predict %s: verdict not kept in redis: %s", txn.transaction_id, exc)
    return _answer(verdict, replayed=earlier is not None, timing=timing)


async def _take_over(redis, key: str, seen: str, claim: dict, ttl: int) -> bool:
    """Replace the claim `seen` with ours, unless another request changed it meanwhile (WATCH)."""
    from redis.exceptions import WatchError

    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            if await pipe.get(key) != seen:
                return False
            pipe.multi()
            pipe.set(key, json.dumps(claim), ex=ttl)
            await pipe.execute()
            return True
        except WatchError:
            return False


async def _mark_sent(redis, key: str, claim: dict) -> None:
    try:
        await redis.set(key, json.dumps({**claim, "sent": True}), xx=True, keepttl=True)
    except Exception as exc:  # noqa: BLE001 - the claim stays; only its takeover after a crash is lost
        log.warning("predict claim %s not marked sent: %s", key, exc)


async def _unsent(redis, key: str, earlier, txn: Transaction, why: str) -> Answer:
    if earlier is None:  # our claim, and nothing was sent: let a retry send it
        try:
            await redis.delete(key)
        except Exception:  # noqa: BLE001
            pass
    return Answer.failed(503, f"transaction {txn.transaction_id} not sent: {why}; retry")


class Timing:
    """Where a request's time went, for the `Server-Timing` header (claim, send, verdict: ms each)."""

    def __init__(self):
        self.last = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps.append((step, (now - self.last) * 1000))
        self.last = now

    def header(self) -> str:
        return ", ".join(f"{step};dur={ms:.1f}" for step, ms in self.steps)


def _answer(verdict: dict, replayed: bool, timing: Timing) -> Answer:
    return Answer(200, verdict, {"Idempotent-Replayed": "true" if replayed else "false",
                                 "Server-Timing": timing.header()})

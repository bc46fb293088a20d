"""Training jobs: requested over HTTP, run as child processes, their state kept in Redis.

Any API replica reads the same job state. A job's process writes its own progress; the replica that
started it marks it failed if the process dies without saying how it ended. The replicas of one
deployment (one FRAUD_APP_ID) share the limit on jobs running at once: each running job holds a slot
in Redis, claimed atomically when the job starts, given back when it ends, and leased, so the slots
of a replica that died lapse within LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from typing import Literal

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.params import TrainParams
from core.redact import without_addresses
from ops_api.fields import Integer, absent_or

log = logging.getLogger(__name__)

JOB_KEY = "fraud:training:job:{}"
JOB_INDEX = "fraud:training:jobs"
JOB_TTL_SECONDS = 7 * 86_400
RUNNING_KEY = "fraud:{}:training:running"  # app id: a sorted set, job id -> when its slot's lease ends
LEASE_SECONDS = 60.0  # a replica renews its jobs' leases every third of this
# Drop lapsed slots, then take one if fewer than the limit are held: 1 when taken, else 0.
CLAIM_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
return 1
"""
FINAL = ("succeeded", "failed", "cancelled")


# A file's name relative to FRAUD_DATA_DIR (absent, not null, when there is none). The document says it
# holds no NUL byte; ops_api/app.py `_confined` refuses one, saying so.
DATA_PATH = {"min_length": 1, "max_length": 1024, "json_schema_extra": {"pattern": "^[^\\u0000]*$"}}


class TrainRequest(BaseModel):
    """Body of POST /api/v1/training/train. Trains on the stream's labelled examples (`source:
    examples`), on a file (`data_path`), or by default on a fresh simulated history."""

    # The document states the rule of `_data_path_with_file_only`.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"allOf": [
        {"if": {"required": ["source"], "properties": {"source": {"const": "file"}}},
         "then": {"required": ["data_path"]}},
        {"if": {"required": ["source"], "properties": {"source": {"const": "examples"}}},
         "then": {"not": {"required": ["data_path"]}}}]})

    source: Literal["simulated", "file", "examples"] = "simulated"
    data_path: str = absent_or(**DATA_PATH, description="Parquet or CSV of Transaction fields plus a 0/1 label, "
                               "in FRAUD_DATA_DIR")
    label_column: str = Field("is_fraud", min_length=1, max_length=200,
                              description="with data_path: the label column")
    customers: Integer = Field(1_000, ge=10, le=100_000)
    terminals: Integer = Field(2_000, ge=10, le=200_000)
    days: Integer = Field(60, ge=7, le=366)
    seed: Integer = Field(0, ge=0, le=2**32 - 1)
    n_estimators: Integer = Field(TrainParams.n_estimators, ge=1, le=5_000)
    max_depth: Integer = Field(TrainParams.max_depth, ge=1, le=16)
    learning_rate: float = Field(TrainParams.learning_rate, gt=0, le=1)
    alerts_per_day: float = Field(TrainParams.alerts_per_day, gt=0, le=1e9,
                                  description="the review threshold the run reports raises about this many alerts a day")
    promote: bool = True

    @model_validator(mode="after")
    def _data_path_with_file_only(self):
        if self.data_path and self.source == "simulated":
            self.source = "file"
        if (self.source == "file") != bool(self.data_path):
            raise ValueError("data_path is required with source 'file', and only then")
        return self


class TuneRequest(BaseModel):
    """Body of POST /api/v1/training/hyperparameter-tuning: a prequential search on the handbook
    protocol, over a simulated history (its calendar) or your own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    data_path: str = absent_or(**DATA_PATH, description="Parquet or CSV of Transaction fields plus is_fraud, "
                               "in FRAUD_DATA_DIR")
    trials: Integer = Field(20, ge=1, le=500)
    folds: Integer = Field(4, ge=1, le=8)
    customers: Integer = Field(5_000, ge=100, le=100_000)
    terminals: Integer = Field(10_000, ge=100, le=200_000)
    seed: Integer = Field(0, ge=0, le=2**32 - 1)

    def command(self) -> list[str]:
        args = ["tune", "--trials", str(self.trials), "--folds", str(self.folds), "--customers",
                str(self.customers), "--terminals", str(self.terminals), "--seed", str(self.seed)]
        return args + (["--data", self.data_path] if self.data_path else [])


def train_command(request: TrainRequest) -> list[str]:
    args = ["train", "--customers", str(request.customers), "--terminals", str(request.terminals),
            "--days", str(request.days), "--seed", str(request.seed),
            "--n-estimators", str(request.n_estimators), "--max-depth", str(request.max_depth),
            "--learning-rate", str(request.learning_rate), "--alerts-per-day", str(request.alerts_per_day)]
    if request.source == "file":
        args += ["--data", request.data_path, "--label-column", request.label_column]
    elif request.source == "examples":
        args.append("--examples")
    if not request.promote:
        args.append("--no-promote")
    return args


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def job_record(job_id: str, kind: str, request: BaseModel) -> dict:
    now = time.time()
    return {"job_id": job_id, "kind": kind, "status": "queued", "progress": 0.0, "message": "queued",
            "request": request.model_dump(), "created_at": now, "updated_at": now, "result": None,
            "error": None}


class JobStore:
    """Synchronous access, for the training process itself."""

    def __init__(self, redis_url: str):
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)

    def update(self, job_id: str, **fields) -> None:
        """Write the job's progress; SystemExit when it was cancelled meanwhile (from any API replica)."""
        key = JOB_KEY.format(job_id)
        record = json.loads(self.redis.get(key) or "{}")
        if record.get("status") == "cancelled":
            raise SystemExit(f"job {job_id} was cancelled")
        record.update(fields, updated_at=time.time())
        self.redis.set(key, json.dumps(record), ex=JOB_TTL_SECONDS)


class TrainingJobs:
    """The API side: create, list, read jobs and run their processes."""

    def __init__(self, redis_client: aioredis.Redis, env: dict[str, str] | None = None, max_running: int = 2,
                 app_id: str = "fraud-scorer"):
        self.redis = redis_client
        self.env = env
        self.max_running = max_running
        self.slots = RUNNING_KEY.format(app_id)
        self._claim = redis_client.register_script(CLAIM_SLOT)
        self._tasks: set[asyncio.Task] = set()
        self._running: set[str] = set()
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def running(self) -> int:
        """Jobs running on every replica of this deployment (slots whose lease has not lapsed)."""
        return await self.redis.zcount(self.slots, time.time(), "+inf")

    async def start(self, request: TrainRequest | TuneRequest) -> dict | None:
        """Take a slot, record a queued job and run `fraud train` or `fraud tune` for it in a child
        process; None, with nothing recorded, when the deployment already runs `max_running` jobs."""
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        if not await self._claim(keys=[self.slots], args=[now, self.max_running, now + LEASE_SECONDS, job_id]):
            return None
        kind, command = (("tuning", request.command()) if isinstance(request, TuneRequest)
                         else ("training", train_command(request)))
        record = job_record(job_id, kind, request)
        try:
            await self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=JOB_TTL_SECONDS)
            await self.redis.zadd(JOB_INDEX, {job_id: record["created_at"]})
            await self.redis.zremrangebyscore(JOB_INDEX, 0, record["created_at"] - JOB_TTL_SECONDS)
        except BaseException:
            await self._release(job_id)
            raise
        task = asyncio.create_task(self._run(job_id, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    async def get(self, job_id: str) -> dict | None:
        raw = await self.redis.get(JOB_KEY.format(job_id))
        return json.loads(raw) if raw else None

    async def list(self, limit: int = 50) -> list[dict]:
        ids = await self.redis.zrevrange(JOB_INDEX, 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([JOB_KEY.format(i) for i in ids])
        return [json.loads(r) for r in raws if r]

    async def _release(self, job_id: str) -> None:
        """Give the job's slot back; with Redis down its lease lapses instead."""
        try:
            await self.redis.zrem(self.slots, job_id)
        except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
            log.warning("job %s: its slot lapses in %.0f s (Redis: %s)", job_id, LEASE_SECONDS, exc)

    async def _renew(self, job_id: str) -> None:
        """Keep the job's slot while its process runs."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self.redis.zadd(self.slots, {job_id: time.time() + LEASE_SECONDS}, xx=True)
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                log.warning("job %s: its slot's lease was not renewed (Redis: %s)", job_id, exc)

    async def _run(self, job_id: str, command: list[str]) -> None:
        args = [sys.executable, "-m", "fraud", *command, "--job-id", job_id]
        self._running.add(job_id)
        lease = asyncio.create_task(self._renew(job_id))
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            self._processes[job_id] = proc
            _, stderr = await proc.communicate()
        except (OSError, ValueError) as exc:  # the process could not start: the job ends here, failed
            record = await self.get(job_id) or {}
            record.update(status="failed", updated_at=time.time(),
                          error=f"the job's process could not start: {type(exc).__name__}")
            await self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=JOB_TTL_SECONDS)
            log.error("job %s could not start: %s", job_id, exc)
            return
        finally:
            lease.cancel()
            self._running.discard(job_id)
            self._processes.pop(job_id, None)
            await self._release(job_id)
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        if proc.returncode:
            log.warning("job %s exited with %d; its last lines: %s", job_id, proc.returncode, " | ".join(tail))
        record = await self.get(job_id) or {}
        if record.get("status") not in FINAL:
            # A job that read a user's file may have echoed its values: the answer says only where to look.
            said = (" (the API's log has its last lines)" if "--data" in command
                    else ": " + without_addresses(" | ".join(tail)))
            record.update(status="failed", updated_at=time.time(),
                          error=f"job process exited with {proc.returncode}{said}")
            await self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=JOB_TTL_SECONDS)
            log.error("job %s failed: %s", job_id, record["error"])

    async def cancel(self, job_id: str) -> dict | None:
        """Mark the job cancelled and stop its process: at once when this API runs it, else at its next
        progress report (it reads its record then). None for an unknown job; a job that has ended is
        returned as it is."""
        record = await self.get(job_id)
        if record is None or record.get("status") in FINAL:
            return record
        record.update(status="cancelled", message="cancelled", updated_at=time.time())
        await self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=JOB_TTL_SECONDS)
        proc = self._processes.get(job_id)
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
        log.info("job %s cancelled", job_id)
        return record

    async def close(self) -> None:
        """Stopping the API ends the jobs it runs: their processes stop, and their records say so rather
        than stay 'running'."""
        running = list(self._running)
        for proc in list(self._processes.values()):
            if proc.returncode is None:
                proc.terminate()
        for proc in list(self._processes.values()):
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
        for task in list(self._tasks):
            task.cancel()
        for job_id in running:
            record = await self.get(job_id) or {}
            if record.get("status") not in FINAL:
                record.update(status="failed", updated_at=time.time(),
                              error="the API process running this job stopped")
                await self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=JOB_TTL_SECONDS)

"""One frozen settings object, read from the environment (prefix FRAUD_) once at the entry point."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUD_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    schema_registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_uri: str = "http://127.0.0.1:5002"

    app_id: str = "fraud-scorer"
    transactions_topic: str = "transactions"
    verdicts_topic: str = "fraud-verdicts"
    feedback_topic: str = "fraud-feedback"
    dlq_topic: str = "transactions-dlq"
    rules_topic: str = "fraud-rules"
    terminal_events_topic: str = "fraud-terminal-events"  # scored transactions and fraud labels, by terminal
    examples_topic: str = "fraud-labelled-examples"
    partitions: int = 6

    model_name: str = "fraud-xgb"
    model_alias: str = "champion"
    challenger_alias: str = "challenger"  # when set in the registry, scored in shadow beside the champion
    model_poll_seconds: float = 10.0
    model_cache_dir: Path = ROOT / ".services" / "model-cache"
    experiment: str = "fraud-scorer"

    batch_max: int = 1000
    batch_within_seconds: float = 0.2  # how long a fetch may wait for a light stream to fill a batch (4 KB)
    commit_interval_seconds: float = 0.1  # how often the worker's transaction commits
    predict_timeout_seconds: float = 2.0  # how long POST /api/v1/fraud/predict waits for the verdict
    predict_idempotency_seconds: int = 86_400  # how long a predicted transaction id is remembered
    transaction_timeout_ms: int = 10_000
    session_timeout_ms: int = 10_000
    kafka_debug: str = ""  # librdkafka debug contexts of the worker's group consumer and producers (e.g. cgrp)
    review_threshold: float = 0.5
    decline_threshold: float = 0.9
    xgb_threads: int = 1
    feedback_horizon_days: float = 30.0  # verdicts kept for the feedback join; later labels count as late
    feedback_match_wait_seconds: float = 2.0  # how long a label waits for its verdict before the DLQ
    quality_window: int = 10_000  # matched labels behind the online precision, recall and AP
    drift_window_seconds: float = Field(default=900.0, gt=0, le=86_400)  # the live inputs compared with training's
    exact_reasons: bool = False  # exact TreeSHAP for reasons instead of the per-path approximation

    api_host: str = "127.0.0.1"
    api_port: int = 5000
    # How an API replica without a stream (`fraud api`) reaches this worker's API, to forward what-if
    # scores for the cards it holds; empty: http://<api_host, or the host name when that is 0.0.0.0>:<api_port>.
    api_advertised_url: str = ""
    # Who may call the API (ops_api/auth.py): JWT bearer tokens signed with `jwt_secret` (HS256) or
    # verified with `jwt_public_key` (RS256: the PEM, or a path to it). With neither, the API refuses
    # to start unless `auth` is "disabled".
    auth: Literal["jwt", "disabled"] = "jwt"
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: str | None = Field(None, repr=False)
    jwt_public_key: str | None = Field(None, repr=False)
    # Served without a token: paths, or routes as the API declares them ("/docs/{asset}": the page's script and style).
    auth_open_paths: str = "/health/live,/health/ready,/metrics/prometheus,/openapi.json,/docs,/docs/{asset}"
    data_dir: Path = ROOT / "data"  # the only place training and tuning requests may read files from
    cors_origins: str = ""  # web origins allowed to call the API from a browser, comma-separated
    api_max_body_bytes: int = 1_048_576  # larger request bodies are refused (413)
    max_concurrent_jobs: int = 2  # training and tuning processes one API runs at once; beyond, 429
    rate_limit_read: str = "600/minute"  # per endpoint, per token and per client address (ops_api/limits.py)
    rate_limit_analyse: str = "300/minute"
    rate_limit_predict: str = "30000/minute"  # a payment system's synchronous decisions
    rate_limit_train: str = "20/minute"
    log_format: Literal["json", "text"] | None = None  # None: JSON for `worker` and `api`, text otherwise
    state_dir: Path = ROOT / ".services" / "faust"
    worker_id: str = Field(default_factory=lambda: __import__("socket").gethostname())

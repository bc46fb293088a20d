"""`fraud`: one entry point for the whole scorer.

  fraud services up|down|status   real Kafka, schema registry, Redis and MLflow on 127.0.0.1
  fraud topics                    create topics, register Avro schemas
  fraud simulate                  labelled synthetic history to a file, or live to Kafka
  fraud train                     train, register, promote when better
  fraud worker                    the scoring worker, with the ops API on :5000
  fraud api                       the ops API alone
  fraud tail                      decoded verdicts from the verdict topic
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from core import logs
from core.redact import failure
from core.settings import ROOT, Settings

log = logging.getLogger("fraud")


def cmd_services(args, settings: Settings) -> int:
    os.execv(str(ROOT / "scripts" / "services"), ["services", *args.action])


def cmd_topics(args, settings: Settings) -> int:
    from streams.topics import ensure_topics, register_schemas

    created = ensure_topics(settings)
    print(f"topics created: {', '.join(created) or 'none (all existed)'}")
    for subject, schema_id in register_schemas(settings).items():
        print(f"schema {subject}: id {schema_id} (BACKWARD)")
    return 0


def _simulation(args):
    from models.simulate import SimulationConfig, simulate

    return simulate(SimulationConfig(customers=args.customers, terminals=args.terminals,
                                     days=args.days, seed=args.seed))


def _data_tag(args) -> str:
    return "labelled-examples" if getattr(args, "examples", False) else (args.data or "simulated")


def _load_history(path: str, label_column: str = "is_fraud"):
    import pandas as pd

    from models.train import TrainingError

    p = Path(path)
    if not p.exists():
        raise TrainingError(f"--data {p.name}: no such file")
    frame = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
    if label_column not in frame.columns:
        raise TrainingError(f"--data {p.name}: no label column {label_column!r} (it has {len(frame.columns)} columns)")
    frame = frame.rename(columns={label_column: "is_fraud"})
    attribute_columns = [c for c in frame.columns if c.startswith("attribute_")]
    if attribute_columns:  # upstream attributes as columns: attribute_<key>
        keys = [c[len("attribute_"):] for c in attribute_columns]
        frame["attributes"] = [{k: float(v) for k, v in zip(keys, row) if pd.notna(v)}
                               for row in frame[attribute_columns].itertuples(index=False)]
        frame = frame.drop(columns=attribute_columns)
    elif "attributes" in frame.columns:  # a Parquet map column reads as (key, value) pairs
        frame["attributes"] = [dict(a) if a is not None else {} for a in frame["attributes"]]
    if "timestamp" in frame.columns and not str(frame["timestamp"].dtype).startswith("int"):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("int64") // 1_000_000
    return frame


def cmd_simulate(args, settings: Settings) -> int:
    history = _simulation(args)
    if args.count:
        history = history.head(args.count)
    print(f"simulated {len(history)} transactions, {int(history.is_fraud.sum())} frauds", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        history.to_parquet(out) if out.suffix == ".parquet" else history.to_csv(out, index=False)
        print(f"wrote {out}", file=sys.stderr)
    if args.kafka:
        from tqdm import tqdm

        from schemas.codec import AvroCodec, SchemaRegistry, load_schema
        from streams.produce import history_messages, producer_for, replay
        from streams.topics import ensure_topics

        ensure_topics(settings)
        registry = SchemaRegistry(settings.schema_registry_url)
        codec = AvroCodec(registry, load_schema("transaction"), f"{settings.transactions_topic}-value")
        codec.register()
        feedback = None
        if args.feedback:
            fcodec = AvroCodec(registry, load_schema("feedback"), f"{settings.feedback_topic}-value")
            fcodec.register()
            feedback = (settings.feedback_topic, fcodec)
        messages = history_messages(history, (settings.transactions_topic, codec), feedback,
                                    feedback_delay_ms=int(args.feedback_delay_days * 86_400_000))
        with tqdm(total=len(history), unit="txn", disable=args.quiet) as bar:
            sent = replay(producer_for(settings.kafka_bootstrap), messages, rate=args.rate, on_sent=bar.update)
        print(f"produced {sent} transactions to {settings.transactions_topic}", file=sys.stderr)
    return 0


def cmd_train(args, settings: Settings) -> int:
    from models.serving import quiet_mlflow_client_env
    from models.train import TrainParams, train_and_register

    quiet_mlflow_client_env(settings.mlflow_uri, timeout_seconds=30)
    progress, jobs = _job_progress(args, settings)
    try:
        params = TrainParams(n_estimators=args.n_estimators, max_depth=args.max_depth,
                             learning_rate=args.learning_rate, seed=args.seed, alerts_per_day=args.alerts_per_day)
        where = dict(tracking_uri=settings.mlflow_uri, model_name=settings.model_name,
                     experiment=settings.experiment, params=params, alias=settings.model_alias,
                     promote=not args.no_promote, progress=progress,
                     tags={"job_id": args.job_id, "data": _data_tag(args)} if args.job_id else {"data": _data_tag(args)})
        if args.examples:
            from models.examples import read_examples
            from models.train import register_model

            progress(0.05, f"reading labelled examples from {settings.examples_topic}")
            X, y, timestamps, names = read_examples(settings.kafka_bootstrap, settings.examples_topic,
                                                    settings.schema_registry_url)
            result = register_model(X, y, timestamps, feature_names=names, **where)
        else:
            history = _load_history(args.data, args.label_column) if args.data else _simulation(args)
            result = train_and_register(history, **where)
    except Exception as exc:
        if jobs:
            from models.train import TrainingError

            jobs.update(args.job_id, status="failed", error=failure(exc, bool(args.data), our_own=(TrainingError,)))
        raise
    summary = {"version": result.version, "run_id": result.run_id, "promoted": result.promoted,
               "reason": result.reason, "metrics": result.metrics}
    if jobs:
        jobs.update(args.job_id, status="succeeded", progress=1.0, message=result.reason, result=summary)
    print(json.dumps(summary, indent=2))
    return 0


def _job_progress(args, settings: Settings):
    """(progress callback, job store or None): a job started over HTTP reports to Redis."""
    jobs = None
    if args.job_id:
        from ops_api.jobs import JobStore

        jobs = JobStore(settings.redis_url)
        jobs.update(args.job_id, status="running", progress=0.01, message="loading data")

    def progress(fraction: float, message: str) -> None:
        log.info("%3.0f%% %s", fraction * 100, message)
        if jobs:
            jobs.update(args.job_id, progress=round(fraction, 3), message=message)

    return progress, jobs


def cmd_tune(args, settings: Settings) -> int:
    import tempfile

    from models.evaluate import Protocol
    from models.serving import quiet_mlflow_client_env
    from models.simulate import SimulationConfig, simulate, transaction_records
    from models.tune import tune, tuning_rows
    from core.features import feature_matrix

    quiet_mlflow_client_env(settings.mlflow_uri, timeout_seconds=30)
    progress, jobs = _job_progress(args, settings)
    try:
        history = _load_history(args.data) if args.data else simulate(SimulationConfig(
            customers=args.customers, terminals=args.terminals, days=183, seed=args.seed))
        protocol = Protocol()
        rows = tuning_rows(history, protocol, args.folds)
        progress(0.02, f"computing features for {len(rows)} transactions")
        X = feature_matrix(transaction_records(rows), rows["is_fraud"].to_numpy())
        best, score, table = tune(rows, X, trials=args.trials, protocol=protocol, n_folds=args.folds,
                                  seed=args.seed, progress=lambda f, m: progress(0.05 + 0.9 * f, m))
        import mlflow

        mlflow.set_experiment(settings.experiment)
        with mlflow.start_run(run_name="hyperparameter-tuning",
                              tags={"kind": "tuning", **({"job_id": args.job_id} if args.job_id else {})}) as run:
            mlflow.log_params({f"best_{k}": v for k, v in best.__dict__.items()})
            mlflow.log_params({"trials": args.trials, "folds": args.folds, "protocol_train_start": protocol.train_start})
            mlflow.log_metric("validation_average_precision", score)
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/trials.csv"
                table.to_csv(path, index=False)
                mlflow.log_artifact(path)
    except Exception as exc:
        if jobs:
            from models.train import TrainingError

            jobs.update(args.job_id, status="failed", error=failure(exc, bool(args.data), our_own=(TrainingError,)))
        raise
    summary = {"best_params": best.__dict__, "validation_average_precision": score, "trials": args.trials,
               "run_id": run.info.run_id}
    if jobs:
        jobs.update(args.job_id, status="succeeded", progress=1.0, message=f"best AP {score:.4f}", result=summary)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args, settings: Settings) -> int:
    import numpy as np

    from models.evaluate import Protocol, evaluate_seed, over_seeds
    from models.train import TrainParams
    from core.features import FEATURE_NAMES, HANDBOOK_FEATURE_NAMES

    params = TrainParams(n_estimators=args.n_estimators, max_depth=args.max_depth,
                         learning_rate=args.learning_rate, tree_method=args.tree_method,
                         scale_pos_weight=args.scale_pos_weight)
    features = HANDBOOK_FEATURE_NAMES if args.features == "handbook" else FEATURE_NAMES
    unknown = set(args.drop) - set(features)
    if unknown:
        raise SystemExit(f"--drop: {', '.join(sorted(unknown))} not among the features ({', '.join(features)})")
    features = tuple(name for name in features if name not in args.drop)
    protocol = Protocol()
    rows, labels, scores = [], [], []
    for seed in args.seeds:
        metrics, seed_labels, seed_scores = evaluate_seed(seed, params, protocol, features,
                                                          None if args.no_cache else settings.data_dir / ".evaluate-cache")
        rows.append(metrics)
        labels.append(seed_labels)
        scores.append(seed_scores)
        print(f"seed {seed}: AUC ROC {metrics['auc_roc']:.3f}  AP {metrics['average_precision']:.3f}  "
              f"CP@100 {metrics['card_precision_at_100']:.3f}  ({metrics['n_train']} train, "
              f"{metrics['n_test']} test, {metrics['n_test_frauds']} test frauds; class weight "
              f"{metrics['scale_pos_weight']:g}, calibration {metrics['calibration']}, "
              f"Brier {metrics['brier_score']:.5f})", flush=True)
        print(f"  fraud cards outside the daily top 100: {_missed(metrics['missed_cards'])}", flush=True)
    summary = over_seeds(rows, ("auc_roc", "average_precision", "card_precision_at_100", "brier_score",
                                "brier_score_uncalibrated"))
    total: Counter = sum((Counter(row["missed_cards"]) for row in rows), Counter())
    print(f"fraud cards outside the daily top 100 over the seeds: {_missed(total)}")
    print(f"over {len(rows)} seeds: mean, sample sd, 95 % interval of the mean")
    for k, s in summary.items():
        digits = 5 if k.startswith("brier") else 3
        print(f"  {k:24} {s.mean:.{digits}f}  sd {s.sd:.{digits}f}  [{s.low:.{digits}f}, {s.high:.{digits}f}]")
    if args.no_mlflow:
        return 0
    import mlflow

    from models.serving import quiet_mlflow_client_env
    from models.train import quality_plots

    quiet_mlflow_client_env(settings.mlflow_uri, timeout_seconds=30)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=f"evaluation-{args.features}-features", tags={"kind": "evaluation"}) as run:
        mlflow.log_params({**{k: v for k, v in params.__dict__.items()}, "seeds": ",".join(map(str, args.seeds)),
                           "features": ",".join(features), "protocol_train_start": protocol.train_start})
        for k, s in summary.items():
            mlflow.log_metrics({f"{k}_mean": s.mean, f"{k}_sd": s.sd, f"{k}_ci95_low": s.low, f"{k}_ci95_high": s.high})
        for seed, metrics in zip(args.seeds, rows):
            mlflow.log_metrics({k: metrics[k] for k in summary}, step=seed)
        mlflow.log_figure(quality_plots(np.concatenate(labels), np.concatenate(scores)), "test_quality_all_seeds.png")
    print(f"logged to MLflow run {run.info.run_id} in experiment {settings.experiment}")
    return 0


def _missed(counts: dict) -> str:
    """"N of M (kind: n, ...)": what the top 100 cards a day left out, and why those cards were frauds."""
    caught = counts.get("caught", 0)
    missed = {kind: n for kind, n in counts.items() if kind != "caught"}
    kinds = "; ".join(f"{kind}: {n}" for kind, n in sorted(missed.items(), key=lambda kv: -kv[1]))
    return f"{sum(missed.values())} of {sum(missed.values()) + caught}" + (f" ({kinds})" if kinds else "")


def cmd_thresholds(args, settings: Settings) -> int:
    """The review threshold for an alert budget, from the serving model's scores of recent traffic."""
    from models.serving import ModelSource, quiet_mlflow_client_env
    from models.thresholds import on_recent_traffic

    quiet_mlflow_client_env(settings.mlflow_uri, timeout_seconds=30)
    model = ModelSource(settings.mlflow_uri, settings.model_name, settings.model_alias,
                        settings.model_cache_dir).load_alias()
    history = _load_history(args.data, args.label_column) if args.data else _simulation(args)
    budget = on_recent_traffic(model, history, args.alerts_per_day, args.recent_days)
    print(json.dumps({"model_name": model.name, "model_version": model.version,
                      "calibration": model.calibration.kind, **budget.as_dict(),
                      "setting": f"FRAUD_REVIEW_THRESHOLD={budget.threshold:.6g}"}, indent=2))
    return 0


def cmd_rules(args, settings: Settings) -> int:
    import time

    from confluent_kafka import Producer

    from streams.rules import parse_rule, read_rules
    from streams.topics import ensure_topics

    ensure_topics(settings)
    if args.action == "list":
        table = read_rules(settings.kafka_bootstrap, settings.rules_topic)
        for rule_id, rule in sorted(table.records.items()):
            print(f"{rule_id}\t{json.dumps(rule)}")
        print(f"{len(table.records)} rules in force on {settings.rules_topic}", file=sys.stderr)
        return 0
    if args.action == "remove":
        rule_id, value = args.args[0], None
    elif args.action in ("block-card", "block-terminal"):
        kind = args.action.replace("-", "_")
        rule_id, value = f"{kind}:{args.args[0]}", {"type": kind, "value": args.args[0]}
    else:  # ceiling MCC AMOUNT
        mcc, amount = args.args
        rule_id = f"amount_ceiling:{mcc}"
        value = {"type": "amount_ceiling", "merchant_category": mcc, "max_amount": float(amount)}
    if value is not None:
        parse_rule(json.dumps(value))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    producer.produce(settings.rules_topic, key=rule_id.encode(),
                     value=None if value is None else json.dumps(value).encode(),
                     timestamp=int(time.time() * 1000))
    if producer.flush(15):
        raise SystemExit("rule not delivered to Kafka")
    print(f"{'removed' if value is None else 'set'} {rule_id}")
    return 0


def _api_auth_or_exit(settings: Settings) -> None:
    """Refuse to start an API that could not check tokens (see ops_api/auth.py)."""
    from ops_api.auth import AuthNotConfigured, auth_from

    try:
        auth_from(settings)
    except (AuthNotConfigured, OSError) as exc:
        raise SystemExit(f"fraud: not starting: {exc}") from None


def cmd_worker(args, settings: Settings) -> int:
    import faust

    from models.serving import quiet_mlflow_client_env
    from fraud.worker import build

    if settings.api_port:
        _api_auth_or_exit(settings)
    quiet_mlflow_client_env(settings.mlflow_uri)
    config = logs.logging_config(args.loglevel, settings.log_format or "json")
    worker = faust.Worker(build(settings).app, loglevel=args.loglevel, quiet=True, logging_config=config)
    worker.execute_from_commandline()
    return 0


def cmd_api(args, settings: Settings) -> int:
    from aiohttp import web

    from models.serving import quiet_mlflow_client_env
    from ops_api.app import create_api
    from core.metrics import Metrics

    _api_auth_or_exit(settings)
    quiet_mlflow_client_env(settings.mlflow_uri)
    web.run_app(create_api(settings, Metrics()), host=settings.api_host, port=settings.api_port,
                access_log=None)
    return 0


def cmd_token(args, settings: Settings) -> int:
    from ops_api.auth import mint

    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    ttl = args.ttl.strip().lower()
    try:
        seconds = float(ttl[:-1]) * units[ttl[-1]] if ttl[-1:] in units else float(ttl)
        print(mint(settings, args.role, seconds, subject=args.subject, private_key=args.private_key))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"fraud token: {exc}") from None
    return 0


def cmd_tail(args, settings: Settings) -> int:
    import uuid

    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    topic = args.topic or settings.verdicts_topic
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"tail-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest" if args.from_beginning else "latest",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.subscribe([topic])
    shown = 0
    try:
        while not args.count or shown < args.count:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            value = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
            print(json.dumps(value, default=str), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def _add_simulation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--terminals", type=int, default=2000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _add_model_commands(sub) -> None:
    """train, tune, evaluate and thresholds: the model's lifecycle."""
    from models.params import TrainParams

    p = sub.add_parser("train", help="train on a history, register in MLflow, promote when better")
    _add_simulation_args(p)
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="Parquet or CSV with Transaction fields and a label column (default: simulate)")
    data.add_argument("--examples", action="store_true",
                      help="train on the labelled examples the stream accumulated (verdicts joined to feedback)")
    p.add_argument("--label-column", default="is_fraud", help="with --data: the 0/1 fraud label column")
    p.add_argument("--n-estimators", type=int, default=TrainParams.n_estimators)
    p.add_argument("--max-depth", type=int, default=TrainParams.max_depth)
    p.add_argument("--learning-rate", type=float, default=TrainParams.learning_rate)
    p.add_argument("--alerts-per-day", type=_positive, default=TrainParams.alerts_per_day,
                   help="the run reports the review threshold raising about this many alerts a day on its "
                        "held-out days, with its precision and recall")
    p.add_argument("--no-promote", action="store_true", help="register only; leave the champion alias")
    p.add_argument("--job-id", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="hyperparameter search (Optuna) with prequential validation")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--terminals", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="Parquet or CSV with Transaction fields and is_fraud (default: simulate 183 days)")
    p.add_argument("--job-id", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="the handbook protocol on simulated histories, over several seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--n-estimators", type=int, default=TrainParams.n_estimators)
    p.add_argument("--max-depth", type=int, default=TrainParams.max_depth)
    p.add_argument("--learning-rate", type=float, default=TrainParams.learning_rate)
    p.add_argument("--tree-method", default=TrainParams.tree_method, choices=["exact", "hist", "approx"])
    p.add_argument("--features", default="all", choices=["all", "handbook"],
                   help="all: ours; handbook: the published baseline's 15")
    p.add_argument("--drop", nargs="+", default=[], metavar="FEATURE", help="leave these features out")
    p.add_argument("--scale-pos-weight", type=float, default=None,
                   help="a fixed class weight (default: chosen on the last part of the training days)")
    p.add_argument("--no-mlflow", action="store_true", help="print only; log no run")
    p.add_argument("--no-cache", action="store_true",
                   help="simulate and featurise every seed again (default: kept under FRAUD_DATA_DIR/.evaluate-cache)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("thresholds", help="the review threshold raising about N alerts a day on recent traffic")
    _add_simulation_args(p)
    p.add_argument("--alerts-per-day", type=_positive, required=True)
    p.add_argument("--recent-days", type=float, default=7.0, help="how much of the history's end is read")
    p.add_argument("--data", help="Parquet or CSV of labelled traffic, as for train (default: simulate)")
    p.add_argument("--label-column", default="is_fraud")
    p.set_defaults(func=cmd_thresholds, seed=1)  # simulated: a history the default training did not see


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fraud", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("services", help="start/stop the local Kafka, registry, Redis and MLflow")
    p.add_argument("action", nargs="+", help="up | down | status | logs | reset")
    p.set_defaults(func=cmd_services)

    sub.add_parser("topics", help="create topics and register schemas").set_defaults(func=cmd_topics)

    p = sub.add_parser("simulate", help="labelled synthetic transactions to a file and/or Kafka")
    _add_simulation_args(p)
    p.add_argument("--count", type=int, default=0, help="only the first N transactions")
    p.add_argument("--out", help="write the history here (.parquet or .csv)")
    p.add_argument("--kafka", action="store_true", help="produce to the transactions topic")
    p.add_argument("--rate", type=float, default=0.0, help="transactions per second (0: as fast as possible)")
    p.add_argument("--feedback", action="store_true", help="also produce each label to the feedback topic")
    p.add_argument("--feedback-delay-days", type=float, default=7.0,
                   help="event time between a transaction and its label (default 7 days)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_simulate)

    _add_model_commands(sub)

    p = sub.add_parser("rules", help="list or change the hard rules (block lists, amount ceilings)")
    rules = p.add_subparsers(dest="action", required=True)
    rules.add_parser("list")
    rules.add_parser("block-card").add_argument("args", nargs=1, metavar="CUSTOMER_ID")
    rules.add_parser("block-terminal").add_argument("args", nargs=1, metavar="TERMINAL_ID")
    rules.add_parser("ceiling").add_argument("args", nargs=2, metavar=("MERCHANT_CATEGORY", "MAX_AMOUNT"))
    rules.add_parser("remove").add_argument("args", nargs=1, metavar="RULE_ID")
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("worker", help="run the scoring worker (and the ops API)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    sub.add_parser("api", help="run the ops API on its own").set_defaults(func=cmd_api)

    p = sub.add_parser("token", help="mint a JWT for the API (local use)")
    p.add_argument("--role", required=True, choices=["viewer", "analyst", "ml-engineer", "admin"])
    p.add_argument("--ttl", default="1h", help="how long it is valid: 90s, 30m, 12h, 7d (default 1h)")
    p.add_argument("--subject", default="local", help="who it is for (the token's sub)")
    p.add_argument("--private-key", help="RS256: the PEM private key (or its path) to sign with")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("tail", help="print decoded verdicts")
    p.add_argument("--topic", help="default: the verdict topic")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--count", type=int, default=0, help="stop after N (0: run until interrupted)")
    p.set_defaults(func=cmd_tail)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = Settings()
    logs.setup("INFO", settings.log_format or ("json" if args.command in ("worker", "api") else "text"))
    sys.exit(args.func(args, settings) or 0)

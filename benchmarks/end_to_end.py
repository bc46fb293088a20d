"""Produce-to-verdict through the real services: one worker, per event versus micro-batched.

    scripts/services up
    .venv/bin/python benchmarks/end_to_end.py [--transactions 30000] [--rate 2000]

For each variant a fresh worker process consumes its own topics. Two measurements per variant:
- throughput: a backlog of --transactions is produced first, then the worker starts; rate = backlog /
  (time the worker's terminal agent has added every scored transaction to the terminal rows - first
  verdict scored): both agents' work, the verdicts and the terminal table;
- latency: transactions produced at a steady --rate while the worker runs; per verdict, the time
  from the transaction's produce timestamp to the verdict being read by a read_committed consumer
  ("visible"), and to scoring (the verdict's own latency_ms). Visibility waits for the partition's
  transaction to commit, so it includes FRAUD_COMMIT_INTERVAL_SECONDS.
The baseline is the same worker with FRAUD_BATCH_MAX=1, in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.simulate import SimulationConfig, simulate, transaction_records  # noqa: E402
from models.train import TrainParams, train_and_register  # noqa: E402
from schemas.codec import AvroCodec, SchemaRegistry, load_schema  # noqa: E402
from streams.produce import producer_for, replay, transaction_messages  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tests.conftest import WorkerProcess, unique_settings  # noqa: E402


def collect(settings, expected: int, timeout: float) -> list[tuple[float, dict]]:
    """(read wall time, verdict) for `expected` verdicts, read_committed."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([settings.verdicts_topic])
    codec = AvroCodec(SchemaRegistry(settings.schema_registry_url), load_schema("verdict"), "bench")
    out, seen = [], set()
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() or (msg.partition(), msg.offset()) in seen:
                continue
            seen.add((msg.partition(), msg.offset()))
            out.append((time.time(), codec.decode(msg.value())))
    consumer.close()
    return out


def terminals_caught_up(worker: WorkerProcess, expected: int, timeout: float) -> float:
    """Wall time at which the worker's terminal agent has added `expected` transactions to the
    terminal rows, polled every 50 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = worker.get("/metrics")[1].get("fraud_terminal_events_total{kind=transaction}", 0)
        if counted >= expected:
            return time.time()
        time.sleep(0.05)
    raise TimeoutError("the terminal agent did not catch up")


def variant(name: str, batch_max: int, model_name: str, backlog: list[dict], paced: list[dict],
            rate: float, tmp: Path) -> dict:
    settings = unique_settings(tmp, model_name=model_name, batch_max=batch_max, partitions=6)
    ensure_topics(settings)
    registry = SchemaRegistry(settings.schema_registry_url)
    codec = AvroCodec(registry, load_schema("transaction"), f"{settings.transactions_topic}-value")
    codec.register()
    producer = producer_for(settings.kafka_bootstrap)
    replay(producer, transaction_messages(settings.transactions_topic, codec, backlog))

    worker = WorkerProcess(settings, tmp / f"{name.replace(' ', '-')}.log").start()
    try:
        worker.wait_ready()
        verdicts = collect(settings, len(backlog), timeout=600)
        assert len(verdicts) == len(backlog), f"{name}: {len(verdicts)} of {len(backlog)} verdicts"
        first_scored = min(v["scored_at"] for _, v in verdicts) / 1000
        throughput = len(backlog) / max(1e-3, terminals_caught_up(worker, len(backlog), timeout=600) - first_scored)

        sender = threading.Thread(target=replay, kwargs={
            "producer": producer, "messages": transaction_messages(settings.transactions_topic, codec, paced),
            "rate": rate})
        sender.start()
        live = collect(settings, len(backlog) + len(paced), timeout=600)[len(backlog):]
        sender.join()
    finally:
        worker.stop()
    paced_ids = {t["transaction_id"] for t in paced}
    live = [(read, v) for read, v in live if v["transaction_id"] in paced_ids]
    visible = np.array([read * 1000 - (v["scored_at"] - v["latency_ms"]) for read, v in live])
    to_score = np.array([v["latency_ms"] for _, v in live])
    return {"name": name, "throughput": throughput,
            "visible_p50": np.percentile(visible, 50), "visible_p99": np.percentile(visible, 99),
            "score_p50": np.percentile(to_score, 50), "score_p99": np.percentile(to_score, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--paced-seconds", type=float, default=10)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    model_name = f"bench-xgb-{uuid.uuid4().hex[:6]}"
    history = simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0))
    base = unique_settings(tmp, model_name=model_name)
    train_and_register(history, tracking_uri=base.mlflow_uri, model_name=model_name,
                       experiment="fraud-scorer-bench", params=TrainParams())
    stream = transaction_records(simulate(SimulationConfig(customers=2000, terminals=4000, days=60, seed=1)))
    n_paced = int(args.rate * args.paced_seconds)
    backlog, paced = stream[: args.transactions], stream[args.transactions: args.transactions + n_paced]

    results = [variant("per event (baseline)", 1, model_name, backlog[: args.transactions // 3], paced, args.rate, tmp),
               variant("batch 1000", 1000, model_name, backlog, paced, args.rate, tmp)]
    base_rate = results[0]["throughput"]
    print(f"one worker, 6 partitions; backlog {args.transactions} (baseline: a third of it); "
          f"paced {n_paced} at {args.rate:.0f}/s; logs in {tmp}")
    print(f"{'variant':24} {'txn/s':>8} {'vs base':>8} {'score p50':>10} {'score p99':>10} "
          f"{'visible p50':>12} {'visible p99':>12}  (ms)")
    for r in results:
        print(f"{r['name']:24} {r['throughput']:8.0f} {r['throughput'] / base_rate:7.1f}x "
              f"{r['score_p50']:10.1f} {r['score_p99']:10.1f} {r['visible_p50']:12.1f} {r['visible_p99']:12.1f}")


if __name__ == "__main__":
    main()

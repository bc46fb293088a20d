"""The scoring hot path in one process, per event versus micro-batched, measured in the same run.

    .venv/bin/python benchmarks/hot_path.py [--transactions 20000] [--trees 100] [--repeat 3]

Each variant runs, over the same Confluent-framed Avro messages, what a worker does per transaction:
the scoring agent's decode -> validate -> features (card history, terminal rows) -> score -> decide ->
reasons -> encode the verdict, and the batch's transactions in one record per terminal partition (6);
the terminal agent's decode -> add to the terminal's row -> serialise the row for the changelog (once
per terminal per batch); and the follower's keeping of every verdict (as written) and decode of every
changelog row. The baseline does it one event at a time; the others in micro-batches with one model
call per batch. No broker is involved: this isolates the Python and model cost per transaction.
Figures are medians over --repeat runs, with ratios to the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from models.serving import LoadedModel
from models.simulate import SimulationConfig, simulate, transaction_records
from models.train import TrainParams, fit
from schemas.codec import AvroCodec, CodecError, _parse, load_schema
from core.decision import Thresholds, decide, top_reasons
from core.features import (FEATURE_NAMES, N_CUSTOMER_FEATURES, N_FEATURES, customer_features,
                              empty_history, empty_terminal_history, feature_matrix,
                              invalid_transaction_reason, remember, remember_terminal)
from streams.topics import terminal_partition
from streams.verdicts import VerdictFollower

PARTITIONS = 6


class LocalRegistry:
    """Schema ids in memory: the benchmark measures the codec, not registry round trips."""

    def __init__(self):
        self.schemas: dict[int, dict] = {}

    def register(self, subject, schema, compatibility="BACKWARD"):
        self.schemas[len(self.schemas) + 1] = _parse(schema)
        return len(self.schemas)

    def writer_schema(self, schema_id):
        try:
            return self.schemas[schema_id]
        except KeyError:
            raise CodecError(f"unknown schema id {schema_id}") from None


def run(messages: list[bytes], codecs, model: LoadedModel, batch: int, exact: bool) -> float:
    """Seconds to turn all messages into encoded verdicts, `batch` at a time, as the scoring agent
    does, to add them to the terminal table's rows, as the terminal agent does, and to keep the
    verdicts and read the rows back, as every worker's follower does."""
    txn_codec, verdict_codec, terminal_codec = codecs
    thresholds = Thresholds()
    histories: dict[str, dict] = {}
    table: dict[str, dict] = {}  # the terminal agent's rows
    terminals = VerdictFollower("unused:9092", "verdicts", "terminal-changelog", 86_400.0)
    out, seen = [], {}
    started = time.perf_counter()
    for at in range(0, len(messages), batch):
        chunk = messages[at: at + batch]
        rows = np.empty((len(chunk), N_FEATURES))
        txns = []
        for data in chunk:
            txn = txn_codec.decode(data)
            if invalid_transaction_reason(txn):
                continue
            history = histories.get(txn["customer_id"]) or empty_history()
            rows[len(txns), :N_CUSTOMER_FEATURES] = customer_features(history, txn)
            histories[txn["customer_id"]] = remember(history, txn)
            txns.append(txn)
        rows = rows[: len(txns)]
        rows[:, N_CUSTOMER_FEATURES:] = terminals.terminal_features(
            [t["terminal_id"] for t in txns], [t["timestamp"] for t in txns])
        scores = model.scores(rows)
        decisions = decide(scores, thresholds)
        reasons = top_reasons(model.contributions(rows, exact=exact), rows, FEATURE_NAMES)
        now = int(time.time() * 1000)
        for txn, score, decision, why, row in zip(txns, scores.tolist(), decisions, reasons, rows.tolist()):
            verdict = {
                "transaction_id": txn["transaction_id"], "customer_id": txn["customer_id"],
                "score": score, "decision": decision, "model_name": model.name,
                "model_version": model.version, "reasons": why, "transaction_timestamp": txn["timestamp"],
                "scored_at": now, "latency_ms": 0.0, "terminal_id": txn["terminal_id"],
                "features": dict(zip(FEATURE_NAMES, row))}
            out.append(verdict_codec.encode(verdict))
            seen.setdefault(terminal_partition(txn["terminal_id"], PARTITIONS), []).append(
                {"transaction_id": txn["transaction_id"], "terminal_id": txn["terminal_id"],
                 "transaction_timestamp": txn["timestamp"]})
        records = [terminal_codec.encode({"transactions": items}) for items in seen.values()]
        seen.clear()
        changed = {}
        for encoded in records:
            for item in terminal_codec.decode(encoded)["transactions"]:
                key = item["terminal_id"]
                row = changed.get(key) or table.get(key) or empty_terminal_history()
                changed[key] = table[key] = remember_terminal(row, item["transaction_timestamp"])
        changelog = [(json.dumps(key).encode(), json.dumps(row).encode()) for key, row in changed.items()]
        for txn, encoded in zip(txns, out[len(out) - len(txns):]):
            terminals.remember_verdict(txn["transaction_id"], now, encoded)
        for key, value in changelog:
            terminals.apply_terminal(key, value)
    elapsed = time.perf_counter() - started
    assert len(out) == len(messages)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    history = simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0))
    labels = history["is_fraud"].to_numpy()
    booster = fit(feature_matrix(transaction_records(history), labels), labels,
                  TrainParams(n_estimators=args.trees, max_depth=args.depth))
    booster.set_param({"nthread": 1})
    model = LoadedModel(booster, "bench", "1", "memory")

    registry = LocalRegistry()
    txn_codec = AvroCodec(registry, load_schema("transaction"), "t-value")
    verdict_codec = AvroCodec(registry, load_schema("verdict"), "v-value")
    terminal_codec = AvroCodec(registry, load_schema("terminal_transaction"), "tt-value")
    txn_codec.register(), verdict_codec.register(), terminal_codec.register()
    stream = transaction_records(simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=1)))
    messages = [txn_codec.encode(t) for t in stream[: args.transactions]]
    codecs = (txn_codec, verdict_codec, terminal_codec)

    variants = [("per event (baseline)", 1, False), ("batch 100", 100, False), ("batch 500", 500, False),
                ("batch 1000", 1000, False), ("batch 500, exact TreeSHAP reasons", 500, True)]
    print(f"{len(messages)} transactions, {args.trees} trees of depth {args.depth}, 1 XGBoost thread, "
          f"median of {args.repeat} runs")
    print(f"{'variant':38} {'txn/s':>10} {'us/txn':>8} {'vs baseline':>12}")
    baseline = None
    for name, batch, exact in variants:
        n = len(messages) if batch > 1 else min(len(messages), 5_000)
        seconds = statistics.median(run(messages[:n], codecs, model, batch, exact) for _ in range(args.repeat))
        rate = n / seconds
        baseline = baseline or rate
        print(f"{name:38} {rate:10.0f} {1e6 / rate:8.1f} {rate / baseline:11.1f}x")


if __name__ == "__main__":
    main()

"""The scoring hot path in one process, per event versus micro-batched, measured in the same run.

    .venv/bin/python benchmarks/hot_path.py [--transactions 20000] [--trees 100] [--repeat 3]

Each variant runs, over the same Confluent-framed Avro messages, what a worker does per transaction:
the scoring agent's decode -> validate -> features (the card's state, the terminal's counts) -> score ->
decide -> reasons -> encode the verdict; the terminal agent's adding of each transaction to its
terminal's daily counts, serialised once per terminal per batch; and the follower's keeping of every
verdict (as written) and reading of every serialised terminal. The baseline does it one event at a
time; the others in micro-batches with one model call per batch. No broker is involved: this isolates
the Python and model cost per transaction.
Figures are medians over --repeat runs, with ratios to the baseline of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from models.serving import LoadedModel
from models.simulate import SimulationConfig, simulate, transaction_records
from models.train import TrainParams, fit
from schemas.codec import AvroCodec, CodecError, _parse, load_schema
from core.decision import Thresholds, decide, top_reasons
from core.features import (FEATURE_NAMES, N_FEATURES, TERMINAL_FEATURE_NAMES, CardState, TerminalCounts,
                           feature_matrix, invalid_transaction_reason)

NO_TERMINAL = (0.0,) * len(TERMINAL_FEATURE_NAMES)


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
    does, to add them to their terminals' counts, as the terminal agent does, and to keep the verdicts
    and read the counts back, as every worker's follower does."""
    txn_codec, verdict_codec = codecs
    thresholds = Thresholds()
    cards: dict[str, CardState] = {}
    counts: dict[str, TerminalCounts] = {}     # the terminal agent's
    snapshots: dict[str, TerminalCounts] = {}  # what the scorers read, from the serialised counts
    verdicts: dict[str, tuple[int, bytes]] = {}
    out = []
    started = time.perf_counter()
    for at in range(0, len(messages), batch):
        chunk = messages[at: at + batch]
        rows = np.empty((len(chunk), N_FEATURES))
        txns = []
        for data in chunk:
            txn = txn_codec.decode(data)
            if invalid_transaction_reason(txn):
                continue
            card = cards.get(txn["customer_id"])
            if card is None:
                card = cards[txn["customer_id"]] = CardState()
            terminal = snapshots.get(txn["terminal_id"])
            rows[len(txns)] = (*card.features_then_add(txn),
                               *(terminal.features(txn["timestamp"]) if terminal is not None else NO_TERMINAL))
            txns.append(txn)
        rows = rows[: len(txns)]
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
        changed = set()
        for txn in txns:
            terminal = counts.get(txn["terminal_id"])
            if terminal is None:
                terminal = counts[txn["terminal_id"]] = TerminalCounts()
            terminal.add(txn["timestamp"])
            changed.add(txn["terminal_id"])
        changelog = [(key, counts[key].to_bytes()) for key in changed]
        for txn, encoded in zip(txns, out[len(out) - len(txns):]):
            verdicts[txn["transaction_id"]] = (now, encoded)
        for key, value in changelog:
            snapshots[key] = TerminalCounts.from_bytes(value)
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
    txn_codec.register(), verdict_codec.register()
    stream = transaction_records(simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=1)))
    messages = [txn_codec.encode(t) for t in stream[: args.transactions]]
    codecs = (txn_codec, verdict_codec)

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

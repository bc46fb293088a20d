"""The worker's steps in one process, no broker: per event versus batched, measured in the same run.

    .venv/bin/python benchmarks/hot_path.py [--transactions 20000] [--trees 50] [--depth 3] [--repeat 3]

Each variant hands the same Confluent-framed Avro transactions to the worker's own scoring step
(streams/scoring.py: decode, validate, card and terminal features, score and explain, decide, write
the verdict and the batch's terminal events), then hands those terminal events to the terminal step
(streams/terminals.py: add each to its terminal's counts), and serialises the changed cards and
terminals as a commit would (streams/state.py). A recording stand-in takes the place of the Kafka
transaction: what is measured is the Python and model cost per transaction. The baseline hands the
steps one transaction at a time; the others batches of 100 and 1,000 (and 1,000 with exact TreeSHAP
reasons, from XGBoost). Figures are medians over --repeat runs, with ratios to the baseline of the
same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.decision import Thresholds  # noqa: E402
from core.features import CardState, TerminalCounts, feature_matrix  # noqa: E402
from core.metrics import Metrics  # noqa: E402
from models.serving import LoadedModel, ModelHandle  # noqa: E402
from models.simulate import SimulationConfig, simulate, transaction_records  # noqa: E402
from models.train import TrainParams, fit  # noqa: E402
from schemas.codec import AvroCodec, CodecError, _parse, load_schema  # noqa: E402
from streams.rules import RulesTable  # noqa: E402
from streams.scoring import ScoringStep  # noqa: E402
from streams.state import Store  # noqa: E402
from streams.terminals import TerminalStep  # noqa: E402
from streams.topics import SCHEMAS  # noqa: E402

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

    def knows(self, schema_id):
        return schema_id in self.schemas


class Message:
    """What confluent-kafka hands the steps."""

    __slots__ = ("_topic", "_partition", "_offset", "_value")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes):
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return None

    def timestamp(self):
        return 1, int(time.time() * 1000)


class Transaction:
    """Stands in for the worker's Kafka transaction: keeps what is written to each topic."""

    def __init__(self):
        self.written: dict[str, list] = {}

    def produce(self, topic, value, key=None, partition=-1, headers=None):
        self.written.setdefault(topic, []).append((partition, value))

    def processed(self, topic, partition, offset):
        pass


def steps(codecs: dict, model: LoadedModel, exact: bool = False) -> tuple[ScoringStep, TerminalStep, list[Store]]:
    """The worker's scoring and terminal steps on fresh stores holding every partition."""
    cards = Store("cards", "transactions", "cards-changelog", CardState.to_bytes, CardState.from_bytes)
    counts = Store("terminals", "events", "terminals-changelog", TerminalCounts.to_bytes, TerminalCounts.from_bytes)
    for p in range(PARTITIONS):
        cards.open(p)
        counts.open(p)
    topics = {"verdicts": "verdicts", "dlq": "dlq", "terminal_events": "events", "examples": "examples"}
    scoring = ScoringStep("transactions", cards, {}, codecs, ModelHandle(model), ModelHandle(), RulesTable("rules"),
                          Thresholds(), Metrics(), topics, PARTITIONS, "bench", exact)
    terminals = TerminalStep("events", counts, codecs["terminal_events"], "snapshots", "dlq", Metrics())
    return scoring, terminals, [cards, counts]


def one_batch(batch: dict[int, list], scoring: ScoringStep, terminals: TerminalStep, stores: list[Store],
              offsets: list[int]) -> None:
    """What the worker does with a batch: score it, count its terminal events, serialise the changes."""
    transaction = Transaction()
    scoring.process(batch, transaction)
    events: dict[int, list] = {}
    for partition, value in transaction.written.get("events", []):
        events.setdefault(partition, []).append(Message("events", partition, offsets[partition], value))
        offsets[partition] += 1
    terminals.process(events, transaction)
    for store in stores:
        sum(1 for _ in store.pending())


def run(batches: list[dict[int, list]], codecs: dict, model: LoadedModel, exact: bool) -> float:
    scoring, terminals, stores = steps(codecs, model, exact)
    offsets = [0] * PARTITIONS
    started = time.perf_counter()
    for batch in batches:
        one_batch(batch, scoring, terminals, stores, offsets)
    return time.perf_counter() - started


def setup(trees: int, depth: int, transactions: int) -> tuple[dict, LoadedModel, list[Message]]:
    """A model trained on one simulated history, the codecs, and Avro transactions of another."""
    history = simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0))
    labels = history["is_fraud"].to_numpy()
    booster = fit(feature_matrix(transaction_records(history), labels), labels,
                  TrainParams(n_estimators=trees, max_depth=depth))
    booster.set_param({"nthread": 1})
    model = LoadedModel(booster, "bench", "1", "memory")

    registry = LocalRegistry()
    codecs = {role: AvroCodec(registry, load_schema(schema), f"{role}-value") for role, schema in SCHEMAS.items()}
    for codec in codecs.values():
        codec.register()
    stream = transaction_records(simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=1)))
    messages = [Message("transactions", hash(t["customer_id"]) % PARTITIONS, i, codecs["transactions"].encode(t))
                for i, t in enumerate(stream[:transactions])]
    return codecs, model, messages


def batched(messages: list[Message], size: int) -> list[dict[int, list]]:
    out = []
    for at in range(0, len(messages), size):
        batch: dict[int, list] = {}
        for msg in messages[at: at + size]:
            batch.setdefault(msg.partition(), []).append(msg)
        out.append(batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    codecs, model, messages = setup(args.trees, args.depth, args.transactions)

    variants = [("per event (baseline)", 1, False), ("batches of 100", 100, False),
                ("batches of 1,000", 1000, False), ("batches of 1,000, exact TreeSHAP reasons", 1000, True)]
    print(f"{len(messages)} transactions, {args.trees} trees of depth {args.depth}, one thread, "
          f"median of {args.repeat} runs")
    print(f"{'variant':42} {'txn/s':>10} {'us/txn':>8} {'vs baseline':>12}")
    baseline = None
    for name, size, exact in variants:
        n = len(messages) if size > 1 else min(len(messages), 5_000)
        seconds = statistics.median(run(batched(messages[:n], size), codecs, model, exact) for _ in range(args.repeat))
        rate = n / seconds
        baseline = baseline or rate
        print(f"{name:42} {rate:10.0f} {1e6 / rate:8.1f} {rate / baseline:11.1f}x")


if __name__ == "__main__":
    main()

"""A worker's memory and its time to ready with a large state: `--cards` cards and `--terminals`
terminals, each with 30 days of history.

    scripts/services up
    .venv/bin/python benchmarks/state.py [--cards 1000000] [--terminals 100000]

The state is written where a worker keeps it: each card's state to the cards changelog, each
terminal's daily counts to the terminals changelog and to the terminal snapshots, on the partitions
their keys belong to (as after 30 days of traffic: the states are those of simulated cards and
terminals replayed over 30 days, cycled over the keys). Then a worker starts with nothing held
locally, as after a restart on a new machine: it reads the changelogs of the partitions it is given
and every terminal snapshot before it reports ready. Reported: the time from the process start to
/health/ready answering 200, and the process's resident memory then, against the same worker
started on empty topics.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402

from benchmarks.baselines import topics_dropped_after  # noqa: E402
from core.features import CardState, TerminalCounts  # noqa: E402
from models.simulate import SimulationConfig, simulate, transaction_records  # noqa: E402
from models.train import TrainParams, train_and_register  # noqa: E402
from streams.topics import cards_changelog, ensure_topics, terminal_partition, terminal_snapshots, terminals_changelog  # noqa: E402
from tests.conftest import WorkerProcess, unique_settings  # noqa: E402


def templates() -> tuple[list[bytes], list[bytes]]:
    """Card states and terminal counts after 30 simulated days (2,000 cards, 4,000 terminals)."""
    history = transaction_records(simulate(SimulationConfig(customers=2000, terminals=4000, days=30, seed=5)))
    cards: dict[str, CardState] = {}
    terminals: dict[str, TerminalCounts] = {}
    for txn in history:
        cards.setdefault(txn["customer_id"], CardState()).features_then_add(txn)
        terminals.setdefault(txn["terminal_id"], TerminalCounts()).add(txn["timestamp"])
    return [c.to_bytes() for c in cards.values()], [t.to_bytes() for t in terminals.values()]


def write_state(settings, n_cards: int, n_terminals: int) -> None:
    card_states, terminal_counts = templates()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 50, "partitioner": "murmur2_random",
                         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})

    def send(topic: str, key: str, value: bytes, partition: int = -1) -> None:
        while True:
            try:
                producer.produce(topic, value, key.encode(), partition)
                return
            except BufferError:
                producer.poll(0.1)

    for i in range(n_cards):  # partitioned by key, as the transactions of the card are
        send(cards_changelog(settings), f"C{i:08d}", card_states[i % len(card_states)])
        if i % 10_000 == 0:
            producer.poll(0)
    for i in range(n_terminals):
        key = f"T{i:07d}"
        value = terminal_counts[i % len(terminal_counts)]
        part = terminal_partition(key, settings.partitions)
        send(terminals_changelog(settings), key, value, part)
        send(terminal_snapshots(settings), key, value, part)
    assert producer.flush(300) == 0


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(settings, log: Path) -> dict:
    worker = WorkerProcess(settings, log)
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_ready(timeout=1800)
        ready = time.monotonic() - started
        time.sleep(2)
        return {"seconds_to_ready": ready, "rss_mb": rss_mb(worker.proc.pid),
                "cards": worker.get("/metrics")[1].get("fraud_state_keys{store=cards}"),
                "terminals": worker.get("/health")[1]["components"]["verdicts"]["terminals"]}
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--terminals", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-state-"))
    model = f"bench-xgb-{uuid.uuid4().hex[:6]}"
    base = unique_settings(tmp, model_name=model, partitions=6)
    train_and_register(simulate(SimulationConfig(customers=500, terminals=1000, days=40, seed=0)),
                       tracking_uri=base.mlflow_uri, model_name=model, experiment="fraud-scorer-bench",
                       params=TrainParams())
    empty = unique_settings(tmp, model_name=model, partitions=6)
    ensure_topics(empty)
    idle = start(empty, tmp / "empty.log")
    full = unique_settings(tmp, model_name=model, partitions=6)
    ensure_topics(full)
    began = time.monotonic()
    write_state(full, args.cards, args.terminals)
    print(f"wrote {args.cards} card states and {args.terminals} terminals in {time.monotonic() - began:.0f} s")
    loaded = start(full, tmp / "full.log")
    print(f"\nlogs in {tmp}")
    print(f"empty state:  ready in {idle['seconds_to_ready']:.1f} s, RSS {idle['rss_mb']:.0f} MB")
    print(f"{args.cards} cards, {args.terminals} terminals: ready in {loaded['seconds_to_ready']:.1f} s, "
          f"RSS {loaded['rss_mb']:.0f} MB (held: {loaded['cards']} cards, {loaded['terminals']} terminal snapshots)")
    per_card = (loaded["rss_mb"] - idle["rss_mb"]) * 1024 * 1024 / max(1, args.cards + args.terminals)
    print(f"about {per_card:.0f} bytes per card or terminal held")


if __name__ == "__main__":
    with topics_dropped_after():
        main()

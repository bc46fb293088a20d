"""What a batch costs when the worker wakes for it, against the same batch done back to back.

    .venv/bin/python benchmarks/wake_cost.py [--batch 8] [--batches 400] [--gaps 0 1 5 20 100]

The worker's own steps (benchmarks/hot_path.py: decode, features, score and explain, verdicts,
terminal events and counts, changed state serialised) take batches of `--batch` transactions, one
after another with no pause (the baseline), then with the thread asleep `--gap` milliseconds before
each, as a worker waits for its next fetch at moderate load. The CPU time of the thread per batch is
measured (time.thread_time: sleeping is not counted), so what grows with the gap is what a wake-up
itself costs here: caches and branch predictors cold after the other processes (the broker) ran.

This is why a worker's CPU per transaction at a few hundred transactions per second is several
times its CPU per transaction at full load, and why three workers sharing a light stream cost more
than one doing it all: each takes batches a third the size at the same wake-ups.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.hot_path import PARTITIONS, batched, one_batch, setup, steps  # noqa: E402


def cpu_per_batch(batches: list, gap_s: float, scoring, terminals, stores, offsets) -> float:
    """Median thread CPU seconds per batch, each batch after `gap_s` asleep."""
    spent = []
    for batch in batches:
        if gap_s:
            time.sleep(gap_s)
        started = time.thread_time()
        one_batch(batch, scoring, terminals, stores, offsets)
        spent.append(time.thread_time() - started)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="transactions per batch")
    parser.add_argument("--batches", type=int, default=400, help="batches per gap")
    parser.add_argument("--gaps", type=float, nargs="*", default=[0, 1, 5, 20, 100], help="milliseconds asleep")
    args = parser.parse_args()
    gaps = sorted(set(args.gaps) | {0})
    codecs, model, messages = setup(50, 3, args.batch * args.batches * (len(gaps) + 1))
    batches = batched(messages, args.batch)
    scoring, terminals, stores = steps(codecs, model)
    offsets = [0] * PARTITIONS
    cpu_per_batch(batches[: args.batches], 0, scoring, terminals, stores, offsets)  # warm: every card seen once
    print(f"batches of {args.batch} transactions, {args.batches} per gap, median thread CPU per batch")
    print(f"{'asleep before each batch':26} {'us/batch':>9} {'us/txn':>8} {'vs back to back':>16}")
    baseline = None
    for i, gap in enumerate(gaps):
        chunk = batches[(i + 1) * args.batches: (i + 2) * args.batches]
        seconds = cpu_per_batch(chunk, gap / 1000, scoring, terminals, stores, offsets)
        baseline = baseline or seconds
        label = "none (back to back)" if gap == 0 else f"{gap:g} ms"
        print(f"{label:26} {1e6 * seconds:9.0f} {1e6 * seconds / args.batch:8.1f} {seconds / baseline:15.2f}x")


if __name__ == "__main__":
    main()

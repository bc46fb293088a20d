"""What a worker costs at moderate load, and whether sharing the partitions multiplies that cost.

    scripts/services up
    .venv/bin/python benchmarks/scale_out.py [--rate 300] [--seconds 60] [--workers 3]

Transactions (live event times) are produced at `--rate` for `--seconds`, first to one worker
holding all 6 partitions of every input topic, then, on fresh topics, to `--workers` workers sharing
them (the range assignor gives each an even share of each topic). The CPU seconds of the worker
processes (user + system, from /proc) are counted from the first transaction produced until every
verdict is visible, and reported per transaction and as the ratio of the shared run's sum to the
single worker's, with each run's latency (produce -> scored, and -> visible to a read_committed
consumer). The CPU seconds are also split by thread: librdkafka's own threads (named rdk:*:
fetching, producing, the transactional protocol) against the Python threads (the loop, the commit
thread, the ops API). FRAUD_BATCH_WITHIN_SECONDS in the environment sets the workers' batch wait: the
trade between CPU and latency at light load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import collector_paused, topics_dropped_after  # noqa: E402
from benchmarks.end_to_end import (Verdicts, bench_model, live_transactions, prepared,  # noqa: E402
                                   process_cpu_seconds, thread_cpu_seconds)
from streams.produce import producer_for, replay, transaction_messages  # noqa: E402
from tests.conftest import WorkerProcess, free_port, unique_settings  # noqa: E402


def kafka_client_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's librdkafka threads (named rdk:...) so far."""
    return sum(seconds for name, seconds in thread_cpu_seconds(pid) if name.startswith("rdk:"))


def paced_run(tmp: Path, model_name: str, n_workers: int, rate: float, seconds: float, tag: str) -> dict:
    settings, codec = prepared(tmp, model_name, 1000, [])
    workers = [WorkerProcess(settings.model_copy(update={"api_port": free_port(), "worker_id": f"{tag}-{i}"}),
                             tmp / f"{tag}-{i}.log") for i in range(n_workers)]
    verdicts = Verdicts(settings)
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready(timeout=180)
        expected = 3 * settings.partitions  # every partition of the 3 input topics held, once
        deadline = time.monotonic() + 120
        while sum(len(w.get("/health/ready")[1].get("assigned_partitions", [])) for w in workers) != expected:
            assert time.monotonic() < deadline, "the group did not settle"
            time.sleep(0.5)
        time.sleep(3)  # a settled group, before counting
        records = live_transactions(int(rate * seconds), seed=3)
        now = int(time.time() * 1000)
        for r in records:
            r["timestamp"] = now
        messages = list(transaction_messages(settings.transactions_topic, codec, records))  # encoded beforehand
        before = [process_cpu_seconds(w.proc.pid) for w in workers]
        kafka_before = [kafka_client_cpu_seconds(w.proc.pid) for w in workers]
        with collector_paused():
            started = time.time()
            replay(producer_for(settings.kafka_bootstrap), messages, rate=rate)
            verdicts.wait_for(len(records), timeout=300)
            elapsed = time.time() - started
        cpu = [process_cpu_seconds(w.proc.pid) - b for w, b in zip(workers, before)]
        kafka_cpu = [kafka_client_cpu_seconds(w.proc.pid) - b for w, b in zip(workers, kafka_before)]
    finally:
        for worker in workers:
            worker.stop()
        verdicts.stop()
    scored = np.array([v["latency_ms"] for _, v in verdicts.read])
    visible = np.array([read * 1000 - (v["scored_at"] - v["latency_ms"]) for read, v in verdicts.read])
    return {"workers": n_workers, "transactions": len(records), "seconds": elapsed,
            "cpu_seconds": sum(cpu), "cpu_seconds_each": cpu, "kafka_client_cpu_seconds": sum(kafka_cpu),
            "cpu_ms_per_transaction": 1000 * sum(cpu) / len(records),
            "latency_ms": [float(np.percentile(x, q)) for x in (scored, visible) for q in (50, 99)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    settings = unique_settings(tmp)
    model_name = bench_model(settings)
    one = paced_run(tmp, model_name, 1, args.rate, args.seconds, "one")
    shared = paced_run(tmp, model_name, args.workers, args.rate, args.seconds, "shared")
    print(f"\n{args.rate:.0f} transactions/s for {args.seconds:.0f} s; logs in {tmp}")
    for run in (one, shared):
        each = ", ".join(f"{c:.1f}" for c in run["cpu_seconds_each"])
        print(f"  {run['workers']} worker(s): {run['cpu_seconds']:.1f} CPU s ({each}), "
              f"{run['cpu_ms_per_transaction']:.3f} CPU ms per transaction; produce -> scored p50 / p99 "
              "{:.0f} / {:.0f} ms, produce -> visible p50 / p99 {:.0f} / {:.0f} ms".format(*run["latency_ms"]))
        kafka = run["kafka_client_cpu_seconds"]
        print(f"    by thread: librdkafka {kafka:.1f} CPU s, Python {run['cpu_seconds'] - kafka:.1f} CPU s")
    print(f"  {args.workers} workers / 1 worker: {shared['cpu_seconds'] / one['cpu_seconds']:.2f}x")


if __name__ == "__main__":
    with topics_dropped_after():
        main()

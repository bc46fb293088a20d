"""Where a worker's time goes at full load: py-spy samples of its scoring loop, summed by step.

    scripts/services up
    .venv/bin/python -m pip install -e ".[bench]"     # py-spy
    .venv/bin/python benchmarks/profile.py [--transactions 150000] [--seconds 12] [--rate 200]

A backlog of `--transactions` is produced to fresh topics and a worker started on them; once its
first verdicts are visible, py-spy samples the worker `--rate` times a second for `--seconds`
(without stopping it; threads waiting in a system call are not sampled). The samples of the
scoring-loop thread go to the step of the innermost frame of their stack that STEPS names, and the
shares are printed with the worker's rate while it was sampled. The other threads' samples are
counted apart (the commit thread, the ops API). While a backlog drains, the worker's consumer has
the transactions fetched ahead of the terminal events the worker itself writes, so these samples
are of the scoring step (the terminal step's share shows at steady rates).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import topics_dropped_after  # noqa: E402
from benchmarks.end_to_end import Verdicts, bench_model, live_transactions, prepared  # noqa: E402
from tests.conftest import WorkerProcess, unique_settings  # noqa: E402

# (what a frame's function name holds, the step it belongs to); a sample goes to the step of its
# innermost frame found here.
STEPS = [
    ("AvroCodec.decode", "Avro decode"),
    ("invalid_transaction_reason", "validation"),
    ("feature_rows", "card and terminal features"),
    ("CardState.", "card and terminal features"),
    ("TerminalCounts.features", "card and terminal features"),
    ("VerdictWriter", "verdict encoding"),
    ("AvroCodec.encode", "Avro encode (terminal events, snapshots)"),
    ("verdicts_for", "scoring, contributions, decisions, reasons"),
    ("DriftWatch", "drift statistics"),
    ("observe_all", "Prometheus metrics"),
    ("ScoringStep._count", "Prometheus metrics"),
    ("Checkpoint.produce", "producing into the transaction"),
    ("ScoringStep._publish", "building the verdicts' records and headers"),
    ("TerminalStep", "terminal events"),
    ("Checkpoint.commit", "commits: changelog records, handing over to the commit thread"),
    ("Checkpoint.settle", "commits: changelog records, handing over to the commit thread"),
    ("TableReader", "the table reader (followed topics)"),
    ("Worker._take", "taking batches from the consumer"),
    ("ScoringStep.process", "the scoring step's own loop"),
    ("Worker._process", "sorting each batch by topic and partition"),
]
LOOP_THREAD = "scoring-loop"


def step_of(frames: list[str]) -> str:
    """The step of a sample's stack (frames from the outermost to the innermost, as py-spy writes
    them: "function (file:line)")."""
    for frame in reversed(frames):
        function = frame.split(" (", 1)[0]
        for name, step in STEPS:
            if name in function:
                return step
    return "other"


def summarise(raw: str) -> tuple[Counter, Counter]:
    """(samples of the loop thread by step, samples by thread) of py-spy's raw output."""
    by_step: Counter = Counter()
    by_thread: Counter = Counter()
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        thread, *frames = stack.split(";")
        name = thread.split(": ", 1)[-1]
        by_thread[name] += int(count)
        if name == LOOP_THREAD:
            by_step[step_of(frames)] += int(count)
    return by_step, by_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=150_000)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit('py-spy is not installed: .venv/bin/python -m pip install -e ".[bench]"')
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    model_name = bench_model(unique_settings(tmp))
    settings, _ = prepared(tmp, model_name, 1000, live_transactions(args.transactions))
    verdicts = Verdicts(settings)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    out = tmp / "py-spy.txt"
    try:
        worker.wait_ready(timeout=180)
        verdicts.wait_for(1, timeout=120)
        before, started = len(verdicts.read), time.time()
        subprocess.run([spy, "record", "--pid", str(worker.proc.pid), "--threads", "--nonblocking",
                        "--rate", str(args.rate), "--duration", str(args.seconds), "--format", "raw",
                        "--output", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rate = (len(verdicts.read) - before) / (time.time() - started)
    finally:
        worker.stop()
        verdicts.stop()
    by_step, by_thread = summarise(out.read_text())
    loop = sum(by_step.values())
    print(f"\n{args.transactions} transactions drained by one worker (6 partitions), sampled {args.rate}/s "
          f"for {args.seconds} s while it scored {rate:,.0f} verdicts/s; raw stacks in {out}")
    print(f"the scoring loop's {loop} samples, by step:")
    for step, samples in by_step.most_common():
        print(f"  {100 * samples / loop:5.1f}%  {step}")
    print("samples by thread: " + ", ".join(f"{name} {samples}" for name, samples in by_thread.most_common()))


if __name__ == "__main__":
    with topics_dropped_after():
        main()

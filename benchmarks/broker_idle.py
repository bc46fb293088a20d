"""What the broker spends with no transactions flowing: on its own, with an idle worker, and with an idle
worker and end_to_end.py's read_committed verdict reader (which fetches every 10 ms).

    scripts/services up
    .venv/bin/python benchmarks/broker_idle.py [--seconds 15]

The broker's CPU over each span, in cores (its process's user + system time from /proc). Against its
cores in end_to_end.py's latency runs, it tells the broker's fixed cost apart from what the
transactions cost it: on a day its cost per request is high, the same idle steps cost more too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.end_to_end import Verdicts, bench_model, broker_pid, prepared, process_cpu_seconds  # noqa: E402
from tests.conftest import WorkerProcess, unique_settings  # noqa: E402


def cores(pid: int, seconds: float) -> float:
    start = process_cpu_seconds(pid)
    time.sleep(seconds)
    return (process_cpu_seconds(pid) - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="of each span measured")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-broker-idle-"))
    broker = broker_pid()
    print(f"broker cores, nothing running: {cores(broker, args.seconds):.3f}", flush=True)
    settings, _ = prepared(tmp, bench_model(unique_settings(tmp)), 1000, [])
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    reader = None
    try:
        worker.wait_ready(timeout=180)
        time.sleep(5)  # past the worker's start-up fetches
        print(f"broker cores, one idle worker: {cores(broker, args.seconds):.3f}", flush=True)
        reader = Verdicts(settings)
        time.sleep(3)
        print(f"broker cores, an idle worker and a read_committed verdict reader: {cores(broker, args.seconds):.3f}")
    finally:
        if reader is not None:
            reader.stop()
        worker.stop()


if __name__ == "__main__":
    main()

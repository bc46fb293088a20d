"""Synchronous decisions through the stream: POST /api/v1/fraud/predict latency while the stream
carries its normal load, against that stream's own produce-to-visible latency in the same run.

    scripts/services up
    .venv/bin/python benchmarks/predict.py [--rate 100] [--load 1000] [--seconds 30]

First a warm-up, as in end_to_end.py: transactions paced through a worker of their own until the
broker's JIT compilers are done (a broker just started compiles for a minute or more, and its
tails are its compilers'). Then one worker (6 partitions) scores a background stream produced at
`--load` transactions/s; meanwhile
`--rate` predict requests/s, each a new transaction, go to the worker's API, evenly spaced (a new
request does not wait for the previous answer). Reported: the requests' latency percentiles and
statuses; the background transactions' produce-to-visible latency (what a read_committed consumer
of the verdict topic sees); their ratio. Then every request is retried once: each retry must return
the same verdict, and the verdict topic must hold exactly one verdict per predicted transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import collector_paused, topics_dropped_after  # noqa: E402
from benchmarks.end_to_end import (Verdicts, bench_model, live_transactions, prepared,  # noqa: E402
                                   commits_of, process_cpu_seconds, warm_up, warm_up_line)
from streams.produce import producer_for, replay, transaction_messages  # noqa: E402
from tests.conftest import WorkerProcess, bearer, free_port, settings_env, unique_settings  # noqa: E402


async def requests_at(url: str, headers: dict, bodies: list[dict], rate: float) -> list[tuple[float, int, dict, dict]]:
    """(seconds, status, answer, the API's Server-Timing in ms by step) of each body, sent `rate` per second."""
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(body: dict, at: float) -> tuple[float, int, dict, dict]:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            started = time.perf_counter()
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
                steps = dict(part.strip().split(";dur=") for part in resp.headers.get("Server-Timing", "").split(",") if ";dur=" in part)
            return time.perf_counter() - started, resp.status, answer, {k: float(v) for k, v in steps.items()}

        start = time.monotonic() + 0.1
        return await asyncio.gather(*(one(b, start + i / rate) for i, b in enumerate(bodies)))


def percentiles(ms: np.ndarray) -> str:
    if not len(ms):
        return "none"
    return " ".join(f"p{q} {np.percentile(ms, q):.0f}" for q in (50, 95, 99)) + f" max {ms.max():.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="predict requests per second")
    parser.add_argument("--load", type=float, default=1000, help="background transactions per second")
    parser.add_argument("--seconds", type=float, default=30, help="of requests, to each API")
    parser.add_argument("--warm-up-seconds", type=float, default=300,
                        help="first, pace transactions (not measured) until the broker's JIT compilers use under "
                             "2%% of a core, at most this long (0: no warm-up), as end_to_end.py does")
    parser.add_argument("--warm-up-rate", type=float, default=2000.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    settings = unique_settings(tmp)
    model_name = bench_model(settings)
    warmed = None
    if args.warm_up_seconds > 0:
        warmed = warm_up(tmp, model_name, live_transactions(int(args.warm_up_rate * 20), seed=5), args.warm_up_rate,
                         args.warm_up_seconds)
    settings, codec = prepared(tmp, model_name, 1000, [])
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    api_settings = settings.model_copy(update={"api_port": free_port()})
    api = subprocess.Popen([sys.executable, "-m", "fraud", "api"], env=settings_env(api_settings),
                           stdout=open(tmp / "api.log", "wb"), stderr=subprocess.STDOUT)
    verdicts = Verdicts(settings)
    apis = {"the worker's own API": worker.base, "a separate `fraud api` process": f"http://127.0.0.1:{api_settings.api_port}"}
    phases = {}
    try:
        worker.wait_ready(timeout=180)
        time.sleep(5)
        seconds = len(apis) * (args.seconds + 3) + 4
        background = live_transactions(int(args.load * seconds), seed=3)
        now = int(time.time() * 1000)
        for r in background:
            r["timestamp"] = now
        load = threading.Thread(target=replay, args=(producer_for(settings.kafka_bootstrap),
                                                     transaction_messages(settings.transactions_topic, codec, background)),
                                kwargs={"rate": args.load}, daemon=True)
        headers = bearer(settings, "analyst")
        bodies_of = {}
        for i, name in enumerate(apis):
            predicted = live_transactions(int(args.rate * args.seconds), seed=4 + i)
            bodies_of[name] = [{k: v for k, v in {**r, "transaction_id": f"p{i}-{r['transaction_id']}"}.items()
                                if k != "timestamp"} for r in predicted]
        with collector_paused():
            cpu_before = process_cpu_seconds(worker.proc.pid)
            load.start()
            time.sleep(2)  # the background stream under way first
            for name, base in apis.items():
                answers = asyncio.run(requests_at(f"{base}/api/v1/fraud/predict", headers, bodies_of[name], args.rate))
                phases[name] = (bodies_of[name], answers)
                time.sleep(3)
            load.join()
        cpu = process_cpu_seconds(worker.proc.pid) - cpu_before
        sent = sum(1 for _, answers in phases.values() for _, status, *_ in answers if status in (200, 504))
        try:
            verdicts.wait_for(len(background) + sent, timeout=60)
        except TimeoutError as exc:
            print(f"not every verdict arrived: {exc}")
        commits = commits_of(worker.get("/metrics")[1])
        retried = {name: asyncio.run(requests_at(f"{apis[name]}/api/v1/fraud/predict", headers, bodies, args.rate * 5))
                   for name, (bodies, _) in phases.items()}
        time.sleep(4)
    finally:
        worker.stop()
        api.terminate()
        api.wait(30)
        verdicts.stop()

    per_id = Counter(v["transaction_id"] for _, v in verdicts.read)
    ours = {b["transaction_id"] for bodies, _ in phases.values() for b in bodies}
    stream = np.array([at * 1000 - (v["scored_at"] - v["latency_ms"]) for at, v in verdicts.read
                       if v["transaction_id"] not in ours])
    if warmed:
        print("\n" + warm_up_line(warmed))
    print(f"\n{args.rate:.0f} predict requests/s for {args.seconds:.0f} s to each API in turn, while the stream "
          f"carries {args.load:.0f} transactions/s (one worker, 6 partitions; worker {cpu / seconds:.2f} cores); "
          f"logs in {tmp}")
    print(f"  stream, produce to visible:       {percentiles(stream)}; the worker's "
          f"{commits['commits']:.0f} commits took {commits['commit_ms']:.0f} ms on average "
          f"(each {settings.commit_interval_seconds * 1000:.0f} ms after the one before, or as soon as it "
          f"ended for a transaction a caller waits for)")
    for name, (bodies, answers) in phases.items():
        ms = np.array([sec * 1000 for sec, status, *_ in answers if status == 200])
        statuses = Counter(status for _, status, *_ in answers)
        same = sum(1 for (_, s1, a, _), (_, s2, b, _) in zip(answers, retried[name]) if s1 == s2 == 200 and a == b)
        once = Counter(per_id.get(b["transaction_id"], 0) for b in bodies)
        print(f"  predict through {name}:")
        ratio = (f"; p99 / stream visible p99 {np.percentile(ms, 99) / np.percentile(stream, 99):.2f}x"
                 if len(ms) and len(stream) else "")
        print(f"    answers {percentiles(ms)}; statuses {dict(statuses)}{ratio}")
        for step in ("claim", "send", "verdict"):
            spent = np.array([t[step] for _, status, _, t in answers if status == 200 and step in t])
            if len(spent):
                print(f"    in the API, {step}: {percentiles(spent)}")
        print(f"    retries answered with the same verdict: {same} of {len(bodies)}; "
              f"transactions by verdicts on the topic: {dict(once)}")


if __name__ == "__main__":
    with topics_dropped_after():
        main()

"""Transactions to verdicts through the real services, against what the same broker gives without us.

    scripts/services up
    .venv/bin/python benchmarks/end_to_end.py [--transactions 50000] [--latency-runs 3] [--paced-seconds 20]
                                              [--latency-rate R] [--warm-up-seconds 600] [--warm-up-rate 2000]
                                              [--burden-partitions N] [--skip ...]

One run measures, on the same broker and the same transactions (simulated cards and terminals, event
times shifted to now, Avro as a payment system would produce them, 6 partitions):

throughput, draining a backlog produced before the consumer starts, each on topics of its own:
- raw confluent-kafka exactly-once passthrough (benchmarks/baselines.py): the Kafka client's ceiling;
- a bare faust agent that only iterates its stream (exactly-once): faust's own ceiling;
- a bare faust exactly-once agent that sends one record and writes one table row per record, as a
  faust tutorial writes it;
- the worker scoring one event at a time (FRAUD_BATCH_MAX=1), on a smaller backlog;
- the worker batched (FRAUD_BATCH_MAX=1000), with all its features, state, reasons and outputs;
- `mlflow models serve` on the same registered model, one HTTP request per transaction.
The worker's rate runs from its first verdict to the moment the last verdict is visible to a
read_committed consumer and its terminal step has counted every transaction; its CPU seconds over
the same span give the CPU per transaction at full load.

latency, `--latency-runs` consecutive runs (a fresh worker and fresh topics each, the topics deleted
once the run ends, so that no run meets a broker burdened by the ones before it) at half the batched
worker's measured rate (or `--latency-rate`) for `--paced-seconds`: per verdict, produce -> scored
(the verdict's own latency_ms) and produce -> visible to a read_committed consumer (which waits for the transaction to
commit, every FRAUD_COMMIT_INTERVAL_SECONDS; the worker's commits, how many and how long on average,
are reported beside it). The first two seconds of each run are left out. While
each run is paced, the share of the machine's cores left idle, spent in the kernel, and taken by the
hypervisor for other guests (steal: this machine is a virtual one), the cores used by the worker, the
broker (and, within it, its JVM's JIT compilers and garbage collector) and this benchmark itself are
read from /proc: a tail that grows with the run is a machine with no core to spare. So is what
waited: the share of the run in which some task stalled for a core or for I/O (/proc/pressure), and
the time the worker's and the broker's threads spent ready but waiting for a core (schedstat); and
the scored p99 of each 5 s of the run, which tells a burst from a steady tail. A broker started
minutes before is still compiling its hot code, which takes much of a core on this machine for several
minutes, and makes the first runs after it slower and more variable: so every measured run comes after
a paced warm-up (`--warm-up-rate`, 2,000/s), not measured, until the broker's compilers use under
2 % of a core over 10 s (`--warm-up-seconds`, at most 600); and the latency runs come after a second
warm-up, the same at their own rate: a broker warmed at 2,000/s compiles again for a rate it has not
seen (its compilers used 0.15 of a core over the first 10 s at 11,915/s; without this warm-up, the
first 5 s of the first run had a scored p99 of 166 ms, the rest of it 29-36 ms). Each run also reports
the largest gap between two transactions' produce times: this benchmark pauses its own garbage
collector while it paces (`--collector-on` leaves it on, whose full collections stop the pacing for a
while). `--burden-partitions N` first makes N other partitions on the broker, with some records each,
as a broker that has run for a while holds them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import baselines  # noqa: E402
from core.features import FEATURE_NAMES, feature_matrix  # noqa: E402
from models.simulate import SimulationConfig, simulate, transaction_records  # noqa: E402
from models.train import TrainParams, train_and_register  # noqa: E402
from schemas.codec import AvroCodec, SchemaRegistry, load_schema  # noqa: E402
from streams.produce import producer_for, replay, transaction_messages  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tests.conftest import WorkerProcess, unique_settings  # noqa: E402

WARM_UP_SECONDS = 2.0
SLICE_SECONDS = 5.0  # the scored p99 is also reported per slice of this long
JIT_SETTLED_CORES = 0.02  # the broker's JIT compilers below this share of a core: its code is compiled


def live_transactions(count: int, seed: int = 1) -> list[dict]:
    """Simulated transactions (5,000 cards, 10,000 terminals) with the event times of a live stream:
    in order, a millisecond apart, the last one now."""
    records = transaction_records(simulate(SimulationConfig(customers=5000, terminals=10000, days=30, seed=seed)))
    records = records[-count:] if count > 0 else []
    now = int(time.time() * 1000)
    for i, r in enumerate(records):
        r["timestamp"] = now - (len(records) - 1 - i)
    return records


def process_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Verdicts:
    """A read_committed consumer of a verdict topic, in a thread: (read time, verdict) pairs. A
    read_committed fetch returns as soon as a commit's markers are written, whatever its wait; the
    wait (10 ms unless told) only sets how soon an empty fetch is asked again (librdkafka's default: 500)."""

    def __init__(self, settings, wait_ms: int = 10):
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                                  "group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": wait_ms})
        self.consumer.subscribe([settings.verdicts_topic])
        self.codec = AvroCodec(SchemaRegistry(settings.schema_registry_url), load_schema("verdict"), "bench")
        self.read: list[tuple[float, object]] = []  # (read time, value; decoded once stopped)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            first = self.consumer.poll(0.05)  # returns on the first record: consume(n, t) waits out t
            if first is None:
                continue
            read_at = time.time()
            for msg in [first, *self.consumer.consume(1000, 0)]:
                if not msg.error():
                    self.read.append((read_at, msg.value()))
        self.consumer.close()
        # Decoded once the run is over: the measuring consumer takes no CPU from the worker meanwhile.
        self.read = [(at, self.codec.decode(value)) for at, value in self.read]

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while len(self.read) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.read)} of {count} verdicts")
            time.sleep(0.01)
        return self.read[count - 1][0]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def bench_model(settings) -> str:
    """A model trained with the training defaults on a simulated history, registered under a new name."""
    model_name = f"bench-xgb-{uuid.uuid4().hex[:6]}"
    train_and_register(simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0)),
                       tracking_uri=settings.mlflow_uri, model_name=model_name,
                       experiment="fraud-scorer-bench", params=TrainParams())
    return model_name


def prepared(tmp: Path, model_name: str, batch_max: int, records: list[dict]):
    """Fresh topics holding `records` (Avro, keyed by card), and settings for a worker on them."""
    settings = unique_settings(tmp, model_name=model_name, batch_max=batch_max, partitions=6,
                               model_poll_seconds=30.0)
    ensure_topics(settings)
    codec = AvroCodec(SchemaRegistry(settings.schema_registry_url), load_schema("transaction"),
                      f"{settings.transactions_topic}-value")
    codec.register()
    if records:
        replay(producer_for(settings.kafka_bootstrap), transaction_messages(settings.transactions_topic, codec, records))
    return settings, codec


def worker_throughput(name: str, tmp: Path, model_name: str, batch_max: int, records: list[dict]) -> dict:
    settings, _ = prepared(tmp, model_name, batch_max, records)
    verdicts = Verdicts(settings)
    worker = WorkerProcess(settings, tmp / f"{name.replace(' ', '-')}.log").start()
    try:
        worker.wait_ready(timeout=180)
        verdicts.wait_for(1, timeout=120)
        cpu_start, wall_start = process_cpu_seconds(worker.proc.pid), time.time()
        last_visible = verdicts.wait_for(len(records), timeout=1200)
        deadline = time.monotonic() + 120
        while worker.get("/metrics")[1].get("fraud_terminal_events_total{kind=transaction}", 0) < len(records):
            assert time.monotonic() < deadline, "the terminal step did not count every transaction"
            time.sleep(0.05)
        done = max(last_visible, time.time())
        cpu = process_cpu_seconds(worker.proc.pid) - cpu_start
    finally:
        worker.stop()
        verdicts.stop()
    first = min(v["scored_at"] for _, v in verdicts.read) / 1000
    seconds = done - first
    scored_in_window = sum(1 for _, v in verdicts.read if v["scored_at"] / 1000 >= wall_start)
    return baselines.rate(name, len(records), seconds,
                          cpu_ms_per_transaction=1000 * cpu / max(1, scored_in_window))


class MachineLoad:
    """While a paced run lasts: how idle the machine's cores were (and how much of their time went to
    the kernel and to the hypervisor's other guests), how much of a core the worker, the
    broker and this benchmark (its producer and verdict consumer) each used, how much of the broker's
    went to its JVM's JIT compilers and garbage collector, and its three busiest kinds of thread,
    from /proc; and what waited: the share of the time some task stalled for a core, and for I/O
    (the kernel's pressure stall figures), and the worker's and the broker's threads' summed time
    ready to run but waiting for a core (schedstat), in ms per second."""

    def __init__(self, worker_pid: int):
        self.pids = {"worker": worker_pid, "broker": broker_pid(), "benchmark": os.getpid()}
        self.jit_samples: list[tuple[float, float]] = []  # (time, the broker's JIT CPU seconds so far)
        self._stopping = threading.Event()
        threading.Thread(target=self._sample_jit, daemon=True).start()
        self.started = (time.monotonic(), cpu_ticks(),
                        {k: process_cpu_seconds(p) for k, p in self.pids.items()},
                        jvm_cpu_seconds(self.pids["broker"]), thread_kinds(self.pids["broker"]),
                        stall_microseconds(), {k: run_queue_seconds(self.pids[k]) for k in ("worker", "broker")})

    def _sample_jit(self) -> None:
        while not self._stopping.wait(0 if not self.jit_samples else 1.0):
            self.jit_samples.append((time.time(), jvm_cpu_seconds(self.pids["broker"])["jit"]))

    def jit_by_slice(self, started: float) -> list[float]:
        """The broker's JIT compilers' cores in each SLICE_SECONDS from `started` + WARM_UP_SECONDS,
        the slices the scored p99 is reported by."""
        at = np.array([t for t, _ in self.jit_samples]) - started - WARM_UP_SECONDS
        used = np.array([u for _, u in self.jit_samples])
        out = []
        for first in np.arange(0, at[-1], SLICE_SECONDS):
            inside = (at >= first) & (at <= first + SLICE_SECONDS)
            if inside.sum() >= 2:
                out.append(float(np.diff(used[inside]).sum() / np.diff(at[inside]).sum()))
        return out

    def stop(self) -> dict:
        self._stopping.set()
        at, ticks, cpu, jvm, kinds, stalls, queued = self.started
        seconds = time.monotonic() - at
        ticks_now = cpu_ticks()
        spent = {k: ticks_now[k] - ticks[k] for k in ticks}
        load = {f"{k}_cores": (process_cpu_seconds(p) - cpu[k]) / seconds for k, p in self.pids.items()}
        load.update({f"{k}_stall_share": (v - stalls[k]) / 1e6 / seconds for k, v in stall_microseconds().items()})
        load.update({f"{k}_queued_ms_per_s": 1000 * (run_queue_seconds(self.pids[k]) - v) / seconds
                     for k, v in queued.items()})
        jvm_now = jvm_cpu_seconds(self.pids["broker"])
        kinds_now = thread_kinds(self.pids["broker"])
        busiest = sorted(((name, (used - kinds.get(name, 0.0)) / seconds) for name, used in kinds_now.items()),
                         key=lambda item: -item[1])[:3]
        shares = {f"{k}_share": v / max(1, spent["total"]) for k, v in spent.items() if k != "total"}
        return {**shares, **load,
                **{f"broker_{k}_cores": (jvm_now[k] - jvm[k]) / seconds for k in jvm},
                "broker_busiest_threads": busiest}


def thread_cpu_seconds(pid: int) -> list[tuple[str, float]]:
    """(name, CPU seconds so far) of each thread of a process, from /proc."""
    threads = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{task}/stat").read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        threads.append((stat[stat.index("(") + 1: stat.rindex(")")],
                        (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")))
    return threads


def run_queue_seconds(pid: int) -> float:
    """Seconds so far that a process's threads were ready to run but waited for a core
    (/proc/PID/task/TID/schedstat's second field, in ns)."""
    waited = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            waited += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[1])
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return waited / 1e9


def stall_microseconds() -> dict[str, int]:
    """The kernel's pressure stall totals so far (µs): time in which some task waited for a core
    (`cpu`), some for I/O (`io`), and all runnable tasks for I/O at once (`io_full`)."""
    def total(resource: str, line: int) -> int:
        return int(open(f"/proc/pressure/{resource}").read().splitlines()[line].rsplit("total=", 1)[1])
    return {"cpu": total("cpu", 0), "io": total("io", 0), "io_full": total("io", 1)}


def thread_kinds(pid: int) -> dict[str, float]:
    """CPU seconds so far of a process's threads by kind: their names less a trailing number (Linux
    keeps 15 characters of a name, so "data-plane-kafka-request-handler-3" reads "data-plane-kafk")."""
    kinds: dict[str, float] = {}
    for name, seconds in thread_cpu_seconds(pid):
        kind = name.rstrip("0123456789").rstrip("-_ #") or name
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    return kinds


def jvm_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of a JVM's JIT compiler threads (C1, C2) and its garbage collector's threads,
    by their thread names."""
    out = {"jit": 0.0, "gc": 0.0}
    for name, seconds in thread_cpu_seconds(pid):
        kind = "jit" if " CompilerThre" in name else "gc" if name.startswith(("GC Thread", "G1 ")) else None
        if kind:
            out[kind] += seconds
    return out


def cpu_ticks() -> dict[str, int]:
    """The machine's CPU time so far, in ticks (/proc/stat): idle (with I/O wait), in the kernel (system
    and interrupts), taken by the hypervisor for other guests (steal), and in all."""
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in open("/proc/stat").readline().split()[1:9])
    return {"idle": idle + iowait, "kernel": system + irq + softirq, "steal": steal,
            "total": user + nice + system + idle + iowait + irq + softirq + steal}


def broker_pid() -> int:
    """The Kafka broker that scripts/services started."""
    return int((Path(__file__).resolve().parent.parent / ".services" / "run" / "kafka.pid").read_text())


def warm_up(tmp: Path, model_name: str, records: list[dict], rate: float, max_seconds: float,
            slice_seconds: float = 10.0) -> dict:
    """Pace `records` (over and over) through a worker on topics of their own, in slices of
    `slice_seconds`, until the broker's JIT compilers used under JIT_SETTLED_CORES of a core during the
    last slice, or `max_seconds` have passed. Nothing is measured but the broker's compilers."""
    settings, codec = prepared(tmp, model_name, 1000, [])
    worker = WorkerProcess(settings, tmp / "warm-up.log").start()
    per_slice = int(rate * slice_seconds)
    jit: list[float] = []
    started = time.monotonic()
    try:
        worker.wait_ready(timeout=180)
        producer = producer_for(settings.kafka_bootstrap)
        pid = broker_pid()
        while not jit or (jit[-1] >= JIT_SETTLED_CORES and time.monotonic() - started < max_seconds):
            at, now = len(jit) * per_slice, int(time.time() * 1000)
            chunk = [dict(records[i % len(records)], timestamp=now) for i in range(at, at + per_slice)]
            before, clock = jvm_cpu_seconds(pid)["jit"], time.monotonic()
            replay(producer, transaction_messages(settings.transactions_topic, codec, chunk), rate=rate)
            jit.append((jvm_cpu_seconds(pid)["jit"] - before) / (time.monotonic() - clock))
    finally:
        worker.stop()
    return {"run": "warm-up", "seconds": time.monotonic() - started, "rate": rate,
            "broker_jit_cores_first": jit[0], "broker_jit_cores_last": jit[-1]}


def commits_of(metrics: dict) -> dict:
    """How many commits a worker made and how long one took on average, from its JSON /metrics."""
    count = metrics["fraud_commit_seconds_count"]
    return {"commits": count, "commit_ms": 1000 * metrics["fraud_commit_seconds_sum"] / max(1, count)}


def warm_up_line(warmed: dict) -> str:
    """What `warm_up` did, in a line."""
    return (f"warm-up at {warmed['rate']:.0f}/s for {warmed['seconds']:.0f} s: the broker's JIT compilers used "
            f"{warmed['broker_jit_cores_first']:.2f} of a core in its first 10 s, "
            f"{warmed['broker_jit_cores_last']:.2f} in its last")


def worker_latency(tmp: Path, model_name: str, records: list[dict], rate: float, run: int,
                   pause_collector: bool = True, linger_ms: float = 5.0, reader_wait_ms: int = 10) -> dict:
    settings, codec = prepared(tmp, model_name, 1000, [])
    verdicts = Verdicts(settings, reader_wait_ms)
    worker = WorkerProcess(settings, tmp / f"latency-{run}.log").start()
    try:
        worker.wait_ready(timeout=180)
        now = int(time.time() * 1000)
        for r in records:  # event times as they are produced
            r["timestamp"] = now
        # Encoded before the run, as a payment system's many producers would hand them over: the
        # paced producer then takes as little of the machine as it can.
        messages = list(transaction_messages(settings.transactions_topic, codec, records))
        with baselines.collector_paused() if pause_collector else contextlib.nullcontext():
            started = time.time()
            machine = MachineLoad(worker.proc.pid)
            replay(producer_for(settings.kafka_bootstrap, linger_ms), messages, rate=rate)
            load = machine.stop()
            load["broker_jit_cores_by_slice"] = machine.jit_by_slice(started)
            verdicts.wait_for(len(records), timeout=300)
        metrics = worker.get("/metrics")[1]
    finally:
        worker.stop()
        verdicts.stop()
    kept = [(read, v) for read, v in verdicts.read if v["scored_at"] / 1000 - started > WARM_UP_SECONDS]
    to_score = np.array([v["latency_ms"] for _, v in kept])
    produced = np.sort([v["scored_at"] - v["latency_ms"] for _, v in kept])  # each record's Kafka timestamp
    visible = np.array([read * 1000 - (v["scored_at"] - v["latency_ms"]) for read, v in kept])
    # The tail's shape in time: one burst is an event (a pause, a flush), a spread is steady contention.
    slices = (np.array([v["scored_at"] / 1000 for _, v in kept]) - started - WARM_UP_SECONDS) // SLICE_SECONDS
    return {"run": run, "rate": rate, "verdicts": len(kept), "produce_gap_ms": float(np.diff(produced).max()),
            "score_p99_by_slice": [float(np.percentile(to_score[slices == s], 99)) for s in np.unique(slices)],
            "score_p50": float(np.percentile(to_score, 50)), "score_p99": float(np.percentile(to_score, 99)),
            "visible_p50": float(np.percentile(visible, 50)), "visible_p99": float(np.percentile(visible, 99)),
            **commits_of(metrics), **load}


def burden(bootstrap: str, partitions: int, records_per_partition: int = 200) -> None:
    """Other topics on the broker, as one that has run for a while holds them: `partitions` partitions
    in topics of 6, every other topic compacted like a changelog, each partition with some records of
    ~150 B. Named like the benchmark's own, so they are deleted when it ends."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [baselines.unique("baseline-burden") for _ in range(partitions // 6)]
    for start in range(0, len(names), 100):
        made = admin.create_topics([NewTopic(name, 6, 1, config={"cleanup.policy": "compact"} if i % 2 else {})
                                    for i, name in enumerate(names[start:start + 100], start)])
        for future in made.values():
            future.result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    for name in names:
        for key, value in baselines.synthetic_records(6 * records_per_partition, keys=600):
            producer.produce(name, value, key)
        producer.poll(0)
        if producer.flush(60):
            raise RuntimeError(f"records not delivered to {name}")


def topic_of(tmp: Path, records: list[dict]) -> tuple[str, str]:
    """A topic holding the records' Avro bytes, keyed by card, for the topic-to-topic baselines."""
    settings, _ = prepared(tmp, "unused", 1000, records)
    return settings.kafka_bootstrap, settings.transactions_topic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=50_000)
    parser.add_argument("--per-event", type=int, default=3_000, help="backlog of the per-event worker")
    parser.add_argument("--mlflow-requests", type=int, default=2_000)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--latency-rate", type=float,
                        help="pace the latency runs at this rate rather than half the batched worker's")
    parser.add_argument("--warm-up-seconds", type=float, default=600,
                        help="before any run, pace transactions (not measured) until the broker's JIT "
                             "compilers use under 2%% of a core, at most this long (0: no warm-up)")
    parser.add_argument("--warm-up-rate", type=float, default=2000.0)
    parser.add_argument("--collector-on", action="store_true",
                        help="leave this benchmark's garbage collector on while it paces the latency runs")
    parser.add_argument("--producer-linger-ms", type=float, default=5.0,
                        help="the latency runs' producer's linger.ms (librdkafka sends a request per partition)")
    parser.add_argument("--reader-wait-ms", type=int, default=10,
                        help="the latency runs' read_committed reader's fetch.wait.max.ms")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["raw", "faust-iterate", "faust-eos", "per-event", "batched", "mlflow", "latency"])
    parser.add_argument("--burden-partitions", type=int, default=0,
                        help="first make this many other partitions on the broker, with some records each")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    settings = unique_settings(tmp)
    if args.burden_partitions:
        burden(settings.kafka_bootstrap, args.burden_partitions)
    model_name = f"bench-xgb-{uuid.uuid4().hex[:6]}"
    history = simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0))
    trained = train_and_register(history, tracking_uri=settings.mlflow_uri, model_name=model_name,
                                 experiment="fraud-scorer-bench", params=TrainParams())
    stream = live_transactions(args.transactions)
    results: list[dict] = []
    warmed = None
    if args.warm_up_seconds > 0:
        warmed = warm_up(tmp, model_name, live_transactions(int(args.warm_up_rate * 20), seed=3), args.warm_up_rate,
                         args.warm_up_seconds)
        print(json.dumps(warmed), flush=True)

    def run(key: str, fn, *a, **kw) -> None:
        if key in args.skip:
            return
        result = fn(*a, **kw)
        print(json.dumps(result), flush=True)
        results.append(result)

    bootstrap, source = topic_of(tmp, stream)
    run("raw", lambda: {**baselines.raw_passthrough(bootstrap, source, len(stream)),
                        "name": "raw confluent-kafka exactly-once passthrough"})
    run("faust-iterate", lambda: {**baselines.faust_iterate(bootstrap, source, len(stream)),
                                  "name": "faust agent, iterating only (exactly-once)"})
    run("faust-eos", lambda: {**baselines.faust_copy(bootstrap, source, len(stream)),
                              "name": "faust agent, one send + one table write per record (exactly-once)"})
    run("per-event", worker_throughput, "worker, one event at a time", tmp, model_name, 1,
        stream[: args.per_event])
    run("batched", worker_throughput, "worker, batches of up to 1,000", tmp, model_name, 1000, stream)
    if "mlflow" not in args.skip:
        rows = feature_matrix(stream[: args.mlflow_requests], [0] * args.mlflow_requests)
        run("mlflow", lambda: {**baselines.mlflow_serve(model_name, trained.version, settings.mlflow_uri, rows,
                                                        list(FEATURE_NAMES)),
                               "name": "mlflow models serve, one request per transaction"})

    batched = next((r for r in results if r["name"].startswith("worker, batches")), None)
    latency, warmed_for_latency = [], None
    if "latency" not in args.skip and (batched or args.latency_rate):
        rate = args.latency_rate or batched["records_per_s"] / 2
        paced = live_transactions(int(rate * args.paced_seconds), seed=2)
        if args.warm_up_seconds > 0:  # the broker compiles its code anew for a rate it has not seen yet
            warmed_for_latency = warm_up(tmp, model_name, paced, rate, args.warm_up_seconds)
            print(json.dumps(warmed_for_latency), flush=True)
        for i in range(args.latency_runs):
            with baselines.topics_dropped_after():  # the run's topics go when it ends, before the next run
                result = worker_latency(tmp, model_name, [dict(r) for r in paced], rate, i + 1,
                                        pause_collector=not args.collector_on, linger_ms=args.producer_linger_ms,
                                        reader_wait_ms=args.reader_wait_ms)
            print(json.dumps(result), flush=True)
            latency.append(result)

    faust_eos = next((r for r in results if r["name"].startswith("faust agent, one send")), None)
    if warmed:
        print("\n" + warm_up_line(warmed))
    if warmed_for_latency:
        print("before the latency runs, " + warm_up_line(warmed_for_latency))
    print(f"\none worker, 6 partitions, {len(stream)} transactions; logs in {tmp}")
    print(f"{'throughput':68} {'records/s':>10} {'vs faust send+table':>20} {'CPU ms/txn':>11}")
    for r in results:
        ratio = f"{r['records_per_s'] / faust_eos['records_per_s']:.2f}x" if faust_eos else "-"
        cpu = f"{r['cpu_ms_per_transaction']:.3f}" if "cpu_ms_per_transaction" in r else ""
        print(f"{r['name'][:68]:68} {r['records_per_s']:10.0f} {ratio:>20} {cpu:>11}")
    mlflow = next((r for r in results if r["name"].startswith("mlflow")), None)
    if batched and mlflow:
        print(f"worker batched / mlflow models serve: {batched['records_per_s'] / mlflow['records_per_s']:.1f}x")
    if latency:
        print(f"\nlatency at {latency[0]['rate']:.0f}/s"
              f"{'' if args.latency_rate else ' (half the batched rate)'}, ms: "
              f"produce->scored p50 / p99, produce->visible (read_committed) p50 / p99")
        for r in latency:
            print(f"  run {r['run']}: {r['score_p50']:.1f} / {r['score_p99']:.1f}   "
                  f"{r['visible_p50']:.1f} / {r['visible_p99']:.1f}   ({r['verdicts']} verdicts; "
                  f"{r['commits']:.0f} commits of {r['commit_ms']:.0f} ms on average; largest gap "
                  f"between produce times {r['produce_gap_ms']:.0f} ms)   "
                  f"while paced: cores idle {100 * r['idle_share']:.0f}%, in the kernel "
                  f"{100 * r['kernel_share']:.0f}%, taken by the hypervisor {100 * r['steal_share']:.0f}%; "
                  f"cores used by the worker "
                  f"{r['worker_cores']:.2f}, the broker {r['broker_cores']:.2f} (its JIT compilers "
                  f"{r['broker_jit_cores']:.2f}, GC {r['broker_gc_cores']:.2f}), "
                  f"this benchmark {r['benchmark_cores']:.2f}; stalled for a core {100 * r['cpu_stall_share']:.0f}% "
                  f"of the time, for I/O {100 * r['io_stall_share']:.0f}% (all at once "
                  f"{100 * r['io_full_stall_share']:.0f}%); waiting for a core, the worker's threads "
                  f"{r['worker_queued_ms_per_s']:.0f} ms/s, the broker's {r['broker_queued_ms_per_s']:.0f} ms/s; "
                  f"the broker's busiest threads: "
                  + ", ".join(f"{name} {cores:.2f}" for name, cores in r["broker_busiest_threads"])
                  + f"; per {SLICE_SECONDS:.0f} s, scored p99 "
                  + " ".join(f"{p:.0f}" for p in r["score_p99_by_slice"])
                  + ", the broker's JIT compilers' cores "
                  + " ".join(f"{c:.2f}" for c in r["broker_jit_cores_by_slice"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": results, "warm_up": warmed,
                                               "warm_up_for_latency": warmed_for_latency, "latency": latency},
                                              indent=2))


if __name__ == "__main__":
    with baselines.topics_dropped_after():
        main()

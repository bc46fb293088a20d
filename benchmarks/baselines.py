"""Baselines for the end-to-end benchmark: what the broker, faust and MLflow serving give on this
machine before any scoring, so the worker's figures can be read as ratios.

    scripts/services up
    .venv/bin/python benchmarks/baselines.py raw [--records 50000]
    .venv/bin/python benchmarks/baselines.py faust-iterate [--records 50000] [--guarantee both]
    .venv/bin/python benchmarks/baselines.py faust-eos [--records 50000]
    .venv/bin/python benchmarks/baselines.py mlflow-serve [--records 2000] [--model NAME --version V]

Topic-to-topic baselines read a source topic that already holds the records (`fill_topic`), each
with fresh topics and groups, and return {name, records, seconds, records_per_s, ...}:
- `raw_passthrough`: confluent-kafka consumer + one transactional producer, exactly-once;
- `faust_copy`: a bare faust agent, exactly-once, one send and one table write per record;
- `faust_iterate`: a bare faust agent that only iterates its stream (faust's own ceiling).
`mlflow_serve` scores feature rows one HTTP request each against `mlflow models serve`.
Run one at a time: the machine has 2 cores and shares them with the broker.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
PARTITIONS = 6
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TRACKING_URI = "http://127.0.0.1:5002"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rate(name: str, records: int, seconds: float, **extra) -> dict:
    return {"name": name, "records": records, "seconds": seconds,
            "records_per_s": records / seconds if seconds > 0 else float("inf"), **extra}


# --- topics --------------------------------------------------------------------------------------

def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, timeout: float = 30) -> None:
    """Create `topic` unless it exists."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        future.result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


MADE_PREFIXES = ("test-", "baseline-")  # the names of what benchmarks make (tests/conftest.py, unique())


@contextmanager
def collector_paused() -> Iterator[None]:
    """The benchmark process's own garbage collector off while it paces a stream. It holds hundreds of
    thousands of prepared records and read verdicts; a full collection over them stopped the pacing
    loop for about 200 ms (seen at 10,439/s: no transaction produced for 214 ms, then 2,256 in 10 ms),
    and the worker then met a burst no steady producer sends. What is made meanwhile is freed by
    reference counting (no cycles)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


@contextmanager
def topics_dropped_after(bootstrap: str = DEFAULT_BOOTSTRAP) -> Iterator[None]:
    """Delete, at the end, the topics made meanwhile (names starting with MADE_PREFIXES). A broker
    that keeps every run's topics ends up holding thousands of partitions, and spends CPU on them that
    every later run measures (its latency and its broker cores). Topics of a test run started on the
    same broker meanwhile carry the same prefix and would go too: run the two one after the other."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    before = set(admin.list_topics(timeout=30).topics)
    try:
        yield
    finally:
        made = [t for t in admin.list_topics(timeout=30).topics
                if t not in before and t.startswith(MADE_PREFIXES)]
        for topic, future in (admin.delete_topics(made) if made else {}).items():
            try:
                future.result(30)
            except KafkaException as exc:
                print(f"could not delete {topic}: {exc}", file=sys.stderr)


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce (key, value) pairs as fast as the producer takes them (lz4, linger 5 ms, murmur2
    partitioner like the Java client and faust); return how many were delivered."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4",
                         "enable.idempotence": True, "partitioner": "murmur2_random",
                         "queue.buffering.max.messages": 500_000})
    failed: list = []

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(err)

    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let it drain
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"{len(failed)} records not delivered to {topic}: {failed[:3]}")
    return count


def synthetic_records(count: int, keys: int = 2_000, value_size: int = 150, seed: int = 0):
    """`count` (key, value) pairs over `keys` card-like keys; values are ~`value_size`-byte JSON
    transactions (as compressible as real ones, unlike random bytes)."""
    rng = np.random.default_rng(seed)
    key_ids = rng.integers(0, keys, count)
    amounts = rng.gamma(2.0, 30.0, count)
    terminals = rng.integers(0, 10_000, count)
    start = 1_700_000_000_000
    for i in range(count):
        key = b"C%05d" % key_ids[i]
        value = (b'{"transaction_id":"%032x","customer_id":"%s","terminal_id":"T%05d","amount":%.2f,'
                 b'"timestamp":%d,"channel":"pos"}' % (i, key, terminals[i], amounts[i], start + i * 37))
        yield key, value.ljust(value_size)


def fill_topic(bootstrap: str, topic: str, count: int, *, keys: int = 2_000, value_size: int = 150,
               partitions: int = PARTITIONS) -> int:
    """Create `topic` (`partitions` partitions) and fill it with `count` synthetic keyed records."""
    create_topic(bootstrap, topic, partitions)
    return produce(bootstrap, topic, synthetic_records(count, keys, value_size))


def watch_committed(bootstrap: str, topic: str, expected: int, timeout: float,
                    settle: float = 1.0, check: Callable[[], None] = lambda: None) -> dict:
    """Read `topic` from the start as a read_committed consumer until `expected` records have been
    seen (then `settle` seconds more, to catch any extra). Returns {records, first_created (the
    earliest record timestamp, s), last_seen (wall time the `expected`-th record was read, s)}.
    `check` runs between polls and may raise to give up (say, the writer died)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("baseline-watch"),
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen, first_created, last_seen = 0, float("inf"), None
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            check()
            for msg in consumer.consume(1000, 0.05):
                if msg.error():
                    continue
                seen += 1
                first_created = min(first_created, msg.timestamp()[1] / 1000)
                if seen == expected:
                    last_seen = time.time()
                    settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return {"records": seen, "first_created": first_created, "last_seen": last_seen}


# --- 1. raw confluent-kafka, exactly-once --------------------------------------------------------

def raw_passthrough(bootstrap: str, source: str, records: int, *, commit_every: float = 0.1,
                    timeout: float = 120) -> dict:
    """Copy `records` records from `source` to a fresh topic exactly-once with plain confluent-kafka:
    a read_committed Consumer (`consume(1000, ...)`, no auto commit) and ONE transactional Producer;
    every `commit_every` s the consumer's positions go into the transaction
    (`send_offsets_to_transaction`), which is committed and a new one begun.

    Timed inside this process: from the first consume() that returned records to the return of the
    commit_transaction() that holds the last record, the moment that record is visible to a
    read_committed consumer. Afterwards the output is read back read_committed and its count
    checked (`output_records`). Each consume asks for at most the records still missing: librdkafka's
    consume(n, timeout) waits the whole timeout while fewer than n are queued, which would add a
    timeout to the last batch.
    """
    sink, group = unique("baseline-raw-out"), unique("baseline-raw")
    create_topic(bootstrap, sink)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": group})
    producer.init_transactions()
    consumer.subscribe([source])

    def commit() -> None:
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
        producer.commit_transaction()

    done, first = 0, None
    deadline = time.monotonic() + timeout
    try:
        producer.begin_transaction()
        last_commit = time.monotonic()
        while done < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw passthrough: {done} of {records} records in {timeout} s")
            batch = consumer.consume(min(1000, records - done), 0.1)
            if batch and first is None:
                first = last_commit = time.monotonic()
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                while True:
                    try:
                        producer.produce(sink, msg.value(), msg.key(), partition=msg.partition())
                        break
                    except BufferError:
                        producer.poll(0.01)
            done += len(batch)
            producer.poll(0)
            if done < records and time.monotonic() - last_commit >= commit_every:
                commit()
                producer.begin_transaction()
                last_commit = time.monotonic()
        commit()
        seconds = time.monotonic() - first
    finally:
        consumer.close()
    out = watch_committed(bootstrap, sink, records, timeout=60)
    return rate("raw confluent-kafka EOS passthrough", records, seconds, output_records=out["records"])


# --- 2 and 3. bare faust agents in their own process ---------------------------------------------

class FaustWorker:
    """benchmarks/faust_bare.py as a worker process in its own process group, logging to a file."""

    def __init__(self, mode: str, bootstrap: str, source: str, records: int, guarantee: str,
                 sink: str | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="baseline-faust-"))
        self.result = self.dir / "result.json"
        self.log = self.dir / "worker.log"
        self.args = [sys.executable, str(HERE / "faust_bare.py"), mode, "--broker", bootstrap,
                     "--source", source, "--app-id", unique(f"baseline-faust-{mode}"),
                     "--guarantee", guarantee, "--expected", str(records), "--result", str(self.result),
                     "--datadir", str(self.dir / "data")] + (["--sink", sink] if sink else [])
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "FaustWorker":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        stop_group(self.proc)
        if exc_type is None:  # keep the log of a failed run only
            shutil.rmtree(self.dir, ignore_errors=True)

    def wait_result(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.result.exists():
                return json.loads(self.result.read_text())
            self.check_alive()
            time.sleep(0.05)
        raise TimeoutError(f"faust worker gave no result in {timeout} s; log: {self.log}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"faust worker exited with {self.proc.returncode}:\n{tail}")


def stop_group(proc: subprocess.Popen | None, grace: float = 10) -> None:
    """SIGTERM the process group of `proc`, SIGKILL it after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def faust_copy(bootstrap: str, source: str, records: int, *, guarantee: str = "exactly_once",
               timeout: float = 600) -> dict:
    """A bare faust agent (benchmarks/faust_bare.py copy) in its own worker process: per record one
    `await sink.send(...)` and one `table[key] = value` (memory store, changelog), faust's defaults
    (commit every 2.8 s or 10,000 records).

    Timed by a read_committed consumer of the output topic in this process: from the earliest
    output record's timestamp (set by faust's producer when the agent sends it, i.e. the first
    record processed) to the wall time the last output record is read (visible, so after its
    transaction committed). `seconds_in_worker` is the agent's own first-to-last record time.
    """
    sink = unique("baseline-faust-out")
    create_topic(bootstrap, sink)
    with FaustWorker("copy", bootstrap, source, records, guarantee, sink=sink) as worker:
        out = watch_committed(bootstrap, sink, records, timeout=timeout, check=worker.check_alive)
        inside = worker.wait_result(30)
    if out["last_seen"] is None:
        raise TimeoutError(f"faust copy: {out['records']} of {records} output records; log: {worker.log}")
    return rate(f"faust agent send + table write ({guarantee})", records,
                out["last_seen"] - out["first_created"], output_records=out["records"],
                seconds_in_worker=inside["last"] - inside["first"])


def faust_iterate(bootstrap: str, source: str, records: int, *, guarantee: str = "exactly_once",
                  timeout: float = 600) -> dict:
    """A bare faust agent (benchmarks/faust_bare.py iterate) that only iterates its stream, in its own
    worker process. Timed inside the agent: first record to the `records`-th record (wall clock)."""
    with FaustWorker("iterate", bootstrap, source, records, guarantee) as worker:
        inside = worker.wait_result(timeout)
    return rate(f"faust agent iterate only ({guarantee})", records, inside["last"] - inside["first"])


# --- 4. mlflow models serve, one request per transaction -----------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_serve(model_name: str, version: str, tracking_uri: str, rows: np.ndarray,
                 feature_names: Sequence[str], *, warmup: int = 20, start_timeout: float = 180) -> dict:
    """Start `mlflow models serve -m models:/<model_name>/<version> --env-manager local` on a free
    port, wait for GET /ping, then score each row of `rows` with its own POST /invocations
    (`dataframe_split`, one row), sequentially from one keep-alive session, and stop the server's
    process group.

    Timed in this process: from the first request sent to the last response read (after `warmup`
    untimed requests); per-request latency includes building the JSON body. Returns records/s
    (= requests/s) and p50/p99 latency in ms.
    """
    import requests

    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="baseline-mlflow-")) / "serve.log"
    # mlflow execs `uvicorn` from PATH: the one next to this interpreter, even without an active venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}/{version}",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    columns = list(feature_names)
    data = rows.tolist()
    try:
        with requests.Session() as session:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow serve exited with {proc.returncode}; log: {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow serve not up in {start_timeout} s; log: {log_path}")
                try:
                    if session.get(f"{base}/ping", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.25)

            def score(row: list) -> float:
                body = json.dumps({"dataframe_split": {"columns": columns, "data": [row]}})
                resp = session.post(f"{base}/invocations", data=body,
                                    headers={"Content-Type": "application/json"}, timeout=30)
                if resp.status_code != 200:
                    raise RuntimeError(f"mlflow serve answered {resp.status_code}: {resp.text[:500]}")
                return resp.json()["predictions"][0]

            for row in data[:warmup]:
                score(row)
            latencies = np.empty(len(data))
            start = time.perf_counter()
            for i, row in enumerate(data):
                sent = time.perf_counter()
                score(row)
                latencies[i] = time.perf_counter() - sent
            seconds = time.perf_counter() - start
    finally:
        stop_group(proc)
    shutil.rmtree(log_path.parent, ignore_errors=True)  # kept only when the run failed
    return rate("mlflow models serve, one request per row", len(data), seconds,
                p50_ms=float(np.percentile(latencies, 50) * 1000),
                p99_ms=float(np.percentile(latencies, 99) * 1000))


def simulated_features():
    """(feature rows, labels, timestamps, feature names) of a simulated history, as
    benchmarks/end_to_end.py trains on."""
    sys.path.insert(0, str(HERE.parent))
    from core.features import feature_matrix, model_feature_names
    from models.simulate import SimulationConfig, simulate, transaction_records

    history = simulate(SimulationConfig(customers=1000, terminals=2000, days=60, seed=0))
    history = history.sort_values("timestamp", kind="stable").reset_index(drop=True)
    labels = history["is_fraud"].to_numpy()
    X = feature_matrix(transaction_records(history), labels)
    return X, labels, history["timestamp"].to_numpy(), model_feature_names()


def trial_model(tracking_uri: str, X: np.ndarray, labels: np.ndarray, timestamps: np.ndarray,
                feature_names: Sequence[str]) -> tuple[str, str]:
    """Register a model trained on these rows under a fresh name; return (name, version)."""
    from models.train import TrainParams, register_model

    name = unique("baseline-xgb")
    result = register_model(X, labels, timestamps, tracking_uri=tracking_uri, model_name=name,
                            experiment="fraud-scorer-baselines", params=TrainParams(),
                            feature_names=tuple(feature_names))
    return name, result.version


# --- command line --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", choices=["raw", "faust-iterate", "faust-eos", "mlflow-serve"])
    parser.add_argument("--records", type=int, help="default 50,000 (mlflow-serve: 2,000)")
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--guarantee", choices=["exactly_once", "at_least_once", "both"], default="both",
                        help="faust-iterate only")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--model", help="mlflow-serve: a registered model (default: train a fresh one)")
    parser.add_argument("--version", help="mlflow-serve: its version")
    args = parser.parse_args()
    # A plain exit on SIGTERM, so that the servers and workers started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    if args.baseline == "mlflow-serve":
        records = args.records or 2_000
        if bool(args.model) != bool(args.version):
            parser.error("--model and --version go together")
        X, labels, timestamps, names = simulated_features()
        name, version = ((args.model, args.version) if args.model
                         else trial_model(args.tracking_uri, X, labels, timestamps, names))
        rows = X[-records:]
        results = [mlflow_serve(name, version, args.tracking_uri, rows, names)]
    else:
        records = args.records or 50_000
        source = unique("baseline-source")
        fill_topic(args.bootstrap, source, records)
        if args.baseline == "raw":
            results = [raw_passthrough(args.bootstrap, source, records)]
        elif args.baseline == "faust-eos":
            results = [faust_copy(args.bootstrap, source, records)]
        else:
            guarantees = ["exactly_once", "at_least_once"] if args.guarantee == "both" else [args.guarantee]
            results = [faust_iterate(args.bootstrap, source, records, guarantee=g) for g in guarantees]
    for r in results:
        print(json.dumps(r))
        extra = "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                          if k not in ("name", "records", "seconds", "records_per_s"))
        print(f"{r['name']}: {r['records']} records in {r['seconds']:.3f} s = "
              f"{r['records_per_s']:,.0f}/s  {extra}")


if __name__ == "__main__":
    main()

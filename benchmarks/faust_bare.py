"""A bare faust worker for the baselines (benchmarks/baselines.py starts it as its own process).

    .venv/bin/python benchmarks/faust_bare.py copy|iterate --broker HOST:PORT --source TOPIC
        [--sink TOPIC] --app-id ID --guarantee exactly_once|at_least_once --expected N --result FILE

The app is written as faust's tutorials write one: `faust.App` with a memory store and
`topic_partitions=6`, raw bytes in and out, one agent, faust's defaults for everything else.
- copy: per record, one `await sink.send(key=..., value=...)` and one table write;
- iterate: per record, nothing but counting.
When the agent has seen --expected records it writes {"records", "first", "last"} (wall times, in
seconds, of the first and the --expected-th record) to --result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faust

PARTITIONS = 6


class Tally:
    """Counts records and writes the first and last record times once `expected` have been seen."""

    def __init__(self, expected: int, result: Path):
        self.expected, self.result = expected, result
        self.seen, self.first = 0, 0.0

    def tick(self) -> None:
        if self.seen == 0:
            self.first = time.time()
        self.seen += 1
        if self.seen == self.expected:
            tmp = self.result.with_suffix(".tmp")
            tmp.write_text(json.dumps({"records": self.seen, "first": self.first, "last": time.time()}))
            os.replace(tmp, self.result)  # the parent never reads half a file


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.broker}",
        store="memory://",
        processing_guarantee=args.guarantee,
        topic_partitions=PARTITIONS,
        web_enabled=False,  # no port to collide with another run
        datadir=args.datadir,
    )
    source = app.topic(args.source, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    tally = Tally(args.expected, Path(args.result))

    if args.mode == "copy":
        sink = app.topic(args.sink, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
        table = app.Table("last-value", default=None, key_type=bytes, value_type=bytes)  # bytes: raw

        @app.agent(source)
        async def copy(stream):
            async for key, value in stream.items():
                await sink.send(key=key, value=value)
                table[key] = value
                tally.tick()
    else:
        @app.agent(source)
        async def iterate(stream):
            async for _value in stream:
                tally.tick()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["copy", "iterate"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink")
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--guarantee", choices=["exactly_once", "at_least_once"], default="exactly_once")
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--datadir", default="/tmp/faust-bare")
    args = parser.parse_args()
    if args.mode == "copy" and not args.sink:
        parser.error("copy needs --sink")
    # `-l info`, as faust's tutorials start a worker. At faust's default level (warn) the worker's
    # terminal spinner sets the root logger to DEBUG, and every per-record debug call then builds a
    # log record.
    faust.Worker(build_app(args), loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()

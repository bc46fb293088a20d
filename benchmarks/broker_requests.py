"""What the broker is asked, by request type: its request counters every few seconds, to read while
another benchmark runs.

    scripts/services up
    .venv/bin/python benchmarks/broker_requests.py [--every 5] [--seconds 120] &
    .venv/bin/python benchmarks/end_to_end.py --skip raw faust-iterate faust-eos per-event batched mlflow ...

The broker that scripts/services started is given a local JMX agent (`jcmd ... ManagementAgent.start`,
on 127.0.0.1:`--port`) and Kafka's own JmxTool reads its `LocalTimeMs` histograms, one per request type
from the broker's start (the per-version `RequestsPerSec` meters appear only with a type's first
request, after JmxTool has resolved its names). Each line gives, for the busiest request types over
the last `--every` seconds, requests per second and the milliseconds per second its request handlers
spent on them. The broker's switch that checks each
partition's first write in a transaction (KIP-890) can be turned off and on while it runs, to compare:

    java -cp ".services/kafka-libs/*" kafka.admin.ConfigCommand --bootstrap-server 127.0.0.1:9092 \\
        --alter --entity-type brokers --entity-name 1 --add-config transaction.partition.verification.enable=false
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.end_to_end import broker_pid  # noqa: E402

LIBS = str(Path(__file__).resolve().parent.parent / ".services" / "kafka-libs" / "*")
LINE = re.compile(r"name=LocalTimeMs,request=(\w+):(Count|Mean)=([\d.E-]+)")


def counters(lines: list[str]) -> Counter:
    """Requests so far by type, and the handlers' milliseconds so far ("ms:" + type)."""
    seen: dict[str, dict[str, float]] = {}
    for line in lines:
        m = LINE.search(line)
        if m:
            request, attribute, value = m.groups()
            seen.setdefault(request, {})[attribute] = float(value)
    out = Counter()
    for request, m in seen.items():
        out[request] = m.get("Count", 0.0)
        out["ms:" + request] = m.get("Count", 0.0) * m.get("Mean", 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--top", type=int, default=9)
    args = parser.parse_args()
    pid = broker_pid()
    subprocess.run(["jcmd", str(pid), "ManagementAgent.start", f"jmxremote.port={args.port}",
                    f"jmxremote.rmi.port={args.port}", "jmxremote.authenticate=false", "jmxremote.ssl=false",
                    "jmxremote.host=127.0.0.1"], check=False, capture_output=True)
    tool = subprocess.Popen(
        ["java", "-cp", LIBS, "org.apache.kafka.tools.JmxTool", "--jmx-url",
         f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{args.port}/jmxrmi",
         "--object-name", "kafka.network:type=RequestMetrics,name=LocalTimeMs,request=*",
         "--attributes", "Count,Mean", "--reporting-interval", str(1000 * args.every), "--report-format", "properties"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ends = time.monotonic() + args.seconds
    previous, block = None, []
    try:
        for line in tool.stdout:
            if line.startswith("time=") and block:
                now = counters(block)
                if previous is not None:
                    rates = {k: (v - previous[k]) / args.every for k, v in now.items() if not k.startswith("ms:")}
                    top = sorted(((v, k) for k, v in rates.items() if v > 0.5), reverse=True)[:args.top]
                    print(time.strftime("%H:%M:%S"), "  ".join(
                        f"{k} {v:.0f}/s ({(now['ms:' + k] - previous['ms:' + k]) / args.every:.0f} ms/s)"
                        for v, k in top), flush=True)
                previous, block = now, []
                if time.monotonic() > ends:
                    break
            block.append(line)
    finally:
        tool.terminate()


if __name__ == "__main__":
    main()

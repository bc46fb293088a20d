"""Exactly once through failures: a worker killed mid-stream, a rebalance between two workers, the
broker frozen past the transaction timeout.

Not part of the default run (marker `resilience`): each takes minutes of wall time when it fails (it
waits out a consumer group session), and they have passed fewer runs than the default suite's
checks. Run them with `scripts/test -m resilience tests/resilience`. The graceful restart is in
tests/integration/test_lifecycle.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from core.settings import ROOT
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess, free_port, unique_settings
from tests.integration.conftest import (assert_each_transaction_counted_once, produce_transactions, read_committed,
                                        simulated_transactions, train_version)
from tests.integration.test_lifecycle import assert_one_verdict_each, restart_mid_stream

pytestmark = [pytest.mark.integration, pytest.mark.resilience]


def test_a_worker_killed_mid_stream_leaves_one_verdict_per_transaction_and_counts_it_once_in_its_card_and_terminal_rows(
        services, small_history, tmp_path):
    restart_mid_stream(small_history, tmp_path, signal.SIGKILL)


def test_a_second_worker_joining_and_leaving_mid_stream_leaves_one_verdict_per_transaction_and_counts_it_once_in_its_card_and_terminal_rows(
        services, small_history, tmp_path):
    settings = unique_settings(tmp_path, partitions=6)
    train_version(settings, small_history, n_estimators=20)
    ensure_topics(settings)
    records = simulated_transactions(seed=24, count=4000, prefix="rebalance")
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    second = WorkerProcess(settings.model_copy(update={"api_port": free_port(), "worker_id": "second"}),
                           tmp_path / "worker-2.log")
    try:
        first.wait_ready()
        producing = threading.Thread(target=produce_transactions, args=(settings, records), kwargs={"rate": 500})
        producing.start()
        time.sleep(2)
        second.start()
        second.wait_ready()  # partitions are now shared between the two
        assert len(first.get("/health/ready")[1].get("assigned_partitions", [])) < 3 * 6
        time.sleep(2)
        second.stop(signal.SIGKILL)  # and taken back by the first when the group notices
        producing.join()
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(records), timeout=180)
        assert_one_verdict_each(records, verdicts)
        assert_each_transaction_counted_once(settings, records)
    finally:
        second.stop()
        first.stop()


def test_the_broker_frozen_past_the_transaction_timeout_mid_stream_loses_and_duplicates_nothing(
        services, small_history, tmp_path):
    """The broker stops answering for longer than the transaction and session timeouts (SIGSTOP), then
    comes back: the worker's open transaction is aborted by the broker, the worker rewinds to what was
    committed and goes on, without a restart."""
    settings = unique_settings(tmp_path, partitions=6)
    train_version(settings, small_history, n_estimators=20)
    ensure_topics(settings)
    records = simulated_transactions(seed=26, count=3000, prefix="frozen")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    broker = int((ROOT / ".services" / "run" / "kafka.pid").read_text())
    try:
        worker.wait_ready()
        producing = threading.Thread(target=produce_transactions, args=(settings, records), kwargs={"rate": 300})
        producing.start()
        time.sleep(3)
        os.kill(broker, signal.SIGSTOP)
        try:
            time.sleep(settings.transaction_timeout_ms / 1000 + 5)
        finally:
            os.kill(broker, signal.SIGCONT)
        producing.join()
        verdicts = read_committed(settings, settings.verdicts_topic, expected=len(records), timeout=240)
        assert worker.proc.poll() is None, "the worker stopped: " + worker.log_tail()
        assert_one_verdict_each(records, verdicts)
        assert_each_transaction_counted_once(settings, records)
    finally:
        os.kill(broker, signal.SIGCONT)
        worker.stop()

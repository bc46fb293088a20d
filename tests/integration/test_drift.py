"""Drift watched live: a worker scoring transactions whose amounts tripled reports the amount inputs'
PSI past the alert in its API and its Prometheus metrics, and the inputs amounts do not feed stay low."""

from __future__ import annotations

import time
import urllib.request

import pytest

from models.simulate import SimulationConfig, simulate, transaction_records
from streams.topics import ensure_topics
from tests.conftest import WorkerProcess, unique_settings
from tests.integration.conftest import produce_transactions, train_version

pytestmark = pytest.mark.integration

AMOUNT_INPUTS = {"amount", "customer_avg_amount_1d", "customer_avg_amount_7d", "customer_avg_amount_30d"}
# Inputs that labels do not feed and that tripling every amount leaves as they were: the counts, and
# the amount against the card's own habits (the terminal risks need the feedback this test does not
# send; the terminal counts arrive through the terminal snapshots, behind the cards).
STEADY_INPUTS = {"during_weekend", "during_night", "card_present", "channel_ecom", "customer_nb_tx_1d",
                 "customer_nb_tx_7d", "customer_nb_tx_30d", "seconds_since_previous", "amount_zscore_30d",
                 "distinct_terminals_1d", "amount_to_avg_30d", "max_amount_to_avg_14d"}


def test_tripled_amounts_cross_the_psi_alert_on_the_amount_inputs_only(services, small_history, tmp_path):
    settings = unique_settings(tmp_path)
    version = train_version(settings, small_history, n_estimators=20)  # 300 cards, 40 days, seed 7
    ensure_topics(settings)
    live = simulate(SimulationConfig(customers=300, terminals=600, days=40, seed=8))
    records = transaction_records(live.assign(amount=live["amount"] * 3))
    for r in records:
        r["transaction_id"] = f"drift-{r['transaction_id']}"
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        status, before = worker.get("/api/v1/fraud/drift")
        assert status == 503 and "nothing scored yet" in before["error"]["message"], before
        produce_transactions(settings, records)
        deadline, report = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            status, report = worker.get("/api/v1/fraud/drift")
            if status == 200 and report["transactions"] == len(records):
                break
            time.sleep(1)
        assert status == 200 and report["transactions"] == len(records), (status, report, worker.log_tail())
        assert report["model_version"] == version and report["alert_psi"] == 0.2
        inputs = report["inputs"]
        assert set(inputs) >= AMOUNT_INPUTS | STEADY_INPUTS | {"score"}
        for name in AMOUNT_INPUTS:
            assert inputs[name]["psi"] > 0.2, (name, inputs[name])
        for name in STEADY_INPUTS:
            assert inputs[name]["psi"] < 0.2, (name, inputs[name])
        assert all(figures["missing_share"] == 0.0 for figures in inputs.values())

        with urllib.request.urlopen(worker.base + "/metrics/prometheus", timeout=10) as resp:
            exported = resp.read().decode()
        gauges = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                  for line in exported.splitlines() if line.startswith("fraud_drift_psi{")}
        assert gauges['input="amount"'] == pytest.approx(inputs["amount"]["psi"], rel=1e-6)
        assert gauges['input="during_night"'] < 0.2
        assert f"fraud_drift_window_transactions {float(len(records))}" in exported
    finally:
        worker.stop()

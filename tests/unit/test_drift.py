import math

import numpy as np
import pytest

from core.drift import SCORE, DriftWatch, DriftWindow, Reference, psi, reference_of
from core.features import FEATURE_NAMES, feature_matrix
from models.simulate import SimulationConfig, simulate, transaction_records


def test_psi_is_the_sum_of_share_differences_times_their_log_ratio():
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5)
    assert psi([0.5, 0.5], [90, 10]) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    assert psi([0.25, 0.75], [25, 75]) == pytest.approx(0.0)
    assert math.isnan(psi([0.5, 0.5], [0, 0]))


def test_an_empty_bin_counts_as_a_tiny_share_not_an_infinite_one():
    assert psi([1.0, 0.0], [50, 50]) == pytest.approx((0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))


def test_the_reference_bins_training_values_at_their_deciles_and_counts_missing_apart():
    values = np.arange(1000, dtype=float)
    values[:100] = np.nan
    ref = reference_of(values.reshape(-1, 1), np.linspace(0, 1, 1000), ("x",))
    assert ref.names == ("x", SCORE)
    assert len(ref.edges[0]) == 9 and ref.shares[0] == pytest.approx((0.1,) * 10, abs=0.002)
    assert ref.missing == pytest.approx((0.1, 0.0))
    flags = np.array([0.0, 1.0] * 500).reshape(-1, 1)  # a 0/1 input: below 0 (never in training), 0, 1
    assert reference_of(flags, np.zeros(1000), ("f",)).shares[0] == pytest.approx((0.0, 0.5, 0.5))


def test_a_reference_survives_its_dict_and_a_broken_one_is_refused():
    ref = reference_of(np.random.default_rng(0).normal(size=(500, 2)), np.random.default_rng(1).random(500), ("a", "b"))
    assert Reference.from_dict(ref.to_dict()) == ref
    broken = ref.to_dict()
    broken["shares"][0] = broken["shares"][0][:-1]
    with pytest.raises(ValueError):
        Reference.from_dict(broken)


def test_the_window_forgets_what_is_older_than_it_and_shares_missing_live():
    rng = np.random.default_rng(2)
    ref = reference_of(rng.normal(size=(5000, 1)), rng.random(5000), ("x",))
    window = DriftWindow(ref, "3", window_seconds=120, slice_seconds=60)
    live = rng.normal(size=(1000, 1))
    live[:100] = np.nan
    window.observe(live, rng.random(1000), now=1_000.0)
    report = window.report(now=1_000.0)
    assert report["transactions"] == 1000 and report["model_version"] == "3"
    assert report["inputs"]["x"]["psi"] < 0.05 and report["inputs"]["x"]["missing_share"] == pytest.approx(0.1)
    assert window.report(now=1_000.0 + 60)["transactions"] == 1000  # still within two slices
    assert window.report(now=1_000.0 + 180)["transactions"] == 0


def test_a_new_version_starts_a_new_window_and_a_version_without_reference_has_no_report():
    rng = np.random.default_rng(3)
    ref = reference_of(rng.normal(size=(500, 1)), rng.random(500), ("x",))
    watch = DriftWatch(window_seconds=900)
    watch.add("1", ref, rng.normal(size=(10, 1)), rng.random(10))
    assert watch.report(100.0)["transactions"] == 10
    watch.add("2", ref, rng.normal(size=(4, 1)), rng.random(4))
    assert watch.report(101.0) == watch.latest and watch.latest["model_version"] == "2"
    assert watch.latest["transactions"] == 4
    watch.add("3", None, rng.normal(size=(4, 1)), rng.random(4))
    assert watch.report(102.0) is None
    for version, rows in (("4", 10), ("4", 5), ("5", 3), ("5", 2)):  # batches of a second, counted at once
        watch.add(version, ref, rng.normal(size=(rows, 1)), rng.random(rows))
    assert (watch.report(103.0)["model_version"], watch.latest["transactions"]) == ("5", 5)


def _features(seed: int, amount_factor: float = 1.0) -> np.ndarray:
    history = simulate(SimulationConfig(customers=300, terminals=600, days=40, seed=seed))
    history = history.assign(amount=history["amount"] * amount_factor)
    return feature_matrix(transaction_records(history), history["is_fraud"].to_numpy())


def test_amounts_tripled_move_the_amount_inputs_past_the_alert_and_leave_the_others_low():
    train = _features(7)
    reference = reference_of(train, np.zeros(len(train)), FEATURE_NAMES)
    amount_inputs = {"amount", "customer_avg_amount_1d", "customer_avg_amount_7d", "customer_avg_amount_30d"}
    for factor, expect_shift in ((1.0, False), (3.0, True)):
        live = _features(8, factor)
        window = DriftWindow(reference, "1")
        window.observe(live, np.zeros(len(live)), now=0.0)
        report = window.report(now=0.0)["inputs"]
        for name in FEATURE_NAMES:
            shifted = expect_shift and name in amount_inputs
            assert (report[name]["psi"] > 0.2) == shifted, (factor, name, report[name]["psi"])

"""The synthetic history: reproducible, and its fraud follows the three scenarios."""

import numpy as np

from models.simulate import SimulationConfig, simulate, transaction_records

CONFIG = SimulationConfig(customers=400, terminals=800, days=30, seed=3)


def test_the_same_seed_gives_the_same_history_and_another_seed_another():
    a, b, c = simulate(CONFIG), simulate(CONFIG), simulate(SimulationConfig(**{**CONFIG.__dict__, "seed": 4}))
    assert a.equals(b)
    assert not a[["amount", "timestamp"]].equals(c[["amount", "timestamp"]])


def test_history_is_in_event_time_order_within_the_simulated_days():
    h = simulate(CONFIG)
    ts = h["timestamp"].to_numpy()
    assert np.all(np.diff(ts) >= 0)
    start = 1_522_540_800_000  # 2018-04-01 UTC
    assert ts.min() >= start and ts.max() < start + CONFIG.days * 86_400_000


def test_every_amount_over_220_is_fraud_and_scenarios_label_fraud():
    h = simulate(CONFIG)
    assert h.loc[h.amount > 220, "is_fraud"].all()
    assert ((h.fraud_scenario > 0) == (h.is_fraud == 1)).all()
    assert set(h.fraud_scenario.unique()) >= {0, 1, 2, 3}


def test_a_card_pays_at_terminals_close_to_it_and_about_two_a_day_on_average():
    h = simulate(CONFIG)
    per_card_day = len(h) / (CONFIG.customers * CONFIG.days)
    assert 1.5 < per_card_day < 2.5  # mean of U(0, 4), less the time draws that fall outside the day
    assert h.groupby("customer_id").terminal_id.nunique().max() < 200


def test_records_carry_the_transaction_fields_only():
    records = transaction_records(simulate(CONFIG).head(3))
    assert set(records[0]) == {"transaction_id", "customer_id", "terminal_id", "merchant_id", "amount",
                               "currency", "timestamp", "merchant_category", "channel", "card_present",
                               "country"}
    assert isinstance(records[0]["timestamp"], int)

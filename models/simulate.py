"""Labelled synthetic card transactions: the customer/terminal process with three fraud scenarios.

Customers and terminals live on a 100 x 100 grid; a customer pays at terminals within radius 5.
Each day a customer makes Poisson(mean_nb_tx_per_day) payments around midday with amounts drawn around
the customer's mean. Fraud: (1) any amount over 220; (2) every day 2 terminals are compromised for 28
days, all their payments are fraud; (3) every day 3 cards are compromised for 14 days, a third of their
payments are multiplied by 5 and are fraud. Everything is drawn from one seeded numpy generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

DAY_S = 86_400


@dataclass(frozen=True)
class SimulationConfig:
    customers: int = 5_000
    terminals: int = 10_000
    days: int = 183
    start: str = "2018-04-01"
    radius: float = 5.0
    seed: int = 0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_cards_per_day: int = 3
    card_compromise_days: int = 14


def simulate(config: SimulationConfig) -> pd.DataFrame:
    """A history of transactions in event-time order, with `is_fraud` and `fraud_scenario` labels."""
    rng = np.random.default_rng(config.seed)
    n_c, n_t, days = config.customers, config.terminals, config.days

    cust_xy = rng.uniform(0, 100, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c)
    std_amount = mean_amount / 2
    mean_nb_tx = rng.uniform(0, 4, size=n_c)
    term_xy = rng.uniform(0, 100, size=(n_t, 2))

    # Terminals within reach of each customer, flattened with offsets.
    reach = cKDTree(term_xy).query_ball_point(cust_xy, r=config.radius)
    reach_len = np.fromiter((len(r) for r in reach), dtype=np.int64, count=n_c)
    reach_off = np.concatenate(([0], np.cumsum(reach_len)[:-1]))
    reach_flat = np.fromiter((t for r in reach for t in r), dtype=np.int64, count=int(reach_len.sum()))

    counts = rng.poisson(mean_nb_tx, size=(days, n_c))
    day = np.repeat(np.repeat(np.arange(days), n_c), counts.ravel())
    cust = np.repeat(np.tile(np.arange(n_c), days), counts.ravel())
    seconds = rng.normal(DAY_S / 2, 20_000, size=day.size)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    pick = rng.random(day.size)
    keep = (seconds > 0) & (seconds < DAY_S) & (reach_len[cust] > 0)
    day, cust, seconds, amount, pick = day[keep], cust[keep], seconds[keep], amount[keep], pick[keep]
    term = reach_flat[reach_off[cust] + (pick * reach_len[cust]).astype(np.int64)]

    start_s = int(datetime.fromisoformat(config.start).replace(tzinfo=timezone.utc).timestamp())
    ts_s = start_s + day * DAY_S + seconds.astype(np.int64)
    order = np.argsort(ts_s, kind="stable")
    day, cust, term, amount, ts_s = day[order], cust[order], term[order], amount[order], ts_s[order]

    scenario = np.zeros(day.size, dtype=np.int8)
    scenario[amount > 220] = 1

    compromised_term = np.zeros((days, n_t), dtype=bool)
    for d in range(days):
        chosen = rng.choice(n_t, size=config.compromised_terminals_per_day, replace=False)
        compromised_term[d : d + config.terminal_compromise_days, chosen] = True
    scenario[(scenario == 0) & compromised_term[day, term]] = 2

    compromised_card = np.zeros((days, n_c), dtype=bool)
    for d in range(days):
        chosen = rng.choice(n_c, size=config.compromised_cards_per_day, replace=False)
        compromised_card[d : d + config.card_compromise_days, chosen] = True
    stolen = (scenario == 0) & compromised_card[day, cust] & (rng.random(day.size) < 1 / 3)
    amount[stolen] = np.round(amount[stolen] * 5, 2)
    scenario[stolen] = 3

    n = day.size
    return pd.DataFrame(
        {
            "transaction_id": np.char.add(f"s{config.seed}-", np.arange(n).astype(str)),
            "customer_id": np.char.add("C", np.char.zfill(cust.astype(str), 5)),
            "terminal_id": np.char.add("T", np.char.zfill(term.astype(str), 5)),
            "merchant_id": np.char.add("M", np.char.zfill((term // 4).astype(str), 5)),
            "amount": amount,
            "currency": "EUR",
            "timestamp": ts_s * 1000,
            "merchant_category": "5411",
            "channel": "POS",
            "card_present": True,
            "country": "BE",
            "is_fraud": (scenario > 0).astype(np.int8),
            "fraud_scenario": scenario,
        }
    )


TRANSACTION_FIELDS = (
    "transaction_id", "customer_id", "terminal_id", "merchant_id", "amount", "currency",
    "timestamp", "merchant_category", "channel", "card_present", "country",
)


def transaction_records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as Transaction records (the Avro fields only, plain Python values)."""
    columns = {f: frame[f].tolist() for f in TRANSACTION_FIELDS if f in frame.columns}
    if "attributes" in frame.columns:
        columns["attributes"] = frame["attributes"].tolist()
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]

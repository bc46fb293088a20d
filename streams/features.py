"""Features of one transaction given its card's history: one implementation for serving and training.

The stream keeps a `CustomerHistory` per card in a Faust table and calls `customer_features` then
`remember` for each transaction in arrival order. Training replays a labelled history through the very
same two functions (`feature_matrix`), so a model sees in production exactly what it saw in training.

Windows are exact per event: a transaction sees every earlier transaction of its card whose event time
lies in the trailing window (now - w, now], plus itself.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from typing import Iterable, Mapping, Sequence

import numpy as np

DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
HISTORY_MS = max(WINDOWS_DAYS) * DAY_MS
NO_PREVIOUS_SECONDS = float(HISTORY_MS // 1000)

FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "during_weekend",
    "during_night",
    "card_present",
    "channel_ecom",
    "customer_nb_tx_1d",
    "customer_avg_amount_1d",
    "customer_nb_tx_7d",
    "customer_avg_amount_7d",
    "customer_nb_tx_30d",
    "customer_avg_amount_30d",
    "seconds_since_previous",
    "amount_zscore_30d",
    "distinct_terminals_1d",
)
N_FEATURES = len(FEATURE_NAMES)

# A card's history as stored in its table row: parallel lists sorted by event time.
CustomerHistory = dict  # {"t": [epoch ms], "a": [amount], "term": [terminal_id]}


def empty_history() -> CustomerHistory:
    return {"t": [], "a": [], "term": []}


def calendar_features(timestamp_ms: int) -> tuple[float, float]:
    """(during_weekend, during_night) in UTC: Saturday/Sunday, and hours 0 to 6 inclusive."""
    days = timestamp_ms // DAY_MS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
    hour = (timestamp_ms % DAY_MS) // 3_600_000
    return float(weekday >= 5), float(hour <= 6)


def customer_features(history: CustomerHistory, txn: Mapping) -> list[float]:
    """The feature vector (in FEATURE_NAMES order) of `txn` given the card's earlier history."""
    now = txn["timestamp"]
    amount = float(txn["amount"])
    times, amounts, terminals = history["t"], history["a"], history["term"]
    end = bisect_right(times, now)  # only transactions at or before this one's event time
    weekend, night = calendar_features(now)
    row = [
        amount,
        weekend,
        night,
        float(bool(txn.get("card_present", True))),
        float(txn.get("channel") == "ECOM"),
    ]
    for days in WINDOWS_DAYS:
        start = bisect_right(times, now - days * DAY_MS, 0, end)
        count = end - start + 1
        row.append(float(count))
        row.append((math.fsum(amounts[start:end]) + amount) / count)
    row.append((now - times[end - 1]) / 1000.0 if end else NO_PREVIOUS_SECONDS)
    row.append(_zscore(amounts[bisect_right(times, now - HISTORY_MS, 0, end):end], amount))
    day_start = bisect_right(times, now - DAY_MS, 0, end)
    row.append(float(len(set(terminals[day_start:end]) | {txn["terminal_id"]})))
    return row


def _zscore(previous: Sequence[float], amount: float) -> float:
    """How unusual `amount` is for the card: (amount - mean) / std over its previous 30 days."""
    n = len(previous)
    if n < 2:
        return 0.0
    mean = math.fsum(previous) / n
    var = math.fsum((x - mean) ** 2 for x in previous) / (n - 1)
    std = math.sqrt(var)
    return (amount - mean) / std if std > 1e-9 else 0.0


def remember(history: CustomerHistory, txn: Mapping) -> CustomerHistory:
    """Add `txn` to the history (in event-time order) and forget what fell out of the longest window."""
    times, amounts, terminals = history["t"], history["a"], history["term"]
    now = txn["timestamp"]
    if not times or now >= times[-1]:
        times.append(now)
        amounts.append(float(txn["amount"]))
        terminals.append(txn["terminal_id"])
    else:  # a late event: keep the lists sorted
        at = bisect_right(times, now)
        insort(times, now)
        amounts.insert(at, float(txn["amount"]))
        terminals.insert(at, txn["terminal_id"])
    cutoff = bisect_right(times, times[-1] - HISTORY_MS)
    if cutoff:
        del times[:cutoff], amounts[:cutoff], terminals[:cutoff]
    return history


def feature_matrix(transactions: Iterable[Mapping]) -> np.ndarray:
    """Features of a history of transactions, replayed card by card in the order given.

    Give the transactions in event-time order (the order the stream would see them).
    """
    rows = []
    histories: dict[str, CustomerHistory] = {}
    for txn in transactions:
        history = histories.get(txn["customer_id"])
        if history is None:
            history = histories[txn["customer_id"]] = empty_history()
        rows.append(customer_features(history, txn))
        remember(history, txn)
    return np.asarray(rows, dtype=np.float64).reshape(-1, N_FEATURES)


FUTURE_TOLERANCE_MS = DAY_MS


def invalid_transaction_reason(txn: Mapping, now_ms: int | None = None) -> str | None:
    """Why a decoded transaction cannot be scored, or None when it can. With `now_ms`, an event time
    more than a day ahead of it (a timestamp in microseconds, say) is refused: it would push the
    card's whole history out of its windows."""
    amount = txn.get("amount")
    if amount is None or not math.isfinite(amount):
        return f"field amount: not a finite number ({amount!r})"
    if amount < 0:
        return f"field amount: negative ({amount!r})"
    for field in ("transaction_id", "customer_id", "terminal_id"):
        if not txn.get(field):
            return f"field {field}: empty"
    if txn.get("timestamp", 0) <= 0:
        return f"field timestamp: not a positive epoch-millisecond time ({txn.get('timestamp')!r})"
    if now_ms is not None and txn["timestamp"] > now_ms + FUTURE_TOLERANCE_MS:
        return f"field timestamp: more than a day in the future ({txn['timestamp']!r} epoch ms)"
    return None

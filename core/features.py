"""Features of a transaction: one implementation for serving and training.

Card features: the stream keeps a `CustomerHistory` per card in a Faust table and calls
`customer_features` then `remember` for each transaction in arrival order. Windows are exact per event:
a transaction sees every earlier transaction of its card whose event time lies in the trailing window
(now - w, now], plus itself.

Terminal features (the handbook's): over the terminal's transactions whose event time lies in
(now - 7 days - w, now - 7 days], their count and the share of them known to be fraud. The 7-day delay
is the time labels take to arrive. The stream keeps every terminal's transaction times and fraud times
(`TerminalHistory`) in a Faust table keyed by terminal, fed by the transactions it scores and by the
fraud labels on the feedback topic (`remember_terminal`), and calls `terminal_features` per terminal
for a batch.

Training replays a labelled history through the very same functions (`feature_matrix`), so a model
sees in production exactly what it saw in training.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from typing import Mapping, Sequence

import numpy as np

DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
HISTORY_MS = max(WINDOWS_DAYS) * DAY_MS
NO_PREVIOUS_SECONDS = float(HISTORY_MS // 1000)

CUSTOMER_FEATURE_NAMES: tuple[str, ...] = (
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
N_CUSTOMER_FEATURES = len(CUSTOMER_FEATURE_NAMES)
TERMINAL_DELAY_DAYS = 7
TERMINAL_DELAY_MS = TERMINAL_DELAY_DAYS * DAY_MS
TERMINAL_HISTORY_MS = TERMINAL_DELAY_MS + max(WINDOWS_DAYS) * DAY_MS
TERMINAL_KEEP_MS = TERMINAL_HISTORY_MS + TERMINAL_DELAY_MS
LOOKBACK_DAYS = TERMINAL_DELAY_DAYS + max(WINDOWS_DAYS)  # the oldest event any feature reads
TERMINAL_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"terminal_{kind}_{days}d" for days in WINDOWS_DAYS for kind in ("nb_tx", "risk"))
FEATURE_NAMES: tuple[str, ...] = CUSTOMER_FEATURE_NAMES + TERMINAL_FEATURE_NAMES
N_FEATURES = len(FEATURE_NAMES)
# Upstream numeric attributes (the Transaction's `attributes` map) a model was trained with follow
# FEATURE_NAMES, each as `attribute_<key>`; a transaction without the key gives NaN (missing).
ATTRIBUTE_PREFIX = "attribute_"
# The fraud handbook's 15 features, the published baseline's: ours without the extra ones.
HANDBOOK_FEATURE_NAMES: tuple[str, ...] = tuple(
    name for name in FEATURE_NAMES
    if name not in ("card_present", "channel_ecom", "seconds_since_previous", "amount_zscore_30d",
                    "distinct_terminals_1d"))

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
    """The card features (in CUSTOMER_FEATURE_NAMES order) of `txn` given the card's earlier history."""
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


def terminal_features(times: Sequence[int], fraud_times: Sequence[int], now: Sequence[int]) -> np.ndarray:
    """The terminal features (in TERMINAL_FEATURE_NAMES order), one row per event time in `now`.

    `times` are the event times of the terminal's transactions and `fraud_times` those of the ones
    known to be fraud, both sorted. Counts and risks only look at (now - delay - w, now - delay]."""
    out = np.empty((len(now), len(TERMINAL_FEATURE_NAMES)), dtype=np.float64)
    for row, at in enumerate(now):
        end = int(at) - TERMINAL_DELAY_MS
        last, last_fraud = bisect_right(times, end), bisect_right(fraud_times, end)
        values = []
        for days in WINDOWS_DAYS:
            start = end - days * DAY_MS
            count = last - bisect_right(times, start, 0, last)
            frauds = last_fraud - bisect_right(fraud_times, start, 0, last_fraud)
            values += (count, min(1.0, frauds / count) if count else 0.0)
        out[row] = values
    return out


# A terminal's history as stored in its table row: event times of its transactions ("t") and of those
# labelled fraud ("f"), each sorted.
TerminalHistory = dict


def empty_terminal_history() -> TerminalHistory:
    return {"t": [], "f": []}


def remember_terminal(history: TerminalHistory, timestamp: int, fraud: bool = False) -> TerminalHistory:
    """Add a transaction (or, with `fraud`, its fraud label) and forget what no window will read: events
    older than the terminal's latest by more than the delay and the longest window, plus a margin of
    one delay for events that arrive out of order."""
    values = history["f"] if fraud else history["t"]
    if not values or timestamp >= values[-1]:
        values.append(timestamp)
    else:
        insort(values, timestamp)
    latest = max(history["t"][-1] if history["t"] else timestamp, history["f"][-1] if history["f"] else timestamp)
    cutoff = latest - TERMINAL_KEEP_MS
    for key in ("t", "f"):
        drop = bisect_right(history[key], cutoff)
        if drop:
            del history[key][:drop]
    return history


def terminal_matrix(terminal_ids: Sequence, timestamps: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """Terminal features of a labelled history (rows in the order given): each terminal's
    transactions and frauds, fed to `terminal_features` as the stream does."""
    terminal_ids = np.asarray(terminal_ids)
    timestamps = np.asarray(timestamps, dtype=np.int64)
    fraud = np.asarray(labels).astype(bool)
    out = np.zeros((len(timestamps), len(TERMINAL_FEATURE_NAMES)), dtype=np.float64)
    if not len(timestamps):
        return out
    order = np.lexsort((timestamps, terminal_ids))
    sorted_ids = terminal_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    for rows in np.split(order, starts[1:]):
        times = timestamps[rows]
        out[rows] = terminal_features(times.tolist(), times[fraud[rows]].tolist(), times.tolist())
    return out


def model_feature_names(attributes: Sequence[str] = ()) -> tuple[str, ...]:
    """A model's feature names: ours, then the upstream attributes it reads."""
    return FEATURE_NAMES + tuple(ATTRIBUTE_PREFIX + key for key in attributes)


def attributes_of(feature_names: Sequence[str]) -> tuple[str, ...]:
    """The attribute keys a model with these feature names reads; ValueError when the names are not
    ours followed by attributes."""
    names = tuple(feature_names)
    extra = names[len(FEATURE_NAMES):]
    if names[:len(FEATURE_NAMES)] != FEATURE_NAMES or not all(n.startswith(ATTRIBUTE_PREFIX) for n in extra):
        raise ValueError(f"features {list(names)} are not {list(FEATURE_NAMES)} followed by "
                         f"{ATTRIBUTE_PREFIX}* attributes")
    return tuple(n[len(ATTRIBUTE_PREFIX):] for n in extra)


def attribute_matrix(transactions: Sequence[Mapping], keys: Sequence[str]) -> np.ndarray:
    """One column per attribute key; NaN where a transaction does not carry it."""
    out = np.full((len(transactions), len(keys)), np.nan, dtype=np.float64)
    for i, txn in enumerate(transactions):
        attributes = txn.get("attributes") or {}
        for j, key in enumerate(keys):
            value = attributes.get(key)
            if value is not None:
                out[i, j] = value
    return out


def feature_matrix(transactions: Sequence[Mapping], labels: Sequence[int],
                   attributes: Sequence[str] = ()) -> np.ndarray:
    """Features of a labelled history of transactions, in `model_feature_names(attributes)` order.

    Give the transactions in event-time order (the order the stream would see them); `labels` (1 for
    fraud) feed the terminal risks, of which only the labels at least 7 days old count.
    """
    rows = []
    histories: dict[str, CustomerHistory] = {}
    for txn in transactions:
        history = histories.get(txn["customer_id"])
        if history is None:
            history = histories[txn["customer_id"]] = empty_history()
        rows.append(customer_features(history, txn))
        remember(history, txn)
    customers = np.asarray(rows, dtype=np.float64).reshape(-1, N_CUSTOMER_FEATURES)
    terminals = terminal_matrix([t["terminal_id"] for t in transactions],
                                [t["timestamp"] for t in transactions], labels)
    return np.hstack([customers, terminals, attribute_matrix(transactions, attributes)])


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

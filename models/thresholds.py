"""The review threshold for an alert budget: the score above which about N transactions a day are sent
to review, read off recent traffic, with the precision and recall to expect there.

Scores are calibrated probabilities (models/calibration.py), so the threshold is one too: a
transaction at the threshold is fraud with about that probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000


@dataclass(frozen=True)
class AlertBudget:
    alerts_per_day: float  # asked for
    threshold: float  # review from this score (inclusive), as FRAUD_REVIEW_THRESHOLD
    expected_alerts_per_day: float  # what the threshold raised on the traffic read
    precision: float | None  # share of frauds among those alerts (None without labels)
    recall: float | None  # share of the frauds that raised an alert (None without labels)
    days: float  # how much traffic was read
    transactions: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def for_alerts_per_day(scores: np.ndarray, timestamps_ms: np.ndarray, alerts_per_day: float,
                       labels: np.ndarray | None = None) -> AlertBudget:
    """The lowest threshold whose alerts over the traffic's days stay within `alerts_per_day` a day
    (transactions scored alike at the boundary are all left out, so the budget is never exceeded
    except by scores of exactly 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no transactions to read the alert rate from")
    if alerts_per_day <= 0:
        raise ValueError("alerts_per_day must be above 0")
    ts = np.asarray(timestamps_ms)
    days = max(1.0, float(np.ceil((ts.max() - ts.min() + 1) / DAY_MS)))
    budget = int(np.floor(alerts_per_day * days))
    ranked = np.sort(scores)[::-1]
    threshold = float(ranked[-1]) if budget >= len(ranked) else float(np.nextafter(ranked[budget], np.inf))
    threshold = min(1.0, threshold)
    alerted = scores >= threshold
    precision = recall = None
    if labels is not None:
        labels = np.asarray(labels).astype(bool)
        precision = float(labels[alerted].mean()) if alerted.any() else 0.0
        recall = float(alerted[labels].mean()) if labels.any() else 0.0
    return AlertBudget(alerts_per_day, threshold, float(alerted.sum() / days), precision, recall,
                       days, int(len(scores)))


def on_recent_traffic(model, history, alerts_per_day: float, recent_days: float = 7.0) -> AlertBudget:
    """The alert budget's threshold for `model` (a models.serving.LoadedModel) on the last
    `recent_days` days of a labelled history (Transaction fields and is_fraud): every transaction is
    featurised in time order, as the stream would have, and the recent ones scored."""
    from core.features import feature_matrix
    from models.simulate import transaction_records
    from models.history import in_event_order

    history = in_event_order(history)
    labels = history["is_fraud"].to_numpy()
    timestamps = history["timestamp"].to_numpy()
    records = transaction_records(history)
    rows = feature_matrix(records, labels)
    recent = timestamps > timestamps.max() - recent_days * DAY_MS
    inputs = model.matrix(rows[recent], [r for r, keep in zip(records, recent) if keep])
    return for_alerts_per_day(model.scores(inputs), timestamps[recent], alerts_per_day, labels[recent])

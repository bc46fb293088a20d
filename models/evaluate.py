"""Offline evaluation on the fraud handbook's protocol, so results compare with its published table.

Train on 7 days (from 2018-07-25 on the default simulation), leave a 7-day gap (labels are known a
week late), test on the next 7 days. Cards already known to be compromised are removed from each test
day: those with a fraud in the training days, and those with a fraud on the day before the gap
started for that test day, cumulatively. Metrics: AUC ROC, average precision and card
precision@100 (per test day, the share of true frauds among the 100 cards with the highest score,
cards detected on earlier days left out; averaged over the days).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from core.features import FEATURE_NAMES, LOOKBACK_DAYS, TERMINAL_DELAY_DAYS
from models.calibration import brier

DAY_MS = 86_400_000
CACHE_FORMAT = 4  # what a cached seed holds: the protocol's columns, the feature matrix, its feature names
# Why a fraud happened (the simulator's scenario), as `fraud_kinds` names it.
FRESH_TERMINAL = f"terminal compromised <= {TERMINAL_DELAY_DAYS} days before (no label known yet)"
FRAUD_KINDS = {1: "amount over 220", 2: "terminal compromised earlier", 3: "card compromised"}


@dataclass(frozen=True)
class Protocol:
    train_start: str = "2018-07-25"
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    top_k: int = 100

    def start_ms(self) -> int:
        return int(pd.Timestamp(self.train_start, tz="UTC").value // 1_000_000)


def day_index(timestamps_ms: np.ndarray, origin_ms: int) -> np.ndarray:
    """Whole UTC days since `origin_ms` (negative before it)."""
    return np.floor_divide(np.asarray(timestamps_ms) - origin_ms, DAY_MS)


def split(history: pd.DataFrame, protocol: Protocol = Protocol()) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over `history` rows; test rows of known compromised cards removed."""
    day = day_index(history["timestamp"].to_numpy(), protocol.start_ms())
    fraud = history["is_fraud"].to_numpy() == 1
    cards = history["customer_id"].to_numpy()
    train = (day >= 0) & (day < protocol.train_days)
    known = set(cards[train & fraud])
    test = np.zeros(len(history), dtype=bool)
    first_test_day = protocol.train_days + protocol.delay_days
    for i in range(protocol.test_days):
        # Labels of the day before this test day's gap began are known by now.
        known |= set(cards[(day == protocol.train_days + i - 1) & fraud])
        today = day == first_test_day + i
        test |= today & ~pd.Series(cards).isin(known).to_numpy()
    return train, test


def _daily_tops(days: np.ndarray, cards: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int,
                kinds: np.ndarray | None = None):
    """Per day: that day's rows, its cards (best score, any fraud) less those caught on earlier days,
    and the k of them ranked highest."""
    frame = pd.DataFrame({"day": days, "card": cards, "label": labels, "score": scores,
                          "kind": kinds if kinds is not None else ""})
    detected: set = set()
    for _, today in frame.groupby("day", sort=True):
        per_card = today.groupby("card").agg(score=("score", "max"), label=("label", "max"))
        per_card = per_card[~per_card.index.isin(detected)]
        top = per_card.sort_values("score", ascending=False, kind="stable").head(k)
        yield today, per_card, top
        detected |= set(top.index[top["label"] == 1])


def card_precision_at_k(days: np.ndarray, cards: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                        k: int = 100) -> float:
    """Mean over days of the fraud share among the k cards ranked highest by their best score that
    day; cards caught on an earlier day are left out of later days."""
    precisions = [top["label"].sum() / k for _, _, top in _daily_tops(days, cards, labels, scores, k)]
    return float(np.mean(precisions)) if precisions else 0.0


def fraud_kinds(history: pd.DataFrame, protocol: "Protocol") -> np.ndarray:
    """Per row of a simulated history: "" for a legitimate one, else why it is a fraud (FRAUD_KINDS),
    a compromised terminal's fraud counting as FRESH_TERMINAL while its first fraud is at most
    TERMINAL_DELAY_DAYS old: no label of that terminal is known yet, and nothing else tells it apart."""
    scenario = history["fraud_scenario"].to_numpy()
    day = day_index(history["timestamp"].to_numpy(), protocol.start_ms())
    at_terminal = pd.Series(day).where(scenario == 2)
    first = at_terminal.groupby(history["terminal_id"].to_numpy()).transform("min").to_numpy()
    kinds = pd.Series(scenario).map(FRAUD_KINDS).fillna("").to_numpy(dtype=object)
    kinds[(scenario == 2) & (day - first <= TERMINAL_DELAY_DAYS)] = FRESH_TERMINAL
    return kinds


def missed_fraud_cards(days: np.ndarray, cards: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                       kinds: np.ndarray, k: int = 100) -> Counter:
    """The fraud cards left out of a day's top k, summed over the days, by the kind of their frauds
    that day (FRESH_TERMINAL only when all of them are; else the first other kind in FRAUD_KINDS
    order); "caught" counts those in it."""
    missed: Counter = Counter()
    for today, per_card, top in _daily_tops(days, cards, labels, scores, k, kinds):
        frauds = today[(today["label"] == 1) & today["card"].isin(per_card.index)]
        missed["caught"] += int(top["label"].sum())
        for _, card_kinds in frauds[~frauds["card"].isin(top.index)].groupby("card")["kind"]:
            other = [kind for kind in FRAUD_KINDS.values() if kind in set(card_kinds)]
            missed[other[0] if other else FRESH_TERMINAL] += 1
    return missed


def evaluation_metrics(history: pd.DataFrame, test: np.ndarray, scores: np.ndarray, protocol: Protocol = Protocol(),
                       misses: bool = False) -> dict:
    """AUC ROC, average precision and card precision@k of `scores` (one per test row); with `misses`
    (and the simulator's `fraud_scenario` and `terminal_id`), the fraud cards the daily top k missed,
    by kind."""
    rows = history[test]
    labels = rows["is_fraud"].to_numpy()
    days = day_index(rows["timestamp"].to_numpy(), protocol.start_ms())
    extra = {}
    if misses:
        kinds = fraud_kinds(history, protocol)[test]
        extra["missed_cards"] = dict(missed_fraud_cards(days, rows["customer_id"].to_numpy(), labels, scores,
                                                        kinds, protocol.top_k))
    return {**extra,
        "auc_roc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        f"card_precision_at_{protocol.top_k}": card_precision_at_k(
            days, rows["customer_id"].to_numpy(), labels, scores, protocol.top_k),
        "n_test": int(test.sum()),
        "n_test_frauds": int(labels.sum()),
    }


def protocol_rows(history: pd.DataFrame, protocol: Protocol = Protocol(), lookback_days: int = LOOKBACK_DAYS) -> pd.DataFrame:
    """The part of a history the protocol reads: its 21 days plus the lookback the features need."""
    start = protocol.start_ms() - lookback_days * DAY_MS
    end = protocol.start_ms() + (protocol.train_days + protocol.delay_days + protocol.test_days) * DAY_MS
    ts = history["timestamp"].to_numpy()
    return history[(ts >= start) & (ts < end)].reset_index(drop=True)


def seed_history(seed: int, protocol: Protocol = Protocol(), cache: Path | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The protocol's rows of the default simulation with `seed` (the columns it reads: timestamp,
    customer_id, terminal_id, is_fraud, fraud_scenario) and their feature matrix (all of FEATURE_NAMES).
    With `cache`, kept there under a key of the seed, the protocol and the source of the simulator and
    the features, so a change to either computes them again."""
    from models.simulate import SimulationConfig, simulate, transaction_records
    from core.features import feature_matrix

    path = None
    if cache is not None:
        key = hashlib.sha256(repr((seed, protocol, CACHE_FORMAT)).encode() + _sources()).hexdigest()[:16]
        path = Path(cache) / f"seed-{seed}-{key}.pkl"
        if path.exists():
            history, X, names = pd.read_pickle(path)
            if names == FEATURE_NAMES:
                return history, X
    history = protocol_rows(simulate(SimulationConfig(seed=seed)), protocol)
    X = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy())
    history = history[["timestamp", "customer_id", "terminal_id", "is_fraud", "fraud_scenario"]]  # evaluation's
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.to_pickle((history, X, FEATURE_NAMES), path)
    return history, X


@functools.cache
def _sources() -> bytes:
    """The simulator's and the features' source as this process first read it (a file changed since
    does not make this process's results pass for the new code's)."""
    import core.features
    import models.simulate

    return b"".join(Path(module.__file__).read_bytes() for module in (models.simulate, core.features))


def evaluate_seed(seed: int, params, protocol: Protocol = Protocol(),
                  features: tuple[str, ...] = FEATURE_NAMES, cache: Path | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Simulate the default history with `seed`, train on the protocol's train days with `features`
    as training does (models/train.py: class weight chosen and scores calibrated on the latest part
    of the training days), score its test days. Returns (metrics, test labels, test scores)."""
    from models.train import train_model

    history, X = seed_history(seed, protocol, cache)
    X = X[:, [FEATURE_NAMES.index(name) for name in features]]
    train, test = split(history, protocol)
    labels = history["is_fraud"].to_numpy()
    trained = train_model(X[train], labels[train], history["timestamp"].to_numpy()[train], params, features)
    raw = trained.booster.inplace_predict(X[test])
    scores = trained.calibration.probabilities(raw)
    metrics = evaluation_metrics(history, test, scores, protocol, misses=True)
    metrics.update(n_train=int(train.sum()), scale_pos_weight=trained.scale_pos_weight,
                   calibration=trained.calibration.kind, brier_score=brier(scores, labels[test]),
                   brier_score_uncalibrated=brier(raw, labels[test]))
    return metrics, labels[test], scores


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: mean, sample standard deviation (n - 1) and the 95 % confidence interval
    of the mean (Student's t with n - 1 degrees of freedom)."""

    mean: float
    sd: float
    low: float
    high: float
    n: int


def spread(values) -> Spread:
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return Spread(mean, float("nan"), float("nan"), float("nan"), n)
    sd = float(values.std(ddof=1))
    half = float(t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    return Spread(mean, sd, mean - half, mean + half, n)


def over_seeds(rows: list[dict], keys) -> dict[str, Spread]:
    """Each metric's spread over the seeds' rows."""
    return {k: spread([row[k] for row in rows]) for k in keys}

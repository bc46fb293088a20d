"""Hyperparameter search with prequential validation, by Optuna.

Validation never reads the protocol's test days: fold k trains on the 7 days that end
(delay + test) days plus k weeks before the protocol's training start, leaves the 7-day delay,
and assesses the 7 days after it; the folds walk back in time one week each. A trial's score is
its mean average precision over the folds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from models.evaluate import DAY_MS, Protocol, evaluation_metrics, split
from models.train import TrainParams, fit
from core.features import LOOKBACK_DAYS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    protocol: Protocol
    train: np.ndarray
    assess: np.ndarray


def prequential_folds(history: pd.DataFrame, protocol: Protocol = Protocol(), n_folds: int = 4) -> list[Fold]:
    """Folds of (train, assess) masks over `history`, all before the protocol's own training start."""
    folds = []
    step = protocol.delay_days + protocol.test_days
    origin = pd.Timestamp(protocol.train_start, tz="UTC")
    for k in range(n_folds):
        start = origin - pd.Timedelta(days=step + k * protocol.test_days)
        fold_protocol = replace(protocol, train_start=start.strftime("%Y-%m-%d"))
        train, assess = split(history, fold_protocol)
        if train.sum() == 0 or assess.sum() == 0:
            raise ValueError(f"fold {k} starting {fold_protocol.train_start} has no data: give a longer history")
        folds.append(Fold(fold_protocol, train, assess))
    return folds


def search_space(trial) -> TrainParams:
    return TrainParams(
        n_estimators=trial.suggest_int("n_estimators", 25, 400, log=True),
        max_depth=trial.suggest_int("max_depth", 2, 10),
        learning_rate=trial.suggest_float("learning_rate", 0.01, 0.5, log=True),
        tree_method=trial.suggest_categorical("tree_method", ["hist", "exact"]),
    )


def tune(history: pd.DataFrame, X: np.ndarray, *, trials: int = 20, protocol: Protocol = Protocol(),
         n_folds: int = 4, seed: int = 0,
         progress: Callable[[float, str], None] = lambda f, m: None) -> tuple[TrainParams, float, pd.DataFrame]:
    """(best params, their mean validation average precision, one row per trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = prequential_folds(history, protocol, n_folds)
    y = history["is_fraud"].to_numpy()

    def objective(trial) -> float:
        params = search_space(trial)
        scores = []
        for fold in folds:
            booster = fit(X[fold.train], y[fold.train], params)
            metrics = evaluation_metrics(history, fold.assess, booster.inplace_predict(X[fold.assess]), fold.protocol)
            scores.append(metrics["average_precision"])
        trial.set_user_attr("fold_average_precision", scores)
        progress((trial.number + 1) / trials, f"trial {trial.number + 1}/{trials}: AP {np.mean(scores):.4f}")
        return float(np.mean(scores))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = TrainParams(**{**asdict(TrainParams()), **study.best_params})
    table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs"))
    return best, float(study.best_value), table


def tuning_rows(history: pd.DataFrame, protocol: Protocol = Protocol(), n_folds: int = 4,
                lookback_days: int = LOOKBACK_DAYS) -> pd.DataFrame:
    """The part of a history that tuning reads: the folds, the protocol's window and the features' lookback."""
    first = pd.Timestamp(protocol.train_start, tz="UTC") - pd.Timedelta(
        days=protocol.delay_days + protocol.test_days + (n_folds - 1) * protocol.test_days + lookback_days)
    start = int(first.value // 1_000_000)
    end = protocol.start_ms() + (protocol.train_days + protocol.delay_days + protocol.test_days) * DAY_MS
    ts = history["timestamp"].to_numpy()
    return history[(ts >= start) & (ts < end)].reset_index(drop=True)

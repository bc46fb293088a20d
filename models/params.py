"""Training settings, light to import (the command line reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainParams:
    # The handbook's validated XGBoost settings; on our simulator they beat its published table
    # (see README, "Evaluation").
    n_estimators: int = 50
    max_depth: int = 3
    learning_rate: float = 0.3
    tree_method: str = "exact"
    base_score: float = 0.5
    test_fraction: float = 0.2
    nthread: int = 2
    seed: int = 0

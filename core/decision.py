"""From scores to decisions and reasons: pure, vectorised over a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

APPROVE, REVIEW, DECLINE = "APPROVE", "REVIEW", "DECLINE"
_DECISIONS = np.array([APPROVE, REVIEW, DECLINE], dtype=object)


@dataclass(frozen=True)
class Thresholds:
    review: float = 0.5
    decline: float = 0.9

    def __post_init__(self):
        if not 0.0 <= self.review <= self.decline <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= review <= decline <= 1, got {self}")


def decide(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """APPROVE below `review`, REVIEW from `review`, DECLINE from `decline` (bounds inclusive)."""
    level = (scores >= thresholds.review).astype(np.int8) + (scores >= thresholds.decline)
    return _DECISIONS[level]


def top_reasons(
    contributions: np.ndarray, features: np.ndarray, names: Sequence[str], k: int = 3
) -> list[list[dict]]:
    """Per row, up to `k` features that pushed the score up, the most first (largest log-odds
    contribution); a feature whose contribution is zero or negative is never a reason.

    `contributions` is XGBoost's pred_contribs output: one column per feature plus the bias column.
    """
    per_feature = contributions[:, : len(names)]
    k = min(k, per_feature.shape[1])
    top = np.argpartition(-per_feature, k - 1, axis=1)[:, :k]
    rows = np.arange(per_feature.shape[0])[:, None]
    order = np.argsort(-per_feature[rows, top], axis=1)
    top = top[rows, order]
    values, contribs = features[rows, top], per_feature[rows, top]
    # Plain lists first: indexing numpy arrays element by element is the slow part.
    return [
        [{"feature": names[j], "value": v, "contribution": c}
         for j, v, c in zip(top_row, value_row, contrib_row) if c > 0]
        for top_row, value_row, contrib_row in zip(top.tolist(), values.tolist(), contribs.tolist())
    ]

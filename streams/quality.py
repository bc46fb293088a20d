"""Online model quality from matured labels: what the feedback join feeds, per model."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score

from core.decision import Thresholds


def confusion(score: float, fraud: bool, threshold: float) -> str:
    """tp, fp, fn or tn of one labelled score, flagged when score >= threshold."""
    flagged = score >= threshold
    return ("tp" if fraud else "fp") if flagged else ("fn" if fraud else "tn")


@dataclass
class OnlineQuality:
    """The last `window` labelled scores of one model."""

    thresholds: Thresholds
    window: int = 10_000
    scores: deque = field(init=False)
    labels: deque = field(init=False)

    def __post_init__(self):
        self.scores = deque(maxlen=self.window)
        self.labels = deque(maxlen=self.window)

    def observe(self, score: float, fraud: bool) -> dict[str, str]:
        """Record one labelled score; returns its confusion outcome at each threshold."""
        self.scores.append(score)
        self.labels.append(bool(fraud))
        return {name: confusion(score, fraud, at) for name, at in self.at().items()}

    def at(self) -> dict[str, float]:
        return {"review": self.thresholds.review, "decline": self.thresholds.decline}

    def summary(self) -> dict:
        """Precision and recall at each threshold and average precision, over the window.
        A figure with nothing to count (no flagged score, no fraud) is None."""
        # Copies first: the feedback join appends from the worker's loop thread meanwhile.
        scores, labels = list(self.scores), list(self.labels)
        n = min(len(scores), len(labels))
        scores = np.asarray(scores[-n:] if n else [], dtype=np.float64)
        labels = np.asarray(labels[-n:] if n else [], dtype=bool)
        frauds = int(labels.sum())
        out: dict = {"labels": len(labels), "frauds": frauds,
                     "average_precision": float(average_precision_score(labels, scores)) if frauds else None}
        for name, threshold in self.at().items():
            flagged = scores >= threshold
            tp = int((flagged & labels).sum())
            out[name] = {"threshold": threshold,
                         "precision": tp / int(flagged.sum()) if flagged.any() else None,
                         "recall": tp / frauds if frauds else None}
        return out

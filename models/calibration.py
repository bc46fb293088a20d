"""Scores as probabilities: a monotone map from the model's raw score, fitted on a validation slice.

A tree model's raw score ranks transactions well but is not a probability (class weighting inflates
it on purpose). Two maps are fitted to a validation slice's raw scores and labels, and the one with
the lower Brier score (a proper score) under 5-fold cross-validation on that slice is kept, unless
the raw score's own Brier score there is lower still:

- platt: p = sigmoid(a * margin + b), the margin being the model's log-odds. It is linear in log-odds,
  so a verdict's contributions stay additive: each is multiplied by `a`, and the bias becomes
  a * bias + b;
- isotonic: a non-decreasing map of the raw probability, linear between its fitted points, plus
  1e-9 times the raw probability so that it keeps the raw ranking (a flat step of the map would
  otherwise tie scores the model tells apart, and cost average precision). Contributions then
  explain the raw log-odds, and the score is the map of their logistic.

Applying a map is numpy only (the worker does it per batch); fitting uses scikit-learn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EPS = 1e-7
TIE_BREAK = 1e-9
MIN_POSITIVES = 10  # fewer frauds in the validation slice than this: the raw score is kept


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(m: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(m, dtype=np.float64)))


@dataclass(frozen=True)
class Calibration:
    kind: str = "none"  # none, platt or isotonic
    a: float = 1.0  # platt: slope on the log-odds
    b: float = 0.0  # platt: intercept
    x: tuple[float, ...] = ()  # isotonic: raw probabilities, increasing
    y: tuple[float, ...] = ()  # isotonic: their calibrated probabilities, non-decreasing

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw model probabilities."""
        if self.kind == "platt":
            return _sigmoid(self.a * _logit(raw) + self.b)
        if self.kind == "isotonic":
            raw = np.asarray(raw, dtype=np.float64)
            return np.minimum(1.0, np.interp(raw, self.x, self.y) + TIE_BREAK * raw)
        return np.asarray(raw, dtype=np.float64)

    def contributions(self, contributions: np.ndarray) -> np.ndarray:
        """Per-feature log-odds contributions (last column: bias) in the calibrated log-odds where the
        map is linear in them (platt); unchanged otherwise."""
        if self.kind != "platt":
            return contributions
        out = contributions * self.a
        out[..., -1] += self.b
        return out

    def from_margin(self, margin: float) -> float:
        """The score of a row whose (calibrated, for platt) contributions add up to `margin`."""
        p = float(_sigmoid(margin))
        return float(self.probabilities(np.array([p]))[0]) if self.kind == "isotonic" else p

    def to_dict(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration":
        if not data:
            return cls()
        kind = data.get("kind", "none")
        if kind not in ("none", "platt", "isotonic"):
            raise ValueError(f"unknown calibration kind {kind!r}")
        return cls(kind, float(data.get("a", 1.0)), float(data.get("b", 0.0)),
                   tuple(map(float, data.get("x", ()))), tuple(map(float, data.get("y", ()))))


IDENTITY = Calibration()


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared difference between the probabilities and the 0/1 outcomes."""
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - np.asarray(labels)) ** 2))


def fit_platt(raw: np.ndarray, labels: np.ndarray) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw).reshape(-1, 1), labels)
    return Calibration("platt", a=float(model.coef_[0, 0]), b=float(model.intercept_[0]))


def fit_isotonic(raw: np.ndarray, labels: np.ndarray) -> Calibration:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, labels)
    return Calibration("isotonic", x=tuple(map(float, model.X_thresholds_)), y=tuple(map(float, model.y_thresholds_)))


FITS = {"platt": fit_platt, "isotonic": fit_isotonic}


def choose(raw: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[Calibration, dict]:
    """The map with the lowest cross-validated Brier score on (raw, labels), fitted on all of them,
    and each candidate's cross-validated Brier score (the raw score's too, as `none`)."""
    from sklearn.model_selection import StratifiedKFold

    raw = np.asarray(raw, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    positives = int(labels.sum())
    if positives < MIN_POSITIVES or positives > len(labels) - MIN_POSITIVES:
        log.warning("validation slice has %d frauds in %d rows: scores left uncalibrated", positives, len(labels))
        return IDENTITY, {}
    predicted = {kind: np.empty(len(raw)) for kind in FITS}
    for fit_rows, assess_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(raw, labels):
        for kind, fit in FITS.items():
            predicted[kind][assess_rows] = fit(raw[fit_rows], labels[fit_rows]).probabilities(raw[assess_rows])
    scores = {"none": brier(raw, labels), **{kind: brier(p, labels) for kind, p in predicted.items()}}
    best = min(scores, key=lambda kind: scores[kind])
    if best == "none":  # the raw score is already the better probability here
        return IDENTITY, scores
    chosen = FITS[best](raw, labels)
    if chosen.kind == "platt" and chosen.a <= 0:  # a map that reverses the ranking is no calibration
        chosen = fit_isotonic(raw, labels)
    return chosen, scores


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, observed fraud rate, rows) per bin of equal width over [0, 1]; empty bins dropped."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins)
    observed = np.bincount(index, weights=np.asarray(labels, dtype=np.float64), minlength=bins)
    kept = rows > 0
    return predicted[kept] / rows[kept], observed[kept] / rows[kept], rows[kept]


def reliability_plot(raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, calibration: Calibration):
    """The calibration curve (observed fraud rate against predicted probability) before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    for name, p in (("raw", raw), (f"calibrated ({calibration.kind})", calibrated)):
        predicted, observed, _ = reliability(p, labels)
        ax.plot(predicted, observed, marker="o", label=f"{name}, Brier {brier(p, labels):.5f}")
    ax.set(xlabel="predicted probability of fraud", ylabel="observed fraud rate",
           title="Calibration on the held-out rows")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig

"""Drift of the live inputs from the training reference: the population stability index (PSI) of every
model input and of the score, and each input's share of missing values.

Training stores a `Reference` with the model version: per input, fixed bins (edges at the deciles of
the training rows' values, so a value below all of them has a bin of its own) and the share of rows
in each, plus the share missing. The worker counts the inputs and scores of what it scored into the
same bins (`DriftWatch`, `DriftWindow`), over a sliding window of FRAUD_DRIFT_WINDOW_SECONDS in
slices of a minute, and compares:

    PSI = sum over bins of (live share - reference share) * ln(live share / reference share)

with shares over the non-missing values (a share of 0 counts as 1e-4). Rule of thumb: under 0.1 no
shift, 0.1-0.2 a moderate one, above 0.2 a shift worth a look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCORE = "score"  # the name the score goes by among the inputs
EMPTY_SHARE = 1e-4


@dataclass(frozen=True)
class Reference:
    names: tuple[str, ...]  # the model's inputs, then SCORE
    edges: tuple[tuple[float, ...], ...]  # per name: increasing interior edges (a value equal to one goes right)
    shares: tuple[tuple[float, ...], ...]  # per name: share of the non-missing rows in each of len(edges) + 1 bins
    missing: tuple[float, ...]  # per name: share of rows missing (NaN)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "edges": [list(e) for e in self.edges],
                "shares": [list(s) for s in self.shares], "missing": list(self.missing)}

    @classmethod
    def from_dict(cls, data: dict) -> "Reference":
        ref = cls(tuple(data["names"]), tuple(tuple(map(float, e)) for e in data["edges"]),
                  tuple(tuple(map(float, s)) for s in data["shares"]), tuple(map(float, data["missing"])))
        if not (len(ref.names) == len(ref.edges) == len(ref.shares) == len(ref.missing)) or any(
                len(s) != len(e) + 1 for e, s in zip(ref.edges, ref.shares)):
            raise ValueError("drift reference: names, edges, shares and missing do not line up")
        return ref


def reference_of(X: np.ndarray, scores: np.ndarray, names, bins: int = 10) -> Reference:
    """The reference of training rows `X` (columns `names`) and their scores."""
    columns = np.column_stack([np.asarray(X, dtype=np.float64), np.asarray(scores, dtype=np.float64)])
    edges, shares, missing = [], [], []
    for j in range(columns.shape[1]):
        values = columns[:, j]
        present = values[~np.isnan(values)]
        deciles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf") if len(present) else ()
        cut = tuple(np.unique(deciles))  # values seen in training: a 0/1 input gets two bins, not ten
        counts = np.bincount(np.searchsorted(cut, present, side="right"), minlength=len(cut) + 1)
        edges.append(tuple(map(float, cut)))
        shares.append(tuple(map(float, counts / max(1, len(present)))))
        missing.append(float(1 - len(present) / max(1, len(values))))
    return Reference(tuple(names) + (SCORE,), tuple(edges), tuple(shares), tuple(missing))


def psi(reference_shares, live_counts) -> float:
    """PSI of live bin counts against reference shares (nan when nothing live)."""
    live_counts = np.asarray(live_counts, dtype=np.float64)
    total = live_counts.sum()
    if total == 0:
        return math.nan
    expected = np.maximum(np.asarray(reference_shares, dtype=np.float64), EMPTY_SHARE)
    actual = np.maximum(live_counts / total, EMPTY_SHARE)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftWindow:
    """Bin counts of the rows seen in the last `window_seconds`, kept in slices of `slice_seconds`.
    One thread writes (`observe`); `report` reads a consistent sum."""

    def __init__(self, reference: Reference, version: str, window_seconds: float = 900.0,
                 slice_seconds: float = 60.0):
        self.reference = reference
        self.version = version
        self.window_seconds = window_seconds
        self.slice_seconds = slice_seconds
        self.n_slices = max(1, int(math.ceil(window_seconds / slice_seconds)))
        sizes = [len(e) + 1 for e in reference.edges]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._edges = [np.asarray(e) for e in reference.edges]
        self.counts = np.zeros((self.n_slices, int(self.offsets[-1])), dtype=np.int64)
        self.missing = np.zeros((self.n_slices, len(sizes)), dtype=np.int64)
        self.rows = np.zeros(self.n_slices, dtype=np.int64)
        self.slice_of = np.full(self.n_slices, -1, dtype=np.int64)  # the time slice each slot holds

    def observe(self, X: np.ndarray, scores: np.ndarray, now: float) -> None:
        """Count a batch: its model inputs `X` (the reference's names but the score) and scores."""
        slot = self._slot(now)
        columns = np.column_stack([X, scores]) if len(X) else np.empty((0, len(self._edges)))
        nan = np.isnan(columns)
        self.missing[slot] += nan.sum(axis=0)
        flat = [self.offsets[j] + np.searchsorted(edges, columns[~nan[:, j], j], side="right")
                for j, edges in enumerate(self._edges)]
        self.counts[slot] += np.bincount(np.concatenate(flat).astype(np.int64), minlength=self.counts.shape[1])
        self.rows[slot] += len(columns)

    def _slot(self, now: float) -> int:
        current = int(now // self.slice_seconds)
        slot = current % self.n_slices
        if self.slice_of[slot] != current:
            self.counts[slot] = 0
            self.missing[slot] = 0
            self.rows[slot] = 0
            self.slice_of[slot] = current
        return slot

    def report(self, now: float) -> dict:
        """Per input (and the score): PSI over the window, the share missing live and in training."""
        live = self.slice_of > int(now // self.slice_seconds) - self.n_slices
        counts, missing, rows = self.counts[live].sum(axis=0), self.missing[live].sum(axis=0), int(self.rows[live].sum())
        inputs = {}
        for j, name in enumerate(self.reference.names):
            inputs[name] = {
                "psi": psi(self.reference.shares[j], counts[self.offsets[j]:self.offsets[j + 1]]),
                "missing_share": float(missing[j] / rows) if rows else math.nan,
                "reference_missing_share": self.reference.missing[j],
            }
        return {"model_version": self.version, "window_seconds": self.window_seconds, "transactions": rows,
                "inputs": inputs}


class DriftWatch:
    """The drift window of the model version being served. The scoring loop hands it each batch's
    inputs and scores (`add`, a list append) and counts them once a second (`report`, from its tick),
    which keeps the binning off the per-batch path; a new version starts a new window. `latest` is the
    last report, for the API."""

    def __init__(self, window_seconds: float = 900.0):
        self.window_seconds = window_seconds
        self.window: DriftWindow | None = None
        self.pending: list[tuple[str, Reference | None, np.ndarray, np.ndarray]] = []
        self.latest: dict | None = None

    def add(self, version: str, reference: Reference | None, X: np.ndarray, scores: np.ndarray) -> None:
        self.pending.append((version, reference, X, scores))

    def report(self, now: float) -> dict | None:
        pending, self.pending = self.pending, []
        while pending:  # the batches of one version at a time, counted in one pass
            version, reference = pending[0][0], pending[0][1]
            run = next((i for i, p in enumerate(pending) if p[0] != version), len(pending))
            same, pending = pending[:run], pending[run:]
            if reference is None:
                self.window = None
                continue
            if self.window is None or self.window.version != version:
                self.window = DriftWindow(reference, version, self.window_seconds)
            self.window.observe(np.vstack([p[2] for p in same]), np.concatenate([p[3] for p in same]), now)
        self.latest = self.window.report(now) if self.window is not None else None
        return self.latest

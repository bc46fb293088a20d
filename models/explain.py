"""Why a model gave a score: every feature's exact TreeSHAP contribution (XGBoost's own), in log-odds,
from the feature values it scored, and the same as a waterfall plot.

The contributions and the base value add up to the model's margin, so the logistic of their sum is
the score (after the isotonic map, for a version calibrated that way; a Platt calibration is already
in the contributions): a check the answer carries (`score_from_contributions`).
"""

from __future__ import annotations

import io
import math

import numpy as np

from models.serving import LoadedModel


def explanation(model: LoadedModel, features: dict[str, float]) -> dict:
    """Exact TreeSHAP of one row given by feature name (a missing name counts as missing, NaN)."""
    row = np.array([[features.get(name, math.nan) for name in model.feature_names]], dtype=np.float32)
    contributions = model.contributions(row, exact=True)[0]
    base = float(contributions[-1])
    per_feature = sorted(
        ({"feature": name, "value": None if math.isnan(float(v)) else float(v), "contribution": float(c)}
         for name, v, c in zip(model.feature_names, row[0], contributions[:-1])),
        key=lambda item: -abs(item["contribution"]))
    margin = base + float(np.sum(contributions[:-1], dtype=np.float64))
    return {"model_name": model.name, "model_version": model.version, "method": "TreeSHAP (exact)",
            "base_value": base, "contributions": per_feature,
            "calibration": model.calibration.kind,
            "score_from_contributions": model.calibration.from_margin(margin)}


def waterfall_png(explained: dict, title: str, top: int = 12) -> bytes:
    """A waterfall of the largest contributions, from the base value to the margin, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = explained["contributions"][:top]
    rest = sum(item["contribution"] for item in explained["contributions"][top:])
    labels = [f"{i['feature']} = {_shown(i['value'])}" for i in items]
    steps = [i["contribution"] for i in items]
    if explained["contributions"][top:]:
        labels.append(f"{len(explained['contributions']) - top} other features")
        steps.append(rest)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(steps) + 1.8))
    start = explained["base_value"]
    edges = [start]
    for y, step in enumerate(steps):
        ax.barh(y, step, left=start, color="#d62728" if step > 0 else "#1f77b4")
        start += step
        edges.append(start)
    pad = 0.05 * (max(edges) - min(edges) or 1.0)
    ax.set_xlim(min(edges) - pad, max(edges) + pad)
    ax.axvline(start, color="black", linewidth=1)  # the margin: base value plus every contribution
    ax.set_yticks(range(len(steps)), labels)
    ax.invert_yaxis()
    ax.axvline(explained["base_value"], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="log-odds of fraud (base value, then each feature's contribution)",
           title=f"{title}: score {explained['score_from_contributions']:.4f}, "
                 f"model v{explained['model_version']}")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def _shown(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"

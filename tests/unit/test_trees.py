"""The compiled trees score and explain a batch as XGBoost does."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from models.trees import CompiledTrees

NAMES = [f"f{i}_name" for i in range(12)]


def model(depth: int, trees: int, seed: int, base_score: float | None = None) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, len(NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values follow each split's default branch
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 3]) * 0.5 + rng.normal(scale=0.5, size=len(X))) > 1.2)
    params = {"objective": "binary:logistic", "max_depth": depth, "nthread": 1, "seed": seed,
              "tree_method": "exact" if seed % 2 else "hist"}
    if base_score is not None:
        params["base_score"] = base_score
    booster = xgb.train(params, xgb.DMatrix(X, label=y.astype(int), feature_names=NAMES), num_boost_round=trees)
    test = rng.normal(size=(500, len(NAMES))) * 2
    test[rng.random(test.shape) < 0.1] = np.nan
    return booster, test


@pytest.mark.parametrize("depth, trees, seed, base_score", [
    (3, 50, 1, 0.5), (6, 100, 2, None), (1, 5, 3, 0.1), (8, 30, 4, None),
])
def test_scores_are_xgboost_s_to_float32_rounding(depth, trees, seed, base_score):
    booster, X = model(depth, trees, seed, base_score)
    compiled = CompiledTrees.from_booster(booster)
    expected = booster.inplace_predict(X, validate_features=False)
    assert np.allclose(compiled.scores(X), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("depth, trees, seed", [(3, 50, 1), (6, 100, 2), (2, 10, 5)])
def test_contributions_are_xgboost_s_approximate_ones_and_add_up_to_the_margin(depth, trees, seed):
    booster, X = model(depth, trees, seed)
    compiled = CompiledTrees.from_booster(booster)
    expected = booster.predict(xgb.DMatrix(X, feature_names=NAMES, nthread=1), pred_contribs=True,
                               approx_contribs=True)
    got = compiled.contributions(X)
    assert got.shape == expected.shape
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.allclose(got.sum(axis=1), compiled.margins(X), rtol=1e-5, atol=1e-5)


def test_one_row_and_an_empty_batch_are_scored_like_any_other():
    booster, X = model(3, 20, 1)
    compiled = CompiledTrees.from_booster(booster)
    assert np.allclose(compiled.scores(X[:1]), booster.inplace_predict(X[:1]), rtol=1e-6)
    assert compiled.scores(X[:0]).shape == (0,) and compiled.contributions(X[:0]).shape == (0, len(NAMES) + 1)

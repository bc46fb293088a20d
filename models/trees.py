"""A registered XGBoost model's trees as flat numpy arrays: scores and per-feature contributions of a
batch from one walk down all trees at once.

The worker scores every batch it takes and explains every verdict. Each XGBoost call costs a few
hundred microseconds whatever the batch size (it sets up its threads and reads the container's CPU
quota on every call; building the DMatrix that contributions need costs as much again), which is most
of a worker's CPU when traffic is light and batches hold one or two transactions. Here the trees are
read once, when a version is loaded, and a batch is walked level by level, all rows and trees at once:

- scores: XGBoost's, to float32 rounding. Inputs are compared as float32 (`x < split` goes to the
  left child, a missing value to the node's default one), leaf values are summed in tree order in
  float32 onto the base margin, then the logistic function is applied;
- contributions: XGBoost's approximate ones (`pred_contribs=True, approx_contribs=True`, the Saabas
  method): along each row's path, each split's feature gets the change in the node's expected value
  (the cover-weighted mean of its leaves); the last column, the bias, holds the base margin and the
  roots' expected values, so that a row's contributions add up to its margin.
tests/unit/test_trees.py holds both against XGBoost on models of several shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xgboost as xgb


@dataclass(frozen=True)
class CompiledTrees:
    # Every tree's nodes side by side: node k of tree t is at t * nodes_per_tree + k. A leaf is its
    # own left and right child, so a walk may run past it.
    feature: np.ndarray  # int: the split's feature (0 at leaves)
    split: np.ndarray  # float32
    left: np.ndarray  # int: flat index of the child when x < split
    right: np.ndarray  # int
    default_left: np.ndarray  # bool: where a missing value goes
    value: np.ndarray  # float32: leaf values (0 elsewhere)
    mean: np.ndarray  # float64: the node's expected value
    roots: np.ndarray  # (1, trees) int: flat index of each tree's root
    depth: int
    base_margin: np.float32
    bias: float  # base margin + the roots' expected values
    n_features: int

    @property
    def n_trees(self) -> int:
        return self.roots.shape[1]

    @classmethod
    def from_booster(cls, booster: xgb.Booster) -> "CompiledTrees":
        """The booster's trees; ValueError for a model other than a binary:logistic tree ensemble."""
        learner = json.loads(booster.save_config())["learner"]
        objective = learner["objective"]["name"]
        if objective != "binary:logistic":
            raise ValueError(f"only binary:logistic models are compiled, not {objective}")
        base_score = float(learner["learner_model_param"]["base_score"].strip("[]"))
        names = booster.feature_names or []
        index = {name: i for i, name in enumerate(names)}
        trees = [_nodes(json.loads(tree), index) for tree in booster.get_dump(dump_format="json", with_stats=True)]
        width = max(max(tree) + 1 for tree in trees)
        size = width * len(trees)
        feature = np.zeros(size, dtype=np.intp)
        split = np.zeros(size, dtype=np.float32)
        left = np.arange(size, dtype=np.intp)
        right = np.arange(size, dtype=np.intp)
        default_left = np.zeros(size, dtype=bool)
        value = np.zeros(size, dtype=np.float32)
        mean = np.zeros(size, dtype=np.float64)
        depth = 0
        for t, nodes in enumerate(trees):
            at = t * width
            for nid, node in nodes.items():
                if "leaf" in node:
                    value[at + nid] = node["leaf"]
                else:
                    feature[at + nid] = node["feature"]
                    split[at + nid] = node["split_condition"]
                    left[at + nid], right[at + nid] = at + node["yes"], at + node["no"]
                    default_left[at + nid] = node["missing"] == node["yes"]
            _fill_means(nodes, 0, mean[at: at + width])
            depth = max(depth, _depth(nodes, 0))
        roots = (np.arange(len(trees)) * width)[None, :]
        margin = np.float32(np.log(base_score / (1 - base_score)))
        bias = float(mean[roots[0]].sum() + margin)
        return cls(feature, split, left, right, default_left, value, mean, roots, depth, margin, bias,
                   booster.num_features())

    def _walk(self, X: np.ndarray, contributions: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The leaf each row reaches in each tree (flat indices, (rows, trees)), and the flattened
        contributions (rows * (features + 1)) when asked."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        n = X.shape[0]
        width = self.n_features + 1
        node = np.repeat(self.roots, n, axis=0)
        row_start = (np.arange(n) * X.shape[1])[:, None]
        values = X.ravel()
        out = None
        if contributions:
            out = np.zeros(n * width, dtype=np.float64)
            out[self.n_features::width] = self.bias
            row_out = (np.arange(n) * width)[:, None]
        for _ in range(self.depth):
            feature = self.feature.take(node)
            x = values.take(row_start + feature)
            go_left = (x < self.split.take(node)) | (np.isnan(x) & self.default_left.take(node))
            child = np.where(go_left, self.left.take(node), self.right.take(node))
            if out is not None:
                delta = self.mean.take(child) - self.mean.take(node)  # 0 at a leaf: its own child
                out += np.bincount((row_out + feature).ravel(), weights=delta.ravel(), minlength=out.size)
            node = child
        return node, out

    def margins(self, X: np.ndarray) -> np.ndarray:
        return self._margins(self._walk(X, contributions=False)[0])

    def scores(self, X: np.ndarray) -> np.ndarray:
        return _logistic(self.margins(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(rows, features + 1): each feature's contribution to the margin, then the bias."""
        return self.explain(X)[1]

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and contributions, from one walk down the trees."""
        node, out = self._walk(X, contributions=True)
        return _logistic(self._margins(node)), out.reshape(len(node), self.n_features + 1)

    def _margins(self, leaves: np.ndarray) -> np.ndarray:
        # In tree order, in float32, onto the base margin: the order and precision XGBoost sums in.
        summed = np.empty((leaves.shape[0], leaves.shape[1] + 1), dtype=np.float32)
        summed[:, 0] = self.base_margin
        summed[:, 1:] = self.value.take(leaves)
        return np.cumsum(summed, axis=1, dtype=np.float32)[:, -1]


def _logistic(margin: np.ndarray) -> np.ndarray:
    return (np.float32(1) / (np.float32(1) + np.exp(-margin))).astype(np.float64)


def _nodes(tree: dict, index: dict) -> dict[int, dict]:
    """node id -> node of one dumped tree, split features as column numbers."""
    nodes: dict[int, dict] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        entry = dict(node)
        if "leaf" not in node:
            if "split_condition" not in node:
                raise ValueError("categorical splits are not compiled")
            entry["feature"] = index[node["split"]] if index else int(node["split"].lstrip("f"))
            stack.extend(node["children"])
        nodes[node["nodeid"]] = entry
    return nodes


def _fill_means(nodes: dict[int, dict], nid: int, mean: np.ndarray) -> float:
    """Each node's expected value: its leaves' values weighted by their cover."""
    node = nodes[nid]
    if "leaf" in node:
        mean[nid] = node["leaf"]
    else:
        yes, no = nodes[node["yes"]], nodes[node["no"]]
        mean[nid] = (_fill_means(nodes, node["yes"], mean) * yes["cover"]
                     + _fill_means(nodes, node["no"], mean) * no["cover"]) / node["cover"]
    return mean[nid]


def _depth(nodes: dict[int, dict], nid: int) -> int:
    node = nodes[nid]
    if "leaf" in node:
        return 0
    return 1 + max(_depth(nodes, node["yes"]), _depth(nodes, node["no"]))

"""Train, register and (when it is better) promote a model.

Features come from `core.features.feature_matrix`, the functions the stream runs. A new version is
registered on every run; the `champion` alias moves to it only when it beats the current champion on
the same held-out data (or when there is no champion yet).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score

from models.params import TrainParams
from models.simulate import transaction_records
from core.features import FEATURE_NAMES, feature_matrix, model_feature_names

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass
class TrainResult:
    version: str
    run_id: str
    metrics: dict
    promoted: bool
    champion_before: str | None
    reason: str
    extra: dict = field(default_factory=dict)


CHAMPION_VERSION_TAG = "champion_version"  # the champion a run was compared with on its held-out rows


class TrainingError(Exception):
    """Training could not run on the data given."""


def split_by_time(history: pd.DataFrame, test_fraction: float) -> np.ndarray:
    """Boolean mask of the held-out rows: the latest `test_fraction` of the history's time span."""
    ts = history["timestamp"].to_numpy()
    cut = ts.min() + (ts.max() - ts.min()) * (1 - test_fraction)
    return ts > cut


def metrics_of(y: np.ndarray, scores: np.ndarray) -> dict:
    if len(np.unique(y)) < 2:
        raise TrainingError("held-out data has a single class; give a longer history")
    return {
        "auc_roc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        "n_test": int(len(y)),
        "test_fraud_rate": float(np.mean(y)),
    }


def fit(X: np.ndarray, y: np.ndarray, params: TrainParams,
        feature_names: tuple[str, ...] = FEATURE_NAMES) -> xgb.Booster:
    train = xgb.DMatrix(X, label=y, feature_names=list(feature_names))
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "max_depth": params.max_depth,
            "learning_rate": params.learning_rate,
            "tree_method": params.tree_method,
            "base_score": params.base_score,
            "nthread": params.nthread,
            "seed": params.seed,
        },
        train,
        num_boost_round=params.n_estimators,
    )
    return booster


def train_and_register(
    history: pd.DataFrame,
    *,
    tracking_uri: str,
    model_name: str,
    experiment: str,
    params: TrainParams = TrainParams(),
    alias: str = "champion",
    promote: bool = True,
    progress: Progress = lambda fraction, message: None,
    tags: dict | None = None,
) -> TrainResult:
    """Train on a labelled history (Transaction fields + `is_fraud`), log and register the model."""
    from tqdm import tqdm

    if "is_fraud" not in history.columns:
        raise TrainingError("history has no is_fraud label column")
    history = with_entity_ids(history).sort_values("timestamp", kind="stable").reset_index(drop=True)
    attributes = attribute_keys(history)
    progress(0.05, f"computing features for {len(history)} transactions"
                   + (f" (attributes: {', '.join(attributes)})" if attributes else ""))
    with tqdm(total=len(history), unit="txn", desc="features", file=sys.stderr) as bar:
        X = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy(), attributes, bar)
    return register_model(X, history["is_fraud"].to_numpy(), history["timestamp"].to_numpy(),
                          feature_names=model_feature_names(attributes),
                          tracking_uri=tracking_uri, model_name=model_name, experiment=experiment,
                          params=params, alias=alias, promote=promote, progress=progress, tags=tags)


ENTITY_IDS = {"customer_id": "card", "terminal_id": "terminal"}


def with_entity_ids(history: pd.DataFrame) -> pd.DataFrame:
    """The history with a card and a terminal id on every row: a history without one of the columns
    gets a single constant id for it, and a warning that those features then say nothing."""
    missing = [column for column in ENTITY_IDS if column not in history.columns]
    for column in missing:
        log.warning("history has no %s column: its transactions count as those of one %s, so the %s "
                    "features carry no information", column, ENTITY_IDS[column], ENTITY_IDS[column])
    return history.assign(**{column: "unknown" for column in missing}) if missing else history


def register_model(
    X: np.ndarray,
    labels: np.ndarray,
    timestamps: np.ndarray,
    *,
    tracking_uri: str,
    model_name: str,
    experiment: str,
    params: TrainParams = TrainParams(),
    alias: str = "champion",
    promote: bool = True,
    progress: Progress = lambda fraction, message: None,
    tags: dict | None = None,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> TrainResult:
    """Train on feature rows (`feature_names` columns) and labels, hold out the latest
    `params.test_fraction` of the time span, log to MLflow with plots, register a version, and move
    `alias` to it when it beats the current champion on the held-out rows."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    y = np.asarray(labels).astype(np.int32)
    held_out = split_by_time(pd.DataFrame({"timestamp": timestamps}), params.test_fraction)
    if y[~held_out].sum() == 0:
        raise TrainingError("training part of the history has no fraud")
    if y[held_out].sum() == 0:
        raise TrainingError("held-out part of the history has no fraud: nothing to judge the model by")

    progress(0.35, "training XGBoost")
    booster = fit(X[~held_out], y[~held_out], params, feature_names)
    scores = booster.inplace_predict(X[held_out])
    metrics = metrics_of(y[held_out], scores)
    metrics["n_train"] = int((~held_out).sum())

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion_before, champion_metrics = _champion_on(client, model_name, alias, X[held_out], y[held_out],
                                                     feature_names)

    progress(0.6, "logging to MLflow")
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags=tags or {}) as run:
        mlflow.log_params({**asdict(params), "features": ",".join(feature_names)})
        mlflow.log_metrics(metrics)
        mlflow.log_figure(quality_plots(y[held_out], scores), "held_out_quality.png")
        if champion_metrics:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items()})
            mlflow.set_tag(CHAMPION_VERSION_TAG, champion_before)
        example = pd.DataFrame(X[held_out][:5], columns=list(feature_names))
        info = mlflow.xgboost.log_model(
            booster, name="model", signature=infer_signature(example, scores[:5]),
            input_example=example, model_format="ubj", registered_model_name=model_name,
        )
        version = str(info.registered_model_version)

    progress(0.9, "deciding promotion")
    promoted, reason = promotion(metrics, champion_before, champion_metrics) if promote else (
        False, "promotion not requested")
    if promoted:
        client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, "promotion", reason)
    progress(1.0, reason)
    return TrainResult(version, run.info.run_id, metrics, promoted, champion_before, reason)


def promotion(metrics: dict, champion_version: str | None, champion_metrics: dict | None) -> tuple[bool, str]:
    """The champion gate: (promote?, why). A model is promoted when there is no champion, or when its
    average precision beats the champion's on the same held-out rows."""
    if champion_version is None or champion_metrics is None:
        return True, "no champion yet"
    ours, theirs = metrics["average_precision"], champion_metrics["average_precision"]
    verb = "beats" if ours > theirs else "does not beat"
    return ours > theirs, f"average precision {ours:.4f} {verb} champion v{champion_version} {theirs:.4f}"


def quality_plots(labels: np.ndarray, scores: np.ndarray):
    """ROC curve, precision-recall curve and score distribution by label, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc, pr, dist) = plt.subplots(1, 3, figsize=(15, 4.5))
    fpr, tpr, _ = roc_curve(labels, scores)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc.set(title=f"ROC (AUC {roc_auc_score(labels, scores):.3f})", xlabel="false positive rate",
            ylabel="true positive rate")
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr.plot(recall, precision)
    pr.set(title=f"Precision-recall (AP {average_precision_score(labels, scores):.3f})", xlabel="recall",
           ylabel="precision")
    bins = np.linspace(0, 1, 41)
    dist.hist(scores[labels == 0], bins=bins, alpha=0.6, density=True, label="legit")
    dist.hist(scores[labels == 1], bins=bins, alpha=0.6, density=True, label="fraud")
    dist.set(title="Score by label (held out)", xlabel="score", ylabel="density")
    dist.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def _champion_on(client, name: str, alias: str, X: np.ndarray, y: np.ndarray, feature_names: tuple[str, ...]):
    """(version, metrics) of the current champion on the held-out data, or (None, None)."""
    import mlflow.xgboost
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None, None
        raise  # MLflow unreachable or failing: never promote blind
    with tempfile.TemporaryDirectory() as tmp:
        booster = mlflow.xgboost.load_model(client.get_model_version_download_uri(name, mv.version), dst_path=tmp)
    wanted = tuple(booster.feature_names or ())
    if not set(wanted) <= set(feature_names):
        log.warning("champion v%s reads features these data lack (%s); any new model replaces it",
                    mv.version, sorted(set(wanted) - set(feature_names)))
        return str(mv.version), {"average_precision": -1.0}
    columns = [feature_names.index(n) for n in wanted]
    return str(mv.version), metrics_of(y, booster.inplace_predict(X[:, columns]))


def attribute_keys(history: pd.DataFrame) -> tuple[str, ...]:
    """The upstream attribute keys any transaction of the history carries, sorted."""
    if "attributes" not in history.columns:
        return ()
    keys: set[str] = set()
    for attributes in history["attributes"]:
        if isinstance(attributes, dict):
            keys.update(attributes)
    return tuple(sorted(keys))

"""Train, register and (when it is better) promote a model.

Features come from `core.features.feature_matrix`, the functions the stream runs. A new version is
registered on every run; the `champion` alias moves to it only when it beats the current champion on
the same held-out data (or when there is no champion yet).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score

from core.drift import reference_of
from models.calibration import IDENTITY, Calibration, brier, reliability_plot
from models.calibration import choose as choose_calibration
from models.history import in_event_order
from models.params import TrainParams
from models.thresholds import for_alerts_per_day
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


def split_by_time(timestamps: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the latest `fraction` of the time span of `timestamps`."""
    ts = np.asarray(timestamps)
    cut = ts.min() + (ts.max() - ts.min()) * (1 - fraction)
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
    """One booster on all the rows given (a `scale_pos_weight` of None counts as 1)."""
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
            "scale_pos_weight": 1.0 if params.scale_pos_weight is None else params.scale_pos_weight,
        },
        train,
        num_boost_round=params.n_estimators,
    )
    return booster


@dataclass(frozen=True)
class Trained:
    booster: xgb.Booster
    calibration: Calibration
    scale_pos_weight: float
    validation: dict  # what the choices were made on: AP per class weight, Brier per calibration

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of fraud."""
        return self.calibration.probabilities(self.booster.inplace_predict(X))


def class_weights(labels: np.ndarray) -> list[float]:
    """The candidates: no weighting, the square root of the legit-to-fraud ratio, and the ratio."""
    ratio = (len(labels) - labels.sum()) / max(1, labels.sum())
    return sorted({1.0, round(float(np.sqrt(ratio)), 2), round(float(ratio), 2)})


def train_model(X: np.ndarray, y: np.ndarray, timestamps: np.ndarray, params: TrainParams,
                feature_names: tuple[str, ...] = FEATURE_NAMES) -> Trained:
    """The model for serving, from the training rows only (the held-out rows never reach here).

    The latest `params.validation_fraction` of the rows' time span is a validation slice: boosters fit
    on the rows before it, one per candidate class weight (or only `params.scale_pos_weight` when
    set), are compared there by average precision; the scores of the best are what the calibration is
    fitted to (models/calibration.py). The booster served is then fit on all the rows with that
    weight."""
    y = np.asarray(y).astype(np.int32)
    validation = split_by_time(timestamps, params.validation_fraction)
    if y[~validation].sum() == 0 or y[validation].sum() == 0:
        log.warning("too few frauds to set a validation slice apart: no class weighting, no calibration")
        weight = 1.0 if params.scale_pos_weight is None else params.scale_pos_weight
        return Trained(fit(X, y, replace(params, scale_pos_weight=weight), feature_names), IDENTITY, weight, {})
    candidates = class_weights(y[~validation]) if params.scale_pos_weight is None else [params.scale_pos_weight]
    raw, ap = {}, {}
    for weight in candidates:
        booster = fit(X[~validation], y[~validation], replace(params, scale_pos_weight=weight), feature_names)
        raw[weight] = booster.inplace_predict(X[validation])
        ap[weight] = float(average_precision_score(y[validation], raw[weight]))
    weight = max(candidates, key=lambda w: (ap[w], -w))  # a tie goes to the lighter weight
    calibration, brier_cv = choose_calibration(raw[weight], y[validation])
    booster = fit(X, y, replace(params, scale_pos_weight=weight), feature_names)
    return Trained(booster, calibration, weight, {
        "validation_rows": int(validation.sum()),
        "average_precision_by_class_weight": ap,
        "brier_by_calibration": brier_cv,
    })


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
    history = in_event_order(history)
    attributes = attribute_keys(history)
    progress(0.05, f"computing features for {len(history)} transactions"
                   + (f" (attributes: {', '.join(attributes)})" if attributes else ""))
    with tqdm(total=len(history), unit="txn", desc="features", file=sys.stderr) as bar:
        X = feature_matrix(transaction_records(history), history["is_fraud"].to_numpy(), attributes, bar)
    return register_model(X, history["is_fraud"].to_numpy(), history["timestamp"].to_numpy(),
                          feature_names=model_feature_names(attributes),
                          tracking_uri=tracking_uri, model_name=model_name, experiment=experiment,
                          params=params, alias=alias, promote=promote, progress=progress, tags=tags)


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
    held_out = split_by_time(timestamps, params.test_fraction)
    if y[~held_out].sum() == 0:
        raise TrainingError("training part of the history has no fraud")
    if y[held_out].sum() == 0:
        raise TrainingError("held-out part of the history has no fraud: nothing to judge the model by")

    progress(0.35, "training XGBoost")
    trained = train_model(X[~held_out], y[~held_out], np.asarray(timestamps)[~held_out], params, feature_names)
    booster = trained.booster
    raw = booster.inplace_predict(X[held_out])
    scores = trained.calibration.probabilities(raw)
    metrics = metrics_of(y[held_out], scores)
    metrics.update(n_train=int((~held_out).sum()), scale_pos_weight=trained.scale_pos_weight,
                   brier_score=brier(scores, y[held_out]), brier_score_uncalibrated=brier(raw, y[held_out]))
    budget = for_alerts_per_day(scores, np.asarray(timestamps)[held_out], params.alerts_per_day, y[held_out])
    metrics.update(review_threshold=budget.threshold, review_alerts_per_day=budget.expected_alerts_per_day,
                   review_precision=budget.precision, review_recall=budget.recall)

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion_before, champion_metrics = _champion_on(client, model_name, alias, X[held_out], y[held_out],
                                                     feature_names)

    progress(0.6, "logging to MLflow")
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags=tags or {}) as run:
        mlflow.log_params({**asdict(params), "features": ",".join(feature_names),
                           "chosen_scale_pos_weight": trained.scale_pos_weight,
                           "calibration": trained.calibration.kind})
        mlflow.log_metrics(metrics)
        for weight, ap in trained.validation.get("average_precision_by_class_weight", {}).items():
            mlflow.log_metric(f"validation_average_precision_weight_{weight:g}", ap)
        for kind, value in trained.validation.get("brier_by_calibration", {}).items():
            mlflow.log_metric(f"validation_brier_cv_{kind}", value)
        mlflow.log_figure(quality_plots(y[held_out], scores), "held_out_quality.png")
        mlflow.log_figure(reliability_plot(raw, scores, y[held_out], trained.calibration), "calibration_curve.png")
        mlflow.log_dict(trained.calibration.to_dict(), "calibration.json")
        reference = reference_of(X, trained.scores(X), feature_names)
        mlflow.log_dict(reference.to_dict(), "drift_reference.json")
        if champion_metrics:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items()})
            mlflow.set_tag(CHAMPION_VERSION_TAG, champion_before)
        example = pd.DataFrame(X[held_out][:5], columns=list(feature_names))
        info = mlflow.xgboost.log_model(
            booster, name="model", signature=infer_signature(example, raw[:5]),
            input_example=example, model_format="ubj", registered_model_name=model_name,
            metadata={"calibration": trained.calibration.to_dict(), "drift_reference": reference.to_dict()},
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
    from mlflow.models import Model

    uri = client.get_model_version_download_uri(name, mv.version)
    with tempfile.TemporaryDirectory() as tmp:
        booster = mlflow.xgboost.load_model(uri, dst_path=tmp)
    calibration = Calibration.from_dict((Model.load(uri).metadata or {}).get("calibration"))
    wanted = tuple(booster.feature_names or ())
    if not set(wanted) <= set(feature_names):
        log.warning("champion v%s reads features these data lack (%s); any new model replaces it",
                    mv.version, sorted(set(wanted) - set(feature_names)))
        return str(mv.version), {"average_precision": -1.0}
    columns = [feature_names.index(n) for n in wanted]
    return str(mv.version), metrics_of(y, calibration.probabilities(booster.inplace_predict(X[:, columns])))


def attribute_keys(history: pd.DataFrame) -> tuple[str, ...]:
    """The upstream attribute keys any transaction of the history carries, sorted."""
    if "attributes" not in history.columns:
        return ()
    keys: set[str] = set()
    for attributes in history["attributes"]:
        if isinstance(attributes, dict):
            keys.update(attributes)
    return tuple(sorted(keys))

"""The live model: loaded from the MLflow registry by alias, cached on disk, swapped atomically.

The worker and the ops API are handed one `ModelHandle`. Scoring reads `handle.current` once per batch,
so a swap between two batches never mixes versions inside a batch and never drops a message.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xgboost as xgb

from core.drift import Reference
from core.features import FEATURE_NAMES, attribute_matrix, model_inputs
from models.calibration import IDENTITY, Calibration
from models.trees import CompiledTrees

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """No model could be loaded from the registry nor from the local cache."""


# Batches whose walk (rows x trees x depth) stays under this are scored by the compiled trees; larger
# ones by XGBoost, whose fixed cost per call is then spread over enough rows to beat them.
COMPILED_MAX_STEPS = 200_000


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    name: str
    version: str
    source: str  # "registry" or "cache"
    run_id: str = ""
    compiled: CompiledTrees | None = field(default=None, compare=False)
    calibration: Calibration = field(default=IDENTITY, compare=False)  # stored with the version
    reference: Reference | None = field(default=None, compare=False)  # its training inputs, for drift

    def __post_init__(self):
        # Read once: the booster's own accessors cross into C and build the strings every time.
        names = tuple(self.booster.feature_names or FEATURE_NAMES)
        object.__setattr__(self, "_feature_names", names)
        try:
            columns, attributes = model_inputs(names)
        except ValueError:  # not one of ours (refused when loaded from the registry)
            columns, attributes = None, ()
        object.__setattr__(self, "_columns", None if columns is None else np.array(columns))
        object.__setattr__(self, "_attributes", attributes)
        if self.compiled is None:
            try:
                object.__setattr__(self, "compiled", CompiledTrees.from_booster(self.booster))
            except (ValueError, KeyError) as exc:  # a model the compiler does not read: XGBoost scores it
                log.info("model %s v%s scored by XGBoost alone: %s", self.name, self.version, exc)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def attributes(self) -> tuple[str, ...]:
        """The upstream attribute keys this model reads after our features."""
        return self._attributes

    def matrix(self, rows: np.ndarray, transactions) -> np.ndarray:
        """This model's input: the columns of our feature rows it reads, then the attributes it reads
        from the transactions."""
        ours = rows if self._columns is None else rows[:, self._columns]
        if not self.attributes:
            return ours
        return np.hstack([ours, attribute_matrix(transactions, self.attributes)])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Fraud probabilities for a batch (calibrated, as the version was trained)."""
        return self.calibration.probabilities(self._raw_scores(features))

    def _raw_scores(self, features: np.ndarray) -> np.ndarray:
        if self._compiled_for(features):
            return self.compiled.scores(features)
        return self.booster.inplace_predict(features, validate_features=False).astype(np.float64)

    def explain(self, features: np.ndarray, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Fraud probabilities and per-feature log-odds contributions (last column: bias) of a batch,
        the contributions in calibrated log-odds where the calibration keeps them additive
        (models/calibration.py).

        The default attribution is XGBoost's approximate (Saabas) one, which follows each row's path
        through the trees: small batches get both from one walk of the compiled trees
        (models/trees.py), large ones from XGBoost, whose per-call cost is then spread over many rows.
        Exact TreeSHAP (`exact`) always comes from XGBoost and costs far more per row.
        """
        if not exact and self._compiled_for(features):
            raw, contributions = self.compiled.explain(features)
            return self.calibration.probabilities(raw), self.calibration.contributions(contributions)
        return self.scores(features), self.contributions(features, exact)

    def _compiled_for(self, features: np.ndarray) -> bool:
        trees = self.compiled
        return trees is not None and len(features) * trees.n_trees * max(1, trees.depth) <= COMPILED_MAX_STEPS

    def contributions(self, features: np.ndarray, exact: bool = False) -> np.ndarray:
        """Per-feature log-odds contributions from XGBoost (last column: bias), calibrated as in `explain`."""
        # One thread: building a DMatrix with all of them costs milliseconds for a single row here.
        matrix = xgb.DMatrix(features, feature_names=list(self.feature_names), nthread=1)
        return self.calibration.contributions(
            self.booster.predict(matrix, pred_contribs=True, approx_contribs=not exact))


class ModelHandle:
    """Holds the live model; `swap` replaces it in one reference assignment."""

    def __init__(self, model: LoadedModel | None = None):
        self._model = model
        self.swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._model

    def clear(self) -> None:
        self._model = None

    def swap(self, model: LoadedModel) -> None:
        previous = self._model
        self._model = model
        self.swaps += 1
        log.info("model %s v%s live (%s); was %s", model.name, model.version, model.source,
                 f"v{previous.version}" if previous else "none")


def quiet_mlflow_client_env(tracking_uri: str, timeout_seconds: int = 5) -> None:
    """Point every MLflow call in this process at our server, failing fast when it is down.

    Some MLflow code paths ignore a client's explicit URIs and fall back to the process default
    (a local sqlite file), so the default is set too.
    """
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = tracking_uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))


class ModelSource:
    """Where models come from: the registry (by alias) with a disk cache behind it."""

    def __init__(self, tracking_uri: str, name: str, alias: str, cache_dir: Path, nthread: int = 1):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.name = name
        self.alias = alias
        self.cache_dir = Path(cache_dir)
        self.nthread = nthread
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._lock = threading.Lock()

    def alias_version(self, alias: str | None = None) -> tuple[str, str]:
        """(version, run_id) the alias (default: the serving alias) points at now; raises when MLflow
        is unreachable or the alias does not exist."""
        mv = self.client.get_model_version_by_alias(self.name, alias or self.alias)
        return str(mv.version), mv.run_id or ""

    def optional_alias_version(self, alias: str) -> tuple[str, str] | None:
        """Like alias_version, but None when the alias is not set (MLflow down still raises)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.alias_version(alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def promote(self, version: str, previous_alias: str | None = None) -> str | None:
        """Point the serving alias at `version`; drop `previous_alias` if it named that version.
        Returns the version that was serving before (None if none)."""
        from mlflow.exceptions import MlflowException

        try:
            before = self.alias_version()[0]
        except MlflowException:
            before = None
        self.client.get_model_version(self.name, version)  # raises if there is no such version
        self.client.set_registered_model_alias(self.name, self.alias, version)
        found = self.optional_alias_version(previous_alias) if previous_alias else None
        if found is not None and found[0] == version:
            self.client.delete_registered_model_alias(self.name, previous_alias)
        return before

    def load_version(self, version: str, run_id: str = "", remember: bool = True) -> LoadedModel:
        """Download a registered version into the cache and load it as a native Booster; `remember`
        makes it the one a restart falls back to when MLflow is unreachable."""
        import mlflow.artifacts

        with self._lock:
            target = self.cache_dir / self.name / version
            if not (target / "MLmodel").exists():
                staging = target.with_suffix(".partial")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                # The version's own artifact URI: a models:/ URI would be resolved against the
                # process-wide registry URI, not this source's.
                source = self.client.get_model_version_download_uri(self.name, version)
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri)
                shutil.rmtree(target, ignore_errors=True)
                Path(local).rename(target)  # the model's own folder, wherever it sits in staging
                shutil.rmtree(staging, ignore_errors=True)
            booster, calibration, reference = self._read(target)
            model = LoadedModel(booster, self.name, version, "registry", run_id, calibration=calibration,
                                reference=reference)
            if remember:
                (self.cache_dir / self.name / "current.json").write_text(
                    json.dumps({"version": version, "run_id": run_id}))
            return model

    def load_alias(self) -> LoadedModel:
        version, run_id = self.alias_version()
        return self.load_version(version, run_id)

    def load_cached(self) -> LoadedModel:
        pointer = self.cache_dir / self.name / "current.json"
        if not pointer.exists():
            raise ModelUnavailable(f"no cached model for {self.name} in {self.cache_dir}")
        meta = json.loads(pointer.read_text())
        booster, calibration, reference = self._read(self.cache_dir / self.name / meta["version"])
        return LoadedModel(booster, self.name, meta["version"], "cache", meta.get("run_id", ""),
                           calibration=calibration, reference=reference)

    def load_at_start(self) -> LoadedModel:
        """The alias's version from the registry; the cached one when the registry cannot be reached."""
        try:
            return self.load_alias()
        except Exception as exc:
            log.warning("cannot load %s@%s from MLflow (%s); trying the local cache",
                        self.name, self.alias, exc)
            try:
                return self.load_cached()
            except Exception as cache_exc:
                raise ModelUnavailable(
                    f"{self.name}@{self.alias}: registry failed ({exc}); cache failed ({cache_exc})"
                ) from cache_exc

    def _read(self, model_dir: Path) -> tuple[xgb.Booster, Calibration, Reference | None]:
        """The version's booster, and the calibration and drift reference stored with it (none for a
        version without them)."""
        import yaml

        spec = yaml.safe_load((model_dir / "MLmodel").read_text())
        data = spec["flavors"]["xgboost"]["data"]
        booster = xgb.Booster(model_file=str(model_dir / data))
        booster.set_param({"nthread": self.nthread})
        try:
            model_inputs(booster.feature_names or ())
        except ValueError as exc:
            raise ModelUnavailable(f"model in {model_dir} cannot be served by this scorer: {exc}") from exc
        metadata = spec.get("metadata") or {}
        try:
            calibration = Calibration.from_dict(metadata.get("calibration"))
        except (ValueError, TypeError) as exc:
            raise ModelUnavailable(f"model in {model_dir} has a calibration this scorer cannot read: {exc}") from exc
        reference = None
        if metadata.get("drift_reference"):
            try:
                reference = Reference.from_dict(metadata["drift_reference"])
            except (ValueError, TypeError, KeyError) as exc:  # scoring goes on; drift is not watched
                log.warning("model in %s: drift reference unreadable (%s); drift not watched", model_dir, exc)
        return booster, calibration, reference


class ModelFollower:
    """Keeps the handles on the versions the serving and the challenger aliases point at.

    `follow` runs every FRAUD_MODEL_POLL_SECONDS, off the scoring thread: a moved alias is loaded in
    the background and swapped in between two batches. MLflow being down changes nothing: the loaded
    versions stay, and `error` says why they may be stale.
    """

    def __init__(self, source: ModelSource, champion: ModelHandle, challenger: ModelHandle,
                 challenger_alias: str, on_swap=lambda model: None):
        self.source = source
        self.champion = champion
        self.challenger = challenger
        self.challenger_alias = challenger_alias
        self.on_swap = on_swap
        self.error = ""

    def load_at_start(self) -> None:
        """The serving alias's version (or the cached one); ModelUnavailable when neither loads."""
        if self.champion.current is None:
            self._install(self.source.load_at_start())

    def follow(self) -> None:
        self._follow_champion()
        self._follow_challenger()

    def _install(self, model: LoadedModel) -> None:
        self.champion.swap(model)
        self.error = ""
        self.on_swap(model)

    def _follow_champion(self) -> None:
        current = self.champion.current
        try:
            version, run_id = self.source.alias_version()
            self.error = ""
            if current is not None and current.version == version:
                if current.source == "cache":  # the registry is back: say so in health
                    self.champion.swap(LoadedModel(current.booster, current.name, version, "registry", run_id,
                                                   current.compiled, current.calibration, current.reference))
                return
            self._install(self.source.load_version(version, run_id))
        except Exception as exc:  # noqa: BLE001 - MLflow down or refusing: keep serving what is loaded
            self.error = f"cannot follow {self.source.name}@{self.source.alias}: {exc}"
            log.warning(self.error)

    def _follow_challenger(self) -> None:
        current = self.challenger.current
        try:
            found = self.source.optional_alias_version(self.challenger_alias)
            if found is None:
                if current is not None:
                    self.challenger.clear()
                return
            version, run_id = found
            if current is None or current.version != version:
                self.challenger.swap(self.source.load_version(version, run_id, remember=False))
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot follow %s@%s: %s", self.source.name, self.challenger_alias, exc)

"""What the MLflow server holds, for the API: experiments and their recent runs, and registering a
finished run's model as a new version of the served model, optionally through the champion gate.

The gate is training's (models/train.py `promotion`): a run is promoted when there is no champion, or
when it beat the champion on its own held-out rows. A run records which champion it was compared
with (tag `champion_version`); if the champion has changed since, the comparison says nothing about
the current one, so the version is registered but not promoted, and the answer says to retrain.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.train import CHAMPION_VERSION_TAG, promotion

MODEL_ARTIFACT = "model"  # the name runs log their model under (models/train.py)


class RegistryRefused(Exception):
    """The request names something MLflow does not have, or cannot be done to it; str(exc) says which."""

    def __init__(self, status: int, message: str, field: str = ""):
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Registered:
    version: str
    promoted: bool
    reason: str
    champion_before: str | None


def experiments(client, runs_each: int, max_experiments: int = 100) -> list[dict]:
    """Active experiments, newest first, each with its `runs_each` most recent runs (metrics, params)."""
    found = client.search_experiments(max_results=max_experiments, order_by=["creation_time DESC"])
    out = []
    for exp in found:
        runs = client.search_runs([exp.experiment_id], max_results=runs_each, order_by=["attributes.start_time DESC"])
        out.append({"experiment_id": exp.experiment_id, "name": exp.name, "created_at": exp.creation_time,
                    "runs": [_run(r) for r in runs]})
    return out


def _run(run) -> dict:
    info, data = run.info, run.data
    return {"run_id": info.run_id, "run_name": info.run_name, "status": info.status,
            "started_at": info.start_time, "ended_at": info.end_time,
            "metrics": data.metrics, "params": data.params,
            "champion_version": data.tags.get(CHAMPION_VERSION_TAG)}


def register_run(client, model_name: str, alias: str, run_id: str, through_gate: bool) -> Registered:
    """Register run `run_id`'s model as a new version of `model_name`; with `through_gate`, move
    `alias` to it if it passes the champion gate. RegistryRefused: 404 for an unknown run, 409 for a
    run whose state forbids it (unfinished, without a model, without the metric the gate judges, or
    registered already)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryRefused(404, f"field run_id: no run {run_id}", "run_id") from None
        raise
    if run.info.status != "FINISHED":
        raise RegistryRefused(409, f"run {run_id} is {run.info.status}, not FINISHED", "run_id")
    existing = [mv for mv in client.search_model_versions(f"run_id = '{run_id}'") if mv.name == model_name]
    if existing:
        raise RegistryRefused(409, f"run {run_id} is already {model_name} version {existing[0].version}", "run_id")
    if through_gate and "average_precision" not in run.data.metrics:
        raise RegistryRefused(409, f"run {run_id} logged no average_precision: the gate has nothing to judge",
                              "through_gate")
    if not _has_model(client, run):
        raise RegistryRefused(409, f"run {run_id} logged no model named {MODEL_ARTIFACT!r}", "run_id")
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model_name)
    version = str(client.create_model_version(model_name, f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id).version)
    champion = _alias_version(client, model_name, alias)
    if not through_gate:
        promoted, reason = False, "registered without the gate: promote it explicitly"
    else:
        promoted, reason = gate(run.data.metrics, run.data.tags.get(CHAMPION_VERSION_TAG), champion)
    if promoted:
        client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, "promotion", reason)
    return Registered(version, promoted, reason, champion)


def gate(metrics: dict, compared_with: str | None, champion: str | None) -> tuple[bool, str]:
    """The champion gate for a run registered after the fact (see the module docstring)."""
    if champion is None:
        return promotion(metrics, None, None)
    if compared_with != champion:
        what = f"v{compared_with}" if compared_with else "no champion"
        return False, (f"the run was compared with {what}, but v{champion} is champion now: "
                       f"retrain to compare with it")
    champion_metrics = {k.removeprefix("champion_"): v for k, v in metrics.items() if k.startswith("champion_")}
    if "average_precision" not in champion_metrics:
        return False, "the run logged no champion_average_precision: retrain to compare with the champion"
    return promotion(metrics, champion, champion_metrics)


def _has_model(client, run) -> bool:
    """Whether the run logged a model under MODEL_ARTIFACT (MLflow 3 keeps it as a logged model; a run
    from an older client as artifacts of that name)."""
    logged = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    return any(m.name == MODEL_ARTIFACT for m in logged) or bool(client.list_artifacts(run.info.run_id, MODEL_ARTIFACT))


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise

"""The ``select_best`` step of the AzureML pipeline: the best trial's settings -> the final training's config.

AzureML's sweep picks the best trial itself (its objective) and a sweep node's outputs are that trial's, so the
step gets the best trial's training output directory. It reads the resolved ``config.yaml`` the trainer saved
there, takes the searched settings (``params``, dotted paths) from it, merges them into the pipeline's base
config with ``build_final_training_config`` (the trial's budget caps, such as ``hpo.max_epochs``, stay behind),
and writes the result as a config directory (one YAML file per section) for ``--config-dir``, with
``best_trial.json``: the best trial as a ``BestTrial`` dict, for ``resume-ner final-train --best-json``.

Runs: in AzureML every job is an MLflow run named after the job, and a sweep's trials are child runs of the
sweep's run. The trial's run is the ``run_id`` of its ``train_result.json``; the sweep's run is that run's
``mlflow.parentRunId`` tag, read from MLflow (``$MLFLOW_TRACKING_URI``, which AzureML sets in the job). The
sweep's run id (its job name) is the ``study_name``; a trial job is named ``<sweep job>_<index>``, and that
index is the trial ``number`` (0 when the run id has another form). ``value``, ``metric`` and
``data_fingerprint`` come from ``train_result.json``, ``direction`` from ``hpo.direction``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resume_ner.config import ResumeNerConfig, config_from_dict, save_sections
from resume_ner.errors import ConfigError, TrackingError
from resume_ner.hpo.select import BestTrial
from resume_ner.io import write_json_atomic
from resume_ner.layout import CONFIG_FILE, MODEL_DIRNAME, RESULT_FILE
from resume_ner.tracking.mlflow import PARENT_RUN_TAG, resolve_tracking_uri
from resume_ner.workflows.final import build_final_training_config

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

BEST_TRIAL_FILE = "best_trial.json"


def _read_trial_file(path: Path) -> Any:
    """A YAML (or JSON) file of the best trial's output directory; ``ConfigError`` naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read ({exc.strerror or exc}); expected the training output directory "
            f"of the sweep's best trial, which holds {CONFIG_FILE} and {RESULT_FILE}"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML or JSON ({exc})") from None


def sweep_parent_run_id(trial_run_id: str, client: MlflowClient) -> str:
    """The run id of the sweep that ran the trial run ``trial_run_id``: its ``mlflow.parentRunId`` tag, read with
    ``client`` (an ``MlflowClient`` on the sweep's tracking store); ``TrackingError`` when it cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(trial_run_id)
    except MlflowException as exc:
        raise TrackingError(
            f"cannot read the best trial's MLflow run {trial_run_id}: {exc}. The select_best step reads the sweep's "
            "runs at $MLFLOW_TRACKING_URI (AzureML sets it to the workspace's store); point it at the store the "
            "sweep logged to"
        ) from exc
    parent = run.data.tags.get(PARENT_RUN_TAG)
    if not parent:
        raise TrackingError(
            f"the best trial's MLflow run {trial_run_id} has no {PARENT_RUN_TAG} tag, so the sweep's run is unknown: "
            "the trial did not run as a child of a sweep (select_best reads the output of an AzureML sweep node)"
        )
    return str(parent)


def trial_number(trial_run_id: str, sweep_run_id: str) -> int:
    """The index of an AzureML trial in its sweep, from its run id ``<sweep run id>_<index>``; 0 otherwise."""
    prefix = f"{sweep_run_id}_"
    index = trial_run_id[len(prefix) :] if trial_run_id.startswith(prefix) else ""
    return int(index) if index.isdigit() else 0


def select_best_trial_config(
    trial_dir: str | Path,
    params: Sequence[str],
    base: ResumeNerConfig,
    out_dir: str | Path,
    *,
    client: MlflowClient | None = None,
) -> dict[str, Any]:
    """Write the final training's config directory ``out_dir`` from the best trial's output ``trial_dir`` (see the
    module docstring); returns the ``BestTrial`` dict written to ``best_trial.json``. ``client`` reads the runs
    (default: an ``MlflowClient`` on ``$MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``)."""
    trial_dir = Path(trial_dir)
    trial = config_from_dict(_read_trial_file(trial_dir / CONFIG_FILE), origin=str(trial_dir / CONFIG_FILE))
    settings = trial.to_dict()
    values: dict[str, Any] = {}
    for path in params:
        section, _, name = path.partition(".")
        if name not in settings.get(section, {}):
            raise ConfigError(
                f"--param {path}: not a setting of {trial_dir / CONFIG_FILE}; pass the dotted "
                "paths of hpo.search_space, e.g. training.learning_rate"
            )
        values[path] = settings[section][name]
    result = _read_trial_file(trial_dir / RESULT_FILE)
    run_id = result.get("run_id") if isinstance(result, dict) else None
    if not run_id:
        raise ConfigError(
            f"{trial_dir / RESULT_FILE} has no run_id: tracking was off or lost in the best trial, so the final "
            "model's lineage could not name its run; run the sweep with tracking.enabled=true (AzureML sets "
            "MLFLOW_TRACKING_URI in every job)"
        )
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=resolve_tracking_uri(None, base.tracking))
    sweep_run_id = sweep_parent_run_id(str(run_id), client)
    best = BestTrial(
        study_name=sweep_run_id,
        number=trial_number(str(run_id), sweep_run_id),
        value=result.get("best_metric"),
        params=values,
        metric=result.get("metric") or base.hpo.metric,
        direction=base.hpo.direction,
        mlflow_run_id=str(run_id),
        parent_run_id=sweep_run_id,
        checkpoint=str(trial_dir / MODEL_DIRNAME),
        data_fingerprint=result.get("data_fingerprint"),
    ).to_dict()
    final = build_final_training_config(values, base)
    out_dir = Path(out_dir)
    save_sections(final, out_dir)
    write_json_atomic(out_dir / BEST_TRIAL_FILE, best)
    log.info(
        "best trial %s of sweep %s (#%d): %s",
        run_id,
        sweep_run_id,
        best["number"],
        ", ".join(f"{k}={v}" for k, v in values.items()),
    )
    return best

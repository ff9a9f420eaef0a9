"""The MLflow parent run of a study, shared by every sweep, worker and rerun of it.

The first process that runs trials opens it (run name: the study name) and records its id in the study's
user attribute ``mlflow_parent_run_id``; later workers and reruns reattach to that run and hang their trial
runs under it. Workers take turns to do so (``hpo.locks.parent_run_turn``), so workers started together open
one. ``log_study_report`` puts the best value and parameters, ``trials.csv`` and the plots on it. Each process
ends the parent run when it is done with it, so its end time is that of the last one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from resume_ner.config import ResumeNerConfig
from resume_ner.hpo.select import best_frozen_trial, best_trial_of
from resume_ner.hpo.study import FINGERPRINT_ATTR, METRIC_ATTR, PARENT_RUN_ATTR
from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

REPORT_ARTIFACT_DIR = "hpo"


def open_parent_run(config: ResumeNerConfig, study: optuna.Study, *, create: bool = True) -> TrackingRun:
    """The study's parent ``TrackingRun``: the recorded one, else (``create``) a new one recorded in the study.

    Disabled when tracking is off, when MLflow cannot be reached, or when none is recorded and not ``create``.
    Processes that may start at the same moment call it in the study's ``hpo.locks.parent_run_turn``: reading the
    record and writing a new one are two storage calls.
    """
    if not config.tracking.enabled:
        return TrackingRun.disabled()
    recorded = study.user_attrs.get(PARENT_RUN_ATTR)
    if recorded:
        return _reattach(config, recorded)
    if not create:
        log.info("hpo study %r has no MLflow parent run: nothing to log the report to", study.study_name)
        return TrackingRun.disabled()
    tags = standard_tags(data_fingerprint=study.user_attrs.get(FINGERPRINT_ATTR), config_hash=config.config_hash())
    run = setup_mlflow(config.tracking, run_name=study.study_name, tags={**tags, "resume_ner.study": study.study_name})
    if not run.enabled:
        return run
    study.set_user_attr(PARENT_RUN_ATTR, run.run_id)
    run.log_params(config.to_dict())
    return run


def _reattach(config: ResumeNerConfig, run_id: str) -> TrackingRun:
    """A ``TrackingRun`` logging into the existing run ``run_id``."""
    uri = resolve_tracking_uri(None, config.tracking)
    log.info("MLflow: trials of this study go under the existing parent run %s at %s", run_id, uri)
    return TrackingRun.attach(run_id, uri)


def log_study_report(run: TrackingRun, study: optuna.Study, files: list[Path]) -> None:
    """Log the best value (metric ``best_<metric>``, step = finished trials), the best parameters (tags
    ``best.<path>``, which later reruns may change), ``best_trial.json`` and ``files`` to ``run``."""
    import optuna

    if not run.active:
        return
    states = optuna.trial.TrialState
    finished = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
    best = best_frozen_trial(study)
    if best is not None:
        metric = study.user_attrs.get(METRIC_ATTR, "objective")
        run.log_metrics({f"best_{metric}": best.value}, step=len(finished))
        run.set_tags({"resume_ner.best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
        run.log_dict(best_trial_of(study).to_dict(), f"{REPORT_ARTIFACT_DIR}/best_trial.json")
    for path in files:
        run.log_artifact(path, artifact_path=REPORT_ARTIFACT_DIR)

"""One HPO trial: sample the space, apply the budget caps, train with pruning, inside a nested MLflow run.

``run_trial`` is the objective a sweep hands to ``study.optimize``. A trial trains in
``<output_dir>/trials/trial-NNNN/`` (its best checkpoint stays in ``model/``; the resumable training states
are deleted when the trial ends: trials are never resumed, a retried trial starts afresh).

Trial user attributes: ``mlflow_run_id``, ``checkpoint`` (the trial's model directory), ``error`` (on
failure), ``last_value`` (the study metric at the last epoch) and ``pruned_epoch`` (when pruned). The
intermediate values the pruner compares are ``hpo.pruning_metric`` (``PruningCallback``). The trial's
MLflow run is a child of the sweep's parent run; it carries the sampled values as ``sampled.<path>``
params, the trial config, the per-epoch metrics of ``train_model`` and the tags ``resume_ner.study``,
``resume_ner.trial_number``, ``resume_ner.trial_state`` (COMPLETE | PRUNED | FAIL),
``resume_ner.pruned_epoch`` and, for a re-run of a trial whose worker died, ``resume_ner.retry_of``. The
worker that marks such a trial FAIL ends its MLflow run FAILED (``end_stale_run``), whether the trial is
re-run or out of retries.
"""

from __future__ import annotations

import logging
import random
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import ResumeNerConfig, TrackingConfig
from resume_ner.data.document import Document
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import SearchSpace, apply_params
from resume_ner.hpo.study import METRIC_DIRECTIONS
from resume_ner.layout import CHECKPOINTS_DIRNAME, MODEL_DIRNAME
from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags
from resume_ner.training.callbacks import TrainerCallback, TrainerState
from resume_ner.training.trainer import train_model

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


class PruningCallback(TrainerCallback):
    """Report the validation ``metric`` to Optuna after each epoch; raise ``TrialPruned`` when told to stop.

    The reported (intermediate) value is ``metric`` signed to the study's ``direction``: validation loss in a
    maximising study is reported negated, so that the pruner's "better" is the study's.
    """

    def __init__(self, trial: optuna.Trial, metric: str, direction: str) -> None:
        self.trial = trial
        self.metric = metric
        self.sign = 1.0 if METRIC_DIRECTIONS[metric] == direction else -1.0
        self.pruned_epoch: int | None = None

    def on_evaluate(self, state: TrainerState, metrics: dict[str, Any], value: float | None) -> None:
        import optuna

        if value is None:
            return
        observed = float(metrics[self.metric])
        self.trial.report(self.sign * observed, state.epoch)
        if self.trial.should_prune():
            self.pruned_epoch = state.epoch
            self.trial.set_user_attr("last_value", value)
            self.trial.set_user_attr("pruned_epoch", state.epoch)
            raise optuna.TrialPruned(
                f"pruned after epoch {state.epoch}: validation {self.metric} {observed:.4f} (study metric {value:.4f})"
            )


def trial_config(config: ResumeNerConfig, params: dict[str, Any]) -> ResumeNerConfig:
    """``config`` with the sampled ``params`` and the budget of ``config.hpo``.

    ``training.metric`` becomes ``hpo.metric``; ``hpo.max_epochs`` caps ``training.epochs``;
    ``hpo.max_length`` sets ``model.max_length``, and a stride too large for the window becomes a quarter of it;
    ``hpo.num_threads`` sets ``training.num_threads``.
    """
    hpo = config.hpo
    values = {**params, "training.metric": hpo.metric}
    if hpo.num_threads:
        values["training.num_threads"] = hpo.num_threads
    if hpo.max_epochs is not None:
        values["training.epochs"] = min(values.get("training.epochs", config.training.epochs), hpo.max_epochs)
    if hpo.max_length is not None:
        values["model.max_length"] = hpo.max_length
    max_length = values.get("model.max_length", config.model.max_length)
    if values.get("model.stride", config.model.stride) >= max_length - 2:
        values["model.stride"] = max_length // 4
    return apply_params(config, values)


def training_subset(documents: Sequence[Document], fraction: float, seed: int) -> list[Document]:
    """The same seeded ``fraction`` of ``documents`` (at least one) for every trial, in their original order."""
    if fraction >= 1.0:
        return list(documents)
    count = max(1, round(len(documents) * fraction))
    keep = sorted(random.Random(seed).sample(range(len(documents)), count))
    return [documents[i] for i in keep]


def run_trial(
    trial: optuna.Trial,
    *,
    config: ResumeNerConfig,
    space: SearchSpace,
    train_docs: Sequence[Document],
    val_docs: Sequence[Document],
    output_dir: Path,
    parent_run_id: str | None,
    data_fingerprint: str,
) -> float:
    """Train one trial and return its best validation ``hpo.metric``; raises ``TrialPruned`` or the failure."""
    import optuna

    number, study_name = trial.number, trial.study.study_name
    trial_dir = Path(output_dir) / "trials" / f"trial-{number:04d}"
    if trial_dir.exists():
        log.warning("trial %d: replacing the leftover directory %s", number, trial_dir)
        shutil.rmtree(trial_dir)
    retry_of = _retried_from(trial)
    params = space.suggest(trial)
    tags = {"resume_ner.study": study_name, "resume_ner.trial_number": number}
    if retry_of is not None:
        tags["resume_ner.retry_of"] = retry_of
    tracking = setup_mlflow(
        config.tracking,
        nested=True,
        parent_run_id=parent_run_id,
        run_name=f"trial-{number}",
        output_dir=trial_dir,
        tags=tags,
    )
    trial.set_user_attr("mlflow_run_id", tracking.run_id)  # None without tracking (a retry inherits the dead id)
    trial.set_user_attr("checkpoint", str(trial_dir / MODEL_DIRNAME))
    pruning = PruningCallback(trial, config.hpo.pruning_metric, config.hpo.direction)
    log.info("trial %d of study %r: %s", number, study_name, ", ".join(f"{k}={v!r}" for k, v in params.items()))
    try:
        config = trial_config(config, params)
        tracking.set_tags(standard_tags(data_fingerprint=data_fingerprint, config_hash=config.config_hash()))
        tracking.log_params({f"sampled.{path}": value for path, value in params.items()})
        subset = training_subset(train_docs, config.hpo.train_fraction, config.hpo.seed)
        result = train_model(
            config,
            subset,
            val_docs,
            trial_dir,
            callbacks=[pruning],
            tracking=tracking,
            data_fingerprint=data_fingerprint,
        )
        if result.best_metric is None:
            raise ConfigError(f"trial {number}: no validation metric (the validation split is empty)")
    except optuna.TrialPruned:
        tracking.set_tags({"resume_ner.trial_state": "PRUNED", "resume_ner.pruned_epoch": pruning.pruned_epoch})
        tracking.end("FINISHED")
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        trial.set_user_attr("error", message)
        tracking.set_tags({"resume_ner.trial_state": "FAIL", "resume_ner.error": message})
        tracking.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        shutil.rmtree(trial_dir / CHECKPOINTS_DIRNAME, ignore_errors=True)
    tracking.set_tags({"resume_ner.trial_state": "COMPLETE"})
    tracking.end("FINISHED")
    return float(result.best_metric)


def _retried_from(trial: optuna.Trial) -> int | None:
    """The number of the dead trial this one re-runs, or None for a fresh trial."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)


def end_stale_run(tracking: TrackingConfig, study: optuna.Study, trial: FrozenTrial) -> None:
    """End the MLflow run of ``trial``, just marked FAIL because its worker died, FAILED (it was left RUNNING).

    A stale-trial hook of ``resolve_storage`` (bind ``tracking`` first); MLflow errors are logged, not raised.
    """
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not tracking.enabled or not run_id:
        return
    try:
        dead = TrackingRun.attach(run_id, resolve_tracking_uri(None, tracking))
    except Exception as exc:  # noqa: BLE001 - tracking never stops the sweep
        log.warning("MLflow: could not end run %s of dead trial %d: %s", run_id, trial.number, exc)
        return
    dead.set_tags({"resume_ner.trial_state": "FAIL", "resume_ner.error": "its worker stopped sending heartbeats"})
    dead.end("FAILED")

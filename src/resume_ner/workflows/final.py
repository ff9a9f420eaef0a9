"""The final training: the base config with the winning HPO settings, trained, tested and registered.

``build_final_training_config`` merges the best trial's settings into a base training config (the CLI, the
KFP component and the AzureML adapter all use it). ``run_final_training_workflow`` picks the best trial of a
study (or takes one), trains on the train split (or train + validation with ``final.train_on``), tests the
best checkpoint on the test split, and registers it in the MLflow Model Registry with its lineage.

Output directory: what ``train_model`` writes (``config.yaml``, ``model/``, ``checkpoints/``,
``train_result.json``), plus ``test_metrics.json`` and, when registered, ``lineage.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import MODEL_SECTIONS, ResumeNerConfig, config_from_dict
from resume_ner.data.dataset import load_training_data
from resume_ner.data.splits import fingerprint_documents
from resume_ner.errors import ConfigError, TrackingError
from resume_ner.hpo.search_space import apply_params
from resume_ner.hpo.select import select_best
from resume_ner.layout import LINEAGE_FILE, MODEL_DIRNAME
from resume_ner.serving.mlflow_model import log_serving_model
from resume_ner.tracking.lineage import (
    PROMOTION_METRIC,
    TEST_FINGERPRINT_TAG,
    check_best_trial_runs,
    extract_lineage_from_best_model,
    final_run_tags,
    register_model,
    write_lineage,
)
from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags
from resume_ner.training.checkpoint import validate_checkpoint
from resume_ner.training.distributed import init_distributed
from resume_ner.training.trainer import check_training_start, train_model
from resume_ner.workflows.training import evaluate_test_split

if TYPE_CHECKING:
    from resume_ner.tracking.lineage import Lineage, RegisteredVersion
    from resume_ner.tracking.mlflow import TrackingRun
    from resume_ner.training.trainer import TrainResult

log = logging.getLogger(__name__)

REGISTERED_MODEL_TAG = "resume_ner.registered_model"
BEST_TRIAL_KEYS = ("study_name", "number", "params")  # a BestTrial dict must have at least these
RUN_SECTIONS = tuple(name for name in ResumeNerConfig.model_fields if name not in MODEL_SECTIONS)


@dataclass
class FinalOutcome:
    """A finished final training: what was trained, tested, registered, and any tracking that was lost."""

    train_result: TrainResult
    test_metrics: dict[str, Any] | None
    run_id: str | None
    model_version: str | None
    model_uri: str | None  # models:/<name>/<version>
    lineage_path: Path | None
    promoted: bool
    tracking_lost: list[str] = field(default_factory=list)
    best_trial: dict[str, Any] = field(default_factory=dict)  # BestTrial.to_dict() of the trial used
    promotion_reason: str | None = None  # why the version did or did not become champion
    lineage: Lineage | None = None  # when registered


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, section by section (mappings merged, other values replaced)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_final_training_config(
    best_config: dict[str, Any] | ResumeNerConfig,
    train_config: dict[str, Any] | ResumeNerConfig | None = None,
    random_seed: int | None = None,
) -> ResumeNerConfig:
    """The base training config (``train_config``, defaults when None) with the winning settings merged in.

    ``best_config`` is a flat dict of dotted params (``{"training.learning_rate": 3e-5}``, applied with
    ``hpo.search_space.apply_params``), a nested dict of sections (``{"training": {"learning_rate": 3e-5}}``,
    merged setting by setting; the two forms can be mixed), or a ``ResumeNerConfig``. Only the sections that
    determine the model (data, model, training) are taken from a nested dict or a config: the tracking, hpo
    and final sections of a full config (``run_local_hpo_sweep`` returns one) are the sweep's, so the base's
    stay. ``random_seed`` then overrides ``training.random_seed``. Raises ``ConfigError`` naming any invalid
    setting.
    """
    base = config_from_dict(train_config if train_config is not None else {}, origin="training config")
    if isinstance(best_config, ResumeNerConfig):
        best_config = best_config.to_dict()
    if not isinstance(best_config, Mapping):
        raise ConfigError(
            "best configuration: expected a dict of dotted params or of config sections, got "
            f"{type(best_config).__name__}"
        )
    nested = {key: value for key, value in best_config.items() if "." not in key and key not in RUN_SECTIONS}
    dotted = {key: value for key, value in best_config.items() if "." in key}
    config = config_from_dict(_merge(base.to_dict(), nested), origin="best configuration")
    if dotted:
        config = apply_params(config, dotted)
    if random_seed is not None:
        config = config_from_dict(
            _merge(config.to_dict(), {"training": {"random_seed": random_seed}}), origin="random_seed"
        )
    return config


def _best_trial(best: Any, study_name: str | None, storage: str | None, config: ResumeNerConfig) -> dict[str, Any]:
    """``best`` as a ``BestTrial`` dict, or the best trial of the study (``select_best``)."""
    if best is not None and (study_name or storage):
        raise ConfigError(
            "final training: pass either the best trial (--best-json) or a study (--study/--storage), not both"
        )
    if best is None:
        storage = storage or config.hpo.storage
        if not storage:
            raise ConfigError(
                "final training needs the best trial of a sweep: pass --study NAME --storage URL (or set "
                "hpo.study_name and hpo.storage), or --best-json FILE; to train without a sweep use `resume-ner train`"
            )

        best = select_best(storage, study_name or config.hpo.study_name)
    raw = best.to_dict() if hasattr(best, "to_dict") else best
    if (
        not isinstance(raw, Mapping)
        or not isinstance(raw.get("params"), Mapping)
        or any(raw.get(key) is None for key in BEST_TRIAL_KEYS)
    ):
        raise ConfigError(
            f"best trial: expected a mapping with {', '.join(BEST_TRIAL_KEYS)} (params: dotted config path -> value), "
            "as written by BestTrial.to_dict(); got "
            + (f"keys {sorted(raw)}" if isinstance(raw, Mapping) else type(raw).__name__)
        )
    return dict(raw)


def _check_registrable(config: ResumeNerConfig) -> None:
    if not config.tracking.enabled:
        raise ConfigError(
            "cannot register the final model with tracking.enabled=false: enable tracking, or pass --no-register"
        )
    if not config.tracking.log_checkpoint:
        raise ConfigError(
            "cannot register the final model with tracking.log_checkpoint=false (the registry points at the "
            "logged checkpoint): set it to true, or pass --no-register"
        )


def run_final_training_workflow(
    config: ResumeNerConfig | dict[str, Any],
    output_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    best: Any = None,
    study_name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    register: bool = True,
    promote: bool | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> FinalOutcome:
    """Train the best trial's settings on the dataset, test them, and register the model with its lineage.

    ``best`` is a ``BestTrial`` or its dict; without it, ``select_best(storage, study_name)`` picks it
    (``storage``/``study_name`` default to ``hpo.storage``/``hpo.study_name``). The final config is
    ``build_final_training_config(best["params"], config)``. With ``final.train_on="train+validation"`` the
    validation documents are trained on too and still passed as validation data: their metrics then only
    report (they choose the kept checkpoint among epochs, on data it has seen) and early stopping is off.

    One MLflow run (tag ``resume_ner.stage=final``) holds the training, the ``best_trial.*`` params, the test
    metrics and the lineage tags. With ``register`` the logged checkpoint becomes a new version of
    ``tracking.registered_model_name`` (``candidate``; ``champion`` when it beats the champion on the same
    test documents, or with ``promote``, default ``final.promote``) and ``lineage.json`` is written to
    ``output_dir`` and logged. Before training, registration is checked to be possible (tracking on, a test
    split, the sweep's runs readable at the tracking URI). If MLflow calls are lost during the run, the model
    is not registered and ``tracking_lost`` says why.
    """
    base = config_from_dict(config)
    output_dir = Path(output_dir)
    best_trial = _best_trial(best, study_name, storage, base)
    final_config = build_final_training_config(dict(best_trial["params"]), base)
    on_validation = final_config.final.train_on == "train+validation"
    if on_validation and final_config.training.early_stopping_patience:
        log.info("final.train_on=train+validation: early stopping off (validation documents are trained on)")
        final_config = build_final_training_config({"training": {"early_stopping_patience": 0}}, final_config)
    uri = resolve_tracking_uri(tracking_uri, final_config.tracking) if final_config.tracking.enabled else None
    if register:
        _check_registrable(final_config)
        check_best_trial_runs(best_trial, uri)
    path, dataset = load_training_data(final_config, data_path)
    if register and not dataset.test:
        raise ConfigError(
            f"{path}: the test split is empty, so the final model cannot be compared with the champion: "
            "set data.test_fraction above 0 (or give a test file), or pass --no-register"
        )
    train_documents = dataset.train + dataset.validation if on_validation else dataset.train
    test_fingerprint = fingerprint_documents(dataset.test) if dataset.test else None
    log.info(
        "final training of study %r trial #%s on %d documents (%s): %s",
        best_trial["study_name"],
        best_trial["number"],
        len(train_documents),
        final_config.final.train_on,
        ", ".join(f"{k}={v}" for k, v in best_trial["params"].items()) or "no searched params",
    )

    tags = {
        **standard_tags(data_fingerprint=dataset.fingerprint, config_hash=final_config.config_hash()),
        **final_run_tags(best_trial, test_data_fingerprint=test_fingerprint),
        "resume_ner.data_path": str(path),
    }
    registered = lineage = lineage_path = test_metrics = None
    ddp, _ = init_distributed(final_config.training.device)
    # every check train_model makes first, before the run is opened: a refused training leaves no FAILED run
    check_training_start(
        final_config, train_documents, dataset.validation, output_dir, dataset.fingerprint, overwrite=overwrite
    )
    run = (
        setup_mlflow(final_config.tracking, tracking_uri=uri, run_name=run_name, output_dir=output_dir, tags=tags)
        if ddp.is_main
        else TrackingRun.disabled()
    )  # under torchrun, rank 0 tracks, tests and registers
    with run:
        run.log_params({f"best_trial.{key}": value for key, value in best_trial["params"].items()})
        result = train_model(
            final_config,
            train_documents,
            dataset.validation,
            output_dir,
            tracking=run,
            data_fingerprint=dataset.fingerprint,
            quiet=quiet,
            overwrite=overwrite,
        )
        if ddp.is_main:
            validate_checkpoint(result.model_dir)
            test_metrics = evaluate_test_split(final_config, result.model_dir, dataset, output_dir, run)
            run.flush()  # logging queued during a tracking outage is sent, or in run.lost
            if register and (not run.enabled or run.lost):
                log.warning(
                    "final model not registered: %d MLflow call(s) were lost (%s); the model is in %s",
                    len(run.lost),
                    "; ".join(run.lost[:3]),
                    result.model_dir,
                )
            elif register:
                registered, lineage, lineage_path = register_final_model(
                    run,
                    name=final_config.tracking.registered_model_name,
                    promote=final_config.final.promote if promote is None else promote,
                    lineage_path=output_dir / LINEAGE_FILE,
                    checkpoint_dir=result.model_dir,
                )
    return FinalOutcome(
        train_result=result,
        test_metrics=test_metrics,
        run_id=run.run_id,
        model_version=registered.version if registered else None,
        model_uri=registered.model_uri if registered else None,
        lineage_path=lineage_path,
        promoted=bool(registered and registered.promoted),
        tracking_lost=list(run.lost),
        best_trial=best_trial,
        promotion_reason=registered.reason if registered else None,
        lineage=lineage,
    )


def register_final_model(
    run: TrackingRun, *, name: str, promote: bool, lineage_path: str | Path, checkpoint_dir: str | Path | None = None
) -> tuple[RegisteredVersion, Lineage, Path]:
    """Register the checkpoint logged by the final training run ``run`` as an MLflow pyfunc model (logged to the run
    under ``mlflow_model`` from ``checkpoint_dir``, else from the run's ``model`` artifacts) and write its lineage.

    The run's ``test_f1_micro`` metric and ``resume_ner.test_data_fingerprint`` tag (both logged by the final
    training) decide the champion alias (``tracking.lineage.register_model``). The run gets the tag
    ``resume_ner.registered_model``; ``lineage_path`` (``lineage.json``) is written and logged to the run.
    ``run`` may be the open run of the training or, in another process, ``TrackingRun.attach(run_id, uri)``.
    """
    logged = run.client.get_run(run.run_id).data
    assert run.run_id is not None and run.tracking_uri is not None  # the client found the run
    metric = f"test_{PROMOTION_METRIC}"
    if metric not in logged.metrics or not logged.tags.get(TEST_FINGERPRINT_TAG):
        raise TrackingError(
            f"run {run.run_id} at {run.tracking_uri} has no {metric} metric or {TEST_FINGERPRINT_TAG} tag: only a "
            "final training run tested on a test split can be registered"
        )
    log_serving_model(run.run_id, run.tracking_uri, checkpoint_dir)
    registered = register_model(
        run.run_id,
        MODEL_DIRNAME,
        name=name,
        test_metrics={PROMOTION_METRIC: logged.metrics[metric]},
        test_data_fingerprint=logged.tags[TEST_FINGERPRINT_TAG],
        promote=promote,
        tracking_uri=run.tracking_uri,
    )
    run.set_tags({REGISTERED_MODEL_TAG: registered.model_uri})
    lineage = extract_lineage_from_best_model(registered.model_uri, tracking_uri=run.tracking_uri)
    path = write_lineage(lineage, lineage_path)
    run.log_artifact(path)
    return registered, lineage, path

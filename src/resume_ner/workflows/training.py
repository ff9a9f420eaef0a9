"""The training workflow: load and split a dataset, train, evaluate the best checkpoint on the test split,
track everything in one MLflow run. ``resume-ner train`` and the container entrypoint both call it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import ResumeNerConfig
from resume_ner.data.dataset import load_training_data
from resume_ner.data.splits import fingerprint_documents
from resume_ner.io import write_json_atomic
from resume_ner.layout import TEST_METRICS_FILE
from resume_ner.tracking.mlflow import TrackingRun, setup_mlflow, standard_tags
from resume_ner.training.distributed import init_distributed
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.trainer import check_training_start, train_model

if TYPE_CHECKING:
    from resume_ner.data.document import SplitDataset
    from resume_ner.tracking.mlflow import TrackingRun

log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """A finished training workflow: the train result, test metrics and any tracking that was lost."""

    train: Any  # TrainResult
    test_metrics: dict[str, Any] | None
    run_id: str | None
    tracking_lost: list[str] = field(default_factory=list)
    tracking_uri: str | None = None  # where the run is (or was to be) logged
    already_finished: bool = False  # resumed a finished training: its saved results; nothing was run or written


def run_training_workflow(
    config: ResumeNerConfig,
    data_path: str | Path | None,
    output_dir: str | Path,
    *,
    resume: bool = False,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> TrainingOutcome:
    """Train on ``data_path`` (file: split by the project; directory: given splits) and test the best model.

    The data is loaded and every check ``train_model`` makes before it trains (``check_training_start``: the
    state and permissions of ``output_dir``, a resume's configuration and dataset, the label count) is made
    before the MLflow run is opened, so a refused training leaves no run behind. With ``resume``, a training
    that had finished in ``output_dir`` is not run again: the outcome has ``already_finished`` and the saved
    results (``train_result.json``, ``test_metrics.json``), and nothing is written to disk or MLflow.

    Under torchrun every rank trains; rank 0 alone opens the MLflow run and tests the model (the other ranks
    return ``test_metrics`` None).
    """
    ddp, _ = init_distributed(config.training.device)
    output_dir = Path(output_dir)
    path, dataset = load_training_data(config, data_path)
    start = check_training_start(
        config, dataset.train, dataset.validation, output_dir, dataset.fingerprint, resume=resume, overwrite=overwrite
    )
    if start.finished is not None:
        test_file = output_dir / TEST_METRICS_FILE
        test_metrics = json.loads(test_file.read_text(encoding="utf-8")) if test_file.is_file() else None
        return TrainingOutcome(
            start.finished,
            test_metrics,
            start.finished.run_id,
            tracking_uri=start.finished.tracking_uri,
            already_finished=True,
        )
    tags = standard_tags(data_fingerprint=dataset.fingerprint, config_hash=config.config_hash())
    tags["resume_ner.data_path"] = str(path)
    tracking = (
        setup_mlflow(config.tracking, tracking_uri=tracking_uri, run_name=run_name, output_dir=output_dir, tags=tags)
        if ddp.is_main
        else TrackingRun.disabled()
    )
    with tracking:
        result = train_model(
            config,
            dataset.train,
            dataset.validation,
            output_dir,
            resume=resume,
            tracking=tracking,
            data_fingerprint=dataset.fingerprint,
            quiet=quiet,
            overwrite=overwrite,
        )
        test_metrics = (
            evaluate_test_split(config, result.model_dir, dataset, output_dir, tracking) if ddp.is_main else None
        )
    return TrainingOutcome(
        result,
        test_metrics,
        getattr(tracking, "run_id", None),
        list(getattr(tracking, "lost", [])),
        getattr(tracking, "tracking_uri", None),
    )


def evaluate_test_split(
    config: ResumeNerConfig, model_dir: str | Path, dataset: SplitDataset, output_dir: Path, tracking: TrackingRun
) -> dict[str, Any] | None:
    """Evaluate ``model_dir`` on ``dataset.test`` (None when it is empty): ``test_metrics.json`` + MLflow. The
    forward passes run in ``training.precision``, as ``resume-ner evaluate`` and ``predict`` run them by default.

    The metrics carry ``data_fingerprint`` (whole dataset) and ``test_data_fingerprint`` (test documents
    alone, the key on which registered models are compared); they are logged as ``test_*`` metrics and the
    file as an artifact of ``tracking``.
    """
    if not dataset.test:
        return None
    test_metrics = evaluate_model(
        model_dir,
        dataset.test,
        batch_size=config.training.eval_batch_size,
        device=config.training.device,
        precision=config.training.precision,
    )
    test_metrics["data_fingerprint"] = dataset.fingerprint
    test_metrics["test_data_fingerprint"] = fingerprint_documents(dataset.test)
    write_json_atomic(output_dir / TEST_METRICS_FILE, test_metrics)
    tracking.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if isinstance(v, (int, float))})
    tracking.log_metrics(
        {"test": {"per_type": test_metrics.get("per_type", {}), "span_per_type": test_metrics.get("span_per_type", {})}}
    )
    tracking.log_artifact(output_dir / TEST_METRICS_FILE)
    return test_metrics

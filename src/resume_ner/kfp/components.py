"""The five reusable Kubeflow Pipelines components, and the training pipeline's three plumbing components.

Each is a KFP v2 lightweight Python component whose body parses its typed inputs, calls one function of
``resume_ner.workflows.steps`` and writes its typed outputs. The library is installed in the image, so no
component installs anything. ``build_components(image)`` turns the functions below into components with
that base image (``pipeline.image`` or ``$RESUME_NER_IMAGE``, chosen at compile time).

The functions are compiled from their source: every import is inside the body, and this module must not
use ``from __future__ import annotations`` (KFP reads the annotations as types). Their KFP annotations are
types to KFP but not to mypy, hence the ``type: ignore`` of each ``NamedTuple("...", [...])`` output.
"""

from typing import Callable, Dict, List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

__all__ = ["PLUMBING", "REUSABLE", "build_components"]


def load_data(
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    test_data: Output[Dataset],
    data_metrics: Output[Metrics],
    data_report: Output[Markdown],
    data_uri: str = "",
    data: Optional[Input[Dataset]] = None,
    overrides: Optional[List[str]] = None,
    data_digest: str = "",
) -> str:
    """Validate, split and fingerprint annotated resumes (a path or file:// URI, or a Dataset artifact).

    Writes the train/validation/test splits as Doccano JSONL datasets, document and entity counts, and a
    Markdown data report; fails with the validation report on bad data. Returns the data fingerprint.
    data_digest is not read: the content digest of data_uri's files, it makes KFP's cache key (input values,
    not file contents) change when the data does.
    """
    from resume_ner.workflows.steps import pipeline_config, prepare_data

    outputs = {"train": train_data.path, "validation": validation_data.path, "test": test_data.path}
    prepared = prepare_data(
        data.path if data is not None else data_uri, pipeline_config(overrides or []), outputs=outputs
    )
    for split, artifact in (("train", train_data), ("validation", validation_data), ("test", test_data)):
        artifact.metadata.update(
            {"fingerprint": prepared.fingerprint, "documents": prepared.documents[split], "format": "doccano"}
        )
    for split, count in prepared.documents.items():
        data_metrics.log_metric(f"documents_{split}", count)
    for label, count in prepared.entities_per_type.items():
        data_metrics.log_metric(f"entities_{label}", count)
    with open(data_report.path, "w", encoding="utf-8") as report:
        report.write(prepared.report_markdown)
    return prepared.fingerprint


def hpo_trial(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    test_data: Input[Dataset],
    trial_metrics: Output[Metrics],
    optuna_storage: str = "",
    study_name: str = "",
    n_trials: int = 0,
    backbone: str = "",
    epochs: int = 0,
    mlflow_uri: str = "",
    overrides: Optional[List[str]] = None,
    worker: int = 0,
    gpu_count: int = 0,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> int:
    """Run trials of the shared Optuna study (worker mode) until it has n_trials finished trials.

    Without study_name the study is <hpo.study_name>-<pipeline_run_id>, one per pipeline run.

    gpu_count > 0 requires CUDA (training.device=cuda): a pod without a GPU fails instead of crawling on CPU.

    Writes the counts of the study's trials per state and the best value so far; returns how many trials
    this worker trained.
    """
    from resume_ner.workflows.steps import pipeline_config, run_hpo_worker_step

    config = pipeline_config(
        overrides or [],
        backbone=backbone,
        epochs=epochs,
        n_trials=n_trials,
        study_name=study_name,
        mlflow_uri=mlflow_uri,
        gpu_count=gpu_count,
        pipeline_run_id=pipeline_run_id,
    )
    summary = run_hpo_worker_step(
        config,
        splits={"train": train_data.path, "validation": validation_data.path, "test": test_data.path},
        storage=optuna_storage,
        worker=worker,
        workspace=workspace,
        pipeline_run_id=pipeline_run_id,
    )
    trial_metrics.log_metric("trials_run_by_worker", len(summary.trials_run))
    for state, count in summary.states.items():
        trial_metrics.log_metric(f"study_trials_{state.lower()}", count)
    if summary.best_value is not None:
        trial_metrics.log_metric("study_best_value", summary.best_value)
        trial_metrics.log_metric("study_best_trial", summary.best_number)
    return len(summary.trials_run)


def select_best(
    best_config: Output[Artifact],
    study_report: Output[HTML],
    optuna_storage: str = "",
    study_name: str = "",
    overrides: Optional[List[str]] = None,
    pipeline_run_id: str = "",
) -> NamedTuple("SelectBestOutputs", [("best_value", float), ("best_trial", int)]):  # type: ignore[valid-type]
    """Pick the best COMPLETE trial of the study: its settings as JSON, and an HTML report of every trial."""
    from collections import namedtuple

    from resume_ner.workflows.steps import pipeline_config, select_best_step

    config = pipeline_config(overrides or [], study_name=study_name, pipeline_run_id=pipeline_run_id)
    best = select_best_step(config, storage=optuna_storage, best_path=best_config.path, report_path=study_report.path)
    best_config.metadata.update(
        {"study_name": best.study_name, "trial": best.number, "metric": best.metric, "value": best.value}
    )
    SelectBestOutputs = namedtuple("SelectBestOutputs", ["best_value", "best_trial"])
    return SelectBestOutputs(best.value, best.number)


def final_train(
    best_config: Input[Artifact],
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    test_data: Input[Dataset],
    model: Output[Model],
    test_metrics: Output[Metrics],
    entity_confusion: Output[ClassificationMetrics],
    backbone: str = "",
    epochs: int = 0,
    mlflow_uri: str = "",
    model_name: str = "",
    overrides: Optional[List[str]] = None,
    replicas: int = 1,
    gpu_count: int = 0,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> str:
    """Train the best trial's settings, test the model on whole test documents, and return its MLflow run id.

    Writes the checkpoint directory (Hugging Face format), test micro/macro F1, and the entity-type
    confusion matrix. replicas > 1 trains across nodes as a Kubeflow PyTorchJob (a shared volume workspace,
    the pipeline's GPU settings per node) and waits for it; gpu_count > 0 requires CUDA.
    """
    from resume_ner.k8s.final import final_train_on_pytorchjob
    from resume_ner.workflows.steps import final_train_step, pipeline_config

    config = pipeline_config(
        overrides or [],
        backbone=backbone,
        epochs=epochs,
        mlflow_uri=mlflow_uri,
        model_name=model_name,
        gpu_count=gpu_count,
    )
    splits = {"train": train_data.path, "validation": validation_data.path, "test": test_data.path}
    if replicas > 1:
        result = final_train_on_pytorchjob(
            config,
            best_path=best_config.path,
            splits=splits,
            model_path=model.path,
            replicas=replicas,
            gpu_count=gpu_count,
            workspace=workspace,
            pipeline_run_id=pipeline_run_id,
        )
    else:
        result = final_train_step(
            config,
            best_path=best_config.path,
            splits=splits,
            model_path=model.path,
            workspace=workspace,
            pipeline_run_id=pipeline_run_id,
        )
    model.metadata.update(
        {"mlflow_run_id": result.run_id or "", "framework": "transformers", "task": "token-classification"}
    )
    for key in ("f1_micro", "f1_macro", "span_f1_micro", "span_f1_macro", "precision_micro", "recall_micro"):
        if key in result.test_metrics:
            test_metrics.log_metric(f"test_{key}", result.test_metrics[key])
    confusion = result.test_metrics.get("confusion")
    if confusion:
        entity_confusion.log_confusion_matrix(confusion["labels"], confusion["matrix"])
    return result.run_id or ""


def register_lineage(
    final_run_id: str,
    lineage: Output[Artifact],
    mlflow_uri: str = "",
    model_name: str = "",
    promote: bool = False,
    overrides: Optional[List[str]] = None,
) -> str:
    """Register the final run's checkpoint in the MLflow Model Registry, write its lineage JSON, and return
    the model version URI (models:/NAME/VERSION)."""
    from resume_ner.workflows.steps import pipeline_config, register_step

    config = pipeline_config(overrides or [], mlflow_uri=mlflow_uri, model_name=model_name)
    registered, found = register_step(config, run_id=final_run_id, lineage_path=lineage.path, promote=promote or None)
    lineage.metadata.update(
        {
            "model_uri": registered.model_uri,
            "aliases": registered.aliases,
            "study_name": found.study_name,
            "best_trial": found.best_trial_number,
        }
    )
    return registered.model_uri


def start_pipeline_run(
    pipeline_run_id: str,
    mlflow_uri: str = "",
    overrides: Optional[List[str]] = None,
) -> NamedTuple("StartOutputs", [("mlflow_run_id", str)]):  # type: ignore[valid-type]
    """Open the MLflow run of this pipeline run (the parent of its sweep and final runs); its id."""
    from collections import namedtuple

    from resume_ner.workflows.steps import pipeline_config, start_pipeline_step

    run_id = start_pipeline_step(
        pipeline_config(overrides or [], mlflow_uri=mlflow_uri), pipeline_run_id=pipeline_run_id
    )
    return namedtuple("StartOutputs", ["mlflow_run_id"])(run_id)


def plan_run(
    data_uri: str,
    parallelism: int,
    gpu_count: int,
    replicas: int,
    workspace: str = "",
    overrides: Optional[List[str]] = None,
) -> NamedTuple(  # type: ignore[valid-type]
    "PlanOutputs",
    [
        ("Output", List[int]),
        ("data_digest", str),
        ("trial_gpus", str),
        ("trial_node_selector", Dict[str, str]),
        ("trial_tolerations", List[dict]),
        ("final_gpus", str),
        ("final_node_selector", Dict[str, str]),
        ("final_tolerations", List[dict]),
        ("final_cpu_request", str),
        ("final_cpu_limit", str),
        ("final_memory_request", str),
        ("final_memory_limit", str),
    ],
):
    """Check every run parameter before anything trains, then plan the run.

    Output: the HPO worker numbers 0..parallelism-1 the ParallelFor fans out over (named Output because kfp.local
    iterates over a task's Output only). data_digest: the content digest of data on the volume (load_data's cache
    key). trial_* / final_*: the GPU count ("" for none), node selector, tolerations (and final_train's CPU and
    memory: with replicas > 1 it only waits for its PyTorchJob), strings where KFP puts them in the pod spec.
    """
    from collections import namedtuple

    from resume_ner.workflows.steps import pipeline_config, plan_run_step

    plan = plan_run_step(
        pipeline_config(overrides or []),
        data_uri=data_uri,
        parallelism=parallelism,
        gpu_count=gpu_count,
        replicas=replicas,
        workspace=workspace,
    )
    outputs: dict[str, object] = {"Output": plan.workers, "data_digest": plan.data_digest}
    for task, placement in (("trial", plan.trial), ("final", plan.final)):
        outputs.update(
            {
                f"{task}_gpus": placement.gpus,
                f"{task}_node_selector": placement.node_selector,
                f"{task}_tolerations": placement.tolerations,
            }
        )
    outputs.update(
        {
            f"final_{key}": getattr(plan.final, key)
            for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
        }
    )
    print(f"run plan: {plan.to_dict()}")
    return namedtuple("PlanOutputs", list(outputs))(**outputs)


def end_pipeline_run(
    pipeline_status: dsl.PipelineTaskFinalStatus,
    pipeline_run_id: str,
    mlflow_uri: str = "",
    overrides: Optional[List[str]] = None,
) -> None:
    """Exit handler: end this pipeline run's MLflow runs (FAILED when the pipeline failed)."""
    from resume_ner.workflows.steps import end_pipeline_step, pipeline_config

    status = {"state": pipeline_status.state, "error_message": pipeline_status.error_message}
    ended = end_pipeline_step(
        pipeline_config(overrides or [], mlflow_uri=mlflow_uri), pipeline_run_id=pipeline_run_id, final_status=status
    )
    print(f"pipeline {pipeline_status.state}: ended MLflow run(s) {ended}")


REUSABLE: Dict[str, Callable] = {
    "load_data": load_data,
    "hpo_trial": hpo_trial,
    "select_best": select_best,
    "final_train": final_train,
    "register_lineage": register_lineage,
}
PLUMBING: Dict[str, Callable] = {
    "plan_run": plan_run,
    "start_pipeline_run": start_pipeline_run,
    "end_pipeline_run": end_pipeline_run,
}


def build_components(image: str) -> Dict[str, "dsl.component"]:
    """Every component of this module (reusable and plumbing) by name, with ``image`` as its base image."""
    return {
        name: dsl.component(func, base_image=image, install_kfp_package=False)
        for name, func in {**REUSABLE, **PLUMBING}.items()
    }

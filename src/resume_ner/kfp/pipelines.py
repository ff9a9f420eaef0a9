"""The ``resume-ner-training`` pipeline, and its compilation to the versioned YAML files.

``build_pipeline(config)`` assembles it from ``resume_ner.kfp.components``::

    exit handler: end_pipeline_run (ends the pipeline's MLflow runs, FAILED when anything failed)
      start_pipeline_run -> MLflow run of the pipeline run
      load_data (cached) -> train / validation / test datasets, counts, data report
      worker_slots(parallelism) -> ParallelFor: hpo_trial x parallelism, one shared Optuna study
      select_best -> best config JSON, study report
      final_train -> checkpoint, test metrics, entity-type confusion matrix
      register_lineage -> models:/NAME/VERSION, lineage JSON

Compile-time settings come from the ``pipeline`` config section: the image (``$RESUME_NER_IMAGE`` wins), GPU
accelerator, node selector and tolerations of the GPU tasks, CPU/memory of every task, Secrets injected as
environment variables, and an optional PersistentVolumeClaim. ``compile_all(out_root, config)`` writes
``components/<name>.yaml`` (the five reusable components) and ``pipelines/resume_ner_training.yaml``.

No ``from __future__ import annotations`` here: KFP reads the pipeline function's annotations as types.
"""

import os
from pathlib import Path
from typing import Any

from resume_ner.config import ResumeNerConfig, TaskResources
from resume_ner.errors import ConfigError
from resume_ner.redaction import has_credentials, redact_credentials
from resume_ner.workflows.steps import OPTUNA_STORAGE_ENV, PIPELINE_NAME

IMAGE_ENV = "RESUME_NER_IMAGE"
PIPELINE_FILE = "resume_ner_training.yaml"
COMPONENTS_DIR = "components"
PIPELINES_DIR = "pipelines"
GPU_TASKS = ("hpo_trial", "final_train")
MLFLOW_TASKS = ("start_pipeline_run", "hpo_trial", "final_train", "register_lineage", "end_pipeline_run")
OPTUNA_TASKS = ("hpo_trial", "select_best")
DISPLAY_NAMES = {
    "start_pipeline_run": "start MLflow run",
    "load_data": "load data",
    "worker_slots": "HPO worker slots",
    "hpo_trial": "HPO trials",
    "select_best": "select best trial",
    "final_train": "final training",
    "register_lineage": "register model",
    "end_pipeline_run": "end MLflow runs",
}


def resolve_image(config: ResumeNerConfig) -> str:
    """The components' image: ``$RESUME_NER_IMAGE``, else ``pipeline.image``."""
    return os.environ.get(IMAGE_ENV) or config.pipeline.image


def _resources(task: Any, resources: TaskResources) -> None:
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)


def _platform(name: str, task: Any, config: ResumeNerConfig, gpu_count: Any) -> None:
    """Display name, caching, resources, GPU placement, Secrets and volume of one task."""
    from kfp import kubernetes

    settings = config.pipeline
    task.set_display_name(DISPLAY_NAMES[name])
    task.set_caching_options(settings.caching if name == "load_data" else False)
    _resources(task, settings.resources.get(name, settings.resources["pipeline_plumbing"]))
    if name in GPU_TASKS and settings.gpu:
        task.set_accelerator_type(settings.gpu_accelerator).set_accelerator_limit(gpu_count)
        for key, value in settings.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in settings.gpu_tolerations:
            kubernetes.add_toleration(task, key=toleration.get("key"), operator=toleration.get("operator"),
                                      value=toleration.get("value"), effect=toleration.get("effect"))
    if name in MLFLOW_TASKS and settings.mlflow_secret:
        kubernetes.use_secret_as_env(task, settings.mlflow_secret, secret_key_to_env=settings.mlflow_secret_env,
                                     optional=True)
    if name in OPTUNA_TASKS and settings.optuna_secret:
        kubernetes.use_secret_as_env(task, settings.optuna_secret, secret_key_to_env={"url": OPTUNA_STORAGE_ENV},
                                     optional=True)
    if settings.volume_claim and name not in ("worker_slots",):
        kubernetes.mount_pvc(task, pvc_name=settings.volume_claim, mount_path=settings.volume_mount_path)


def build_pipeline(config: ResumeNerConfig) -> Any:
    """The ``resume-ner-training`` pipeline with the compile-time settings of ``config``; parameter defaults
    come from its sections (backbone, n_trials, epochs, model name, pipeline.*)."""
    from typing import List

    from kfp import dsl

    from resume_ner.kfp.components import build_components

    components = build_components(resolve_image(config))
    settings = config.pipeline
    default_workspace = f"{settings.volume_mount_path}/runs" if settings.volume_claim else ""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Resume NER: validate and split data, Optuna HPO with parallel workers on one study, final "
                    "training with the best trial, MLflow registration with lineage.",
    )
    def resume_ner_training(
        data_uri: str,
        backbone: str = config.model.backbone,
        n_trials: int = config.hpo.n_trials,
        parallelism: int = settings.parallelism,
        epochs: int = config.training.epochs,
        mlflow_uri: str = settings.mlflow_uri,
        model_name: str = config.tracking.registered_model_name,
        gpu_count: int = settings.gpu_count,
        optuna_storage: str = "",
        study_name: str = "",
        workspace: str = default_workspace,
        promote: bool = config.final.promote,
        replicas: int = 1,
        overrides: List[str] = [],  # noqa: B006 - a KFP list parameter default
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

        def task(name: str, **arguments: Any) -> Any:
            # platform settings right away: a task's resource channels must exist when its group closes
            created = components[name](**arguments)
            _platform(name, created, config, gpu_count)
            return created

        exit_task = task("end_pipeline_run", pipeline_run_id=run_id, mlflow_uri=mlflow_uri, overrides=overrides)
        with dsl.ExitHandler(exit_task, name="training"):
            start = task("start_pipeline_run", pipeline_run_id=run_id, mlflow_uri=mlflow_uri, overrides=overrides)
            data = task("load_data", data_uri=data_uri, overrides=overrides)
            splits = {key: data.outputs[key] for key in ("train_data", "validation_data", "test_data")}
            slots = task("worker_slots", parallelism=parallelism)
            # Only pipeline parameters and artifacts enter the loop: kfp.local (2.17) replaces every task-output
            # parameter of a ParallelFor body with the loop item, so workers find the pipeline's MLflow run by
            # the pipeline run id instead of taking start_pipeline_run's output.
            with dsl.ParallelFor(slots.output, name="hpo-workers") as worker:
                trials = task("hpo_trial", **splits, optuna_storage=optuna_storage, study_name=study_name,
                              n_trials=n_trials, backbone=backbone, epochs=epochs, mlflow_uri=mlflow_uri,
                              overrides=overrides, worker=worker, gpu_count=gpu_count, workspace=workspace,
                              pipeline_run_id=run_id).after(start)
            best = task("select_best", optuna_storage=optuna_storage, study_name=study_name, overrides=overrides,
                        pipeline_run_id=run_id).after(trials)
            final = task("final_train", best_config=best.outputs["best_config"], **splits, backbone=backbone,
                         epochs=epochs, mlflow_uri=mlflow_uri, model_name=model_name, overrides=overrides,
                         replicas=replicas, gpu_count=gpu_count, workspace=workspace, pipeline_run_id=run_id)
            task("register_lineage", final_run_id=final.outputs["Output"], mlflow_uri=mlflow_uri,
                 model_name=model_name, promote=promote, overrides=overrides)

    return resume_ner_training


def _check_no_credentials(config: ResumeNerConfig) -> None:
    """``ConfigError`` naming every setting compiled into the YAML as plain text that holds a credential."""
    settings = {"pipeline.mlflow_uri": config.pipeline.mlflow_uri, "model.backbone": config.model.backbone,
                f"pipeline.image / ${IMAGE_ENV}": resolve_image(config)}
    found = [f"{name}={redact_credentials(value)}" for name, value in settings.items() if has_credentials(value)]
    if found:
        raise ConfigError(
            "the compiled pipeline would hold a credential in plain text: " + ", ".join(found) + ". Drop it from the "
            "URL: the tasks read MLflow credentials from the Secret of pipeline.mlflow_secret "
            "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
        )


def compile_all(out_root: str | Path, config: ResumeNerConfig) -> list[Path]:
    """Write ``components/<name>.yaml`` for the five reusable components and ``pipelines/resume_ner_training.yaml``
    under ``out_root``; the files written. A compile-time setting holding a credential is a ``ConfigError``."""
    from kfp import compiler

    from resume_ner.kfp.components import REUSABLE, build_components

    _check_no_credentials(config)
    out_root = Path(out_root)
    components = build_components(resolve_image(config))
    written = []
    for name in REUSABLE:
        path = out_root / COMPONENTS_DIR / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(components[name], str(path))
        written.append(path)
    path = out_root / PIPELINES_DIR / PIPELINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(config), str(path))
    written.append(path)
    return written

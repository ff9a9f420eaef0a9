"""The ``resume-ner-training`` pipeline, and its compilation to the versioned YAML files.

``build_pipeline(config)`` assembles it from ``resume_ner.kfp.components``::

    exit handler: end_pipeline_run (ends the pipeline's MLflow runs, FAILED when anything failed)
      plan_run -> checks every run parameter; HPO workers, GPU placement, content digest of the data
      start_pipeline_run -> MLflow run of the pipeline run
      [importer of data_uri, with pipeline.data_source: object_store]
      load_data (cached by the data's content) -> train / validation / test datasets, counts, data report
      ParallelFor over plan_run's workers: hpo_trial x parallelism, one shared Optuna study
      select_best -> best config JSON, study report
      final_train -> checkpoint, test metrics, entity-type confusion matrix
      register_lineage -> models:/NAME/VERSION, lineage JSON

Compile-time settings come from the ``pipeline`` config section: the image (``$RESUME_NER_IMAGE`` wins), the GPU
accelerator, node selector and tolerations, CPU/memory of every task, Secrets injected as environment variables,
an optional PersistentVolumeClaim and where the data comes from. The whole resolved config travels in every task's
environment (``$RESUME_NER_PIPELINE_CONFIG``), so the pods run with the settings the pipeline was compiled with.

What the KFP backend resolves at run time is set from ``plan_run``'s STRING outputs (the driver reads a resource
placeholder with ``GetStringValue()``, empty for a number: backend 2.17 driver/resolve.go:818-831) and its
JSON outputs (node selector, tolerations: driver/k8s.go:194-299), so ``gpu_count`` and ``replicas`` decide the
placement per run. ``compile_all(out_root, config)`` writes ``components/<name>.yaml`` (the five reusable
components) and ``pipelines/resume_ner_training.yaml``; ``check_cluster_target`` refuses settings that cannot
run on a cluster.

No ``from __future__ import annotations`` here: KFP reads the pipeline function's annotations as types.
"""

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import GPU_TASKS, ResumeNerConfig, resolve_image
from resume_ner.errors import ConfigError
from resume_ner.layout import IMAGE_ENV, OPTUNA_STORAGE_ENV, PIPELINE_CONFIG_ENV, PIPELINE_NAME
from resume_ner.redaction import has_credentials, redact_credentials

if TYPE_CHECKING:  # quoted below: this module's annotations are evaluated
    from kfp.dsl import PipelineTask
    from kfp.dsl.graph_component import GraphComponent

log = logging.getLogger(__name__)

# The oldest Kubeflow Pipelines backend that runs the compiled spec: the exit handler's PipelineTaskFinalStatus
# came in 2.14.0, optional Secrets as environment variables (the MLflow credentials) in 2.15.0.
MIN_KFP_BACKEND = "2.15.0"
PIPELINE_FILE = "resume_ner_training.yaml"
COMPONENTS_DIR = "components"
PIPELINES_DIR = "pipelines"
MLFLOW_TASKS = ("start_pipeline_run", "hpo_trial", "final_train", "register_lineage", "end_pipeline_run")
OPTUNA_TASKS = ("hpo_trial", "select_best")
PLACEMENT_OUTPUTS = {"hpo_trial": "trial", "final_train": "final"}  # the task -> plan_run's output prefix
# Settings the pods take from a pipeline parameter or a Secret instead: never compiled with a credential in them.
SECRET_BACKED = {("hpo", "storage"): "the optuna_storage parameter, or the Secret of pipeline.optuna_secret"}
DISPLAY_NAMES = {
    "plan_run": "plan the run",
    "start_pipeline_run": "start MLflow run",
    "load_data": "load data",
    "hpo_trial": "HPO trials",
    "select_best": "select best trial",
    "final_train": "final training",
    "register_lineage": "register model",
    "end_pipeline_run": "end MLflow runs",
}
# An image reference with a registry host: a first component with a dot or a port, or localhost.
_REGISTRY_IMAGE = re.compile(r"^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d+)?|[a-z0-9-]+:\d+|localhost)/")


def compiled_config(config: ResumeNerConfig) -> ResumeNerConfig:
    """``config`` as the pipeline's pods get it: with the image it is compiled with (``resolve_image``), without a
    tracking URI (the tasks log to the ``mlflow_uri`` parameter, whose default is ``pipeline.mlflow_uri``; a URI of
    the compiling machine, e.g. its ``$MLFLOW_TRACKING_URI``, means nothing in a pod), and without an Optuna storage
    that holds a credential (``SECRET_BACKED``); what is left out is logged, redacted."""
    compiled = config.model_copy(deep=True)
    compiled.pipeline.image = resolve_image(config)
    if compiled.tracking.tracking_uri:
        log.info(
            "tracking.tracking_uri %s is not compiled: the tasks log to the mlflow_uri parameter (default %s)",
            redact_credentials(compiled.tracking.tracking_uri),
            redact_credentials(compiled.pipeline.mlflow_uri),
        )
        compiled.tracking.tracking_uri = None
    for section, key in SECRET_BACKED:
        value = getattr(getattr(compiled, section), key)
        if value and has_credentials(value):
            setattr(getattr(compiled, section), key, None)
            log.warning(
                "%s.%s holds a credential: left out of the compiled pipeline, whose tasks take it from %s",
                section,
                key,
                SECRET_BACKED[(section, key)],
            )
    return compiled


def _set_resources(
    task: "PipelineTask", cpu_request: Any, cpu_limit: Any, memory_request: Any, memory_limit: Any
) -> None:
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)


def _platform(name: str, task: "PipelineTask", config: ResumeNerConfig, plan: Any) -> None:
    """Display name, caching, environment, resources, GPU placement, Secrets and volume of one task; ``plan`` is the
    ``plan_run`` task whose outputs place the training tasks (None for plan_run itself)."""
    from kfp import kubernetes

    settings = config.pipeline
    task.set_display_name(DISPLAY_NAMES[name])
    task.set_caching_options(settings.caching if name == "load_data" else False)
    task.set_env_variable(PIPELINE_CONFIG_ENV, json.dumps(config.to_dict(), sort_keys=True))
    resources = settings.resources.get(name, settings.resources["pipeline_plumbing"])
    if name == "final_train":  # with replicas > 1 it only waits for its PyTorchJob: plan_run says what it gets
        channels = [
            plan.outputs[f"final_{key}"] for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
        ]
        _set_resources(task, *channels)
        task.register_pipeline_channels(channels)
    else:
        _set_resources(
            task, resources.cpu_request, resources.cpu_limit, resources.memory_request, resources.memory_limit
        )
    if name in GPU_TASKS and settings.gpu:
        prefix = PLACEMENT_OUTPUTS[name]
        gpus = plan.outputs[f"{prefix}_gpus"]
        task.set_accelerator_type(settings.gpu_accelerator).set_accelerator_limit(gpus)
        task.register_pipeline_channels([gpus])  # resource channels are not registered as task inputs by kfp
        kubernetes.add_node_selector_json(task, plan.outputs[f"{prefix}_node_selector"])
        kubernetes.add_toleration_json(task, plan.outputs[f"{prefix}_tolerations"])
    if name in MLFLOW_TASKS and settings.mlflow_secret:
        kubernetes.use_secret_as_env(
            task, settings.mlflow_secret, secret_key_to_env=settings.mlflow_secret_env, optional=True
        )
    if name in OPTUNA_TASKS and settings.optuna_secret:
        kubernetes.use_secret_as_env(
            task, settings.optuna_secret, secret_key_to_env={"url": OPTUNA_STORAGE_ENV}, optional=True
        )
    if settings.volume_claim:
        kubernetes.mount_pvc(task, pvc_name=settings.volume_claim, mount_path=settings.volume_mount_path)


def build_pipeline(config: ResumeNerConfig) -> "GraphComponent":
    """The ``resume-ner-training`` pipeline with the compile-time settings of ``config``; parameter defaults
    come from its sections (backbone, n_trials, epochs, model name, pipeline.*)."""

    from kfp import dsl
    from kfp.dsl import Dataset

    from resume_ner.kfp.components import build_components

    config = compiled_config(config)
    components = build_components(config.pipeline.image)
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
        gpu_count: int = settings.gpu_count if settings.gpu else 0,
        optuna_storage: str = "",
        study_name: str = "",
        workspace: str = default_workspace,
        promote: bool = config.final.promote,
        replicas: int = 1,
        overrides: list[str] = [],  # noqa: B006 - a KFP list parameter default
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        plan = None

        def task(name: str, **arguments: Any) -> "PipelineTask":
            # platform settings right away: a task's resource channels must exist when its group closes
            created = components[name](**arguments)
            _platform(name, created, config, plan)
            return created

        exit_task = task("end_pipeline_run", pipeline_run_id=run_id, mlflow_uri=mlflow_uri, overrides=overrides)
        with dsl.ExitHandler(exit_task, name="training"):
            plan = task(
                "plan_run",
                data_uri=data_uri,
                parallelism=parallelism,
                gpu_count=gpu_count,
                replicas=replicas,
                workspace=workspace,
                overrides=overrides,
            )
            start = task("start_pipeline_run", pipeline_run_id=run_id, mlflow_uri=mlflow_uri, overrides=overrides)
            if settings.data_source == "object_store":
                # KFP keys its cache by artifact id: a new artifact every run (reimport) never serves stale splits
                imported = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=True).after(plan)
                imported.set_display_name("import data")
                data = task("load_data", data=imported.output, overrides=overrides)
            else:
                data = task(
                    "load_data", data_uri=data_uri, data_digest=plan.outputs["data_digest"], overrides=overrides
                )
            splits = {key: data.outputs[key] for key in ("train_data", "validation_data", "test_data")}
            # Only pipeline parameters, artifacts and plan_run's placement enter the loop: kfp.local (2.17) replaces
            # every task-output parameter of a ParallelFor body with the loop item, so workers find the pipeline's
            # MLflow run by the pipeline run id instead of taking start_pipeline_run's output.
            with dsl.ParallelFor(plan.outputs["Output"], name="hpo-workers") as worker:
                trials = task(
                    "hpo_trial",
                    **splits,
                    optuna_storage=optuna_storage,
                    study_name=study_name,
                    n_trials=n_trials,
                    backbone=backbone,
                    epochs=epochs,
                    mlflow_uri=mlflow_uri,
                    overrides=overrides,
                    worker=worker,
                    gpu_count=gpu_count,
                    workspace=workspace,
                    pipeline_run_id=run_id,
                ).after(start)
            best = task(
                "select_best",
                optuna_storage=optuna_storage,
                study_name=study_name,
                overrides=overrides,
                pipeline_run_id=run_id,
            ).after(trials)
            final = task(
                "final_train",
                best_config=best.outputs["best_config"],
                **splits,
                backbone=backbone,
                epochs=epochs,
                mlflow_uri=mlflow_uri,
                model_name=model_name,
                overrides=overrides,
                replicas=replicas,
                gpu_count=gpu_count,
                workspace=workspace,
                pipeline_run_id=run_id,
            )
            task(
                "register_lineage",
                final_run_id=final.outputs["Output"],
                mlflow_uri=mlflow_uri,
                model_name=model_name,
                promote=promote,
                overrides=overrides,
            )

    return resume_ner_training


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Every string of a nested dict or list, by its dotted path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value} if isinstance(value, str) else {}


def _check_no_credentials(compiled: ResumeNerConfig) -> None:
    """``ConfigError`` naming every setting of ``compiled`` (the whole config goes into every task's environment)
    that holds a credential in plain text."""
    settings = _flatten(compiled.to_dict())
    found = [f"{name}={redact_credentials(value)}" for name, value in settings.items() if has_credentials(value)]
    if found:
        raise ConfigError(
            "the compiled pipeline would hold a credential in plain text: " + ", ".join(found) + ". Drop it from the "
            "setting: the tasks read MLflow credentials from the Secret of pipeline.mlflow_secret "
            "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) and the Optuna storage URL from the Secret of "
            "pipeline.optuna_secret"
        )


def check_cluster_target(config: ResumeNerConfig, *, force: bool = False) -> None:
    """``ConfigError`` listing what keeps a pipeline compiled from ``config`` from running on a KFP cluster: an
    image no cluster can pull (no registry), a CPU image (its tag does not name ``cuda``) with GPU tasks on
    (allowed with ``force``), volume data without a volume, and an MLflow store that is not a server."""
    image, settings = resolve_image(config), config.pipeline
    problems = []
    if not _REGISTRY_IMAGE.match(image):
        problems.append(
            f"image {image!r} names no registry, so no node can pull it: push it (make image; docker push) "
            f"and set ${IMAGE_ENV}=REGISTRY/resume-ner:TAG, e.g. myacr.azurecr.io/resume-ner:TAG-cuda"
        )
    tag = image.rpartition("/")[2].partition(":")[2]
    if settings.gpu and "cuda" not in tag and not force:
        problems.append(
            f"image {image!r} is the CPU image while the GPU tasks request GPUs (pipeline.gpu): use the "
            "-cuda image (make image-cuda), compile with --set pipeline.gpu=false, or pass --force"
        )
    if settings.data_source == "volume" and not settings.volume_claim:
        problems.append(
            "pipeline.data_source is 'volume' but no volume is mounted: set pipeline.volume_claim (the "
            "PersistentVolumeClaim of manifests/) or pipeline.data_source=object_store"
        )
    if not settings.mlflow_uri.startswith(("http://", "https://")):
        problems.append(
            f"pipeline.mlflow_uri {redact_credentials(settings.mlflow_uri)!r}: every pod needs the same "
            "MLflow server (http:// or https://), not a store of its own"
        )
    if problems:
        raise ConfigError("not compiled for a cluster:\n  " + "\n  ".join(problems))


def compile_all(
    out_root: str | Path, config: ResumeNerConfig, *, cluster: bool = False, force: bool = False
) -> list[Path]:
    """Write ``components/<name>.yaml`` for the five reusable components and ``pipelines/resume_ner_training.yaml``
    under ``out_root``; the files written. A compile-time setting holding a credential is a ``ConfigError``; so is,
    with ``cluster``, what ``check_cluster_target`` refuses."""
    from kfp import compiler

    from resume_ner.kfp.components import REUSABLE, build_components

    config = compiled_config(config)
    _check_no_credentials(config)
    if cluster:
        check_cluster_target(config, force=force)
    out_root = Path(out_root)
    components = build_components(config.pipeline.image)
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

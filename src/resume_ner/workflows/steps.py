"""The steps of the training pipeline as plain functions, one per Kubeflow component.

Each KFP component in ``resume_ner.kfp.components`` parses its typed inputs, calls one function here and
writes its typed outputs; nothing here imports ``kfp``. Steps exchange data as files (the three Doccano JSONL
splits, the best trial's JSON, the checkpoint directory) and MLflow run ids, so they run in separate
processes, pods or machines.

* ``pipeline_config``: the config a step runs with (the one the pipeline was compiled with, as JSON in
  ``$RESUME_NER_PIPELINE_CONFIG``, then the run's overrides and named parameters).
* ``plan_run_step``: check every run parameter before anything trains; the HPO workers, the GPU placement of
  the training tasks and the content digest of the data (``load_data``'s cache key).
* ``start_pipeline_step``: open the pipeline run's MLflow run (the parent of the runs below).
* ``prepare_data``: read, validate, split and fingerprint a dataset; write the splits.
* ``run_hpo_worker_step``: trials of the shared study until it has ``hpo.n_trials`` finished ones.
* ``select_best_step``: the best trial as JSON and an HTML report of the study.
* ``final_train_step``: train and test the best settings; the checkpoint directory.
* ``register_step``: register the final run's checkpoint and write its lineage.
* ``end_pipeline_step``: the exit handler: end the pipeline run's MLflow runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from resume_ner.config import ResumeNerConfig, load, load_dict
from resume_ner.data.dataset import load_dataset
from resume_ner.data.validation import dataset_stats
from resume_ner.data.writers import render_documents
from resume_ner.errors import ConfigError, TrackingError
from resume_ner.gpu_nodes import GPU_NODE_SIZES
from resume_ner.hpo.report import study_report_html
from resume_ner.hpo.select import best_trial_of
from resume_ner.hpo.study import load_existing_study
from resume_ner.hpo.sweep import run_hpo_worker
from resume_ner.io import content_digest, is_under, write_json_atomic, write_text_atomic
from resume_ner.layout import CONFIG_DIR_ENV, OPTUNA_STORAGE_ENV, PIPELINE_CONFIG_ENV, PIPELINE_NAME
from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri
from resume_ner.tracking.pipeline_run import end_pipeline_run, open_pipeline_run, with_pipeline_tracking
from resume_ner.workflows.final import register_final_model, run_final_training_workflow

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# The KFP launcher downloads input artifacts of these schemes only (backend 2.17 objectstore/config.go:137).
OBJECT_STORE_SCHEMES = ("s3", "minio", "gs")
AZURE_STORAGE_HOSTS = (".blob.core.windows.net", ".dfs.core.windows.net")
# The exit handler's state: kfp.local says SUCCEEDED; the KFP backend passes the MLMD execution state of the exit
# handler's DAG (COMPLETE, or CACHED when every task was cached; FAILED, CANCELED, RUNNING otherwise), with no
# error message (backend 2.17 driver/resolve.go:458-493).
SUCCESS_STATES = frozenset({"SUCCEEDED", "COMPLETE", "CACHED"})


def pipeline_config(
    overrides: Sequence[str] = (),
    *,
    backbone: str = "",
    epochs: int = 0,
    n_trials: int = 0,
    study_name: str = "",
    mlflow_uri: str = "",
    model_name: str = "",
    gpu_count: int = 0,
    pipeline_run_id: str = "",
) -> ResumeNerConfig:
    """The config of a pipeline step: the config the pipeline was compiled with (``$RESUME_NER_PIPELINE_CONFIG``;
    a component used outside the pipeline reads ``$RESUME_NER_CONFIG_DIR``, else the defaults), ``overrides``
    (``a.b=value``), then the pipeline's named parameters, each left unchanged when empty or 0.

    ``gpu_count`` > 0 sets ``training.device=cuda`` (a task given GPUs must use them). Without ``study_name``,
    a pipeline run gets its own study, ``<hpo.study_name>-<pipeline_run_id>``; name one to share or resume it.
    """
    named = {
        "model.backbone": backbone,
        "training.epochs": epochs,
        "hpo.n_trials": n_trials,
        "hpo.study_name": study_name,
        "tracking.tracking_uri": mlflow_uri,
        "tracking.registered_model_name": model_name,
        "training.device": "cuda" if gpu_count > 0 else "",
    }
    given = [f"{key}={json.dumps(value)}" for key, value in named.items() if value]
    compiled = os.environ.get(PIPELINE_CONFIG_ENV)
    if compiled:
        try:
            raw = json.loads(compiled)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"${PIPELINE_CONFIG_ENV} is not JSON ({exc}): recompile the pipeline") from None
        config = load_dict(raw, [*overrides, *given], f"${PIPELINE_CONFIG_ENV}")
    else:
        config = load(os.environ.get(CONFIG_DIR_ENV) or None, [*overrides, *given])
    if pipeline_run_id and not study_name:
        config.hpo.study_name = f"{config.hpo.study_name}-{pipeline_run_id}"  # validated on assignment
    return config


def local_path(uri: str) -> Path:
    """The local path of a data URI: a path, or ``file://`` URL (a mounted volume); ``ConfigError`` otherwise.

    A ``..`` segment is refused (a data URI names its data directly, it never climbs out of a directory), and so
    is a ``file://`` URL with a host other than ``localhost``.
    """
    if not uri.strip():
        raise ConfigError("data URI is empty: pass the file or directory of annotated resumes")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.scheme and parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"data URI {uri!r}: a file:// URL names a path on this machine (file:///mnt/...), not on host "
                f"{parsed.netloc!r}"
            )
        path = Path(unquote(parsed.path) if parsed.scheme else uri)
    elif len(parsed.scheme) == 1:  # a Windows drive letter
        path = Path(uri)
    else:
        raise ConfigError(
            f"data URI {uri!r}: only local paths and file:// URLs are read directly; put the data on the mounted "
            "volume (pipeline.volume_claim), or compile the pipeline with pipeline.data_source=object_store so KFP "
            "imports it from the object store as the `data` input artifact"
        )
    if ".." in path.parts:
        raise ConfigError(f"data URI {uri!r}: '..' segments are not allowed; give the path of the data itself")
    if not path.exists():
        raise ConfigError(f"data URI {uri!r}: {path} does not exist")
    return path


# --- plan_run --------------------------------------------------------------------------------------------------


@dataclass
class TaskPlacement:
    """Where a training task's pod goes: the accelerator limit ("" sets none: the KFP driver skips an empty count),
    node selector, tolerations, CPU and memory."""

    gpus: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass
class RunPlan:
    """What ``plan_run_step`` decided for a pipeline run."""

    workers: list[int]  # the HPO worker numbers the ParallelFor fans out over
    data_digest: str  # content digest of data on the volume; "" for data imported from the object store
    trial: TaskPlacement
    final: TaskPlacement

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def _placement(config: ResumeNerConfig, task: str, gpus: int, *, waits: bool = False) -> TaskPlacement:
    """``task``'s placement with ``gpus`` GPUs: on the GPU pool with its resources, or, without GPUs, off it; a
    task that only ``waits`` for a job gets the plumbing resources and no GPU."""
    settings = config.pipeline
    resources = settings.resources["pipeline_plumbing" if waits else task]
    on_gpus = settings.gpu and gpus > 0 and not waits
    return TaskPlacement(
        gpus=str(gpus) if on_gpus else "",
        node_selector=dict(settings.gpu_node_selector) if on_gpus else {},
        tolerations=[dict(t) for t in settings.gpu_tolerations] if on_gpus else [],
        cpu_request=resources.cpu_request,
        cpu_limit=resources.cpu_limit,
        memory_request=resources.memory_request,
        memory_limit=resources.memory_limit,
    )


def multi_node_problems(config: ResumeNerConfig, replicas: int, workspace: str) -> list[str]:
    """Why a final training of ``replicas`` nodes cannot run as a PyTorchJob here ([] when it can): its pods read the
    data and write the model on the shared volume, so the workspace must lie on it."""
    if replicas <= 1:
        return []
    mount = config.pipeline.volume_mount_path
    if not config.pipeline.volume_claim:
        return [
            f"replicas={replicas} trains as a PyTorchJob whose pods share the data and the model through a "
            "volume: compile the pipeline with pipeline.volume_claim (a ReadWriteMany PersistentVolumeClaim)"
        ]
    if not workspace or not is_under(workspace, mount):
        return [f"replicas={replicas}: workspace {workspace!r} must lie on the shared volume, under {mount}"]
    return []


def plan_run_step(
    config: ResumeNerConfig,
    *,
    data_uri: str,
    parallelism: int,
    gpu_count: int,
    replicas: int,
    workspace: str = "",
) -> RunPlan:
    """Check every parameter of a pipeline run before anything trains, and plan it: the HPO workers, the
    placement of ``hpo_trial`` (``gpu_count`` GPUs each) and ``final_train`` (``gpu_count`` GPUs; with
    ``replicas`` > 1 it only waits for its PyTorchJob, so no GPU and plumbing resources), and the content digest
    of the data (volume data only: imported data gets a new artifact, so a new cache key, every run).

    Every problem is reported at once in a ``ConfigError``."""
    settings = config.pipeline
    problems = []
    if parallelism < 1:
        problems.append(f"parallelism must be at least 1, got {parallelism}")
    if gpu_count < 0:
        problems.append(f"gpu_count must be 0 or more, got {gpu_count}")
    elif gpu_count > 0 and not settings.gpu:
        problems.append(
            f"gpu_count={gpu_count}, but the pipeline was compiled without GPU settings (pipeline.gpu: "
            "false): recompile it with pipeline.gpu=true, or run with gpu_count=0"
        )
    elif settings.gpu_node_vm_size and gpu_count > GPU_NODE_SIZES[settings.gpu_node_vm_size].gpus:
        problems.append(
            f"gpu_count={gpu_count}: a {settings.gpu_node_vm_size} node has "
            f"{GPU_NODE_SIZES[settings.gpu_node_vm_size].gpus} GPU(s), so the pod would never be scheduled"
        )
    if replicas < 1:
        problems.append(f"replicas must be at least 1, got {replicas}")
    problems += multi_node_problems(config, replicas, workspace)
    digest = ""
    try:
        if settings.data_source == "volume":
            digest = content_digest(local_path(data_uri))
        else:
            object_store_uri(data_uri)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("the pipeline run cannot start:\n  " + "\n  ".join(problems))
    return RunPlan(
        workers=list(range(parallelism)),
        data_digest=digest,
        trial=_placement(config, "hpo_trial", gpu_count),
        final=_placement(config, "final_train", gpu_count, waits=replicas > 1),
    )


def object_store_uri(uri: str) -> str:
    """``uri`` when the KFP launcher can download it (``s3://``, ``minio://``, ``gs://`` with a bucket and a key);
    ``ConfigError`` otherwise, saying what to do."""
    parsed = urlparse(uri.strip())
    if parsed.scheme in OBJECT_STORE_SCHEMES and parsed.netloc and parsed.path.strip("/"):
        return uri.strip()
    if parsed.netloc.endswith(AZURE_STORAGE_HOSTS) or parsed.scheme in ("az", "abfs", "abfss", "wasb", "wasbs"):
        hint = (
            "KFP 2.17 reads no Azure Blob URI: serve the container through an S3-compatible gateway configured "
            "in the kfp-launcher ConfigMap and pass its s3:// URI, or compile with pipeline.data_source=volume "
            "and copy the data onto the volume"
        )
    else:
        hint = (
            "pass s3://BUCKET/KEY, minio://BUCKET/KEY or gs://BUCKET/KEY (a file or a prefix), in the bucket of "
            "the pipeline root so the launcher reuses its credentials"
        )
    raise ConfigError(
        f"data URI {uri!r}: the pipeline was compiled for object-store data (pipeline.data_source: "
        f"object_store), which the KFP launcher downloads from {', '.join(OBJECT_STORE_SCHEMES)} URIs "
        f"only; {hint}"
    )


# --- load_data -----------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """What ``prepare_data`` found and wrote."""

    fingerprint: str
    documents: dict[str, int]  # per split
    entities_per_type: dict[str, int]  # over all splits
    report_markdown: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def _data_report(source: str, documents: Mapping[str, int], stats: Mapping[str, Any], fingerprint: str) -> str:
    lines = [f"# Dataset `{source}`", "", f"Fingerprint `{fingerprint}`", "", "| split | documents |", "|---|---:|"]
    lines += [f"| {split} | {count} |" for split, count in documents.items()]
    lines += [
        "",
        f"{stats['entities']} entities of {stats['entity_types']} types, {stats['characters']} characters "
        f"(median {stats['chars_per_document']['median']} per document, max "
        f"{stats['chars_per_document']['max']}).",
        "",
        "| entity type | count |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {count} |" for label, count in stats["entities_per_type"].items()]
    return "\n".join(lines) + "\n"


def prepare_data(data_uri: str, config: ResumeNerConfig, *, outputs: Mapping[str, str | Path]) -> PreparedData:
    """Read, validate, split and fingerprint ``data_uri``; write each split of ``outputs`` (train, validation,
    test -> file path) as Doccano JSONL. Bad data raises ``DataValidationError`` listing every problem."""
    missing = set(SPLITS) - set(outputs)
    if missing:
        raise ConfigError(f"prepare_data: no output path for split(s) {sorted(missing)}")
    dataset = load_dataset(local_path(data_uri), config.data)
    splits = {"train": dataset.train, "validation": dataset.validation, "test": dataset.test}
    for split in SPLITS:
        write_text_atomic(Path(outputs[split]), render_documents(splits[split], "doccano"))
    stats = dataset_stats(dataset.train + dataset.validation + dataset.test)
    documents = {split: len(docs) for split, docs in splits.items()}
    log.info("%s: %s document(s), fingerprint %s", data_uri, documents, dataset.fingerprint)
    return PreparedData(
        dataset.fingerprint,
        documents,
        dict(stats["entities_per_type"]),
        _data_report(data_uri, documents, stats, dataset.fingerprint),
    )


# --- shared by the training steps -----------------------------------------------------------------------------


def stage_splits(splits: Mapping[str, str | Path], directory: str | Path, *, copy: bool = False) -> Path:
    """A directory holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` linked to the split files
    (KFP artifact paths carry no extension), as ``data.dataset.load_dataset`` reads a directory of splits.

    ``copy`` copies them instead: the launcher downloads input artifacts into the task pod's own file system
    (``/s3/...``, ``/minio/...``, ``/gcs/...``), so a link to them means nothing in another pod."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        source = Path(splits[split]).resolve()
        if not source.is_file():
            raise ConfigError(f"{split} split {source} is not a file (expected the output of load_data)")
        target = directory / f"{split}.jsonl"
        target.unlink(missing_ok=True)
        if copy:
            shutil.copyfile(source, target)
            continue
        try:
            target.symlink_to(source)
        except OSError:  # a file system without symlinks
            shutil.copyfile(source, target)
    return directory


def pipeline_workspace(workspace: str, pipeline_run_id: str, name: str) -> Path:
    """``<workspace>/<pipeline run>/<name>`` on a shared volume, else a fresh temporary directory."""
    if workspace:
        path = Path(workspace) / (pipeline_run_id or "no-pipeline-run") / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"resume-ner-{name}-"))


def resolve_optuna_storage(storage: str) -> str:
    """``storage``, else ``$RESUME_NER_OPTUNA_STORAGE`` (the Secret of pipeline.optuna_secret in a cluster)."""
    resolved = storage or os.environ.get(OPTUNA_STORAGE_ENV, "")
    if not resolved:
        raise ConfigError(
            "no Optuna storage shared by the workers: pass the optuna_storage parameter (a sqlite path for a "
            f"local run, a PostgreSQL URL in a cluster) or set ${OPTUNA_STORAGE_ENV} (the Kubernetes Secret "
            "named by pipeline.optuna_secret, key 'url')"
        )
    return resolved


# --- hpo_trial / select_best ----------------------------------------------------------------------------------


def run_hpo_worker_step(
    config: ResumeNerConfig,
    *,
    splits: Mapping[str, str | Path],
    storage: str,
    worker: int,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> Any:
    """One worker of the shared study (``hpo.sweep.run_hpo_worker``) on the split files; its ``WorkerSummary``.
    With ``pipeline_run_id`` its runs are tagged with it and nest under the pipeline run's MLflow run."""
    config = with_pipeline_tracking(config, pipeline_run_id)
    work = pipeline_workspace(workspace, pipeline_run_id, f"hpo-worker-{worker}")
    data_dir = stage_splits(splits, work / "data")
    return run_hpo_worker(
        config,
        study_name=config.hpo.study_name,
        storage=resolve_optuna_storage(storage),
        n_trials=config.hpo.n_trials,
        data_path=data_dir,
        output_dir=work,
        worker=worker,
    )


def select_best_step(config: ResumeNerConfig, *, storage: str, best_path: str | Path, report_path: str | Path) -> Any:
    """The best trial of ``hpo.study_name``: its ``BestTrial`` JSON at ``best_path``, the study's HTML report at
    ``report_path``; returns the ``BestTrial``."""
    study = load_existing_study(resolve_optuna_storage(storage), config.hpo.study_name)
    write_text_atomic(Path(report_path), study_report_html(study))
    best = best_trial_of(study)
    write_json_atomic(Path(best_path), best.to_dict())
    return best


# --- final_train / register_lineage ---------------------------------------------------------------------------


@dataclass
class FinalStepResult:
    """The final training of a pipeline run: its MLflow run, test metrics and checkpoint."""

    run_id: str | None
    tracking_uri: str | None
    test_metrics: dict[str, Any]
    model_dir: Path


def final_train_step(
    config: ResumeNerConfig,
    *,
    best_path: str | Path,
    splits: Mapping[str, str | Path],
    model_path: str | Path,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> FinalStepResult:
    """Train the best trial's settings (JSON at ``best_path``) in this pod and test them; the checkpoint goes to
    ``model_path``. Registration is the next step: nothing is registered here, but a lost MLflow call fails
    the step, since the registry would point at an incomplete run. (Across nodes: ``k8s.final``.)
    """
    config = with_pipeline_tracking(config, pipeline_run_id)
    work = pipeline_workspace(workspace, pipeline_run_id, "final")
    data_dir = stage_splits(splits, work / "data")
    output = work / "output"
    best = json.loads(Path(best_path).read_text(encoding="utf-8"))
    outcome = run_final_training_workflow(
        config, output, data_path=data_dir, best=best, register=False, quiet=True, overwrite=True
    )
    if outcome.tracking_lost:
        raise TrackingError(
            "final training finished, but MLflow calls were lost, so it cannot be registered: "
            + "; ".join(outcome.tracking_lost[:3])
            + f". The model is in {output}"
        )
    model = keep_model(Path(outcome.train_result.model_dir), model_path)
    return FinalStepResult(outcome.run_id, config.tracking.tracking_uri, outcome.test_metrics or {}, model)


def keep_model(model_dir: Path, model_path: str | Path) -> Path:
    """Copy the checkpoint ``model_dir`` to the task's Model artifact ``model_path`` (replacing it); its path."""
    target = Path(model_path)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    return target


def register_step(
    config: ResumeNerConfig,
    *,
    run_id: str,
    lineage_path: str | Path,
    promote: bool | None = None,
    tracking_uri: str | None = None,
) -> tuple[Any, Any]:
    """Register the checkpoint of the final training run ``run_id`` as a new version of
    ``tracking.registered_model_name`` and write its lineage JSON; returns (``RegisteredVersion``, ``Lineage``).
    The store is ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``."""
    if not run_id:
        raise ConfigError("register: the final training step has no MLflow run (was tracking off?)")
    run = TrackingRun.attach(run_id, resolve_tracking_uri(tracking_uri, config.tracking))
    registered, lineage, _ = register_final_model(
        run,
        name=config.tracking.registered_model_name,
        promote=config.final.promote if promote is None else promote,
        lineage_path=lineage_path,
    )
    return registered, lineage


# --- the pipeline run's MLflow run -----------------------------------------------------------------------------


def start_pipeline_step(config: ResumeNerConfig, *, pipeline_run_id: str) -> str:
    """Open (or, for a retried task, find again) the MLflow run of ``pipeline_run_id``, left RUNNING for the
    exit handler; its id, or "" when tracking is off or unreachable."""
    run = open_pipeline_run(config.tracking, pipeline_run_id, PIPELINE_NAME)
    if run.enabled:
        run.log_params({"pipeline_run_id": pipeline_run_id, **config.to_dict()})
    return run.run_id if run.enabled and run.run_id is not None else ""  # an enabled run has an id


# --- exit handler ---------------------------------------------------------------------------------------------


def end_pipeline_step(config: ResumeNerConfig, *, pipeline_run_id: str, final_status: Mapping[str, Any]) -> list[str]:
    """End the MLflow runs of ``pipeline_run_id`` by the pipeline's final status (KFP's
    ``PipelineTaskFinalStatus``: ``state`` one of ``SUCCESS_STATES`` or a failure, ``error_message``, empty on the
    KFP backend); the ids of the runs ended."""
    state = str(final_status.get("state") or "").upper()
    succeeded = state in SUCCESS_STATES
    error = None if succeeded else (final_status.get("error_message") or f"pipeline ended {state or 'without a state'}")
    return end_pipeline_run(config.tracking, pipeline_run_id, succeeded=succeeded, error=error)

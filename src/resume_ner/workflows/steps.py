"""The steps of the training pipeline as plain functions, one per Kubeflow component.

Each KFP component in ``resume_ner.kfp.components`` parses its typed inputs, calls one function here and
writes its typed outputs; nothing here imports ``kfp``. Steps exchange data as files (the three Doccano JSONL
splits, the best trial's JSON, the checkpoint directory) and MLflow run ids, so they run in separate
processes, pods or machines.

* ``pipeline_config``: the config a step runs with.
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
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from resume_ner.config import ResumeNerConfig, load
from resume_ner.errors import ConfigError
from resume_ner.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

PIPELINE_NAME = "resume-ner-training"
CONFIG_DIR_ENV = "RESUME_NER_CONFIG_DIR"
OPTUNA_STORAGE_ENV = "RESUME_NER_OPTUNA_STORAGE"
SPLITS = ("train", "validation", "test")


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
    """The config of a pipeline step: ``$RESUME_NER_CONFIG_DIR`` (else the defaults), ``overrides``
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
            "volume (pipeline.volume_claim), or pass it as the `data` input artifact (dsl.importer) so KFP "
            "downloads it from the object store"
        )
    if ".." in path.parts:
        raise ConfigError(f"data URI {uri!r}: '..' segments are not allowed; give the path of the data itself")
    if not path.exists():
        raise ConfigError(f"data URI {uri!r}: {path} does not exist")
    return path


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
    lines = [f"# Dataset `{source}`", "", f"Fingerprint `{fingerprint}`", "",
             "| split | documents |", "|---|---:|"]
    lines += [f"| {split} | {count} |" for split, count in documents.items()]
    lines += ["", f"{stats['entities']} entities of {stats['entity_types']} types, {stats['characters']} characters "
              f"(median {stats['chars_per_document']['median']} per document, max "
              f"{stats['chars_per_document']['max']}).", "", "| entity type | count |", "|---|---:|"]
    lines += [f"| {label} | {count} |" for label, count in stats["entities_per_type"].items()]
    return "\n".join(lines) + "\n"


def prepare_data(data_uri: str, config: ResumeNerConfig, *, outputs: Mapping[str, str | Path]) -> PreparedData:
    """Read, validate, split and fingerprint ``data_uri``; write each split of ``outputs`` (train, validation,
    test -> file path) as Doccano JSONL. Bad data raises ``DataValidationError`` listing every problem."""
    from resume_ner.data.dataset import load_dataset
    from resume_ner.data.validation import dataset_stats
    from resume_ner.data.writers import render_documents

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
    return PreparedData(dataset.fingerprint, documents, dict(stats["entities_per_type"]),
                        _data_report(data_uri, documents, stats, dataset.fingerprint))


# --- shared by the training steps -----------------------------------------------------------------------------


def stage_splits(splits: Mapping[str, str | Path], directory: str | Path) -> Path:
    """A directory holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` linked to the split files
    (KFP artifact paths carry no extension), as ``data.dataset.load_dataset`` reads a directory of splits."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        source = Path(splits[split]).resolve()
        if not source.is_file():
            raise ConfigError(f"{split} split {source} is not a file (expected the output of load_data)")
        link = directory / f"{split}.jsonl"
        link.unlink(missing_ok=True)
        try:
            link.symlink_to(source)
        except OSError:  # a file system without symlinks
            shutil.copyfile(source, link)
    return directory


def _workspace(workspace: str, pipeline_run_id: str, name: str) -> Path:
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
    from resume_ner.hpo.sweep import run_hpo_worker
    from resume_ner.tracking.pipeline_run import with_pipeline_tracking

    config = with_pipeline_tracking(config, pipeline_run_id)
    work = _workspace(workspace, pipeline_run_id, f"hpo-worker-{worker}")
    data_dir = stage_splits(splits, work / "data")
    return run_hpo_worker(config, study_name=config.hpo.study_name, storage=resolve_optuna_storage(storage),
                          n_trials=config.hpo.n_trials, data_path=data_dir, output_dir=work, worker=worker)


def select_best_step(config: ResumeNerConfig, *, storage: str, best_path: str | Path, report_path: str | Path) -> Any:
    """The best trial of ``hpo.study_name``: its ``BestTrial`` JSON at ``best_path``, the study's HTML report at
    ``report_path``; returns the ``BestTrial``."""
    from resume_ner.hpo.report import study_report_html
    from resume_ner.hpo.select import best_trial_of
    from resume_ner.hpo.study import load_existing_study

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
    replicas: int = 1,
    gpu_count: int = 0,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> FinalStepResult:
    """Train the best trial's settings (JSON at ``best_path``) and test them; the checkpoint goes to
    ``model_path``. Registration is the next step: nothing is registered here, but a lost MLflow call fails
    the step, since the registry would point at an incomplete run.

    ``replicas`` > 1 trains data-parallel across nodes as a Kubeflow PyTorchJob (``final_pytorchjob``; this
    pod waits for it): ``workspace`` must then be on the shared volume that its pods mount too.
    """
    from resume_ner.errors import TrackingError
    from resume_ner.tracking.pipeline_run import with_pipeline_tracking
    from resume_ner.workflows.final import run_final_training_workflow

    if replicas > 1 and not (workspace and config.pipeline.volume_claim):
        raise ConfigError(
            f"final training with replicas={replicas} runs as a PyTorchJob whose pods read the data and write the "
            "model on a shared volume: compile the pipeline with pipeline.volume_claim (a ReadWriteMany "
            "PersistentVolumeClaim) and pass a workspace under its mount path"
        )
    config = with_pipeline_tracking(config, pipeline_run_id)
    work = _workspace(workspace, pipeline_run_id, "final")
    data_dir = stage_splits(splits, work / "data")
    output = work / "output"
    if replicas > 1:
        from resume_ner.k8s.pytorchjob import current_namespace, submit_pytorchjob_and_wait
        from resume_ner.training.trainer import RESULT_FILE
        from resume_ner.workflows.training import TEST_METRICS_FILE

        namespace = current_namespace()
        job = final_pytorchjob(config, best_path=best_path, data_dir=data_dir, work=work, namespace=namespace,
                               replicas=replicas, gpu_count=gpu_count, pipeline_run_id=pipeline_run_id)
        submit_pytorchjob_and_wait(job, namespace=namespace)
        result = json.loads((output / RESULT_FILE).read_text(encoding="utf-8"))
        run_id, model_dir = result.get("run_id"), Path(result["model_dir"])
        test_metrics = json.loads((output / TEST_METRICS_FILE).read_text(encoding="utf-8"))
    else:
        best = json.loads(Path(best_path).read_text(encoding="utf-8"))
        outcome = run_final_training_workflow(config, output, data_path=data_dir, best=best, register=False,
                                              quiet=True, overwrite=True)
        if outcome.tracking_lost:
            raise TrackingError("final training finished, but MLflow calls were lost, so it cannot be registered: "
                                + "; ".join(outcome.tracking_lost[:3]) + f". The model is in {output}")
        run_id, model_dir, test_metrics = outcome.run_id, Path(outcome.train_result.model_dir), outcome.test_metrics
    target = Path(model_path)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    return FinalStepResult(run_id, config.tracking.tracking_uri, test_metrics or {}, target)


def final_pytorchjob(
    config: ResumeNerConfig,
    *,
    best_path: str | Path,
    data_dir: Path,
    work: Path,
    namespace: str,
    replicas: int,
    gpu_count: int,
    pipeline_run_id: str = "",
) -> dict[str, Any]:
    """The PyTorchJob of a multi-node final training: ``replicas`` nodes of ``gpu_count`` GPUs (one process per
    GPU; one per node on CPU) running ``resume-ner final-train --no-register`` with this step's resolved config
    (written to ``<work>/config``) into ``<work>/output``."""
    from resume_ner.config import save_sections
    from resume_ner.k8s.pytorchjob import build_pytorchjob

    config_dir = save_sections(config, work / "config")
    args = ["final-train", "--config-dir", str(config_dir), "--best-json", str(best_path), "--data", str(data_dir),
            "--output-dir", str(work / "output"), "--no-register", "--overwrite", "--quiet"]
    name = "resume-ner-final-" + (re.sub(r"[^a-z0-9-]", "", pipeline_run_id.lower())[:24].strip("-") or "run")
    return build_pytorchjob(config, name=name, namespace=namespace, replicas=replicas,
                            nproc_per_node=max(gpu_count, 1), gpus_per_replica=gpu_count, args=args,
                            entrypoint="resume_ner.cli.main")


def register_step(
    config: ResumeNerConfig, *, run_id: str, lineage_path: str | Path, promote: bool | None = None,
    tracking_uri: str | None = None,
) -> tuple[Any, Any]:
    """Register the checkpoint of the final training run ``run_id`` as a new version of
    ``tracking.registered_model_name`` and write its lineage JSON; returns (``RegisteredVersion``, ``Lineage``).
    The store is ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``."""
    from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri
    from resume_ner.workflows.final import register_final_model

    if not run_id:
        raise ConfigError("register: the final training step has no MLflow run (was tracking off?)")
    run = TrackingRun.attach(run_id, resolve_tracking_uri(tracking_uri, config.tracking))
    registered, lineage, _ = register_final_model(
        run, name=config.tracking.registered_model_name,
        promote=config.final.promote if promote is None else promote, lineage_path=lineage_path,
    )
    return registered, lineage


# --- the pipeline run's MLflow run -----------------------------------------------------------------------------


def start_pipeline_step(config: ResumeNerConfig, *, pipeline_run_id: str) -> str:
    """Open (or, for a retried task, find again) the MLflow run of ``pipeline_run_id``, left RUNNING for the
    exit handler; its id, or "" when tracking is off or unreachable."""
    from resume_ner.tracking.pipeline_run import open_pipeline_run

    run = open_pipeline_run(config.tracking, pipeline_run_id, PIPELINE_NAME)
    if run.enabled:
        run.log_params({"pipeline_run_id": pipeline_run_id, **config.to_dict()})
    return run.run_id if run.enabled else ""


# --- exit handler ---------------------------------------------------------------------------------------------


def end_pipeline_step(config: ResumeNerConfig, *, pipeline_run_id: str, final_status: Mapping[str, Any]) -> list[str]:
    """End the MLflow runs of ``pipeline_run_id`` by the pipeline's final status (KFP's
    ``PipelineTaskFinalStatus``: ``state`` SUCCEEDED or else, ``error_message``); the ids of the runs ended."""
    from resume_ner.tracking.pipeline_run import end_pipeline_run

    state = str(final_status.get("state", "")).upper()
    succeeded = state == "SUCCEEDED"
    error = None if succeeded else (final_status.get("error_message") or f"pipeline ended {state or 'without a state'}")
    return end_pipeline_run(config.tracking, pipeline_run_id, succeeded=succeeded, error=error)

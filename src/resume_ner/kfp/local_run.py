"""Run the ``resume-ner-training`` pipeline on this machine with ``kfp.local``.

Each task runs as a subprocess of the current Python environment (``SubprocessRunner(use_venv=False)``), or in a
container of the pipeline's image (``kfp.container_runner``), HPO workers two at a time, with a local MLflow store
and a sqlite Optuna storage shared by the workers.
Artifacts land under ``<output_dir>/pipeline_root/resume-ner-training-<timestamp>/<task>/<output>``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resume_ner.config import ResumeNerConfig
from resume_ner.errors import ResumeNerError
from resume_ner.kfp.container_runner import container_runner, container_tracking_uri
from resume_ner.kfp.local_console import local_console
from resume_ner.kfp.pipelines import build_pipeline
from resume_ner.layout import PIPELINE_NAME
from resume_ner.tracking.mlflow import resolve_tracking_uri

log = logging.getLogger(__name__)

PIPELINE_ROOT_DIRNAME = "pipeline_root"
LOCAL_MAX_WORKERS = 2  # kfp.local runs at most two ParallelFor iterations at once


@dataclass
class LocalRunSummary:
    """Where a finished local pipeline run put its results."""

    run_dir: Path  # <pipeline_root>/resume-ner-training-<timestamp>
    lineage: dict[str, Any]  # the lineage JSON of the registered version
    model_dir: Path  # the final checkpoint (the final_train task's Model artifact)
    best_config: dict[str, Any]  # the select_best task's BestTrial JSON
    wall_seconds: float
    tracking_uri: str
    optuna_storage: str
    log_path: Path  # everything kfp.local and the tasks printed

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>`` of the registered version."""
        return f"models:/{self.lineage['model_name']}/{self.lineage['version']}"


def _artifact(run_dir: Path, task: str, output: str) -> Path:
    found = sorted(run_dir.glob(f"**/{task}/{output}"))
    if not found:
        raise ResumeNerError(f"local pipeline run {run_dir}: no {task}/{output} artifact (did the task run?)")
    return found[-1]


def _threads_override(config: ResumeNerConfig, parallelism: int) -> list[str]:
    """Split this machine's cores between the HPO workers that run at once (unless the user set hpo.num_threads)."""
    at_once = max(1, min(parallelism, LOCAL_MAX_WORKERS))
    if config.hpo.num_threads or at_once == 1:
        return []
    return [f"hpo.num_threads={max(1, (os.cpu_count() or 1) // at_once)}"]


def run_local(
    config: ResumeNerConfig,
    *,
    data_uri: str | Path,
    output_dir: str | Path,
    parallelism: int | None = None,
    containers: bool = False,
    verbose: bool = False,
) -> LocalRunSummary:
    """Run the whole pipeline locally on ``data_uri`` with ``config``, which every task gets as the pipeline's
    compile-time config (as on a cluster). With ``containers`` each task runs in a container of the pipeline's
    image (``container_runner``: kfp.local's DockerRunner), else as a subprocess of this Python.

    The MLflow URI is ``resolve_tracking_uri``'s (in containers, its default is
    ``<output_dir>/mlruns/mlflow.db``, which they can write); the Optuna
    storage ``hpo.storage`` or ``<output_dir>/hpo/optuna.db`` (one study per pipeline run). What kfp.local and
    the tasks print goes to ``<output_dir>/logs/pipeline-<timestamp>.log``; the console shows each task's start
    and end, training progress and problems (``local_console``), or everything with ``verbose``. Raises
    ``ResumeNerError`` naming the task that failed (the end of its output is printed above).
    """
    import kfp.local

    output_dir = Path(output_dir).resolve()
    root = output_dir / PIPELINE_ROOT_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    parallelism = parallelism or config.pipeline.parallelism
    storage = config.hpo.storage or str(output_dir / "hpo" / "optuna.db")
    if "://" not in storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(None, config.tracking) if config.tracking.enabled else ""
    if containers:
        tracking_uri = container_tracking_uri(config.tracking, output_dir) if config.tracking.enabled else ""
        runner = container_runner(config, data_uri=data_uri, output_dir=output_dir, tracking_uri=tracking_uri)
    else:
        runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    pipeline = build_pipeline(config)
    before = set(root.iterdir())
    log_path = output_dir / "logs" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.log"
    print(f"full log: {log_path}", flush=True)
    started = time.monotonic()
    try:
        with local_console(log_path, verbose=verbose), warnings.catch_warnings():
            # Kubernetes settings (resources, image) have no effect here, as kfp.local says for every task.
            warnings.filterwarnings("ignore", message=".*(no effect in the current local runner|non-Python base image)")
            pipeline(
                data_uri=str(data_uri),
                parallelism=parallelism,
                mlflow_uri=tracking_uri,
                optuna_storage=storage,
                workspace=str(output_dir / "work"),
                gpu_count=0,
                overrides=_threads_override(config, parallelism),
            )
    except RuntimeError as exc:
        if "finished with status" not in str(exc):
            raise
        raise ResumeNerError(
            f"local pipeline run failed: {exc} (the end of the task's output is above, all of it in "
            f"{log_path}; artifacts in {root})"
        ) from None
    wall = time.monotonic() - started
    new = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    run_dirs = [p for p in new if p.name.startswith(PIPELINE_NAME)]
    if not run_dirs:
        raise ResumeNerError(f"local pipeline run finished, but left no run directory under {root}")
    run_dir = run_dirs[-1]
    return LocalRunSummary(
        run_dir=run_dir,
        lineage=json.loads(_artifact(run_dir, "register-lineage", "lineage").read_text(encoding="utf-8")),
        model_dir=_artifact(run_dir, "final-train", "model"),
        best_config=json.loads(_artifact(run_dir, "select-best", "best_config").read_text(encoding="utf-8")),
        wall_seconds=wall,
        tracking_uri=tracking_uri,
        optuna_storage=storage,
        log_path=log_path,
    )

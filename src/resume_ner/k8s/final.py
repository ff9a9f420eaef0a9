"""The final training of a pipeline run across nodes: the ``final_train`` task with ``replicas`` > 1 renders a
Kubeflow PyTorchJob of ``resume-ner final-train --no-register`` with its resolved config, submits it in its own
namespace and waits for it, then returns the model the job's rank 0 wrote. The job's pods share nothing with the
launching pod but the volume ``pipeline.volume_claim``: everything the job reads is copied onto it first (KFP
downloads input artifacts into the launching pod's own file system, ``/s3/...``), and any path off it is refused.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resume_ner.config import ResumeNerConfig, save_sections
from resume_ner.errors import ConfigError
from resume_ner.io import is_under
from resume_ner.k8s.pytorchjob import build_pytorchjob, current_namespace, submit_pytorchjob_and_wait
from resume_ner.layout import RESULT_FILE, TEST_METRICS_FILE
from resume_ner.tracking.pipeline_run import with_pipeline_tracking
from resume_ner.workflows.steps import (
    FinalStepResult,
    keep_model,
    multi_node_problems,
    pipeline_workspace,
    stage_splits,
)

CLI_MODULE = "resume_ner.cli.main"  # the job's pods run `python -m resume_ner.cli.main final-train ...`


def final_train_on_pytorchjob(
    config: ResumeNerConfig,
    *,
    best_path: str | Path,
    splits: Mapping[str, str | Path],
    model_path: str | Path,
    replicas: int,
    gpu_count: int = 0,
    workspace: str = "",
    pipeline_run_id: str = "",
) -> FinalStepResult:
    """Train the best trial's settings (JSON at ``best_path``) on ``replicas`` nodes of ``gpu_count`` GPUs as a
    PyTorchJob (``final_pytorchjob``), wait for it, and copy its checkpoint to ``model_path``. ``workspace`` must
    lie on the shared volume that the job's pods mount too."""
    problems = multi_node_problems(config, replicas, workspace)
    if problems:
        raise ConfigError(problems[0])
    config = with_pipeline_tracking(config, pipeline_run_id)
    work = pipeline_workspace(workspace, pipeline_run_id, "final")
    data_dir = stage_splits(splits, work / "data", copy=True)
    staged_best = work / "best_trial.json"  # the artifact is in this pod only, as the splits are
    shutil.copyfile(best_path, staged_best)
    namespace = current_namespace()
    job = final_pytorchjob(
        config,
        best_path=staged_best,
        data_dir=data_dir,
        work=work,
        namespace=namespace,
        replicas=replicas,
        gpu_count=gpu_count,
        pipeline_run_id=pipeline_run_id,
    )
    submit_pytorchjob_and_wait(job, namespace=namespace)
    output = work / "output"
    result = json.loads((output / RESULT_FILE).read_text(encoding="utf-8"))
    test_metrics = json.loads((output / TEST_METRICS_FILE).read_text(encoding="utf-8"))
    model = keep_model(Path(result["model_dir"]), model_path)
    return FinalStepResult(result.get("run_id"), config.tracking.tracking_uri, test_metrics or {}, model)


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
    (written to ``<work>/config``) into ``<work>/output``. Every path it reads or writes must lie on the shared
    volume (``ConfigError`` naming the others): nothing else of this pod exists in the job's pods."""
    claim, mount = config.pipeline.volume_claim, config.pipeline.volume_mount_path
    if not claim:
        raise ConfigError(
            "a PyTorchJob's pods share nothing with this pod but a volume, and pipeline.volume_claim is not set"
        )
    elsewhere = [str(path) for path in (best_path, data_dir, work) if not is_under(path, mount)]
    if elsewhere:
        raise ConfigError(f"the PyTorchJob's pods see the volume {claim!r} at {mount}, not {', '.join(elsewhere)}")
    config_dir = save_sections(config, work / "config")
    args = [
        "final-train",
        "--config-dir",
        str(config_dir),
        "--best-json",
        str(best_path),
        "--data",
        str(data_dir),
        "--output-dir",
        str(work / "output"),
        "--no-register",
        "--overwrite",
        "--quiet",
    ]
    name = "resume-ner-final-" + (re.sub(r"[^a-z0-9-]", "", pipeline_run_id.lower())[:24].strip("-") or "run")
    return build_pytorchjob(
        config,
        name=name,
        namespace=namespace,
        replicas=replicas,
        nproc_per_node=max(gpu_count, 1),
        gpus_per_replica=gpu_count,
        args=args,
        entrypoint=CLI_MODULE,
    )

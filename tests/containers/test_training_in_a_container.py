"""The container entrypoint of remote jobs (PyTorchJob, AzureML), `python -m resume_ner.cli.train`, trains
the packaged MiniLM on synthetic resumes inside the image, with no network, as the image's user."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.containers import docker_run


def test_the_training_entrypoint_trains_on_synthetic_resumes(docker_env, image, tmp_path: Path, tier_figures):
    import time

    work = tmp_path / "work"
    work.mkdir()
    if os.getuid() == 0:  # the image's user writes the outputs
        os.chown(work, 10001, 10001)
    else:
        work.chmod(0o777)
    mount = ("-v", f"{work}:/work")
    synth = docker_run(docker_env, image, "data", "synth", "--n", "24", "--seed", "3", "--output-dir", "/work/data",
                       options=mount)
    assert synth.returncode == 0, synth.stderr
    started = time.monotonic()
    trained = docker_run(
        docker_env, image, "python3", "-m", "resume_ner.cli.train", "--data-asset", "/work/data",
        "--output-dir", "/work/out", "--set", "training.epochs=1", "--set", "model.max_length=64",
        "--set", "model.stride=16", "--set", "tracking.enabled=false", options=mount)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    tier_figures["entrypoint training"] = f"{time.monotonic() - started:.0f}s"
    model = work / "out" / "model"
    assert {"config.json", "model.safetensors", "resume_ner.json", "crf.safetensors"} <= {p.name for p in
                                                                                          model.iterdir()}
    metrics = json.loads((work / "out" / "test_metrics.json").read_text())
    assert metrics["documents"] > 0 and 0.0 <= metrics["f1_micro"] <= 1.0

"""`make run` runs `resume-ner demo`: every step of the local workflow shows up, and a rerun resumes the study."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(900)
def test_demo_runs_the_whole_local_workflow_and_reruns(tiny_backbone, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-m", "resume_ner.cli.main", "demo", "--n", "30", "--quiet",
               "--set", f"model.backbone={tiny_backbone}", "--set", "training.learning_rate=1e-3",
               "--set", "training.epochs=2", "--set", "training.num_threads=1"]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=800)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    for step in ("1. synthesised 30 resumes", "2. HPO sweep 'demo'", "3. final model:", "4. registered models:/resume-ner/1",
                 "5. lineage", "6. entities extracted", "7. test metrics", "micro", "macro"):
        assert step in out, step
    assert out.count("COMPLETE") + out.count("PRUNED") == 4
    assert "champion" in out and "<- best trial" in out and "fingerprint" in out

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=800)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("COMPLETE") + second.stdout.count("PRUNED") == 4  # study resumed, not re-run
    assert "registered models:/resume-ner/2" in second.stdout

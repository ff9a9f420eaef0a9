"""`make run`'s scenario with every task in a container of the image (kfp.local's DockerRunner, as a KFP launcher
runs a component: `sh -ec ... python3 -m kfp.dsl.executor_main` under the image's entrypoint): the same summary,
registered model and lineage as the subprocess run; and an image that cannot run components is refused first."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_pipeline(env: dict[str, str], output_dir: Path, *extra: str,
                  timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resume_ner.cli.main", "pipeline", "run", "--local", "--containers",
                           "--output-dir", str(output_dir), *extra], cwd=output_dir.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_pipeline_runs_with_every_task_in_a_container(docker_env, image, tmp_path: Path, tier_figures):
    started = time.monotonic()
    done = _run_pipeline({**docker_env, "RESUME_NER_IMAGE": image}, tmp_path / "run")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    tier_figures["pipeline in containers"] = f"{time.monotonic() - started:.0f}s"
    out = done.stdout
    for line in ("pipeline resume-ner-training SUCCEEDED", "best trial  #", "test        f1_micro",
                 "registered  models:/resume-ner/1", "<- best trial", "entities extracted"):
        assert line in out, line
    assert f"at sqlite:///{tmp_path / 'run' / 'mlruns' / 'mlflow.db'}" in out  # the store the containers wrote
    [lineage_file] = (tmp_path / "run" / "pipeline_root").glob("*/register-lineage/lineage")
    lineage = json.loads(lineage_file.read_text())
    assert str(lineage["version"]) == "1" and len(lineage["trials"]) == 4
    assert len(out.splitlines()) <= 80, out  # a line per task start and end, progress, the summary
    [log] = (tmp_path / "run" / "logs").glob("pipeline-*.log")
    assert f"full log: {log}" in out
    assert "Found image" in log.read_text(encoding="utf-8")  # kfp.local ran the tasks with the DockerRunner


@pytest.fixture(scope="module")
def broken_images(docker_env, image) -> dict[str, str]:
    """Images made from the good one: without kfp, and with an entrypoint that swallows the command."""
    def commit(name: str, script: str, change: list[str]) -> str:
        container = f"resume-ner-make-{name}"
        subprocess.run(["docker", "rm", "-f", container], env=docker_env, capture_output=True)
        subprocess.run(["docker", "run", "--name", container, "--user", "0", "--entrypoint", "sh", image, "-ec",
                        script], env=docker_env, check=True, capture_output=True)
        # the run's --user and --entrypoint are not the image's: put the image's back, then the change
        restore = ["--change", "USER 10001", "--change", 'ENTRYPOINT ["resume-ner-entrypoint"]']
        subprocess.run(["docker", "commit", *restore, *change, container, f"resume-ner-broken:{name}"],
                       env=docker_env, check=True, capture_output=True)
        subprocess.run(["docker", "rm", "-f", container], env=docker_env, capture_output=True)
        return f"resume-ner-broken:{name}"

    return {
        "no-kfp": commit("no-kfp", "rm -rf /opt/venv/lib/python3.11/site-packages/kfp", []),
        "entrypoint": commit("entrypoint", "true", ["--change", 'ENTRYPOINT ["resume-ner"]']),
    }


@pytest.mark.parametrize(("broken", "expected"), [
    ("no-kfp", "No module named 'kfp'"),
    ("entrypoint", "under its entrypoint ['resume-ner'] exited 2"),
])
def test_an_image_that_cannot_run_a_component_is_refused_before_any_task(docker_env, broken_images, tmp_path, broken,
                                                                         expected):
    done = _run_pipeline({**docker_env, "RESUME_NER_IMAGE": broken_images[broken]}, tmp_path / "run", timeout=300)
    assert done.returncode == 1
    assert f"error: image '{broken_images[broken]}' cannot run a KFP component" in done.stderr
    assert expected in done.stderr
    assert "build it from images/Dockerfile" in done.stderr
    assert not list((tmp_path / "run" / "pipeline_root").glob("*/plan-run"))  # no task ran

"""The container tier (`make test-containers`): a real Docker engine, the image built from images/Dockerfile, and
the CLI, the training entrypoint and the whole pipeline run inside it.

The engine is $DOCKER_HOST, else the local one, else a private dockerd started here (images/dockerd.sh: root, data
root in the cache so images and layers survive for the next run) and stopped at the end. No registry is reachable
on these machines, so the image is built on the Debian base of images/base-image.sh, from the wheelhouse of
images/wheelhouse.sh (both cached under $RESUME_NER_CACHE, keyed by what they are made of), with
RESUME_NER_BASE_IMAGE=python:3.11.13-slim-bookworm to build on the public base where a registry is reachable.
The tier ends with one line: the image's size and the time each step took.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.containers import engine_answers
from support.project_image import build_project_image, run_or_fail

REPO = Path(__file__).resolve().parents[2]
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """The environment of docker commands (DOCKER_HOST of a running engine), a private engine started if need be."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx plugin, no frontend image to pull
    if engine_answers(env):
        yield env
        return
    started = time.monotonic()
    host = run_or_fail([str(REPO / "images" / "dockerd.sh"), "start"], env).stdout.strip().splitlines()[-1]
    FIGURES["engine"] = f"private dockerd {time.monotonic() - started:.0f}s"
    env["DOCKER_HOST"] = host
    os.environ["DOCKER_HOST"] = host  # for the docker package (kfp.local's DockerRunner) in this process
    try:
        yield env
    finally:
        subprocess.run([str(REPO / "images" / "dockerd.sh"), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def image(docker_env: dict[str, str]) -> str:
    """The pipeline's image, built from images/Dockerfile on this machine (cached layers make a warm build quick)."""
    return build_project_image(docker_env, FIGURES)


@pytest.fixture(scope="session")
def tier_figures() -> dict[str, str]:
    """What the tier measured, printed at its end (add a figure with ``tier_figures[name] = text``)."""
    return FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.write_line("container tier: " + "; ".join(f"{k} {v}" for k, v in FIGURES.items()))
